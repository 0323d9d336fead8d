"""Fill-in-the-middle (FIM): the layout of event rows that lets a left-to-right model write a span given both sides.

Pure numpy; training (``training/data.MidiWindowDataset(fim_rate=...)``), evaluation
(``evaluation/infill.evaluate_infill``) and generation build and read the layout with these functions only.

Time
----
A row's time is ``time1`` (beats since the previous event row's beat) and ``time2`` (the 16th within the beat), so
an event starts at step ``16 * beat + time2`` (``musical_time.event_step``). A *span* is a half-open range of
steps ``[start_step, end_step)``, usually whole bars (:func:`bar_steps`, :func:`draw_span`); ``start_beat`` and
``end_beat`` are ``start_step // 16`` and ``end_step // 16``. The *origin* is the step the piece's first row is
timed from (``previous_step``: 0 for a piece from its start, the step of the event before a window cut from one).

Layout
------
Suffix first, then the prefix and the middle with one row between them (the "SPM" order of Bavarian et al. 2022,
"Efficient Training of Language Models to Fill in the Middle"), built by :func:`fim_rows` from a piece ``rows``
(n, 8) as tokenized::

    SPAN     [FIM_SPAN_ID, time1(E // 128), time1(E % 128), time2(end_step % 16), PAD x4]
               E = end_beat - the origin's beat (0..16383): where the span ends, so that the suffix reads at its
               own steps
    suffix   every event that starts at or after end_step (no EOS: a prompt holds no EOS before the middle); the
             first event's time1 counts beats from end_beat, the others chain as usual
    SPAN     [FIM_SPAN_ID, PAD x7]: the suffix is over; the clock returns to the origin
    prefix   rows[0] (BOS, or a window's first event), then every event that starts before start_step: the rows as
             tokenized, ids unchanged
    MIDDLE   [FIM_MIDDLE_ID, time1(a), time2(start_step % 16), time1(L), time2(end_step % 16), PAD x3]
               a = start_beat - the beat of the last prefix event (of the origin when the prefix has no event)
               L = end_beat - start_beat (the span's length in beats, 0..127)
             The clock stays at the last prefix event.
    middle   every event that starts in [start_step, end_step): the rows as tokenized, ids unchanged (the first
             is still timed from the last prefix event)
    END      (training examples only) the row that follows the middle in the piece: the first suffix event, timed
             from the last middle event, or EOS when the piece ends after the span; it teaches that the span is
             over. Generation stops the middle likewise, by time: an event at or past end_step (or EOS) ends it.

So ``prefix + MIDDLE + middle`` reads as the piece itself with one row inserted: the middle continues the prefix as
in left-to-right training, and the suffix sits before them as context. Every id of the prefix, the middle and the
END row is the piece's own; in the suffix only the first event's time1 changes. A reader of the layout
(``musical_time.MusicalClock.advance``, :func:`fim_steps`) keeps one clock: the first SPAN row notes the origin and
jumps to the span end, the second returns to the origin, the MIDDLE row notes the span (``(start_step,
end_step)``) without moving. Every event of the layout then reads at its original step.

(A first version put the prefix first: prefix, SPAN, suffix, MIDDLE, middle. Fine-tuning the shipped model on it
for 660 steps, the middle's NLL given both sides was worse than given the past only, 1.061 against 1.022 nats a
token: the rows right before the middle were the suffix's, far from the span in time, and the model had to
learn to look past them. Here the prefix's last rows come right before the middle, as in every window the model
was trained on.)

:func:`split_fim_rows` reads a layout back into its parts and :func:`join_fim_rows` into a plain piece (prefix +
middle + suffix, re-timed). The model scores every row in training (loss on all rows, as Bavarian et al.); the
sentinels are never generated (the grammar allows only events and EOS at an event start), so they need no place in
the scored id range.

Example::

    >>> rng = np.random.default_rng(0)
    >>> span = draw_span(rows, rng, min_bars=1, max_bars=8)    # (start_step, end_step) on bar lines, or None
    >>> layout = fim_rows(rows, *span, training=True)           # (n + 3 or 4, 8) (n + 2 or 3 with the EOS dropped)
    >>> parts = split_fim_rows(layout)                          # prefix / suffix / middle and their steps
    >>> prompt = fim_prompt(rows, *bar_span(rows, 8, 12))        # bars 9-12 to write: the layout up to MIDDLE
    >>> np.array_equal(join_fim_rows(layout), rows)             # True for a piece in time order without EOS
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..vocabulary import (
    EOS_ID,
    EVENT_PARAMETERS,
    EVENT_TYPE_IDS,
    FIM_MIDDLE_ID,
    FIM_SPAN_ID,
    PAD_ID,
    PARAMETER_OFFSETS,
    PARAMETER_SIZES,
    TOKENS_PER_EVENT,
)

_STEPS = PARAMETER_SIZES["time2"]  # steps of a beat (musical_time.STEPS_PER_BEAT)
_MAX_TIME1 = PARAMETER_SIZES["time1"] - 1  # 127 beats
_TIME1, _TIME2 = PARAMETER_OFFSETS["time1"], PARAMETER_OFFSETS["time2"]
_EVENT_IDS = np.array(sorted(EVENT_TYPE_IDS.values()), dtype=np.int64)
_SIGNATURE_ID = EVENT_TYPE_IDS["time_signature"]
_NN_SLOT = 1 + EVENT_PARAMETERS["time_signature"].index("nn")


@dataclass(frozen=True)
class FimParts:
    """A FIM layout read back (:func:`split_fim_rows`).

    Attributes:
        prefix: ``(p, 8)`` rows between the closing SPAN row and MIDDLE (row 0 of the piece first), as in the layout
            (= as tokenized).
        suffix: ``(s, 8)`` rows between the two SPAN rows, as in the layout (the first event timed from ``end_step``'s
            beat).
        middle: ``(m, 8)`` event rows after MIDDLE that start before ``end_step``, up to the first row that does
            not (an event at or past ``end_step``, EOS, a pad or sentinel row: the middle is over there).
        prefix_steps, suffix_steps, middle_steps: ``(p,)``, ``(s,)``, ``(m,)`` int64 absolute step of each row
            (:func:`fim_steps`; a row that is not an event has the step of the event before it).
        start_step, end_step: the span ``[start_step, end_step)``.
        middle_at: the MIDDLE row's index in the layout (a generation prompt is ``layout[:middle_at + 1]``).
        ended: whether the middle was closed (by an event at or past ``end_step``, or EOS).
    """

    prefix: np.ndarray
    suffix: np.ndarray
    middle: np.ndarray
    prefix_steps: np.ndarray
    suffix_steps: np.ndarray
    middle_steps: np.ndarray
    start_step: int
    end_step: int
    middle_at: int
    ended: bool


def is_event_row(rows: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: rows (n, 8) whose first id is an event type (not BOS, EOS, pad or a sentinel)."""
    return np.isin(np.asarray(rows)[:, 0], _EVENT_IDS)


def event_steps(rows: np.ndarray, previous_step: int = 0) -> np.ndarray:
    """Absolute step of every row of a plain piece (no sentinels), as ``musical_time.MusicalClock`` reads them.

    Args:
        rows: ``(n, 8)`` ids.
        previous_step: the step of the event before ``rows[0]`` (0 at a piece's start; a window cut from a piece
            is read as if its first row followed an event at step ``previous_step``).

    Returns:
        ``(n,)`` int64: an event's start step; a row that is not an event (BOS, EOS, pad) gets the step of the last
        event before it (``previous_step`` before any).
    """
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, TOKENS_PER_EVENT)
    events = is_event_row(rows)
    time1 = np.where(events, rows[:, 1] - _TIME1, 0)
    beats = previous_step // _STEPS + np.cumsum(time1)
    steps = np.where(events, beats * _STEPS + rows[:, 2] - _TIME2, -1)
    last_event = np.maximum.accumulate(np.where(events, np.arange(len(rows)), -1)) if len(rows) else np.zeros(0, int)
    return np.where(last_event >= 0, steps[np.maximum(last_event, 0)], previous_step).astype(np.int64)


def _signature_bar_length(row: np.ndarray) -> int:
    numerator = int(row[_NN_SLOT]) - PARAMETER_OFFSETS["nn"] + 1
    denominator = 2 ** (int(row[_NN_SLOT + 1]) - PARAMETER_OFFSETS["dd"] + 1)
    return max(1, numerator * 4 * _STEPS // denominator)


def bar_steps(rows: np.ndarray, *, steps: np.ndarray | None = None) -> np.ndarray:
    """Start steps of the bars of a plain piece, from its ``time_signature`` rows (4/4 before the first).

    Bar 1 starts at step 0. A time signature that changes the bar length starts a new bar at its step (as
    notation programs read a change off the bar line); one that repeats the signature in force changes nothing.

    Args:
        rows: ``(n, 8)`` ids of a piece from its start (BOS first).
        steps: ``(n,)`` steps of ``rows`` when already known (:func:`event_steps`).

    Returns:
        ``(b,)`` int64 increasing bar starts, up to and including the first bar start after the last event, so
        that every event lies in some ``[bars[i], bars[i + 1])``.
    """
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, TOKENS_PER_EVENT)
    steps = event_steps(rows) if steps is None else np.asarray(steps, dtype=np.int64)
    events = is_event_row(rows)
    last = int(steps[events].max()) if events.any() else 0
    changes: list[tuple[int, int]] = [(0, 4 * _STEPS)]  # (step, bar length) in force from step
    for index in np.flatnonzero(rows[:, 0] == _SIGNATURE_ID):
        step, length = int(steps[index]), _signature_bar_length(rows[index])
        if length == changes[-1][1]:
            continue
        if step <= changes[-1][0]:  # several signatures at one step: the last one wins
            changes[-1] = (changes[-1][0], length)
        else:
            changes.append((step, length))
    starts: list[np.ndarray] = []
    for i, (step, length) in enumerate(changes):
        stop = changes[i + 1][0] if i + 1 < len(changes) else last + 1
        count = max(1, -(-(stop - step) // length))  # bars starting in [step, stop)
        starts.append(step + length * np.arange(count, dtype=np.int64))
    bars = np.concatenate(starts)
    end = changes[-1][0] + changes[-1][1] * (max(0, last - changes[-1][0]) // changes[-1][1] + 1)
    return np.append(bars[bars < end], end).astype(np.int64)


def _time_ids(beats: int, sixteenth: int) -> tuple[int, int]:
    if not 0 <= beats <= _MAX_TIME1:
        raise ValueError(f"a time1 of {beats} beats is outside 0..{_MAX_TIME1}")
    return _TIME1 + beats, _TIME2 + sixteenth


def _chain(rows: np.ndarray, steps: np.ndarray, previous_step: int) -> np.ndarray:
    """Copy of event rows with time1/time2 set so that they read at ``steps`` after an event at ``previous_step``."""
    rows = rows.copy()
    beats = np.concatenate([[previous_step // _STEPS], steps // _STEPS])
    time1 = np.diff(beats)
    bad = time1[(time1 < 0) | (time1 > _MAX_TIME1)]
    if len(bad):
        raise ValueError(f"the events cannot be timed in order: a time1 of {int(bad[0])} beats is outside "
                         f"0..{_MAX_TIME1}")
    rows[:, 1] = _TIME1 + time1
    rows[:, 2] = _TIME2 + steps % _STEPS
    return rows


def span_rows(end_step: int, previous_step: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The two SPAN rows ``(8,)`` around a suffix: the opening one (where the span ends, counted from the origin
    ``previous_step``'s beat) and the closing one ``[FIM_SPAN_ID, PAD x7]``.

    Raises:
        ValueError: a span end before the origin's beat or more than 16383 beats after it.
    """
    beats = end_step // _STEPS - previous_step // _STEPS
    if not 0 <= beats < (_MAX_TIME1 + 1) ** 2:
        raise ValueError(f"the span ends {beats} beats after the piece's origin (0..{(_MAX_TIME1 + 1) ** 2 - 1})")
    opening = np.full(TOKENS_PER_EVENT, PAD_ID, dtype=np.int64)
    opening[:4] = [FIM_SPAN_ID, _TIME1 + beats // (_MAX_TIME1 + 1), _TIME1 + beats % (_MAX_TIME1 + 1),
                   _TIME2 + end_step % _STEPS]
    closing = np.full(TOKENS_PER_EVENT, PAD_ID, dtype=np.int64)
    closing[0] = FIM_SPAN_ID
    return opening, closing


def middle_row(last_step: int, start_step: int, end_step: int) -> np.ndarray:
    """The MIDDLE row ``(8,)`` for a span ``[start_step, end_step)`` after a prefix whose last event is at
    ``last_step`` (the origin when the prefix has no event).

    Raises:
        ValueError: ``end_step <= start_step``, a start before ``last_step``'s beat, or a gap or length over 127 beats.
    """
    if end_step <= start_step:
        raise ValueError(f"a span needs end_step > start_step, got [{start_step}, {end_step})")
    row = np.full(TOKENS_PER_EVENT, PAD_ID, dtype=np.int64)
    row[0] = FIM_MIDDLE_ID
    try:
        row[1:3] = _time_ids(start_step // _STEPS - last_step // _STEPS, start_step % _STEPS)
    except ValueError as error:
        raise ValueError(f"the span starts {start_step // _STEPS - last_step // _STEPS} beats after the prefix's "
                         f"last event (at most {_MAX_TIME1})") from error
    try:
        row[3:5] = _time_ids(end_step // _STEPS - start_step // _STEPS, end_step % _STEPS)
    except ValueError as error:
        raise ValueError(f"the span [{start_step}, {end_step}) is {end_step // _STEPS - start_step // _STEPS} beats "
                         f"long (at most {_MAX_TIME1})") from error
    return row


def fim_rows(rows: np.ndarray, start_step: int, end_step: int, *, training: bool = False,
             previous_step: int = 0, max_rows: int | None = None) -> np.ndarray:
    """Build the FIM layout (module docstring) of a plain piece for the span ``[start_step, end_step)``.

    Args:
        rows: ``(n, 8)`` ids: row 0 (BOS, or the first event of a window), then events in time order, optionally
            ending with EOS.
        start_step, end_step: the span, in the steps :func:`event_steps` gives ``rows`` (with ``previous_step``).
        training: append the END row (a training example); False for a generation prompt or an evaluation.
        previous_step: the origin: the step the first row is read after (see :func:`event_steps`).
        max_rows: drop rows from the end of the suffix (the rows furthest from the span) so that the layout has at
            most this many rows.

    Returns:
        ``(k, 8)`` int64: SPAN, suffix, SPAN, prefix, MIDDLE, middle[, END]; ``k = n + 3`` (``n + 4`` with the END
        row; one less when the piece's EOS is dropped from the suffix; fewer with ``max_rows``).

    Raises:
        ValueError: ``rows`` is not a piece as above, row 0 is an event at or after ``start_step``, a time that
        does not fit (the span's length or its start after the prefix over 127 beats, its end over 16383 beats
        after the origin), or ``max_rows`` that would need more than the suffix dropped.
    """
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, TOKENS_PER_EVENT)
    if len(rows) == 0:
        raise ValueError("a FIM layout needs at least one row (BOS or an event)")
    steps = event_steps(rows, previous_step)
    events = is_event_row(rows)
    body = np.arange(1, len(rows))
    has_eos = len(rows) > 1 and rows[-1, 0] == EOS_ID
    if has_eos:
        body = body[:-1]
    if not events[body].all():
        bad = int(body[~events[body]][0])
        raise ValueError(f"row {bad} (first id {int(rows[bad, 0])}) is not an event: a piece holds row 0, events and "
                         "a final EOS only")
    if events[0] and steps[0] >= start_step:
        raise ValueError(f"row 0 is an event at step {int(steps[0])}, not before the span start {start_step}: it must "
                         "stay in the prefix")
    body_steps = steps[body]
    prefix_index = np.concatenate([[0], body[body_steps < start_step]]).astype(np.int64)
    middle_index = body[(body_steps >= start_step) & (body_steps < end_step)]
    suffix_index = body[body_steps >= end_step]
    prefix_events = prefix_index[events[prefix_index]]
    last_step = int(steps[prefix_events[-1]]) if len(prefix_events) else previous_step

    middle_at = middle_row(last_step, start_step, end_step)
    opening, closing = span_rows(end_step, previous_step)
    suffix = _chain(rows[suffix_index], steps[suffix_index], end_step)
    last_middle = int(steps[middle_index[-1]]) if len(middle_index) else last_step
    middle = _chain(rows[middle_index], steps[middle_index], last_step)  # = rows[middle_index] in time order
    end = np.zeros((0, TOKENS_PER_EVENT), dtype=np.int64)
    if training and len(suffix_index):
        end = _chain(rows[suffix_index[:1]], steps[suffix_index[:1]], last_middle)
    elif training and has_eos:
        end = rows[-1:].copy()
    if max_rows is not None:
        excess = len(prefix_index) + len(suffix) + len(middle) + len(end) + 3 - max_rows
        if excess > len(suffix):
            raise ValueError(f"the layout needs {excess + max_rows} rows; dropping the suffix ({len(suffix)} rows) "
                             f"does not bring it to max_rows={max_rows}")
        if excess > 0:
            suffix = suffix[:len(suffix) - excess]
    return np.concatenate([opening[None], suffix, closing[None], rows[prefix_index], middle_at[None], middle, end])


def fim_prompt(rows: np.ndarray, start_step: int, end_step: int, *, previous_step: int = 0,
               max_rows: int | None = None) -> np.ndarray:
    """A generation prompt: the FIM layout of ``rows`` up to and including the MIDDLE row (the piece's own events
    in the span left out, to be written by the model).

    Args and Raises: as :func:`fim_rows` (``max_rows`` counts the prompt's rows).

    Returns:
        ``(k, 8)`` int64: SPAN, suffix, SPAN, prefix, MIDDLE. Generate after it, read the steps with
        ``MusicalClock`` (its ``span`` is ``(start_step, end_step)`` once the MIDDLE row is read) and stop at the
        first event at or past ``end_step`` (or EOS); :func:`join_fim_rows` of prompt + generated rows gives the
        piece.
    """
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, TOKENS_PER_EVENT)
    steps = event_steps(rows, previous_step)
    inside = is_event_row(rows) & (steps >= start_step) & (steps < end_step)
    inside[0] = False
    limit = None if max_rows is None else max_rows + int(inside.sum())
    layout = fim_rows(rows, start_step, end_step, previous_step=previous_step, max_rows=limit)
    return layout[:int(np.flatnonzero(layout[:, 0] == FIM_MIDDLE_ID)[0]) + 1]


def bar_span(rows: np.ndarray, start_bar: int, end_bar: int) -> tuple[int, int]:
    """Steps ``(start_step, end_step)`` of bars ``start_bar`` (0 = the first bar) to ``end_bar`` (excluded) of a piece,
    from :func:`bar_steps`.

    Raises:
        ValueError: ``not 0 <= start_bar < end_bar``, or ``end_bar`` past the bar after the piece's last event.
    """
    bars = bar_steps(rows)
    if not 0 <= start_bar < end_bar <= len(bars) - 1:
        raise ValueError(f"bars [{start_bar}, {end_bar}) are not within the piece's {len(bars) - 1} bars")
    return int(bars[start_bar]), int(bars[end_bar])


class _LayoutReader:
    """Steps of rows read one by one, as ``musical_time.MusicalClock.advance`` reads them (without seconds/bars)."""

    def __init__(self, previous_step: int = 0) -> None:
        self.step = previous_step
        self.origin: int | None = None  # the step to return to, while reading a suffix
        self.span: tuple[int, int] | None = None

    def read(self, row: np.ndarray) -> int:
        first = int(row[0])
        if first == FIM_SPAN_ID:
            if self.origin is None:  # opening: jump to the span end
                self.origin = self.step
                beats = (int(row[1]) - _TIME1) * (_MAX_TIME1 + 1) + int(row[2]) - _TIME1
                self.step = (self.step // _STEPS + beats) * _STEPS + int(row[3]) - _TIME2
            else:  # closing: back to the origin
                self.step, self.origin = self.origin, None
        elif first == FIM_MIDDLE_ID:
            start = (self.step // _STEPS + int(row[1]) - _TIME1) * _STEPS + int(row[2]) - _TIME2
            end = (start // _STEPS + int(row[3]) - _TIME1) * _STEPS + int(row[4]) - _TIME2
            self.span = (start, end)
        elif first in EVENT_TYPE_IDS.values():
            self.step = (self.step // _STEPS + int(row[1]) - _TIME1) * _STEPS + int(row[2]) - _TIME2
        return self.step


def _read_layout(rows: np.ndarray, previous_step: int) -> tuple[np.ndarray, tuple[int, int] | None]:
    reader = _LayoutReader(previous_step)
    steps = np.array([reader.read(row) for row in rows], dtype=np.int64)
    return steps, reader.span


def fim_steps(rows: np.ndarray, previous_step: int = 0) -> np.ndarray:
    """The absolute step of every row of a FIM layout (or of a plain piece), as ``MusicalClock`` reads them.

    Args:
        rows: ``(n, 8)`` ids.
        previous_step: the origin: the step the piece's first row is read after.

    Returns:
        ``(n,)`` int64: an event's start step; the opening SPAN row's is the span end (where the suffix is timed
        from), the closing one's the origin; other rows (BOS, EOS, pad, MIDDLE) have the step of the row before.
    """
    return _read_layout(np.asarray(rows, dtype=np.int64).reshape(-1, TOKENS_PER_EVENT), previous_step)[0]


def split_fim_rows(rows: np.ndarray, previous_step: int = 0) -> FimParts:
    """Read a FIM layout (:func:`fim_rows`, possibly followed by generated middle rows) back into its parts.

    Args:
        rows: ``(n, 8)`` ids: SPAN, suffix, SPAN, prefix, MIDDLE, then optionally middle rows.
        previous_step: the origin the layout was built with.

    Returns:
        [`FimParts`]. The END row of a training example, and any generated event at or past ``end_step``, closes
        the middle and is not part of it.

    Raises:
        ValueError: not two SPAN rows and one MIDDLE row after them.
    """
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, TOKENS_PER_EVENT)
    spans, middles = np.flatnonzero(rows[:, 0] == FIM_SPAN_ID), np.flatnonzero(rows[:, 0] == FIM_MIDDLE_ID)
    if len(spans) != 2 or len(middles) != 1 or not spans[1] < middles[0]:
        raise ValueError(f"a FIM layout has two SPAN rows then one MIDDLE row, got SPAN rows at {spans.tolist()} and "
                         f"MIDDLE rows at {middles.tolist()}")
    opening, closing, middle_at = int(spans[0]), int(spans[1]), int(middles[0])
    steps, (start, end) = _read_layout(rows, previous_step)
    after = np.arange(middle_at + 1, len(rows))
    closes = ~is_event_row(rows[after]) | (steps[after] >= end) if len(after) else np.zeros(0, dtype=bool)
    stop = int(after[np.argmax(closes)]) if closes.any() else len(rows)
    middle = slice(middle_at + 1, max(middle_at + 1, stop))
    prefix, suffix = slice(closing + 1, middle_at), slice(opening + 1, closing)
    return FimParts(prefix=rows[prefix], suffix=rows[suffix], middle=rows[middle],
                    prefix_steps=steps[prefix], suffix_steps=steps[suffix], middle_steps=steps[middle],
                    start_step=start, end_step=end, middle_at=middle_at, ended=bool(closes.any()))


def join_fim_rows(rows: np.ndarray, previous_step: int = 0) -> np.ndarray:
    """A FIM layout (with its middle written) as a plain piece: prefix + middle + suffix, each event at its step.

    Args:
        rows: ``(n, 8)`` ids of a layout (see :func:`split_fim_rows`).
        previous_step: the origin the layout was built with.

    Returns:
        ``(p + m + s, 8)`` int64 rows: the prefix unchanged, then the middle's and the suffix's events re-timed to
        chain after it (time2 and every other id unchanged). The layout holds no EOS before the middle, so neither
        does the result: for a piece in time order ``join_fim_rows(fim_rows(rows, a, b))`` is ``rows`` without its
        final EOS.

    Raises:
        ValueError: a time1 that would exceed 127 beats (a silent span longer than that) or events out of order.
    """
    parts = split_fim_rows(rows, previous_step)
    suffix_events = is_event_row(parts.suffix)
    events = np.concatenate([parts.middle, parts.suffix[suffix_events]])
    steps = np.concatenate([parts.middle_steps, parts.suffix_steps[suffix_events]])
    prefix_events = is_event_row(parts.prefix)
    last = int(parts.prefix_steps[prefix_events][-1]) if prefix_events.any() else previous_step
    return np.concatenate([parts.prefix, _chain(events, steps, last)])


def draw_span(rows: np.ndarray, rng: np.random.Generator, min_bars: int = 1, max_bars: int = 8, *,
              bars: np.ndarray | None = None, previous_step: int = 0, min_rows_after: int = 0,
              ) -> tuple[int, int] | None:
    """Draw a span of whole bars in ``rows`` for a FIM example: ``k`` bars (uniform in ``min_bars..max_bars``)
    starting at a bar (uniform among those that fit), such that :func:`fim_rows` accepts it.

    A span fits when it starts after row 0 (when row 0 is an event) and at or before the last event, ends at a bar
    line of ``bars``, is at most 127 beats long, starts at most 127 beats after the last event before it, and leaves
    at least ``min_rows_after`` events after it. When no start fits ``k`` bars,
    the other lengths are tried.

    Args:
        rows: ``(n, 8)`` ids of a piece or of a window cut from one.
        rng: the random generator (the draw is a function of its state).
        min_bars, max_bars: the span's length range in bars.
        bars: bar starts in the steps of ``rows`` (default :func:`bar_steps` of ``rows``, right for a piece from
            its start; a window cut from a piece passes the piece's bars shifted to the window's steps).
        previous_step: the step the first row is read after (see :func:`event_steps`).
        min_rows_after: rows the span must leave after it (e.g. what ``fim_rows(max_rows=...)`` will drop).

    Returns:
        ``(start_step, end_step)``, or None when no span fits.
    """
    if not 1 <= min_bars <= max_bars:
        raise ValueError(f"need 1 <= min_bars <= max_bars, got {min_bars}, {max_bars}")
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, TOKENS_PER_EVENT)
    steps = event_steps(rows, previous_step)
    events = is_event_row(rows)
    events[0] = False  # row 0 stays in the prefix
    if not events.any():
        return None
    bars = bar_steps(rows, steps=steps) if bars is None else np.asarray(bars, dtype=np.int64)
    event_steps_ = steps[events]
    first = int(steps[0]) + 1 if is_event_row(rows[:1])[0] else -(1 << 62)
    last = int(event_steps_.max())
    # the latest event before each candidate start: events in time order (tokenized pieces) make this a search
    ordered = np.maximum.accumulate(event_steps_)
    row0_step = int(steps[0]) if is_event_row(rows[:1])[0] else previous_step

    def fits(b: int, k: int) -> bool:
        start, end = int(bars[b]), int(bars[b + k])
        if start < first or start > last or end // _STEPS - start // _STEPS > _MAX_TIME1:
            return False
        before = np.searchsorted(ordered, start, side="left")
        last_before = int(ordered[before - 1]) if before else row0_step
        if start // _STEPS - last_before // _STEPS > _MAX_TIME1:
            return False
        if min_rows_after and len(ordered) - int(np.searchsorted(ordered, end)) < min_rows_after:
            return False
        return end // _STEPS - previous_step // _STEPS < (_MAX_TIME1 + 1) ** 2

    lengths = list(range(min_bars, max_bars + 1))
    first_length = int(rng.integers(min_bars, max_bars + 1))
    for k in [first_length] + [k for k in lengths if k != first_length]:
        starts = [b for b in range(len(bars) - k) if fits(b, k)]
        if starts:
            b = starts[int(rng.integers(len(starts)))]
            return int(bars[b]), int(bars[b + k])
    return None


__all__ = [
    "FimParts",
    "bar_span",
    "bar_steps",
    "draw_span",
    "event_steps",
    "fim_prompt",
    "fim_rows",
    "fim_steps",
    "is_event_row",
    "join_fim_rows",
    "middle_row",
    "span_rows",
    "split_fim_rows",
]
