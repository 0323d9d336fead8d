"""EveryPartPlaysLogitsProcessor: a requested part that has rested max_rest_bars takes the next note."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from generation_helpers import tiny_model
from transformers import LogitsProcessor

from midi_event_transformer.evaluation.instruments import piece_parts
from midi_event_transformer.generation.api import generate_midi
from midi_event_transformer.generation.musical_time import MusicalClock
from midi_event_transformer.generation.part_balance import EveryPartPlaysLogitsProcessor
from midi_event_transformer.generation.prompts import build_prompt, event_row, instrument_tracks
from midi_event_transformer.generation.requests import PromptOptions
from midi_event_transformer.generation.sliding_window import generate_in_windows
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer
from midi_event_transformer.vocabulary import FIM_VOCAB_SIZE, VOCAB_SIZE

# id offsets written out independently of vocabulary.py
NOTE, TIME1, TRACK, CHANNEL = 3, 9, 2201, 2329
QUARTET = ["Violin", "Violin", "Viola", "Cello"]


def note(time1: int, track: int, channel: int, duration: int, pitch: int = 60) -> np.ndarray:
    return event_row("note", time1=time1, time2=0, track=track, channel=channel, pitch=pitch, velocity=80,
                     duration=duration)


def flat(*rows) -> torch.Tensor:
    return torch.as_tensor(np.concatenate([np.atleast_2d(r) for r in rows]).reshape(1, -1))


@pytest.fixture
def duo():
    """Violin (track 1, channel 0) and cello (track 2, channel 1); the violin holds a note for 6 beats from 0."""
    prompt = build_prompt(instruments=["Violin", "Cello"])
    parts = instrument_tracks(["Violin", "Cello"])
    return prompt, parts, note(0, track=1, channel=0, duration=6 * 16)


def make(parts, prompt, **kwargs) -> EveryPartPlaysLogitsProcessor:
    """A processor that has seen ``prompt`` as generation's first call does (the rows after it are the model's)."""
    processor = EveryPartPlaysLogitsProcessor(parts, [MusicalClock.after(prompt)], **kwargs)
    processor(flat(prompt), torch.zeros(1, VOCAB_SIZE))
    return processor


def allowed(scores: torch.Tensor) -> list[int]:
    return torch.isfinite(scores[0]).nonzero().flatten().tolist()


def test_instrument_tracks_as_the_prompt_assigns_them():
    assert instrument_tracks(QUARTET, drum_kit="Standard") == {1: 0, 2: 1, 3: 2, 4: 3, 5: 9}
    prompt = build_prompt(instruments=QUARTET)
    assert [(row[3] - TRACK, row[4] - CHANNEL) for row in prompt[1:]] == [(1, 0), (2, 1), (3, 2), (4, 3)]


def test_a_part_silent_for_a_bar_takes_the_next_note(duo):
    prompt, parts, violin = duo
    processor = make(parts, prompt, max_rest_bars=1)
    scores = torch.zeros(1, VOCAB_SIZE)
    # a note 3 beats in: the cello has rested 3 beats (< a 4/4 bar), nothing changes
    early = note(3, track=1, channel=0, duration=4)
    assert torch.equal(processor(flat(prompt, violin, early)[:, :-5], scores), scores)
    # a note 5 beats in: the cello is due (the violin still sounds): only the cello's track, then its channel
    late = note(5, track=2, channel=1, duration=4)
    assert allowed(processor(flat(prompt, violin, late)[:, :-5], scores)) == [TRACK + 2]
    assert allowed(processor(flat(prompt, violin, late)[:, :-4], scores)) == [CHANNEL + 1]


def test_a_held_note_counts_as_sounding(duo):
    prompt, parts, violin = duo
    cello = note(0, track=2, channel=1, duration=8 * 16)  # held for two bars
    processor = make(parts, prompt, max_rest_bars=1)
    scores = torch.zeros(1, VOCAB_SIZE)
    later = note(7, track=1, channel=0, duration=4)  # beat 7: the violin ended at 6, within a bar; cello sounding
    assert torch.equal(processor(flat(prompt, violin, cello, later)[:, :-5], scores), scores)
    much_later = note(11, track=1, channel=0, duration=4)  # beat 11: the violin rested 5 beats, the cello 3
    assert allowed(processor(flat(prompt, violin, cello, much_later)[:, :-5], scores)) == [TRACK + 1]


def test_bars_follow_the_time_signature(duo):
    _, parts, _ = duo
    prompt = build_prompt(instruments=["Violin", "Cello"], time_signature="2/4")
    processor = make(parts, prompt, max_rest_bars=1.5)
    scores = torch.zeros(1, VOCAB_SIZE)
    assert torch.equal(processor(flat(prompt, note(2, 1, 0, 4))[:, :-5], scores), scores)  # 1 bar of 2/4
    assert allowed(processor(flat(prompt, note(3, 1, 0, 4))[:, :-5], scores)) == [TRACK + 1, TRACK + 2]


def test_compact_call_on_a_window_of_columns(duo):
    prompt, parts, violin = duo
    processor = make(parts, prompt)
    offset, width = TRACK - 5, 40  # the grammar's window of track ids, as the event-level loop scores them
    scores = torch.randn(1, width)
    out = processor.compact_call(flat(prompt, violin, note(5, 2, 1, 4))[:, :-5], scores, offset)
    assert allowed(out) == [TRACK + 2 - offset] and out[0, TRACK + 2 - offset] == scores[0, TRACK + 2 - offset]


def test_wider_vocabulary_and_bad_arguments(duo):
    prompt, parts, violin = duo
    processor = make(parts, prompt)
    out = processor(flat(prompt, violin, note(5, 2, 1, 4))[:, :-5], torch.zeros(1, FIM_VOCAB_SIZE))
    assert allowed(out) == [TRACK + 2]
    with pytest.raises(TypeError, match="parts"):
        EveryPartPlaysLogitsProcessor({}, [MusicalClock.after(prompt)])
    with pytest.raises(TypeError, match="MusicalClock"):
        EveryPartPlaysLogitsProcessor(parts, [prompt])
    with pytest.raises(ValueError, match="max_rest_bars"):
        EveryPartPlaysLogitsProcessor(parts, [MusicalClock.after(prompt)], max_rest_bars=-1)


def test_option_checks():
    assert PromptOptions(instruments=QUARTET, max_rest_bars=0).max_rest_bars is None  # 0 is "off"
    assert PromptOptions().max_rest_bars == 1.0
    with pytest.raises(ValueError, match="max_rest_bars"):
        PromptOptions(max_rest_bars=-2.0)
    with pytest.raises(TypeError, match="max_rest_bars"):
        PromptOptions(max_rest_bars="2")


class FirstPartOnly(LogitsProcessor):
    """Makes a model write only the first part (track 1, channel 0), as a model that never saw the others would,
    one note a beat."""

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, [NOTE, TIME1 + 1, TRACK + 1, CHANNEL]] += 1e4
        return scores


@pytest.mark.parametrize("event_loop", [True, False])
def test_every_part_plays_in_model_generate(event_loop):
    model, prompt = tiny_model(), build_prompt(instruments=QUARTET)
    parts = instrument_tracks(QUARTET)

    def generate(processors) -> dict:
        torch.manual_seed(0)
        out = model.generate(flat(prompt), logits_processor=[FirstPartOnly(), *processors], do_sample=True,
                             max_new_tokens=120 * 8, event_loop=event_loop)
        return piece_parts(MidiEventTransformerTokenizer().decode_midi(out.reshape(-1, 8).numpy()), QUARTET)

    alone = generate([])
    assert [part["notes"] > 0 for part in alone["parts"]] == [True, False, False, False]
    balanced = generate([EveryPartPlaysLogitsProcessor(parts, [MusicalClock.after(prompt)])])
    assert all(part["notes"] > 0 for part in balanced["parts"]), balanced
    assert all(part["bars_share"] >= 0.5 for part in balanced["parts"]), balanced


def test_generate_midi_gives_every_part_notes_unless_turned_off():
    def parts(**options):
        midi = generate_midi(tiny_model(), instruments=QUARTET, events=120, seed=0, progress=False, **options)[0]
        return [part["notes"] > 0 for part in piece_parts(midi, QUARTET)["parts"]]

    assert parts() == [True] * 4
    assert parts(max_rest_bars=None) != parts()


def test_every_part_plays_across_sliding_windows():
    """The parts' rests and the clock carry over from one model.generate call of a sliding window to the next."""
    model, prompt = tiny_model(), build_prompt(instruments=QUARTET)
    processor = EveryPartPlaysLogitsProcessor(instrument_tracks(QUARTET), [MusicalClock.after(prompt)] * 2)
    torch.manual_seed(0)
    outputs = generate_in_windows(model, [prompt, prompt], max_events=120, context_events=32,
                                  logits_processor=[FirstPartOnly(), processor], do_sample=True)
    for rows in outputs:
        assert len(rows) == len(prompt) + 120
        parts = piece_parts(MidiEventTransformerTokenizer().decode_midi(rows), QUARTET)
        assert parts["bars"] >= 25 and all(part["bars_share"] >= 0.5 for part in parts["parts"]), parts
