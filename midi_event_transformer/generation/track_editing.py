"""Add a track to a piece, or write one of its tracks again, by constrained decoding.

:func:`plan_track_edit` encodes the request on a prompt's rows (the tokenizer's encoding: 16 steps a beat, tracks
numbered as ``midi-event-transformer tokenize`` shows them): the *kept* events (every event of the other tracks,
and of track 0), the new track's number, channel and program, and a short generation prompt (BOS, the piece's
setup events at time 0, the new track's own setup). Decoding then goes through the whole piece again, event by
event, with :class:`KeptTracksLogitsProcessor` and :class:`KeptTracksStoppingCriteria`:

* every kept event is written exactly as encoded (same start step, track, channel and parameters; only its
  ``time1`` token, a delta from the row before, follows the rows around it), so the kept tracks decode to what an
  encode / decode round trip of the prompt gives;
* the model writes only the new track's events (notes and, unless forbidden, control changes, on its channel),
  interleaved in time with the kept ones. Before each event the next kept event *K* is due, and the model's
  proposal decides, token by token, which comes first. A model event is valid if it is on the new track and
  starts at or before *K* (ties go to the model). As long as the proposal's tokens equal *K*'s, it may still
  become *K*; the probability the model gives to any token that cannot start a valid event (an event after
  *K*, on another track, of another type, EOS) goes to *K*'s token, so "the model's next event would start after
  the next kept event" places *K* first, and the model goes on from there. Once the proposal differs from *K*
  by a valid token it is the model's event, and its later tokens are drawn again among the valid ones
  (rejection and redraw: the model's distribution restricted to events that start at or before *K*);
* the model's events keep to the pace of the piece: at most ``TrackEditPlan.events_per_beat`` of them start in
  one beat (the notes per beat of the prompt's busiest track, or of the regenerated track, rounded up). Once a
  beat's share is written the model's next event starts in a later beat, so a model that does not know the new
  track (its proposals are the kept tracks' events, redrawn onto the new track) still spreads it over the piece
  instead of stacking its events on a few time points;
* the piece ends after the last kept event (the prompt's end), or at a ``seconds`` / ``bars`` limit inside the
  prompt (the kept events before it, then the model until the limit).

The probabilities are those after ``temperature`` (the processor runs before transformers' temperature warper
and hands it scores that the warper turns back into the redistributed distribution); top-k and top-p filter
after. Any batch of samples (each with its own plan) and the calls of ``sliding_window.generate_in_windows``
work: the state (next kept event, time, model events written) is kept per sample.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from transformers import LogitsProcessor, StoppingCriteria

from ..vocabulary import (
    BOS_ID,
    DRUM_CHANNEL,
    EOS_ID,
    EVENT_PARAMETERS,
    EVENT_TYPE_IDS,
    PARAMETER_OFFSETS,
    PARAMETER_SIZES,
    STEPS_PER_BEAT,
    TOKENS_PER_EVENT,
)
from .general_midi import DRUM_TRACK_NAMES, track_instrument  # DRUM_TRACK_NAMES re-exported
from .musical_time import TimeLimit, cut_at_time_limit, event_step
from .prompts import MELODIC_CHANNELS, event_row
from .sliding_window import WindowedEventReader

logger = logging.getLogger(__name__)

_NOTE, _PATCH, _CONTROL, _KEY = (EVENT_TYPE_IDS[name] for name in ("note", "patch_change", "control_change",
                                                                    "key_signature"))
_TRACK_SLOT, _CHANNEL_SLOT = 3, 4  # every event type has time1, time2, track first; channel next when it has one
assert all(parameters[2] == "track" for parameters in EVENT_PARAMETERS.values())
_EVENT_IDS = frozenset(EVENT_TYPE_IDS.values())
_PITCH_SLOT = 1 + EVENT_PARAMETERS["note"].index("pitch")
#: ``KeptEventsPlan.kept_notes`` of a plan without held pitches.
NO_KEPT_NOTES = np.zeros((0, 4), dtype=np.int64)


def _value(row: Sequence[int], slot: int, parameter: str) -> int:
    return int(row[slot]) - PARAMETER_OFFSETS[parameter]


@dataclass
class TrackEditPlan:
    """What :class:`KeptTracksLogitsProcessor` needs for one prompt (see :func:`plan_track_edit`).

    Attributes:
        prompt_rows: ``(n, 8)`` the generation prompt: BOS, the setup events at time 0, the new track's setup.
        kept_rows: ``(m, 8)`` the kept events after the setup, in order (their ``time1`` as encoded).
        kept_steps: ``(m,)`` the start step of each kept event.
        track, channel, program: the track the model writes, its MIDI channel (0-based) and program.
        end_step: the step of a ``seconds`` / ``bars`` limit inside the prompt (the model may write until
            there), or None: the piece ends with its last kept event.
        events_per_beat: the most model events that may start in one beat.
    """

    prompt_rows: np.ndarray
    kept_rows: np.ndarray
    kept_steps: np.ndarray
    track: int
    channel: int
    program: int
    end_step: int | None = None
    events_per_beat: int = 4

    def __post_init__(self) -> None:
        check_events_per_beat(self.events_per_beat)

    # What KeptTracksLogitsProcessor reads of any plan (see KeptEventsPlan): one model track, no held pitches,
    # no gap limit; EOS may end the piece.
    @property
    def model_channels(self) -> dict[int, int]:
        return {self.track: self.channel}

    @property
    def kept_notes(self) -> np.ndarray:
        return NO_KEPT_NOTES

    start_step = 0
    max_gap_steps = None
    allows_eos = True

    @property
    def prompt_step(self) -> int:
        return int(event_steps(self.prompt_rows)[-1]) if len(self.prompt_rows) else 0


@runtime_checkable
class KeptEventsPlan(Protocol):
    """What :class:`KeptTracksLogitsProcessor` needs of a plan: a :class:`TrackEditPlan`, or an infill's plan
    (``infilling.InfillPlan``).

    Attributes:
        prompt_rows: ``(n, 8)`` the rows before the first kept event (the generation prompt).
        kept_rows, kept_steps: ``(m, 8)`` the kept events to write in order, and their start steps ``(m,)``.
        model_channels: the tracks the model writes -> the MIDI channel (0-based) of each.
        end_step: the model's events start before this step (an event of the model at or past it ends the
            sample); None: no end but the kept events and the budget.
        events_per_beat: the most model events that may start in one beat.
        kept_notes: ``(k, 4)`` ``[start, end, channel, pitch]`` (steps) of the kept notes: a model note never
            starts on a (channel, pitch) one of them holds, or where one starts.
        start_step: the model's events start at or after this step.
        max_gap_steps: the model's next event starts at most this many steps after its last one (or after
            ``start_step``); None: any.
        allows_eos: whether the model may end the piece with EOS once the kept events are written.
        prompt_step: the step the first generated row's ``time1`` counts from.
    """

    prompt_rows: np.ndarray
    kept_rows: np.ndarray
    kept_steps: np.ndarray
    end_step: int | None
    events_per_beat: int
    model_channels: dict[int, int]
    kept_notes: np.ndarray
    start_step: int
    max_gap_steps: int | None
    allows_eos: bool
    prompt_step: int


def check_events_per_beat(events_per_beat: Any) -> None:
    """Raise TypeError / ValueError unless ``events_per_beat`` is an int >= 1."""
    if isinstance(events_per_beat, bool) or not isinstance(events_per_beat, (int, np.integer)):
        raise TypeError(f"events_per_beat must be an int, not {type(events_per_beat).__name__}")
    if events_per_beat < 1:
        raise ValueError(f"events_per_beat must be >= 1, got {events_per_beat}")


def event_steps(rows: np.ndarray) -> np.ndarray:
    """``(n,)`` the start step of each row (a row that is not an event: the step of the event before it)."""
    steps = np.zeros(len(rows), dtype=np.int64)
    step = 0
    for index, row in enumerate(rows.tolist()):
        if row[0] in _EVENT_IDS:
            step = event_step(step, row)
        steps[index] = step
    return steps


def whole_piece(rows: Any) -> np.ndarray:
    """A whole prompt's rows ``(n, 8)`` int64 (BOS first), up to its EOS row if it has one.

    Raises:
        ValueError: rows of another shape, or not starting with BOS.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 2 or rows.shape[1] != TOKENS_PER_EVENT or not len(rows) or rows[0, 0] != BOS_ID:
        raise ValueError(f"rows must be (n_events, {TOKENS_PER_EVENT}) starting with BOS, got shape {rows.shape}")
    eos = np.flatnonzero(rows[:, 0] == EOS_ID)
    return rows[:eos[0]] if len(eos) else rows


def _tracks_with_notes(rows: np.ndarray) -> list[int]:
    return sorted({_value(row, _TRACK_SLOT, "track") for row in rows.tolist() if row[0] == _NOTE})


def _notes_per_beat(rows: np.ndarray, steps: np.ndarray, tracks: Sequence[int]) -> int:
    """The most notes per beat (over the piece's beats, rounded up) of any of ``tracks``."""
    beats = int(steps.max()) // STEPS_PER_BEAT + 1
    notes = Counter(_value(row, _TRACK_SLOT, "track") for row in rows.tolist() if row[0] == _NOTE)
    busiest = max((notes[track] for track in tracks), default=0)
    return max(1, math.ceil(busiest / beats))


def plan_track_edit(rows: Any, *, add_track: str | int | None = None, regenerate_track: int | None = None,
                    limit: TimeLimit | None = None) -> TrackEditPlan:
    """Plan adding a track (``add_track``) or writing one again (``regenerate_track``) on a prompt's rows.

    Args:
        rows: the whole prompt, ``(n, 8)`` as ``tokenizer.encode_midi`` gives it (BOS first; an EOS row ends it).
        add_track: the new track's instrument: a General MIDI name or program number 0-127, or a drum kit name
            (``"Standard"``, ``"Jazz kit"``, ...) or ``"drums"`` for a drum track on channel 10. It gets the next
            track number and a channel no other track uses.
        regenerate_track: the number of a track with notes (as ``midi-event-transformer tokenize`` shows it): its
            events after the setup are left out and the model writes the track again, on its channel and program.
        limit: end the piece at this length (from its start) when that comes before the prompt's end.

    Returns:
        a [`TrackEditPlan`].

    Raises:
        ValueError: neither or both of ``add_track`` / ``regenerate_track``, an unknown instrument or track, a
            track without notes, no free channel or track number left, a prompt without notes.
        TypeError: arguments of the wrong type.
    """
    if (add_track is None) == (regenerate_track is None):
        raise ValueError("give add_track or regenerate_track (exactly one)")
    rows = whole_piece(rows)
    with_notes = _tracks_with_notes(rows)
    if not with_notes:
        raise ValueError("the prompt has no notes: there is no piece to add a track to")
    steps = event_steps(rows)
    setup_end = 1  # BOS, then the setup events: everything at time 0 before the first note
    while setup_end < len(rows) and rows[setup_end, 0] != _NOTE and steps[setup_end] == 0:
        setup_end += 1
    end_step = None
    if limit is not None:
        cut, end_step = cut_at_time_limit(rows, setup_end, limit)
        rows, steps = cut, steps[:len(cut)]
    setup, body, body_steps = rows[:setup_end], rows[setup_end:], steps[setup_end:]
    tracks = {_value(row, _TRACK_SLOT, "track") for row in rows[1:].tolist() if row[0] in _EVENT_IDS}

    if regenerate_track is not None:
        if isinstance(regenerate_track, bool) or not isinstance(regenerate_track, (int, np.integer)):
            raise TypeError(f"regenerate_track must be a track number (int), not {type(regenerate_track).__name__}")
        track = int(regenerate_track)
        listing = f"tracks with notes: {', '.join(map(str, with_notes))}"
        if track not in tracks:
            raise ValueError(f"regenerate_track={track}: the prompt has no track {track} ({listing})")
        if track not in with_notes:
            raise ValueError(f"regenerate_track={track}: track {track} has no notes ({listing})")
        own = [row for row in rows.tolist() if row[0] in (_NOTE, _PATCH, _CONTROL)
               and _value(row, _TRACK_SLOT, "track") == track]
        channel = next(_value(row, _CHANNEL_SLOT, "channel") for row in own if row[0] == _NOTE)
        program = next((_value(row, 5, "patch") for row in own
                        if row[0] == _PATCH and _value(row, _CHANNEL_SLOT, "channel") == channel), 0)
        pace = _notes_per_beat(rows, steps, [track])
        keep = np.array([_value(row, _TRACK_SLOT, "track") != track for row in body.tolist()], dtype=bool)
        body, body_steps = body[keep], body_steps[keep]
        prompt_rows = setup  # its own setup (instrument, key) stays
    else:
        program, drums = track_instrument(add_track)
        pace = _notes_per_beat(rows, steps, with_notes)
        track = max(tracks) + 1
        if track >= PARAMETER_SIZES["track"]:
            raise ValueError(f"the prompt already uses the last track number ({PARAMETER_SIZES['track'] - 1})")
        used = {_value(row, _CHANNEL_SLOT, "channel") for row in rows[1:].tolist()
                if row[0] in (_NOTE, _PATCH, _CONTROL)}
        if drums:
            if DRUM_CHANNEL in used:
                raise ValueError("the prompt already has a drum track (channel 10); regenerate it with "
                                 "regenerate_track instead")
            channel = DRUM_CHANNEL
        else:
            free = [c for c in MELODIC_CHANNELS if c not in used]
            if not free:
                raise ValueError("every melodic MIDI channel is taken by the prompt's tracks; regenerate one of "
                                 "them with regenerate_track instead")
            channel = free[0]
        at_start = {"time1": 0, "time2": 0, "track": track}
        new_setup = []
        key = next((row for row in setup.tolist() if row[0] == _KEY), None)  # as the tokenizer: a key per track
        if key is not None:
            sf = 7 if drums else _value(key, 4, "sf")
            new_setup.append(event_row("key_signature", **at_start, sf=sf, mi=_value(key, 5, "mi")))
        new_setup.append(event_row("patch_change", **at_start, channel=channel, patch=program))
        prompt_rows = np.concatenate([setup, np.stack(new_setup)])
    return TrackEditPlan(prompt_rows=prompt_rows.copy(), kept_rows=body.copy(), kept_steps=body_steps.copy(),
                         track=track, channel=channel, program=program, end_step=end_step, events_per_beat=pace)


@dataclass
class _SampleState:
    step: int = 0  # start of the last event written
    cursor: int = 0  # index of the next kept event
    model_events: int = 0
    model_beat: int = -1  # beat of the last model event, and how many model events started in it
    model_beat_events: int = 0
    model_step: int = -1  # start of the model's last event
    finished: bool = False
    expected: dict = field(default_factory=dict)  # (cursor, step) -> the next kept event's row after `step`


class KeptTracksLogitsProcessor(LogitsProcessor, WindowedEventReader):
    r"""Constrained decoding of a track edit: kept events reproduced, the model writes the new track's events.

    Args:
        plans (list of [`TrackEditPlan`] or other [`KeptEventsPlan`]): one per sample (batch row, or sample of a
            sliding window).
        max_model_events (`int`, *optional*): events the model may write per sample; after that only the kept
            events are written. None: no limit.
        allow_control_change (`bool`, defaults to `True`): the model may write control changes on its track.
        temperature (`float`, defaults to 1.0): the sampling temperature (the decision between the model's event
            and the kept one is taken on the tempered probabilities; see the module docstring).

    Call: ``processor(input_ids, scores)`` with ``input_ids`` (batch, length) and ``scores`` (batch, vocab);
    ``compact_call(input_ids, scores, offset)`` on a column window (``scores[:, j]`` is id ``offset + j``).
    """

    def __init__(self, plans: Sequence[TrackEditPlan], max_model_events: int | None = None,
                 allow_control_change: bool = True, temperature: float = 1.0) -> None:
        if not plans or not all(isinstance(plan, KeptEventsPlan) for plan in plans):
            raise TypeError("plans must be a non-empty list of TrackEditPlan (or other KeptEventsPlan)")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        WindowedEventReader.__init__(self)
        self.plans = list(plans)
        self.max_model_events = max_model_events
        self.temperature = float(temperature)
        self.model_types = [_NOTE, _CONTROL] if allow_control_change else [_NOTE]
        self.states = [_SampleState(step=int(plan.prompt_step)) for plan in self.plans]

    # ------------------------------------------------------------------ state
    def sync(self, input_ids: torch.Tensor) -> None:
        """Read the events completed since the last call: the next kept event (as :meth:`_expected` gives it) moves
        the cursor, any other event is the model's and is counted."""
        for _, sample, events in self.new_events(input_ids):
            state, plan = self.states[sample], self.plans[sample]
            for row in events:
                if row[0] == EOS_ID:
                    state.finished = True
                if row[0] not in _EVENT_IDS or state.finished:
                    continue
                kept = row == self._expected(sample)
                state.step = event_step(state.step, row)
                if kept:
                    state.cursor += 1
                elif plan.end_step is not None and state.step >= plan.end_step:
                    state.finished = True  # the model's event past the end: the sample is complete
                else:
                    state.model_events += 1
                    state.model_step = state.step
                    beat = state.step // STEPS_PER_BEAT
                    state.model_beat_events = state.model_beat_events + 1 if beat == state.model_beat else 1
                    state.model_beat = beat

    def done(self, sample: int) -> bool:
        """Whether sample ``sample`` is complete: its kept events are written and the model may not go on."""
        state, plan = self.states[sample], self.plans[sample]
        if state.finished:
            return True
        if state.cursor < len(plan.kept_rows):
            return False
        return plan.end_step is None or not self._budget_left(state)

    def _budget_left(self, state: _SampleState) -> bool:
        return self.max_model_events is None or state.model_events < self.max_model_events

    def _expected(self, sample: int) -> list[int] | None:
        """The next kept event's row as it must be written after the last event (its time1 a delta from it), or
        None when there is none, or when it is more beats away than ``time1`` holds (a track written again may
        leave such a gap): the model writes an event in between first."""
        state, plan = self.states[sample], self.plans[sample]
        if state.cursor >= len(plan.kept_rows):
            return None
        key = (state.cursor, state.step)
        if key not in state.expected:
            state.expected.clear()
            row = plan.kept_rows[state.cursor].tolist()
            beats = int(plan.kept_steps[state.cursor]) // STEPS_PER_BEAT - state.step // STEPS_PER_BEAT
            if beats >= PARAMETER_SIZES["time1"]:
                if self._budget_left(state):
                    state.expected[key] = None
                    return None
                logger.warning("a kept event is %d beats after the last event and the model may write no more "
                               "events: it is moved %d beats earlier", beats, beats - PARAMETER_SIZES["time1"] + 1)
                beats = PARAMETER_SIZES["time1"] - 1
            row[1] = PARAMETER_OFFSETS["time1"] + beats
            state.expected[key] = row
        return state.expected[key]

    # ------------------------------------------------------------------ what the model may write
    def _first_free_step(self, sample: int) -> int:
        """The earliest step the model's next event may start at: the last event's (or the plan's start), or the
        next beat's once this beat holds ``events_per_beat`` model events."""
        state, plan = self.states[sample], self.plans[sample]
        beat = state.step // STEPS_PER_BEAT
        if state.model_beat == beat and state.model_beat_events >= plan.events_per_beat:
            return max((beat + 1) * STEPS_PER_BEAT, plan.start_step)
        return max(state.step, plan.start_step)

    def _valid_ids(self, sample: int, prefix: list[int]) -> range | list[int] | None:
        """Ids at slot ``len(prefix)`` that keep the model's event valid (None: any the grammar allows)."""
        state, plan = self.states[sample], self.plans[sample]
        slot = len(prefix)
        due = state.cursor < len(plan.kept_rows)
        kept_step = int(plan.kept_steps[state.cursor]) if due else None
        beat = state.step // STEPS_PER_BEAT
        first = self._first_free_step(sample)
        last = kept_step if due else None  # the latest step the model's event may start at
        if plan.max_gap_steps is not None:
            reach = max(max(state.model_step, plan.start_step) + plan.max_gap_steps, first)
            last = reach if last is None else min(last, reach)
        if slot == 0:
            if not due:
                return [*self.model_types, EOS_ID] if plan.allows_eos else self.model_types
            return self.model_types if first <= kept_step else []
        if slot == 1:
            most = PARAMETER_SIZES["time1"] - 1
            if last is not None:
                most = min(most, last // STEPS_PER_BEAT - beat)
            return range(PARAMETER_OFFSETS["time1"] + first // STEPS_PER_BEAT - beat,
                         PARAMETER_OFFSETS["time1"] + most + 1)
        start = (beat + _value(prefix, 1, "time1")) * STEPS_PER_BEAT  # of the chosen beat
        if slot == 2:
            low = max(first - start, 0)
            high = STEPS_PER_BEAT - 1
            if last is not None and start // STEPS_PER_BEAT == last // STEPS_PER_BEAT:
                high = last % STEPS_PER_BEAT
            return range(PARAMETER_OFFSETS["time2"] + low, PARAMETER_OFFSETS["time2"] + high + 1)
        if slot == _TRACK_SLOT:
            return [PARAMETER_OFFSETS["track"] + track for track in plan.model_channels]
        if slot == _CHANNEL_SLOT:
            return [PARAMETER_OFFSETS["channel"] + plan.model_channels[_value(prefix, _TRACK_SLOT, "track")]]
        if slot == _PITCH_SLOT and prefix[0] == _NOTE and len(plan.kept_notes):
            step = start + _value(prefix, 2, "time2")
            held = _held_pitches(plan.kept_notes, _value(prefix, _CHANNEL_SLOT, "channel"), step)
            return [PARAMETER_OFFSETS["pitch"] + pitch for pitch in range(PARAMETER_SIZES["pitch"])
                    if pitch not in held]
        return None

    def _valid_prefix(self, sample: int, prefix: list[int]) -> bool:
        for slot in range(min(len(prefix), _PITCH_SLOT + 1)):
            valid = self._valid_ids(sample, prefix[:slot])
            if valid is not None and prefix[slot] not in valid:
                return False
        return True

    # ------------------------------------------------------------------ scores
    def _row(self, scores: torch.Tensor, offset: int, sample: int, prefix: list[int]) -> torch.Tensor | None:
        """New scores (W,) for one row, or None to leave them as they are."""
        if self.done(sample):
            return None
        state = self.states[sample]
        expected = self._expected(sample)
        slot = len(prefix)
        follows_kept = expected is not None and prefix == expected[:slot]
        model_may = self._budget_left(state) and self._valid_prefix(sample, prefix)
        valid = self._valid_ids(sample, prefix) if model_may else []
        if not follows_kept:  # the model's event (or a row this processor does not constrain)
            return _masked(scores, offset, valid) if valid else None
        kept_id = expected[slot]
        if valid is None or not valid:  # only the kept event can follow this prefix
            return _forced(scores, offset, kept_id)
        return _redistributed(scores, offset, valid, kept_id, self.temperature)

    def _apply(self, input_ids: torch.Tensor, scores: torch.Tensor, offset: int) -> torch.Tensor:
        self.sync(input_ids)
        length = input_ids.shape[1]
        begun = length - length % TOKENS_PER_EVENT
        samples = self.samples
        prefixes = input_ids[:, begun:].tolist()
        rows = [(row, self._row(scores[row], offset, samples[row], prefixes[row])) for row in range(len(samples))]
        if all(new is None for _, new in rows):
            return scores
        scores = scores.clone()
        for row, new in rows:
            if new is not None:
                scores[row] = new
        return scores

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self._apply(input_ids, scores, 0)

    def compact_call(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, offset: int) -> torch.FloatTensor:
        """As ``__call__`` on a window of columns: ``scores[:, j]`` is the score of id ``offset + j``."""
        return self._apply(input_ids, scores, offset)


def _held_pitches(kept_notes: np.ndarray, channel: int, step: int) -> set[int]:
    """Pitches of ``channel`` that a kept note holds at ``step`` (sounding then, or starting then)."""
    on_channel = kept_notes[kept_notes[:, 2] == channel]
    holding = (on_channel[:, 0] <= step) & ((step < on_channel[:, 1]) | (on_channel[:, 0] == step))
    return set(on_channel[holding, 3].tolist())


def _columns(ids: range | list[int], offset: int, width: int) -> torch.Tensor:
    columns = torch.as_tensor(list(ids), dtype=torch.long) - offset
    if len(columns) and (int(columns.min()) < 0 or int(columns.max()) >= width):
        raise ValueError(f"ids {ids} are outside the scored window [{offset}, {offset + width})")
    return columns


def _forced(scores: torch.Tensor, offset: int, token: int) -> torch.Tensor:
    out = torch.full_like(scores, float("-inf"))
    out[_columns([token], offset, len(scores))] = 0.0
    return out


def _masked(scores: torch.Tensor, offset: int, ids: range | list[int]) -> torch.Tensor:
    columns = _columns(ids, offset, len(scores))
    out = torch.full_like(scores, float("-inf"))
    kept = scores[columns]
    out[columns] = kept if bool(torch.isfinite(kept).any()) else torch.zeros_like(kept)
    return out


def _redistributed(scores: torch.Tensor, offset: int, ids: range | list[int], kept_id: int,
                   temperature: float) -> torch.Tensor:
    """Scores whose tempered distribution keeps ``ids`` and gives ``kept_id`` the mass of every other id."""
    if not bool(torch.isfinite(scores).any()):
        return _forced(scores, offset, kept_id)
    probabilities = torch.softmax(scores.float() / temperature, dim=-1)
    keep = torch.zeros_like(probabilities, dtype=torch.bool)
    keep[_columns(ids, offset, len(scores))] = True
    kept_column = int(_columns([kept_id], offset, len(scores))[0])
    keep[kept_column] = True
    new = torch.where(keep, probabilities, torch.zeros_like(probabilities))
    new[kept_column] += (1.0 - new.sum()).clamp(min=0.0)
    return (temperature * torch.log(new)).to(scores.dtype)


class KeptTracksStoppingCriteria(StoppingCriteria):
    """Stop a row when its track edit is complete (see [`KeptTracksLogitsProcessor.done`]).

    Args:
        processor (`KeptTracksLogitsProcessor`): the processor of the same ``generate`` call.
    """

    def __init__(self, processor: KeptTracksLogitsProcessor) -> None:
        if not isinstance(processor, KeptTracksLogitsProcessor):
            raise TypeError(f"processor must be a KeptTracksLogitsProcessor, not {type(processor).__name__}")
        self.processor = processor

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        self.processor.sync(input_ids)
        return torch.tensor([self.processor.done(sample) for sample in self.processor.samples],
                            dtype=torch.bool, device=input_ids.device)


__all__ = [
    "DRUM_TRACK_NAMES",
    "NO_KEPT_NOTES",
    "KeptEventsPlan",
    "KeptTracksLogitsProcessor",
    "KeptTracksStoppingCriteria",
    "TrackEditPlan",
    "check_events_per_beat",
    "event_steps",
    "plan_track_edit",
    "whole_piece",
]
