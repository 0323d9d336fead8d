"""Rewriting a span of a piece (``generation.infilling``): spans, plans, and the kept-events decoding on tiny models."""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pytest
import torch
from generation_helpers import (
    grammar_problems,
    midi_bytes,
    multitrack_song,
    random_model,
    reloaded,
    tiny_config,
)

from midi_event_transformer import DEFAULT_MODEL, generate_midi
from midi_event_transformer.generation.fim import split_fim_rows
from midi_event_transformer.generation.infilling import (
    InfillPlan,
    assemble_infill,
    piece_end_step,
    plan_infill,
    span_steps,
    step_at,
    with_both_sides,
)
from midi_event_transformer.generation.musical_time import MusicalClock
from midi_event_transformer.generation.sliding_window import generate_in_windows
from midi_event_transformer.generation.track_editing import (
    KeptTracksLogitsProcessor,
    KeptTracksStoppingCriteria,
    event_steps,
)
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer
from midi_event_transformer.vocabulary import (
    BOS_ID,
    EOS_ID,
    EVENT_TYPE_IDS,
    FIM_MIDDLE_ID,
    FIM_SPAN_ID,
    FIM_VOCAB_SIZE,
    PAD_ID,
    PARAMETER_OFFSETS,
)

torch.set_num_threads(1)
TOKENIZER = MidiEventTransformerTokenizer()
NOTE = EVENT_TYPE_IDS["note"]


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return TOKENIZER.encode_midi(multitrack_song(bars=8))  # 4/4, 100 then 120 bpm from bar 5; tracks 1-3


@pytest.fixture(scope="module")
def loose_model():
    model = random_model()
    model.generation_config.suppress_tokens = [EOS_ID]
    return model


@pytest.fixture(scope="module")
def fim_model():
    """A tiny random model configured as trained for fill-in-the-middle (two sentinel ids after the reference's)."""
    model = random_model(tiny_config(vocab_size=FIM_VOCAB_SIZE, fill_in_the_middle=True))
    model.generation_config.suppress_tokens = [EOS_ID]
    return model


def grid_notes(midi: mido.MidiFile) -> dict[int, list[tuple[int, int, int, int, int]]]:
    """Track -> sorted (start step, channel, pitch, velocity, duration steps) of the notes, as the file reads back."""
    encoded = TOKENIZER.encode_midi(reloaded(midi))
    notes: dict[int, list] = {}
    for row, step in zip(encoded.tolist(), event_steps(encoded).tolist(), strict=True):
        if row[0] == NOTE:
            values = [row[slot] - PARAMETER_OFFSETS[name] for slot, name in
                      ((3, "track"), (4, "channel"), (5, "pitch"), (6, "velocity"), (7, "duration"))]
            notes.setdefault(values[0], []).append((step, *values[1:]))
    return {track: sorted(found) for track, found in notes.items()}


def infill(model, rows, plan: InfillPlan, seed: int = 0, allow_control_change: bool = True) -> np.ndarray:
    processor = KeptTracksLogitsProcessor([plan], allow_control_change=allow_control_change)
    torch.manual_seed(seed)
    out = generate_in_windows(model, [plan.prompt_rows], max_events=len(plan.kept_rows) + plan.max_model_events,
                              context_events=512, logits_processor=[processor],
                              stopping_criteria=[KeptTracksStoppingCriteria(processor)], do_sample=True,
                              pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID)
    return assemble_infill(out[0], plan)


# ---------------------------------------------------------------------------------------------- spans
def test_bars_and_seconds_to_steps(rows):
    assert span_steps(rows, bars=(3, 4)) == (128, 256)  # 4/4: 64 steps a bar, bar 3 starts after two bars
    assert span_steps(rows, bars="3-4") == (128, 256)
    assert step_at(rows, seconds=2.4) == 64  # 100 bpm: 0.6 s a beat
    start, end = span_steps(rows, seconds=(2.4, 12.0))
    assert (start, end) == (64, 16 * 4 * 4 + round((12.0 - 9.6) / 0.5 * 16))  # 120 bpm from bar 5 (9.6 s)


def test_a_span_past_the_end_is_cut_there(rows):
    end = piece_end_step(rows)
    assert end == 8 * 64
    assert span_steps(rows, bars=(7, 40)) == (6 * 64, end)


@pytest.mark.parametrize(("bars", "seconds", "error", "match"), [
    ((9, 12), None, ValueError, "starts after the piece ends"),
    ((3, 2), None, ValueError, "first <= last"),
    ((0, 2), None, ValueError, "first <= last"),
    ((1, 2), (0.0, 1.0), ValueError, "not both"),
    (None, None, ValueError, "give the span"),
    (None, (3.0, 3.0), ValueError, "start < end"),
    ("1-x", None, ValueError, "invalid literal|two numbers"),
    ((1.5, 2), None, TypeError, "whole numbers"),
])
def test_bad_spans_raise(rows, bars, seconds, error, match):
    with pytest.raises(error, match=match):
        span_steps(rows, bars=bars, seconds=seconds)


# ---------------------------------------------------------------------------------------------- plans
def test_plan_keeps_the_span_s_other_events(rows):
    plan = plan_infill(rows, 128, 256, tracks=[2])
    assert plan.model_channels == {2: 1}
    steps = event_steps(rows)
    assert np.all(event_steps(plan.prompt_rows) < 128) and plan.prompt_rows[0, 0] == BOS_ID
    assert np.all((plan.kept_steps >= 128) & (plan.kept_steps < 256)) and np.all(plan.suffix_steps >= 256)
    in_span = rows[(steps >= 128) & (steps < 256)]
    tracks = in_span[:, 3] - PARAMETER_OFFSETS["track"]
    rewritten = np.isin(in_span[:, 0], [NOTE, EVENT_TYPE_IDS["control_change"]]) & (tracks == 2)
    np.testing.assert_array_equal(plan.kept_rows, in_span[~rewritten])
    assert plan.allows_eos is False and plan.max_gap_steps >= 64


def test_unknown_or_silent_tracks_raise(rows):
    with pytest.raises(ValueError, match="no track 7 with notes"):
        plan_infill(rows, 128, 256, tracks=[7])
    with pytest.raises(TypeError, match="track numbers"):
        plan_infill(rows, 128, 256, tracks="2")
    with pytest.raises(ValueError, match="empty"):
        plan_infill(rows, 128, 256, tracks=[])


# ---------------------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize(("tracks", "both_sides"), [(None, False), ([1], False), ([1, 3], False), (None, True),
                                                    ([2], True)])
def test_notes_outside_the_span_and_of_kept_tracks_are_identical(rows, loose_model, fim_model, tracks, both_sides):
    start, end = span_steps(rows, bars=(3, 5))
    plan = plan_infill(rows, start, end, tracks=tracks)
    if both_sides:
        plan = with_both_sides(plan, context_events=512)
        assert plan.both_sides and plan.prompt_rows[-1, 0] == FIM_MIDDLE_ID
    full = infill(fim_model if both_sides else loose_model, rows, plan)
    assert not grammar_problems(full)
    before, after = grid_notes(TOKENIZER.decode_midi(rows)), grid_notes(TOKENIZER.decode_midi(full))
    rewritten = plan.model_channels
    for track in before:
        outside = [note for note in before[track] if not start <= note[0] < end]
        assert [note for note in after.get(track, []) if not start <= note[0] < end] == outside, track
        if track not in rewritten:  # kept tracks are identical inside the span too
            assert after.get(track, []) == before[track], track
    model_notes = [note for track in rewritten for note in after.get(track, []) if start <= note[0] < end]
    assert model_notes, "the span was left empty"
    assert all(note[0] + note[4] <= end for note in model_notes)  # clipped at the span's end
    assert piece_end_step(full) == piece_end_step(rows)  # the piece ends where the prompt ends


def test_model_notes_never_start_on_a_held_pitch(rows, loose_model):
    start, end = span_steps(rows, bars=(2, 4))
    plan = plan_infill(rows, start, end, tracks=[1])
    # a kept note of channel 0 pitch 60 held over the whole span blocks that pitch for the model
    plan.kept_notes = np.concatenate([plan.kept_notes, [[0, 10_000, 0, 60]]])
    full = infill(loose_model, rows, plan, seed=3, allow_control_change=False)
    steps = event_steps(full)
    model = [(row, step) for row, step in zip(full.tolist(), steps.tolist(), strict=True)
             if row[0] == NOTE and start <= step < end and row[3] - PARAMETER_OFFSETS["track"] == 1]
    assert model and all(row[5] - PARAMETER_OFFSETS["pitch"] != 60 for row, _ in model)


def test_both_sides_prompt_is_a_fim_layout_read_at_the_original_steps(rows):
    start, end = span_steps(rows, bars=(3, 4))
    plan = plan_infill(rows, start, end)
    both = with_both_sides(plan, context_events=512)
    prompt = both.prompt_rows
    assert [int(i) for i in prompt[:, 0]].count(FIM_SPAN_ID) == 2 and prompt[-1, 0] == FIM_MIDDLE_ID
    assert both.prompt_step == plan.prompt_step  # the model's first event is timed from the prefix's last
    parts = split_fim_rows(prompt)
    np.testing.assert_array_equal(parts.prefix, plan.prefix_rows)
    np.testing.assert_array_equal(parts.suffix_steps, plan.suffix_steps[:len(parts.suffix)])
    assert (parts.start_step, parts.end_step) == (start, end)
    assert MusicalClock.after(prompt).step == plan.prompt_step
    small = with_both_sides(plan, context_events=len(plan.kept_rows) + plan.max_model_events + 13)
    assert len(small.prompt_rows) == 13 and small.prompt_rows[-1, 0] == FIM_MIDDLE_ID  # both sides cut to fit
    with pytest.raises(ValueError, match="no room for both sides"):
        with_both_sides(plan, context_events=len(plan.kept_rows) + plan.max_model_events)


# ---------------------------------------------------------------------------------------------- generate_midi
def test_generate_midi_infills_every_sample_of_a_batch_reproducibly(loose_model, rows):
    song = multitrack_song(bars=8)
    kwargs = dict(prompt=song, infill_bars=(3, 4), seed=1, num_samples=2, progress=False)
    first, second = generate_midi(loose_model, TOKENIZER, **kwargs)
    again = generate_midi(loose_model, TOKENIZER, **kwargs)
    assert midi_bytes(first) == midi_bytes(again[0]) and midi_bytes(second) == midi_bytes(again[1])
    before = grid_notes(TOKENIZER.decode_midi(rows))
    for midi in (first, second):
        after = grid_notes(midi)
        for track in before:
            assert [n for n in after[track] if not 128 <= n[0] < 256] == [n for n in before[track]
                                                                         if not 128 <= n[0] < 256]


def test_pipeline_takes_the_infill_keywords(loose_model, rows):
    from transformers import pipeline

    pipe = pipeline("midi-generation", model=loose_model, tokenizer=TOKENIZER, device="cpu")
    song = multitrack_song(bars=8)
    (result,) = pipe(song, infill_bars=(3, 4), infill_tracks=[1], seed=2, progress=False)
    (expected,) = generate_midi(loose_model, TOKENIZER, prompt=song, infill_bars=(3, 4), infill_tracks=[1], seed=2,
                                progress=False)
    assert midi_bytes(result["midi"]) == midi_bytes(expected)
    with pytest.raises(ValueError, match="cannot be combined with events"):
        pipe(song, infill_bars=(3, 4), events=5)


def test_the_path_taken_is_logged(fim_model, loose_model, caplog):
    song = multitrack_song(bars=8)
    with caplog.at_level("INFO", logger="midi_event_transformer.generation.requests"):
        generate_midi(loose_model, TOKENIZER, prompt=song, infill_bars=(3, 4), seed=0, progress=False)
        generate_midi(fim_model, TOKENIZER, prompt=song, infill_bars=(3, 4), seed=0, progress=False)
        generate_midi(fim_model, TOKENIZER, prompt=song, infill_bars=(3, 4), seed=0, progress=False,
                      context_events=8)
    messages = [record.getMessage() for record in caplog.records]
    assert "past only (the model was not trained with fill-in-the-middle)" in messages[0]
    assert "with both sides" in messages[1]
    assert "past only: the span's events" in messages[2]


@pytest.mark.skipif(not (Path(DEFAULT_MODEL) / "model.safetensors").exists(), reason="no embedded model")
def test_the_shipped_model_fills_a_dense_span():
    song = multitrack_song(bars=8)
    rows = TOKENIZER.encode_midi(song)
    start, end = span_steps(rows, bars=(3, 6))
    for seed in (0, 1):
        (midi,) = generate_midi(prompt=song, infill_bars=(3, 6), seed=seed, progress=False, device="cpu")
        before, after = grid_notes(TOKENIZER.decode_midi(rows)), grid_notes(midi)
        model_notes = []
        for track in before:
            assert [n for n in after.get(track, []) if not start <= n[0] < end] == [
                n for n in before[track] if not start <= n[0] < end]
            model_notes += [n for n in after.get(track, []) if start <= n[0] < end]
        assert all(n[0] + n[4] <= end for n in model_notes)
        bars = {(n[0] - start) // 64 for n in model_notes}
        assert len(bars) >= 3, (seed, sorted(bars))  # notes in at least 3 of the 4 bars
