"""Musical time of event rows, and a piece's length in seconds or bars.

Event rows carry time as ``time1`` (beats since the previous row's beat) and ``time2`` (16th of the beat), so an
event starts at step ``16 * beat + time2`` (16 steps a beat). :class:`MusicalClock` follows the rows and turns
steps into seconds (through the ``set_tempo`` rows, 120 bpm before the first, as MIDI players do) and bars
(through the ``time_signature`` rows, 4/4 before the first).

A length is a :class:`TimeLimit` (``seconds=S`` or ``bars=B``), counted from a start point (the end of the
prompt: its last event):

* :class:`TimeLimitStoppingCriteria` stops a row of ``model.generate`` once it has written an event that starts
  at or past the limit (tempo and time-signature changes written by the model count);
* :func:`cut_at_time_limit` then drops that event (and any later one) and shortens the notes still sounding at
  the limit so that they end on it; :func:`end_midi_at` makes the decoded file last until the limit, so
  ``mido.MidiFile.length`` is the limit within one 16th of a beat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from transformers import StoppingCriteria

from ..midi_writing import TICKS_PER_BEAT, tempo_for_bpm
from ..vocabulary import (
    EVENT_PARAMETERS,
    EVENT_TYPE_IDS,
    FIM_MIDDLE_ID,
    FIM_SPAN_ID,
    PARAMETER_OFFSETS,
    PARAMETER_SIZES,
    STEPS_PER_BEAT,
)
from .note_list import DEFAULT_TEMPO
from .sliding_window import WindowedEventReader

_TIME1, _TIME2 = PARAMETER_OFFSETS["time1"], PARAMETER_OFFSETS["time2"]
_TEMPO_ID, _SIGNATURE_ID, _NOTE_ID = (EVENT_TYPE_IDS[name] for name in ("set_tempo", "time_signature", "note"))
_BPM_SLOT = 1 + EVENT_PARAMETERS["set_tempo"].index("bpm")
_NN_SLOT = 1 + EVENT_PARAMETERS["time_signature"].index("nn")
_DURATION_SLOT = 1 + EVENT_PARAMETERS["note"].index("duration")
_EVENT_IDS = frozenset(EVENT_TYPE_IDS.values())


def event_step(previous_step: int, row: Sequence[int]) -> int:
    """Start (in steps) of the event ``row`` (8 ids, or at least its type, time1, time2) after a row at
    ``previous_step``."""
    return (previous_step // STEPS_PER_BEAT + int(row[1]) - _TIME1) * STEPS_PER_BEAT + int(row[2]) - _TIME2


@dataclass
class MusicalClock:
    """Where the last event read starts, in steps, seconds and bars, and the tempo and bar length in force.

    Attributes:
        step: start of the last event read (0 before any).
        seconds, bars: the same point in seconds and bars from the piece's start.
        tempo: microseconds per beat in force after that event (as the decoded file writes it).
        steps_per_bar: bar length in force after that event (64 in 4/4).
        span: in a fill-in-the-middle layout (``generation/fim.py``), the span ``(start_step, end_step)`` of the
            MIDDLE row read (None before one): the middle that follows it is over at an event at or past
            ``end_step``.
        suffix_origin: while reading a layout's suffix (between its two SPAN rows), the clock to return to.

    A fill-in-the-middle layout reads as one timeline: the opening SPAN row jumps to the span end (the suffix is
    timed from there), the closing one returns to where the clock was before, the MIDDLE row notes :attr:`span`
    without moving (the middle continues the prefix), so each event reads at its original step. The seconds and
    bars of the suffix assume the tempo and time signature in force before the layout (the prefix and the middle
    are not read yet); those of the prefix and the middle are exact.
    """

    step: int = 0
    seconds: float = 0.0
    bars: float = 0.0
    tempo: int = DEFAULT_TEMPO
    steps_per_bar: float = 4.0 * STEPS_PER_BEAT
    span: tuple[int, int] | None = None
    suffix_origin: MusicalClock | None = field(default=None, repr=False)

    def at(self, step: int) -> tuple[float, float]:
        """``(seconds, bars)`` of ``step`` (at or after :attr:`step`) with the tempo and bar length in force."""
        delta = step - self.step
        return (self.seconds + delta * self.tempo / 1e6 / STEPS_PER_BEAT, self.bars + delta / self.steps_per_bar)

    def advance(self, row: Sequence[int]) -> None:
        """Read one row of 8 ids; rows that are not events (BOS, EOS, pad) are skipped, the fill-in-the-middle
        sentinel rows move the clock (see the class docstring)."""
        first = int(row[0])
        if first == FIM_SPAN_ID:
            if self.suffix_origin is None:  # opening: the span end, counted in beats from here (two time1 ids)
                self.suffix_origin = replace(self, span=None, suffix_origin=None)
                beats = (int(row[1]) - _TIME1) * PARAMETER_SIZES["time1"] + int(row[2]) - _TIME1
                end = (self.step // STEPS_PER_BEAT + beats) * STEPS_PER_BEAT + int(row[3]) - _TIME2
                self.seconds, self.bars = self.at(end)
                self.step = end
            else:  # closing: back to the clock before the suffix
                back, self.suffix_origin = self.suffix_origin, None
                self.step, self.seconds, self.bars = back.step, back.seconds, back.bars
                self.tempo, self.steps_per_bar = back.tempo, back.steps_per_bar
            return
        if first == FIM_MIDDLE_ID:
            start = event_step(self.step, row[:3])
            self.span = (start, event_step(start, [row[0], row[3], row[4]]))
            return
        if first not in _EVENT_IDS:
            return
        step = event_step(self.step, row)
        self.seconds, self.bars = self.at(step)
        self.step = step
        if row[0] == _TEMPO_ID:
            self.tempo = tempo_for_bpm(int(row[_BPM_SLOT]) - PARAMETER_OFFSETS["bpm"])
        elif row[0] == _SIGNATURE_ID:
            numerator = int(row[_NN_SLOT]) - PARAMETER_OFFSETS["nn"] + 1
            denominator = 2 ** (int(row[_NN_SLOT + 1]) - PARAMETER_OFFSETS["dd"] + 1)
            self.steps_per_bar = numerator * 4 * STEPS_PER_BEAT / denominator

    def copy(self) -> MusicalClock:
        return replace(self)

    @classmethod
    def after(cls, rows: Any) -> MusicalClock:
        """The clock after reading ``rows`` ``(n, 8)``."""
        clock = cls()
        for row in np.asarray(rows).tolist():
            clock.advance(row)
        return clock


@dataclass(frozen=True)
class TimeLimit:
    """A length in musical time: ``seconds`` or ``bars`` (exactly one), counted from a start point.

    Raises:
        TypeError: a value that is not a number. ValueError: both or neither given, or a value <= 0.
    """

    seconds: float | None = None
    bars: float | None = None

    def __post_init__(self) -> None:
        given = [(name, value) for name, value in (("seconds", self.seconds), ("bars", self.bars))
                 if value is not None]
        if len(given) != 1:
            raise ValueError("give a length as seconds or as bars, not both" if given
                             else "a time limit needs seconds or bars")
        name, value = given[0]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a number, not {type(value).__name__}")
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a positive number, got {value}")

    def elapsed(self, start: MusicalClock, clock: MusicalClock, step: int) -> float:
        """Seconds or bars from ``start`` to ``step`` (at or after ``clock.step``)."""
        seconds, bars = clock.at(step)
        return seconds - start.seconds if self.seconds is not None else bars - start.bars

    def reached(self, start: MusicalClock, clock: MusicalClock, step: int) -> bool:
        """Whether an event at ``step``, read after ``clock``, starts at or past the limit."""
        return self.elapsed(start, clock, step) >= self.amount - 1e-9

    @property
    def amount(self) -> float:
        return float(self.seconds if self.seconds is not None else self.bars)

    def end_step(self, start: MusicalClock, clock: MusicalClock) -> int:
        """The first step (at or after ``clock.step``) at or past the limit, with the tempo / bar in force."""
        left = self.amount - self.elapsed(start, clock, clock.step)
        per_step = clock.tempo / 1e6 / STEPS_PER_BEAT if self.seconds is not None else 1 / clock.steps_per_bar
        return clock.step + max(0, math.ceil(left / per_step - 1e-9))


def cut_at_time_limit(rows: np.ndarray, start_index: int, limit: TimeLimit) -> tuple[np.ndarray, int | None]:
    """``rows`` ended at ``limit``, counted from the last of the first ``start_index`` rows (the prompt).

    Returns:
        ``(rows, end_step)``: the rows before the first event (after the prompt) that starts at or past the
        limit, every note shortened to end at the limit at the latest, and the limit's step; or the rows
        unchanged and None when no event reached the limit.
    """
    rows = np.array(rows, dtype=np.int64)
    clock = MusicalClock.after(rows[:start_index])
    start = clock.copy()
    end_step = None
    for index in range(start_index, len(rows)):
        row = rows[index]
        if int(row[0]) in _EVENT_IDS and limit.reached(start, clock, event_step(clock.step, row)):
            end_step, rows = limit.end_step(start, clock), rows[:index]
            break
        clock.advance(row)
    if end_step is None:
        return rows, None
    step = 0
    for row in rows:
        if int(row[0]) not in _EVENT_IDS:
            continue
        step = event_step(step, row)
        if row[0] == _NOTE_ID:
            duration = int(row[_DURATION_SLOT]) - PARAMETER_OFFSETS["duration"]
            if step + duration > end_step:
                row[_DURATION_SLOT] = PARAMETER_OFFSETS["duration"] + max(1, end_step - step)
    return rows, end_step


def end_midi_at(midi: Any, step: int) -> Any:
    """Make ``midi`` (as ``decode_midi`` writes it, 480 ticks a beat) last until ``step``: its first track's
    end-of-track moves there if the file ends sooner. Returns the same ``mido.MidiFile``."""
    tick = step * (TICKS_PER_BEAT // STEPS_PER_BEAT)
    if not midi.tracks:
        import mido

        midi.tracks.append(mido.MidiTrack([mido.MetaMessage("end_of_track", time=0)]))
    track = midi.tracks[0]
    ticks = sum(message.time for message in track)
    if ticks < tick and track and track[-1].type == "end_of_track":
        track[-1] = track[-1].copy(time=track[-1].time + tick - ticks)
    return midi


class TimeLimitStoppingCriteria(StoppingCriteria, WindowedEventReader):
    """Stop a row once it has written a whole event that starts at or past ``limit``.

    Args:
        limit (`TimeLimit`): the length.
        starts (list of `MusicalClock`): for each sample, the clock after its prompt (the start point).

    Works across the calls of ``sliding_window.generate_in_windows`` (a :class:`~sliding_window.WindowAware`).
    Call: ``criteria(input_ids, scores)`` -> (batch,) bool, True for rows to stop.
    """

    def __init__(self, limit: TimeLimit, starts: Sequence[MusicalClock]) -> None:
        if not isinstance(limit, TimeLimit):
            raise TypeError(f"limit must be a TimeLimit, not {type(limit).__name__}")
        WindowedEventReader.__init__(self)
        self.limit = limit
        self.starts = [start.copy() for start in starts]
        self.clocks = [start.copy() for start in starts]
        self.reached = [False] * len(self.starts)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        for _, sample, events in self.new_events(input_ids):
            clock = self.clocks[sample]
            for row in events:
                if self.reached[sample]:
                    break
                if row[0] in _EVENT_IDS and self.limit.reached(self.starts[sample], clock, event_step(clock.step, row)):
                    self.reached[sample] = True
                clock.advance(row)
        samples = self.samples or range(input_ids.shape[0])
        return torch.tensor([self.reached[s] for s in samples], dtype=torch.bool, device=input_ids.device)


__all__ = [
    "STEPS_PER_BEAT",
    "MusicalClock",
    "TimeLimit",
    "TimeLimitStoppingCriteria",
    "cut_at_time_limit",
    "end_midi_at",
    "event_step",
]
