"""Lengths in seconds / bars (``musical_time``): the clock, the stopping criterion, the cut, the file's length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from generation_helpers import grammar_problems, multitrack_song, random_model

from midi_event_transformer import DEFAULT_MODEL, generate_midi
from midi_event_transformer.generation.api import generate_rows
from midi_event_transformer.generation.musical_time import (
    MusicalClock,
    TimeLimit,
    TimeLimitStoppingCriteria,
    cut_at_time_limit,
    end_midi_at,
)
from midi_event_transformer.generation.prompts import build_prompt, event_row
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer
from midi_event_transformer.vocabulary import EOS_ID, PARAMETER_OFFSETS

torch.set_num_threads(1)
TOKENIZER = MidiEventTransformerTokenizer()


@pytest.fixture(scope="module")
def model():
    model = random_model()
    model.generation_config.suppress_tokens = [EOS_ID]
    return model


def note(time1: int, time2: int, duration: int, pitch: int = 60) -> np.ndarray:
    return event_row("note", time1=time1, time2=time2, track=1, channel=0, pitch=pitch, velocity=80,
                     duration=duration)


def piece() -> np.ndarray:
    """120 bpm in 4/4, a note on each beat; at beat 4 the tempo becomes 60 bpm and the signature 3/4."""
    rows = [build_prompt(bpm=120, time_signature="4/4")]
    rows += [note(0, 0, 16)] + [note(1, 0, 16) for _ in range(3)]
    rows += [event_row("set_tempo", time1=1, time2=0, track=0, bpm=60)[None],
             event_row("time_signature", time1=0, time2=0, track=0, nn=2, dd=1)[None]]
    rows += [note(0, 0, 40)] + [note(1, 8, 8)]
    return np.concatenate([np.atleast_2d(r) for r in rows])


def test_clock_follows_tempo_and_signature_changes():
    clock = MusicalClock.after(piece())
    assert clock.step == 5 * 16 + 8  # beat 5.5
    assert clock.seconds == pytest.approx(4 * 0.5 + 1.5 * 1.0)  # 4 beats at 120, then 1.5 at 60
    assert clock.bars == pytest.approx(1 + 1.5 / 3)
    assert clock.tempo == 1_000_000 and clock.steps_per_bar == 48


def test_time_limit_checks_its_values():
    with pytest.raises(ValueError, match="not both"):
        TimeLimit(seconds=1, bars=1)
    with pytest.raises(ValueError, match="needs seconds or bars"):
        TimeLimit()
    with pytest.raises(ValueError, match="seconds must be a positive number, got -2"):
        TimeLimit(seconds=-2)
    with pytest.raises(TypeError, match="bars must be a number, not str"):
        TimeLimit(bars="4")


def test_cut_drops_the_events_at_the_limit_and_shortens_sounding_notes():
    rows = piece()
    prompt = 3  # BOS, signature, tempo
    cut, end = cut_at_time_limit(rows, prompt, TimeLimit(seconds=3))  # 3 s: beat 4 at 120 then 1 beat at 60
    assert end == 5 * 16
    assert len(cut) == len(rows) - 1  # the note at beat 5.5 goes
    durations = [int(r[7]) - PARAMETER_OFFSETS["duration"] for r in cut if r[0] == 3]
    assert durations == [16, 16, 16, 16, 16]  # the note at beat 4 (40 steps) ends at the limit, beat 5
    cut, end = cut_at_time_limit(rows, prompt, TimeLimit(bars=1.25))  # one 4/4 bar, then a quarter of a 3/4 bar
    assert end == 4 * 16 + 12
    unchanged, none = cut_at_time_limit(rows, prompt, TimeLimit(seconds=60))
    assert none is None and np.array_equal(unchanged, rows)


def test_end_midi_at_sets_the_length():
    midi = TOKENIZER.decode_midi(piece()[:6])  # three beats of notes at 120 bpm
    assert end_midi_at(midi, 16 * 10).length == pytest.approx(5.0)
    assert end_midi_at(midi, 16 * 2).length == pytest.approx(5.0)  # never shortened


def test_criterion_stops_a_row_at_the_first_event_past_the_limit():
    rows = torch.as_tensor(piece()).reshape(1, -1)
    prompt = 3 * 8
    criterion = TimeLimitStoppingCriteria(TimeLimit(seconds=2), [MusicalClock.after(piece()[:3])])
    stops = [bool(criterion(rows[:, :length], None)[0]) for length in range(prompt + 1, rows.shape[1] + 1)]
    first = stops.index(True) + prompt + 1
    assert first == 8 * 8  # once the set_tempo row at beat 4 (2 s) is whole
    assert all(stops[first - prompt - 1:])


@pytest.mark.parametrize("seed", [0, 1])
def test_seconds_give_the_file_length_within_one_beat(model, seed):
    files = generate_midi(model, TOKENIZER, instruments=["Acoustic Grand Piano"], bpm=90, seconds=20, seed=seed,
                          num_samples=2, progress=False)
    for midi in files:
        tempo = max(m.tempo for track in midi.tracks for m in track if m.type == "set_tempo")
        assert abs(midi.length - 20) <= tempo / 1e6  # within one beat at the (slowest) tempo of the piece


def test_seconds_count_from_the_prompts_end_and_work_with_the_window(model):
    song = multitrack_song(bars=2)  # its last event at beat 7.5: 4 beats at 100 bpm, then 3.5 at 120
    prompt_end = MusicalClock.after(TOKENIZER.encode_midi(song)).seconds
    assert prompt_end == pytest.approx(4 * 0.6 + 3.5 * 0.5, abs=1e-3)
    (rows,) = generate_rows(model, TOKENIZER, prompt=song, seconds=10, context_events=16, seed=4, progress=False)
    assert grammar_problems(rows) == [] and len(rows) > 16  # past the window
    (midi,) = generate_midi(model, TOKENIZER, prompt=song, seconds=10, context_events=16, seed=4, progress=False)
    tempo = max(m.tempo for track in midi.tracks for m in track if m.type == "set_tempo")
    assert abs(midi.length - (prompt_end + 10)) <= tempo / 1e6


def test_bars_stop_after_that_many_bars(model):
    rows = generate_rows(model, TOKENIZER, instruments=["Violin"], bpm=120, time_signature="3/4", bars=4,
                         seed=0, num_samples=3, progress=False)
    for sample in rows:
        clock = MusicalClock.after(sample)
        assert clock.bars < 4  # every kept event starts before the limit
        assert grammar_problems(sample) == []


def test_seconds_errors(model):
    with pytest.raises(ValueError, match="seconds must be a positive number"):
        generate_midi(model, TOKENIZER, seconds=0, progress=False)
    with pytest.raises(ValueError, match="not both"):
        generate_midi(model, TOKENIZER, seconds=3, bars=2, progress=False)


@pytest.mark.skipif(not (Path(DEFAULT_MODEL) / "config.json").is_file(),
                    reason="the embedded model (midi_event_transformer/default_model/) is not committed yet")
def test_embedded_model_twenty_seconds():
    (midi,) = generate_midi(instruments=["Acoustic Grand Piano"], seconds=20, seed=0, progress=False, device="cpu")
    tempo = max((m.tempo for track in midi.tracks for m in track if m.type == "set_tempo"), default=500_000)
    assert abs(midi.length - 20) <= tempo / 1e6
