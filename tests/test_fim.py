"""Fill-in-the-middle layout (``generation/fim.py``): building, reading back, clocks, bars and span draws."""

from __future__ import annotations

import numpy as np
import pytest

from midi_event_transformer.generation.fim import (
    bar_span,
    bar_steps,
    draw_span,
    event_steps,
    fim_prompt,
    fim_rows,
    fim_steps,
    is_event_row,
    join_fim_rows,
    span_rows,
    split_fim_rows,
)
from midi_event_transformer.generation.musical_time import MusicalClock
from midi_event_transformer.generation.prompts import event_row
from midi_event_transformer.vocabulary import (
    BOS_ID,
    EOS_ID,
    FIM_MIDDLE_ID,
    FIM_SPAN_ID,
    PAD_ID,
    PARAMETER_OFFSETS,
)

T1, T2 = PARAMETER_OFFSETS["time1"], PARAMETER_OFFSETS["time2"]


def special(token: int) -> np.ndarray:
    row = np.full(8, PAD_ID, dtype=np.int64)
    row[0] = token
    return row


def note(time1: int, time2: int, pitch: int = 60) -> np.ndarray:
    return event_row("note", time1=time1, time2=time2, track=1, channel=0, pitch=pitch, velocity=80, duration=4)


def signature(time1: int, time2: int, numerator: int, denominator: int) -> np.ndarray:
    return event_row("time_signature", time1=time1, time2=time2, track=0, nn=numerator - 1,
                     dd=int(np.log2(denominator)) - 1)


def piece(steps: list[int], eos: bool = True) -> np.ndarray:
    """BOS, one note at each step (in order), EOS."""
    rows, beat = [special(BOS_ID)], 0
    for i, step in enumerate(steps):
        rows.append(note(step // 16 - beat, step % 16, pitch=40 + i % 60))
        beat = step // 16
    if eos:
        rows.append(special(EOS_ID))
    return np.stack(rows)


def random_piece(seed: int, n: int = 120) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = np.sort(rng.integers(0, 16 * 60, n))
    return piece(steps.tolist())


def without_time(rows: np.ndarray) -> np.ndarray:
    return np.delete(rows, [1, 2], axis=1)


def clock_steps(rows: np.ndarray) -> list[int]:
    """Steps ``MusicalClock`` reads at the event rows of ``rows``."""
    clock, steps = MusicalClock(), []
    for row in rows:
        clock.advance(row)
        if is_event_row(row[None])[0]:
            steps.append(clock.step)
    return steps


def plain(rows: np.ndarray) -> np.ndarray:
    """``rows`` without a final EOS (a layout keeps no EOS before the middle)."""
    return rows[:-1] if rows[-1, 0] == EOS_ID else rows


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("training", [False, True])
def test_round_trip_keeps_every_event_at_its_step(seed, training):
    rows = random_piece(seed)
    steps = event_steps(rows)
    start, end = 16 * 10 + 4, 16 * 25 + 12  # not on beats: any steps work
    layout = fim_rows(rows, start, end, training=training)
    assert len(layout) == len(rows) - 1 + 3 + training  # the EOS dropped; SPAN, SPAN, MIDDLE[, END]
    parts = split_fim_rows(layout)
    assert (parts.start_step, parts.end_step) == (start, end)
    assert parts.ended is training and layout[parts.middle_at, 0] == FIM_MIDDLE_ID
    events = is_event_row(rows)
    got = np.concatenate([parts.prefix, parts.middle, parts.suffix])
    got_steps = np.concatenate([parts.prefix_steps, parts.middle_steps, parts.suffix_steps])
    keep = is_event_row(got)
    order = np.argsort(got_steps[keep], kind="stable")
    np.testing.assert_array_equal(got_steps[keep][order], steps[events])
    np.testing.assert_array_equal(without_time(got[keep][order]), without_time(rows[events]))
    assert (parts.middle_steps >= start).all() and (parts.middle_steps < end).all()
    assert (parts.suffix_steps >= end).all()
    # the prefix and the middle are the piece's own rows
    np.testing.assert_array_equal(np.concatenate([parts.prefix, parts.middle]), rows[:len(parts.prefix) + len(parts.middle)])
    np.testing.assert_array_equal(join_fim_rows(layout), plain(rows))
    if training:  # the END row is the row after the middle in the piece
        np.testing.assert_array_equal(layout[-1], rows[len(parts.prefix) + len(parts.middle)])


@pytest.mark.parametrize("seed", range(3))
def test_musical_clock_reads_the_original_steps(seed):
    rows = random_piece(seed, n=60)  # one pitch per note: a row's ids but the time name it
    layout = fim_rows(rows, 16 * 8, 16 * 20, training=True)
    events = is_event_row(layout)
    steps = fim_steps(layout)
    assert clock_steps(layout) == steps[events].tolist()
    original = dict(zip(map(bytes, without_time(rows[is_event_row(rows)]).astype(np.int64)),
                        event_steps(rows)[is_event_row(rows)].tolist(), strict=True))
    for row, step in zip(layout[events], steps[events], strict=True):
        assert original[bytes(without_time(row[None])[0].astype(np.int64))] == step
    spans = np.flatnonzero(layout[:, 0] == FIM_SPAN_ID)
    clock = MusicalClock.after(layout[:spans[0] + 1])  # the opening SPAN: at the span end
    assert clock.step == 16 * 20 and clock.bars == pytest.approx(5.0) and clock.suffix_origin.step == 0
    clock = MusicalClock.after(layout[:spans[1] + 1])  # the closing one: back at the start
    assert clock.step == 0 and clock.seconds == 0.0 and clock.suffix_origin is None and clock.span is None
    middle_at = np.flatnonzero(layout[:, 0] == FIM_MIDDLE_ID)[0]
    clock = MusicalClock.after(layout[:middle_at + 1])
    assert clock.span == (16 * 8, 16 * 20)
    assert clock.step == MusicalClock.after(layout[:middle_at]).step == steps[middle_at - 1] < 16 * 8
    copied = clock.copy()
    assert copied == clock and copied is not clock


def test_sentinel_rows_and_timing():
    # events at steps 3, 20 (beat 1), 70 (beat 4), 100 (beat 6), 131 (beat 8); span [64, 128) = beats 4..8
    rows = piece([3, 20, 70, 100, 131])
    layout = fim_rows(rows, 64, 128, training=True)
    assert layout[:, 0].tolist() == [FIM_SPAN_ID, 3, FIM_SPAN_ID, BOS_ID, 3, 3, FIM_MIDDLE_ID, 3, 3, 3]
    # the span ends 8 beats after the origin, on its 16th 0; the suffix's 131 = beat 8 + 3 is timed from there
    assert layout[0].tolist() == [FIM_SPAN_ID, T1 + 0, T1 + 8, T2 + 0, PAD_ID, PAD_ID, PAD_ID, PAD_ID]
    assert layout[1, 1:3].tolist() == [T1 + 0, T2 + 3]
    assert layout[2].tolist() == [FIM_SPAN_ID] + [PAD_ID] * 7
    np.testing.assert_array_equal(layout[3:6], rows[:3])  # BOS, 3, 20: the prefix as tokenized
    # 3 beats from the last prefix event (beat 1) to the start (beat 4, 16th 0); 4 beats long, ends on 16th 0
    assert layout[6].tolist() == [FIM_MIDDLE_ID, T1 + 3, T2 + 0, T1 + 4, T2 + 0, PAD_ID, PAD_ID, PAD_ID]
    np.testing.assert_array_equal(layout[7:], rows[3:6])  # 70, 100 as tokenized, then END = 131 as tokenized
    assert fim_steps(layout).tolist() == [128, 131, 0, 0, 3, 20, 20, 70, 100, 131]
    parts = split_fim_rows(layout)
    assert parts.middle_steps.tolist() == [70, 100] and parts.ended and parts.middle_at == 6
    assert len(fim_rows(rows, 64, 128)) == len(rows) - 1 + 3  # no END row outside training, no EOS
    # a span start in the middle of a beat, after a gap: time2 is the start's own 16th
    assert fim_rows(rows, 37, 90)[7, :5].tolist() == [FIM_MIDDLE_ID, T1 + 1, T2 + 5, T1 + 3, T2 + 10]
    # a window read after an event at step 1000 (beat 62): the span end counts from that beat, in two time1 ids
    window = rows[1:-1]  # the events 3, 20, ... as if cut from a piece after an event at beat 62
    layout = fim_rows(window, 62 * 16 + 10 * 16, 62 * 16 + 130 * 16 + 5, previous_step=1000)
    assert layout[0, :4].tolist() == [FIM_SPAN_ID, T1 + 1, T1 + 130 - 128, T2 + 5]
    assert fim_steps(layout, previous_step=1000)[0] == 62 * 16 + 130 * 16 + 5


def test_bars_follow_time_signatures():
    assert bar_steps(piece([0, 70, 200])).tolist() == [0, 64, 128, 192, 256]  # 4/4 when none
    rows = np.stack([special(BOS_ID), signature(0, 0, 3, 4), note(0, 0), note(5, 0),  # 3/4: bars of 48 steps
                     signature(4, 0, 3, 4),  # the same signature again (beat 9 = bar 4): no change
                     signature(3, 0, 6, 8),  # 6/8 at beat 12 (bar 5): the same bar length, 48 steps
                     signature(3, 0, 4, 4),  # 4/4 at beat 15 (step 240, bar 6)
                     note(6, 8), special(EOS_ID)])  # the last event at beat 21 + 8/16: step 344
    assert bar_steps(rows).tolist() == [0, 48, 96, 144, 192, 240, 304, 368]
    rng = np.random.default_rng(0)
    for _ in range(20):
        start, end = draw_span(rows, rng, 1, 2)
        assert start in (0, 48, 96, 144, 192, 240, 304) and end in (48, 96, 144, 192, 240, 304, 368)
        fim_rows(rows, start, end, training=True)


def test_span_limits():
    rows = piece([0, 16 * 100, 16 * 200, 16 * 300])
    with pytest.raises(ValueError, match="128 beats long"):
        fim_rows(rows, 16 * 10, 16 * 138)
    fim_rows(rows, 16 * 10, 16 * 137)  # 127 beats: the longest
    with pytest.raises(ValueError, match="130 beats after"):
        fim_rows(rows[:3], 16 * 230, 16 * 240)  # after the last event, at beat 100
    with pytest.raises(ValueError, match="end_step > start_step"):
        fim_rows(rows, 64, 64)
    with pytest.raises(ValueError, match="16384 beats after the piece's origin"):
        span_rows(16 * 16384 + 3, previous_step=0)
    assert span_rows(16 * 16384 + 3, previous_step=17)[0][1:4].tolist() == [T1 + 127, T1 + 127, T2 + 3]
    window = rows[1:]  # a window cut from a piece: row 0 is an event and must stay before the span
    with pytest.raises(ValueError, match="row 0"):
        fim_rows(window, 0, 64)
    with pytest.raises(ValueError, match="not an event"):
        fim_rows(np.stack([special(BOS_ID), special(EOS_ID), note(1, 0)]), 0, 64)
    with pytest.raises(ValueError, match="two SPAN rows"):
        split_fim_rows(rows)


def test_empty_suffix_and_empty_middle():
    rows = piece([0, 20, 40], eos=False)
    layout = fim_rows(rows, 32, 96, training=True)  # nothing at or after 96: no suffix, so no END row
    assert layout[:, 0].tolist() == [FIM_SPAN_ID, FIM_SPAN_ID, BOS_ID, 3, 3, FIM_MIDDLE_ID, 3]
    parts = split_fim_rows(layout)
    assert len(parts.suffix) == 0 and parts.middle_steps.tolist() == [40] and not parts.ended
    np.testing.assert_array_equal(join_fim_rows(layout), rows)
    rows = piece([0, 20, 40])  # the piece ends after the span: the END row is its EOS
    layout = fim_rows(rows, 32, 96, training=True)
    assert layout[:, 0].tolist() == [FIM_SPAN_ID, FIM_SPAN_ID, BOS_ID, 3, 3, FIM_MIDDLE_ID, 3, EOS_ID]
    assert split_fim_rows(layout).ended
    np.testing.assert_array_equal(join_fim_rows(layout), plain(rows))
    layout = fim_rows(rows, 21, 39, training=True)  # no event in the span
    assert layout[:, 0].tolist() == [FIM_SPAN_ID, 3, FIM_SPAN_ID, BOS_ID, 3, 3, FIM_MIDDLE_ID, 3]
    np.testing.assert_array_equal(layout[-1], rows[3])  # END: the event at 40 as tokenized (after 20)
    parts = split_fim_rows(layout)
    assert len(parts.middle) == 0 and parts.ended
    np.testing.assert_array_equal(join_fim_rows(layout), plain(rows))
    layout = fim_rows(rows, 0, 16)  # the span at the very start: the prefix is BOS alone
    assert layout[:, 0].tolist() == [FIM_SPAN_ID, 3, 3, FIM_SPAN_ID, BOS_ID, FIM_MIDDLE_ID, 3]
    assert layout[5].tolist()[:5] == [FIM_MIDDLE_ID, T1, T2, T1 + 1, T2]
    np.testing.assert_array_equal(join_fim_rows(layout), plain(rows))


def test_a_prompt_and_generated_rows_past_the_end():
    rows = piece([0, 20, 40, 90])
    layout = fim_rows(rows, 32, 64)
    parts = split_fim_rows(layout)
    prompt = layout[:parts.middle_at + 1]  # ends with the MIDDLE row
    parts = split_fim_rows(prompt)
    assert (parts.start_step, parts.end_step) == (32, 64) and len(parts.middle) == 0 and not parts.ended
    assert MusicalClock.after(prompt).span == (32, 64)
    generated = np.concatenate([layout, [note(0, 14), note(2, 1), note(0, 5)]])  # 46, then 65: past the end
    parts = split_fim_rows(generated)
    assert parts.middle_steps.tolist() == [40, 46] and parts.ended
    joined = join_fim_rows(generated)
    assert event_steps(joined)[is_event_row(joined)].tolist() == [0, 20, 40, 46, 90]
    assert not (prompt[:, 0] == EOS_ID).any()  # the grammar would see a finished piece


def test_fim_prompt_and_bar_span():
    rows = random_piece(2, n=80)
    start, end = bar_span(rows, 3, 6)
    assert (start, end) == (3 * 64, 6 * 64)
    prompt = fim_prompt(rows, start, end)
    layout = fim_rows(rows, start, end)
    parts = split_fim_rows(layout)
    np.testing.assert_array_equal(prompt, layout[:parts.middle_at + 1])
    assert MusicalClock.after(prompt).span == (start, end) and prompt[-1, 0] == FIM_MIDDLE_ID
    np.testing.assert_array_equal(join_fim_rows(np.concatenate([prompt, parts.middle])), plain(rows))
    with pytest.raises(ValueError, match="bars"):
        bar_span(rows, 3, 3)
    with pytest.raises(ValueError, match="bars"):
        bar_span(rows, 0, 1000)


def test_max_rows_drops_the_suffix_tail():
    rows = random_piece(0, n=60)
    layout = fim_rows(rows, 16 * 10, 16 * 20, training=True, max_rows=len(rows))
    assert len(layout) == len(rows)
    full = fim_rows(rows, 16 * 10, 16 * 20, training=True)
    closing = np.flatnonzero(full[:, 0] == FIM_SPAN_ID)[1]
    dropped = len(full) - len(rows)
    np.testing.assert_array_equal(layout[:closing - dropped], full[:closing - dropped])
    np.testing.assert_array_equal(layout[closing - dropped:], full[closing:])
    with pytest.raises(ValueError, match="max_rows"):
        fim_rows(rows, 16 * 50, 16 * 59, training=True, max_rows=len(rows) - 10)


def test_draw_span_is_seeded_and_fits():
    rows = random_piece(1, n=200)
    bars = bar_steps(rows)
    draws = [draw_span(rows, np.random.default_rng([7, i]), 1, 8) for i in range(30)]
    assert draws == [draw_span(rows, np.random.default_rng([7, i]), 1, 8) for i in range(30)]
    lengths = set()
    for start, end in draws:
        assert start in bars and end in bars and start <= event_steps(rows).max()
        lengths.add(int(np.searchsorted(bars, end) - np.searchsorted(bars, start)))
        fim_rows(rows, start, end, training=True)
    assert lengths <= set(range(1, 9)) and len(lengths) > 3
    window = rows[50:150]  # a window cut from the piece: timed after the event before it, on the piece's bars
    previous = int(event_steps(rows)[49])
    window_steps = event_steps(window, previous)
    np.testing.assert_array_equal(window_steps, event_steps(rows)[50:150])
    for i in range(20):
        start, end = draw_span(window, np.random.default_rng(i), bars=bars, previous_step=previous, min_rows_after=4)
        assert start > window_steps[0] and start in bars and end in bars
        layout = fim_rows(window, start, end, training=True, max_rows=len(window), previous_step=previous)
        parts = split_fim_rows(layout, previous_step=previous)
        assert (parts.start_step, parts.end_step) == (start, end)
    assert draw_span(np.stack([special(BOS_ID), special(EOS_ID)]), np.random.default_rng(0)) is None
    with pytest.raises(ValueError):
        draw_span(rows, np.random.default_rng(0), 3, 2)


def test_real_piece_round_trip(pop909_files):
    from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer

    rows = MidiEventTransformerTokenizer().encode_midi(pop909_files[0]).astype(np.int64)
    rng = np.random.default_rng(0)
    for _ in range(5):
        start, end = draw_span(rows, rng, 1, 8)
        layout = fim_rows(rows, start, end, training=True)
        np.testing.assert_array_equal(join_fim_rows(layout), plain(rows))
        events = is_event_row(layout)
        assert clock_steps(layout) == fim_steps(layout)[events].tolist()
        assert sorted(fim_steps(layout)[events][:-1].tolist()) == event_steps(rows)[is_event_row(rows)].tolist()
