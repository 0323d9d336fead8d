"""Generation controls: exact ids masked at exact slots, argument validation, compact (windowed) calls."""

from __future__ import annotations

import pytest
import torch

from midi_event_transformer.generation.controls import (
    DisableControlChangeLogitsProcessor,
    DisableEventTypesLogitsProcessor,
    DisablePatchChangeLogitsProcessor,
    RestrictChannelsLogitsProcessor,
    RestrictInstrumentsLogitsProcessor,
)
from midi_event_transformer.grammar import MidiGrammarLogitsProcessor

V = 3406
# the id layout, written out independently of vocabulary.py
NOTE, PATCH_CHANGE, CONTROL_CHANGE, SET_TEMPO, TIME_SIGNATURE, KEY_SIGNATURE = 3, 4, 5, 6, 7, 8
TIME1, TIME2, TRACK, CHANNEL, PITCH, PATCH = 9, 137, 2201, 2329, 2345, 2601
BOS_ROW = [1, 0, 0, 0, 0, 0, 0, 0]


def masked(scores: torch.Tensor) -> list[list[int]]:
    return [torch.nonzero(torch.isinf(row)).flatten().tolist() for row in scores]


def flat(*rows_and_partial: list[int]) -> torch.Tensor:
    return torch.tensor([sum(rows_and_partial, [])])


def test_disable_patch_change_masks_only_its_type_id_at_slot_0():
    processor = DisablePatchChangeLogitsProcessor()
    scores = torch.zeros(2, V)
    ids = torch.tensor([BOS_ROW, BOS_ROW])
    assert masked(processor(ids, scores)) == [[PATCH_CHANGE], [PATCH_CHANGE]]
    for partial in range(1, 8):  # inside an event: untouched (the same tensor comes back)
        ids = torch.tensor([BOS_ROW + [PATCH_CHANGE] + [TIME1] * (partial - 1)])
        out = processor(ids, torch.zeros(1, V))
        assert masked(out) == [[]]


def test_disable_control_change_and_generic_event_types():
    ids = torch.tensor([BOS_ROW])
    assert masked(DisableControlChangeLogitsProcessor()(ids, torch.zeros(1, V))) == [[CONTROL_CHANGE]]
    both = DisableEventTypesLogitsProcessor(["set_tempo", "key_signature", "set_tempo"])
    assert both.event_types == ("set_tempo", "key_signature")
    assert masked(both(ids, torch.zeros(1, V))) == [[SET_TEMPO, KEY_SIGNATURE]]


def test_scores_outside_the_mask_are_unchanged():
    scores = torch.randn(1, V)
    out = DisablePatchChangeLogitsProcessor()(torch.tensor([BOS_ROW]), scores)
    keep = torch.ones(V, dtype=torch.bool)
    keep[PATCH_CHANGE] = False
    assert torch.equal(out[0, keep], scores[0, keep])
    assert out[0, PATCH_CHANGE] == float("-inf")


def test_restrict_channels_masks_channel_slot_of_note_patch_and_control_events():
    processor = RestrictChannelsLogitsProcessor([0, 9, 3, 3])
    assert processor.allowed_channels == (0, 3, 9)
    forbidden = [CHANNEL + c for c in range(16) if c not in (0, 3, 9)]
    prefix = [TIME1, TIME2, TRACK + 1]  # time1, time2, track: the channel comes at slot 4
    for event_type in (NOTE, PATCH_CHANGE, CONTROL_CHANGE):
        ids = flat(BOS_ROW, [event_type] + prefix)
        assert masked(processor(ids, torch.zeros(1, V))) == [forbidden]
    for event_type in (SET_TEMPO, TIME_SIGNATURE, KEY_SIGNATURE):  # slot 4 is bpm / nn / sf: untouched
        ids = flat(BOS_ROW, [event_type] + prefix)
        assert masked(processor(ids, torch.zeros(1, V))) == [[]]
    for slot in (0, 1, 2, 3, 5, 6, 7):  # other slots of a note: untouched
        ids = flat(BOS_ROW, ([NOTE] + prefix + [CHANNEL, PITCH + 60, 0, 0])[:slot])
        assert masked(processor(ids, torch.zeros(1, V))) == [[]]


def test_restrict_channels_per_row_in_a_batch():
    processor = RestrictChannelsLogitsProcessor(range(15))  # all but 15
    ids = torch.tensor([BOS_ROW + [NOTE, TIME1, TIME2, TRACK], BOS_ROW + [SET_TEMPO, TIME1, TIME2, TRACK]])
    assert masked(processor(ids, torch.zeros(2, V))) == [[CHANNEL + 15], []]


def test_restrict_instruments_masks_the_patch_slot_and_keeps_drums_separate():
    processor = RestrictInstrumentsLogitsProcessor([0, 40])
    head = [PATCH_CHANGE, TIME1, TIME2, TRACK + 1]
    melodic = flat(BOS_ROW, head + [CHANNEL + 2])
    assert masked(processor(melodic, torch.zeros(1, V))) == [[PATCH + p for p in range(128) if p not in (0, 40)]]
    drums = flat(BOS_ROW, head + [CHANNEL + 9])
    assert masked(processor(drums, torch.zeros(1, V))) == [[]]  # drum kits free by default
    with_kits = RestrictInstrumentsLogitsProcessor([0, 40], allowed_drum_kits=[32])
    both = torch.cat([melodic, drums])
    assert masked(with_kits(both, torch.zeros(2, V))) == [[PATCH + p for p in range(128) if p not in (0, 40)],
                                                         [PATCH + p for p in range(128) if p != 32]]
    # every program allowed on melodic channels, drum kits still restricted
    everything = RestrictInstrumentsLogitsProcessor(range(128), allowed_drum_kits=[0])
    assert masked(everything(both, torch.zeros(2, V))) == [[], [PATCH + p for p in range(1, 128)]]
    # other slots and event types: untouched
    note = flat(BOS_ROW, [NOTE, TIME1, TIME2, TRACK, CHANNEL])
    assert masked(processor(note, torch.zeros(1, V))) == [[]]


def test_compact_call_on_a_window_equals_the_full_call():
    processor = RestrictChannelsLogitsProcessor([1, 2])
    ids = flat(BOS_ROW, [NOTE, TIME1, TIME2, TRACK])
    full = processor(ids, torch.zeros(1, V))
    lo, hi = CHANNEL - 5, CHANNEL + 16
    window = processor.compact_call(ids, torch.zeros(1, hi - lo), lo)
    assert torch.equal(window, full[:, lo:hi])
    event_types = DisablePatchChangeLogitsProcessor().compact_call(torch.tensor([BOS_ROW]), torch.zeros(1, 7), 2)
    assert masked(event_types) == [[PATCH_CHANGE - 2]]


def test_controls_compose_with_the_grammar():
    grammar = MidiGrammarLogitsProcessor()
    ids = torch.tensor([BOS_ROW])
    scores = DisablePatchChangeLogitsProcessor()(ids, grammar(ids, torch.zeros(1, V)))
    allowed = torch.nonzero(~torch.isinf(scores[0])).flatten().tolist()
    assert allowed == [2, NOTE, CONTROL_CHANGE, SET_TEMPO, TIME_SIGNATURE, KEY_SIGNATURE]


def test_wider_vocabulary_and_half_precision():
    ids = torch.tensor([BOS_ROW])
    out = DisablePatchChangeLogitsProcessor()(ids, torch.zeros(1, V + 10, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and masked(out.float()) == [[PATCH_CHANGE]]


@pytest.mark.parametrize("make, error, message", [
    (lambda: RestrictChannelsLogitsProcessor([16]), ValueError, "channel 16 is outside 0..15"),
    (lambda: RestrictChannelsLogitsProcessor([-1]), ValueError, "outside 0..15"),
    (lambda: RestrictChannelsLogitsProcessor([]), ValueError, "at least one channel"),
    (lambda: RestrictChannelsLogitsProcessor([1.0]), TypeError, "channel must be an int"),
    (lambda: RestrictChannelsLogitsProcessor([True]), TypeError, "channel must be an int"),
    (lambda: RestrictChannelsLogitsProcessor(3), TypeError, "iterable"),
    (lambda: RestrictChannelsLogitsProcessor("01"), TypeError, "iterable"),
    (lambda: RestrictInstrumentsLogitsProcessor([128]), ValueError, "patch 128 is outside 0..127"),
    (lambda: RestrictInstrumentsLogitsProcessor([0], allowed_drum_kits=[200]), ValueError, "outside 0..127"),
    (lambda: RestrictInstrumentsLogitsProcessor(["piano"]), TypeError, "patch must be an int"),
    (lambda: DisableEventTypesLogitsProcessor(["tempo"]), ValueError, "unknown event type 'tempo'"),
    (lambda: DisableEventTypesLogitsProcessor("note"), TypeError, "iterable of event names"),
    (lambda: DisableEventTypesLogitsProcessor([]), ValueError, "empty"),
])
def test_bad_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_bad_scores_shape():
    processor = DisablePatchChangeLogitsProcessor()
    with pytest.raises(ValueError, match="3406"):
        processor(torch.tensor([BOS_ROW]), torch.zeros(1, 100))
    with pytest.raises(ValueError, match="batch"):
        processor(torch.tensor([BOS_ROW]), torch.zeros(2, V))


def test_repr_names_the_settings():
    assert repr(RestrictChannelsLogitsProcessor([2, 1])) == "RestrictChannelsLogitsProcessor(allowed_channels=[1, 2])"
    assert "allowed_drum_kits=None" in repr(RestrictInstrumentsLogitsProcessor([0]))
