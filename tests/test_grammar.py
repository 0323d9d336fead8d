"""MidiGrammarLogitsProcessor: exactly the ids the event grammar allows at each slot."""

from __future__ import annotations

import pytest
import torch

from midi_event_transformer.grammar import MidiGrammarLogitsProcessor
from midi_event_transformer.vocabulary import (
    BOS_ID,
    EOS_ID,
    EVENT_PARAMETERS,
    EVENT_TYPE_IDS,
    PAD_ID,
    VOCAB_SIZE,
    parameter_id,
    parameter_range,
)

BOS_ROW = [BOS_ID] + [PAD_ID] * 7
NOTE = [EVENT_TYPE_IDS["note"], parameter_id("time1", 3), parameter_id("time2", 1), parameter_id("track", 0),
        parameter_id("channel", 0), parameter_id("pitch", 60), parameter_id("velocity", 90),
        parameter_id("duration", 12)]


def allowed_ids(prefix: list[int]) -> set[int]:
    scores = torch.zeros(1, VOCAB_SIZE)
    out = MidiGrammarLogitsProcessor()(torch.tensor([prefix]), scores)
    return set(torch.nonzero(out[0] == 0).flatten().tolist())


def test_event_start_allows_types_and_eos():
    assert allowed_ids(BOS_ROW) == set(EVENT_TYPE_IDS.values()) | {EOS_ID}
    assert allowed_ids(BOS_ROW + NOTE) == set(EVENT_TYPE_IDS.values()) | {EOS_ID}


@pytest.mark.parametrize("event_type", list(EVENT_PARAMETERS))
def test_parameter_slots_and_padding(event_type):
    row = BOS_ROW + [EVENT_TYPE_IDS[event_type]]
    parameters = EVENT_PARAMETERS[event_type]
    for slot in range(1, 8):
        expected = set(parameter_range(parameters[slot - 1])) if slot <= len(parameters) else {PAD_ID}
        assert allowed_ids(row) == expected, (event_type, slot)
        row.append(min(expected))


def test_after_eos_only_pad():
    row = BOS_ROW + [EOS_ID]
    for _ in range(7 + 8 + 3):
        assert allowed_ids(row) == {PAD_ID}
        row.append(PAD_ID)


def test_masks_to_minus_inf_and_keeps_allowed_values():
    scores = torch.randn(2, VOCAB_SIZE)
    ids = torch.tensor([BOS_ROW + NOTE[:3], BOS_ROW + [EVENT_TYPE_IDS["set_tempo"], 9, 137]])
    out = MidiGrammarLogitsProcessor()(ids, scores)
    track = parameter_range("track")
    assert torch.equal(out[:, track.start:track.stop], scores[:, track.start:track.stop])
    assert torch.isinf(out[:, :track.start]).all() and torch.isinf(out[:, track.stop:]).all()


def test_batch_rows_are_independent():
    ids = torch.tensor([BOS_ROW + [EVENT_TYPE_IDS["key_signature"], 9, 137, parameter_id("track", 1)],
                        BOS_ROW + [EVENT_TYPE_IDS["patch_change"], 9, 137, parameter_id("track", 1)]])
    out = MidiGrammarLogitsProcessor()(ids, torch.zeros(2, VOCAB_SIZE))
    assert set(torch.nonzero(out[0] == 0).flatten().tolist()) == set(parameter_range("sf"))
    assert set(torch.nonzero(out[1] == 0).flatten().tolist()) == set(parameter_range("channel"))


def test_errors():
    with pytest.raises(ValueError, match="vocab_size"):
        MidiGrammarLogitsProcessor(vocab_size=100)
    with pytest.raises(ValueError, match="columns"):
        MidiGrammarLogitsProcessor()(torch.tensor([BOS_ROW]), torch.zeros(1, 10))


def test_to_moves_the_tables_and_returns_the_grammar():
    grammar = MidiGrammarLogitsProcessor()
    assert grammar.to("cpu") is grammar and grammar.allowed.device.type == "cpu"
    assert grammar.to(torch.device("meta")) is grammar  # a device every machine has
    assert grammar.allowed.device.type == grammar.type_index.device.type == grammar.state_lo.device.type == "meta"


def test_parameter_counts_are_plain_python():
    """The decoding loop reads the parameter count of each event type at every event start: plain ints, no tensor."""
    counts = MidiGrammarLogitsProcessor().parameter_count_of
    assert counts == {EVENT_TYPE_IDS[name]: len(parameters) for name, parameters in EVENT_PARAMETERS.items()}
    assert all(type(count) is int for count in counts.values())
