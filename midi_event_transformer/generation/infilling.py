"""Rewrite a passage of a piece (infilling): bars 9-12, or seconds 20-30, of some or all of its tracks.

The span is half-open in steps (16 a beat, the tokenizer's grid): bars ``(9, 12)`` run from the start of bar 9 to
the start of bar 13 (bar 1 starts at time 0, bars counted with the prompt's time signatures, no pickup assumed);
seconds ``(20.0, 30.0)`` from the step at 20 s to the step at 30 s (the prompt's tempo changes counted). A span
that runs past the piece's end is cut there.

:func:`plan_infill` splits the prompt's rows into

* the *prefix*, every event before the span: the generation prompt, as it is;
* the *kept* events inside the span: tempo, time and key signatures, patch changes, and every event of the tracks
  not rewritten (``tracks``): written as they are by :class:`~.track_editing.KeptTracksLogitsProcessor`, which
  lets the model write only notes and control changes of the rewritten tracks, on their channels, in between;
* the *suffix*, every event from the span's end on: appended unchanged after the model's part
  (:func:`assemble_infill`).

Two paths, one plan. **Past only** (any model): the model's prompt is the prefix; it sees the prefix and the kept
events, not what follows. **Both sides** (a model trained with fill-in-the-middle, ``config.fill_in_the_middle``):
:func:`with_both_sides` makes the prompt a FIM layout (``generation.fim``): the prefix's last events, the SPAN row,
the suffix's first events and the MIDDLE row, so that the model has read what follows the span before it writes
it; it applies when the span is at most 127 beats, starts at most 127 beats after the prefix's last event, and the
prompt and the model's part fit the context.

The model's part keeps the prompt's pace (at most :attr:`InfillPlan.events_per_beat` model events start in one
beat) and its density (the next event starts within :attr:`InfillPlan.max_gap_steps`: a bar, or the longest rest
of the rewritten tracks in the prompt's span, if longer), so the span is not left empty. Its notes never start on a
(channel, pitch) that a kept note holds; :func:`assemble_infill` ends them at the span's end, and before the next
kept note on the same (channel, pitch), so reading the file back changes no kept note. An event of the model that
starts at or past the span's end ends the model's part (it is not kept).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..vocabulary import (
    EVENT_PARAMETERS,
    EVENT_TYPE_IDS,
    FIM_MIDDLE_ID,
    PARAMETER_OFFSETS,
    PARAMETER_SIZES,
    TOKENS_PER_EVENT,
)
from .fim import fim_prompt
from .musical_time import STEPS_PER_BEAT, MusicalClock, event_step
from .track_editing import NO_KEPT_NOTES, check_events_per_beat, event_steps, whole_piece

logger = logging.getLogger(__name__)

_NOTE, _CONTROL = EVENT_TYPE_IDS["note"], EVENT_TYPE_IDS["control_change"]
_EVENT_IDS = frozenset(EVENT_TYPE_IDS.values())
_TRACK_SLOT, _CHANNEL_SLOT = 3, 4
_PITCH_SLOT = 1 + EVENT_PARAMETERS["note"].index("pitch")
_DURATION_SLOT = 1 + EVENT_PARAMETERS["note"].index("duration")
_MOST_BEATS = PARAMETER_SIZES["time1"] - 1  # the longest time1: beats from one row to the next


def _value(row: Sequence[int], slot: int, parameter: str) -> int:
    return int(row[slot]) - PARAMETER_OFFSETS[parameter]


# ============================================================================================ the span
def step_at(rows: Any, *, seconds: float | None = None, bars: float | None = None) -> int:
    """The first step at or past ``seconds`` (or ``bars``) from the piece's start, with the tempo and time
    signature changes of ``rows`` ``(n, 8)`` (120 bpm and 4/4 before the first)."""
    if (seconds is None) == (bars is None):
        raise ValueError("give seconds or bars")
    target = float(seconds if seconds is not None else bars)
    clock = MusicalClock()
    for row in np.asarray(rows).tolist():
        if row[0] in _EVENT_IDS:
            at = clock.at(event_step(clock.step, row))[0 if seconds is not None else 1]
            if at >= target - 1e-9:
                break
        clock.advance(row)
    reached = clock.seconds if seconds is not None else clock.bars
    per_step = clock.tempo / 1e6 / STEPS_PER_BEAT if seconds is not None else 1 / clock.steps_per_bar
    return clock.step + max(0, math.ceil((target - reached) / per_step - 1e-9))


def piece_end_step(rows: Any) -> int:
    """The step where the piece ends: the end of its last note, or its last event's start if later."""
    rows = np.asarray(rows)
    steps = event_steps(rows)
    end = int(steps[-1]) if len(steps) else 0
    for row, step in zip(rows.tolist(), steps.tolist(), strict=True):
        if row[0] == _NOTE:
            end = max(end, step + _value(row, _DURATION_SLOT, "duration"))
    return end


def _pair(value: Any, name: str, kind: type) -> tuple:
    if isinstance(value, str):
        parts = value.replace(" ", "").split("-")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{name} must be two numbers like '9-12', got {value!r}")
        value = tuple(kind(part) if kind is float else int(part) for part in parts)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (first, last), not {type(value).__name__}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, np.integer) if kind is int
                                                        else (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must hold {'whole numbers' if kind is int else 'numbers'}, got {item!r}")
    return tuple(value)


def check_span(bars: Any = None, seconds: Any = None) -> tuple[tuple[int, int] | None, tuple[float, float] | None]:
    """``(bars, seconds)`` of an infill request as pairs (``"9-12"`` read as ``(9, 12)``), checked.

    Raises:
        ValueError: both or neither given, bars before 1 or the wrong way round, seconds below 0 or an empty
            interval. TypeError: values that are not pairs of numbers.
    """
    if bars is not None and seconds is not None:
        raise ValueError("give the span to rewrite in bars or in seconds, not both")
    if bars is None and seconds is None:
        raise ValueError("give the span to rewrite: bars (first, last) or seconds (start, end)")
    if bars is not None:
        first, last = _pair(bars, "infill_bars", int)
        if first < 1 or last < first:
            raise ValueError(f"infill_bars must be (first, last) with 1 <= first <= last, got ({first}, {last})")
        return (int(first), int(last)), None
    start, end = _pair(seconds, "infill_seconds", float)
    if not (0 <= start < end and math.isfinite(end)):
        raise ValueError(f"infill_seconds must be (start, end) with 0 <= start < end, got ({start}, {end})")
    return None, (float(start), float(end))


def span_steps(rows: Any, *, bars: Any = None, seconds: Any = None) -> tuple[int, int]:
    """``(start_step, end_step)`` of a span of ``rows`` (the whole prompt): bars ``(first, last)``, both included,
    or seconds ``(start, end)``, half-open; cut at the piece's end.

    Raises:
        ValueError: a bad span (see :func:`check_span`), one that starts at or after the piece's end, or one
            shorter than a step.
    """
    bars, seconds = check_span(bars, seconds)
    if bars is not None:
        start, end = step_at(rows, bars=bars[0] - 1), step_at(rows, bars=bars[1])
        what = f"bars {bars[0]}-{bars[1]}"
    else:
        start, end = step_at(rows, seconds=seconds[0]), step_at(rows, seconds=seconds[1])
        what = f"seconds {seconds[0]:g}-{seconds[1]:g}"
    piece_end = piece_end_step(rows)
    if start >= piece_end:
        raise ValueError(f"the span to rewrite ({what}) starts after the piece ends (at beat "
                         f"{piece_end / STEPS_PER_BEAT:g})")
    end = min(end, piece_end)
    if end <= start:
        raise ValueError(f"the span to rewrite ({what}) is empty on the 16th-note grid")
    return start, end


# ============================================================================================ the plan
@dataclass
class InfillPlan:
    """An infill of one prompt (see the module docstring); a ``track_editing.KeptEventsPlan``.

    Attributes:
        prefix_rows: ``(p, 8)`` BOS and every event before the span.
        prompt_rows: ``(n, 8)`` what the model is prompted with: ``prefix_rows`` (past only), or a FIM layout up
            to its MIDDLE row (both sides, :func:`with_both_sides`).
        prompt_step: the step the first generated row's ``time1`` counts from (the prefix's last event; the
            span's start after a FIM layout).
        kept_rows, kept_steps: ``(m, 8)`` the events kept inside the span, and their start steps ``(m,)``.
        suffix_rows, suffix_steps: ``(s, 8)`` every event from the span's end on (no EOS), and their steps.
        model_channels: the rewritten tracks -> the MIDI channel of each.
        start_step, end_step: the span, half-open, in steps.
        events_per_beat: the most model events that may start in one beat.
        kept_notes: ``(k, 4)`` ``[start, end, channel, pitch]`` of the notes kept around and inside the span.
        max_gap_steps: the model's next event starts at most this many steps after its last one (or the span's
            start).
        piece_end: the step where the prompt ends (:func:`piece_end_step`); so does the rewritten piece.
    """

    prefix_rows: np.ndarray
    prompt_rows: np.ndarray
    prompt_step: int
    kept_rows: np.ndarray
    kept_steps: np.ndarray
    suffix_rows: np.ndarray
    suffix_steps: np.ndarray
    model_channels: dict[int, int]
    start_step: int
    end_step: int
    events_per_beat: int = 4
    kept_notes: np.ndarray = field(default_factory=lambda: NO_KEPT_NOTES)
    max_gap_steps: int | None = None
    piece_end: int = 0
    allows_eos = False

    def __post_init__(self) -> None:
        check_events_per_beat(self.events_per_beat)
        if not 0 <= self.start_step < self.end_step:
            raise ValueError(f"the span must be 0 <= start_step < end_step, got {self.start_step}, {self.end_step}")

    @property
    def both_sides(self) -> bool:
        """Whether the prompt is a FIM layout (the model sees the suffix)."""
        return len(self.prompt_rows) > 0 and int(self.prompt_rows[-1, 0]) == FIM_MIDDLE_ID

    @property
    def max_model_events(self) -> int:
        """An upper bound on the events of the model's part (the pace over the span's beats, plus one)."""
        beats = -(-(self.end_step - self.start_step) // STEPS_PER_BEAT) + 1
        return self.events_per_beat * beats + 1


def _tracks_and_channels(rows: np.ndarray) -> dict[int, int]:
    """Each track with notes -> the channel most of its notes are on."""
    channels: dict[int, Counter] = {}
    for row in rows.tolist():
        if row[0] == _NOTE:
            channels.setdefault(_value(row, _TRACK_SLOT, "track"), Counter())[_value(row, _CHANNEL_SLOT,
                                                                                     "channel")] += 1
    return {track: counts.most_common(1)[0][0] for track, counts in sorted(channels.items())}


def _rewritten(row: Sequence[int], tracks: dict[int, int]) -> bool:
    return row[0] in (_NOTE, _CONTROL) and _value(row, _TRACK_SLOT, "track") in tracks


def _note_spans(rows: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """``(k, 4)`` ``[start, end, channel, pitch]`` of the notes among ``rows``."""
    notes = [(step, step + _value(row, _DURATION_SLOT, "duration"), _value(row, _CHANNEL_SLOT, "channel"),
              _value(row, _PITCH_SLOT, "pitch")) for row, step in zip(rows.tolist(), steps.tolist(), strict=True)
             if row[0] == _NOTE]
    return np.array(notes, dtype=np.int64).reshape(-1, 4)


def plan_infill(rows: Any, start_step: int, end_step: int, *, tracks: Sequence[int] | None = None,
                steps_per_bar: float | None = None) -> InfillPlan:
    """Plan rewriting ``[start_step, end_step)`` of a prompt (see :func:`span_steps`).

    Args:
        rows: the whole prompt ``(n, 8)`` as ``tokenizer.encode_midi`` gives it (BOS first; an EOS row ends it).
        start_step, end_step: the span, half-open.
        tracks: the tracks to rewrite, numbered as ``midi-event-transformer tokenize`` shows them; None: every
            track with notes.
        steps_per_bar: the shortest gap limit (default: the bar length in force at the span's start).

    Raises:
        ValueError: rows that are not a prompt, an unknown track or one without notes, a prompt without notes.
        TypeError: ``tracks`` that are not whole numbers.
    """
    rows = whole_piece(rows)
    with_notes = _tracks_and_channels(rows)
    if not with_notes:
        raise ValueError("the prompt has no notes: there is no passage to rewrite")
    if tracks is None:
        channels = with_notes
    else:
        if isinstance(tracks, (str, bytes)) or not isinstance(tracks, Sequence):
            raise TypeError(f"infill_tracks must be a list of track numbers, not {type(tracks).__name__}")
        for track in tracks:
            if isinstance(track, bool) or not isinstance(track, (int, np.integer)):
                raise TypeError(f"infill_tracks must hold track numbers (ints), got {track!r}")
            if int(track) not in with_notes:
                raise ValueError(f"infill_tracks: the prompt has no track {track} with notes (tracks with notes: "
                                 f"{', '.join(map(str, with_notes))})")
        if not tracks:
            raise ValueError("infill_tracks is empty: name at least one track to rewrite")
        channels = {int(track): with_notes[int(track)] for track in tracks}
    steps = event_steps(rows)
    is_event = np.isin(rows[:, 0], list(_EVENT_IDS))
    before = ~is_event | (steps < start_step)
    before[0] = True
    prefix_end = int(np.argmin(before)) if not before.all() else len(rows)  # rows are in time order
    suffix_start = prefix_end + int(np.sum(steps[prefix_end:] < end_step))
    span, span_steps_ = rows[prefix_end:suffix_start], steps[prefix_end:suffix_start]
    keep = np.array([not _rewritten(row, channels) for row in span.tolist()], dtype=bool).reshape(-1)
    kept, kept_steps = span[keep], span_steps_[keep]
    # notes a model note must not start on: those of the prefix (sounding into the span) and the kept ones
    kept_notes = np.concatenate([_note_spans(rows[:prefix_end], steps[:prefix_end]), _note_spans(kept, kept_steps)])
    kept_notes = kept_notes[kept_notes[:, 1] > start_step] if len(kept_notes) else NO_KEPT_NOTES

    rewritten = [step for row, step in zip(span.tolist(), span_steps_.tolist(), strict=True)
                 if row[0] == _NOTE and _value(row, _TRACK_SLOT, "track") in channels]
    span_beats = max(1, -(-(end_step - start_step) // STEPS_PER_BEAT))
    piece_beats = max(1, int(steps.max()) // STEPS_PER_BEAT + 1)
    all_rewritten = sum(1 for row in rows.tolist() if row[0] == _NOTE and _value(row, _TRACK_SLOT, "track") in channels)
    pace = max(1, math.ceil(len(rewritten) / span_beats), math.ceil(all_rewritten / piece_beats))
    if steps_per_bar is None:
        steps_per_bar = MusicalClock.after(rows[:prefix_end]).steps_per_bar
    onsets = [start_step, *rewritten, end_step]
    longest_rest = max(b - a for a, b in zip(onsets, onsets[1:], strict=False))
    gap = max(int(math.ceil(steps_per_bar)), longest_rest if len(rewritten) else end_step - start_step)
    prefix = rows[:prefix_end].copy()
    return InfillPlan(prefix_rows=prefix, prompt_rows=prefix, prompt_step=int(steps[prefix_end - 1]),
                      kept_rows=kept.copy(), kept_steps=kept_steps.copy(),
                      suffix_rows=rows[suffix_start:].copy(), suffix_steps=steps[suffix_start:].copy(),
                      model_channels=channels, start_step=int(start_step), end_step=int(end_step),
                      events_per_beat=pace, kept_notes=kept_notes, max_gap_steps=gap, piece_end=piece_end_step(rows))


def with_both_sides(plan: InfillPlan, context_events: int) -> InfillPlan:
    """``plan`` with a FIM prompt (the model reads the suffix first; see the module docstring and
    ``generation.fim``): the suffix's first events, then the prefix's last events and the MIDDLE row, within
    ``context_events`` together with the model's part. The model's first event is still timed from the prefix's
    last event.

    Raises:
        ValueError: the span does not fit the layout (more than 127 beats long, or starting more than 127 beats
            after the prefix's last event), or the model's part leaves too little of the context for both sides.
    """
    middle = len(plan.kept_rows) + plan.max_model_events
    room = context_events - middle - 3  # the two SPAN rows and MIDDLE
    if room < 2:
        raise ValueError(f"the span's events (up to {middle}) leave no room for both sides in a context of "
                         f"{context_events} events")
    prefix_steps = event_steps(plan.prefix_rows)
    keep_prefix = min(len(plan.prefix_rows), max(1, room * 2 // 3))  # the past weighs more: two thirds
    keep_suffix = min(len(plan.suffix_rows), room - keep_prefix)
    first = len(plan.prefix_rows) - keep_prefix
    suffix = plan.suffix_rows[:keep_suffix].copy()
    if len(suffix):  # the piece without the span: its first suffix row timed from the prefix's last event
        suffix[0, 1] = PARAMETER_OFFSETS["time1"] + _beats_between(int(prefix_steps[-1]), int(plan.suffix_steps[0]))
    previous = int(prefix_steps[first - 1]) if first > 0 else 0
    window = np.concatenate([plan.prefix_rows[first:], suffix])
    prompt = fim_prompt(window, plan.start_step, plan.end_step, previous_step=previous)
    return dataclasses.replace(plan, prompt_rows=prompt)


# ============================================================================================ the result
def assemble_infill(rows: Any, plan: InfillPlan) -> np.ndarray:
    """The whole piece from a generation of ``plan``: ``rows`` ``(n, 8)`` are its prompt rows, then the kept and
    the model's events of the span (an event at or past the span's end, the model's signal that it is done, and
    anything after it are left out); the model's notes end at the span's end at the latest, and before the next
    kept note on their (channel, pitch); then the suffix, its first event timed from the last event before it.

    Returns:
        ``(m, 8)`` int64 rows: BOS, the events (no EOS).
    """
    rows = np.array(rows, dtype=np.int64)
    prompt_length = len(plan.prompt_rows)
    step = plan.prompt_step
    middle, middle_steps = [], []
    for row in rows[prompt_length:].tolist():
        if row[0] not in _EVENT_IDS:
            break
        step = event_step(step, row)
        if step >= plan.end_step:
            break
        middle.append(row)
        middle_steps.append(step)
    kept_starts: dict[tuple[int, int], list[int]] = {}
    for start, _, channel, pitch in plan.kept_notes.tolist():
        kept_starts.setdefault((channel, pitch), []).append(start)
    for row, start in zip(middle, middle_steps, strict=True):
        if row[0] != _NOTE or _value(row, _TRACK_SLOT, "track") not in plan.model_channels:
            continue  # kept: the span's notes on the rewritten tracks were left out of the plan
        key = (_value(row, _CHANNEL_SLOT, "channel"), _value(row, _PITCH_SLOT, "pitch"))
        end = min([plan.end_step, *(s for s in kept_starts.get(key, ()) if s > start)])
        duration = min(_value(row, _DURATION_SLOT, "duration"), end - start)
        row[_DURATION_SLOT] = PARAMETER_OFFSETS["duration"] + max(1, duration)
    prefix_step = int(event_steps(plan.prefix_rows)[-1])
    middle = np.array(middle, dtype=np.int64).reshape(-1, TOKENS_PER_EVENT)
    if len(middle):  # timed from the prompt's end: from the prefix's last event in the piece
        middle[0, 1] = PARAMETER_OFFSETS["time1"] + _beats_between(prefix_step, middle_steps[0])
    suffix = plan.suffix_rows.copy()
    if len(suffix):
        suffix[0, 1] = PARAMETER_OFFSETS["time1"] + _beats_between(middle_steps[-1] if middle_steps else prefix_step,
                                                                    int(plan.suffix_steps[0]))
    return np.concatenate([plan.prefix_rows, middle, suffix])


def _beats_between(step: int, later: int) -> int:
    beats = later // STEPS_PER_BEAT - step // STEPS_PER_BEAT
    if not 0 <= beats <= _MOST_BEATS:
        raise ValueError(f"the rewritten span leaves {beats} beats between two events, more than a row's time holds "
                         f"({_MOST_BEATS})")
    return beats


__all__ = [
    "InfillPlan",
    "assemble_infill",
    "check_span",
    "piece_end_step",
    "plan_infill",
    "span_steps",
    "step_at",
    "with_both_sides",
]
