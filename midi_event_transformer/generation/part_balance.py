"""Every requested part plays: a part that has rested too long takes the next note.

A new piece asked for with ``instruments=`` (and ``drum_kit=``) gives each instrument a *part*: its own track and
channel in the prompt (``prompts.build_prompt``). A model trained mostly on three-track pop songs may leave the
fourth part of a string quartet, or the voice of a song, silent for long stretches.
:class:`EveryPartPlaysLogitsProcessor` keeps each part in the music: once a part has not sounded for
``max_rest_bars`` bars, the next note the model writes is that part's (its track, then its channel, at the time
the model chose for the note); of several such parts, the one that has rested longest (the model chooses between
parts that rested equally long). Pitch, velocity and duration stay the model's: nothing masks a range.

A part *sounds* from a note's start to its end on the part's channel (a held note counts); bars are those in force
(``musical_time.MusicalClock``: the prompt's and the model's time signatures, 4/4 before any).

Example::

    >>> processor = EveryPartPlaysLogitsProcessor({1: 0, 2: 1}, [MusicalClock.after(prompt_rows)], max_rest_bars=1)
    >>> model.generate(input_ids, logits_processor=[processor], do_sample=True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor

from ..vocabulary import EVENT_PARAMETERS, EVENT_TYPE_IDS, PARAMETER_OFFSETS, TOKENS_PER_EVENT
from .musical_time import MusicalClock, event_step
from .sliding_window import WindowedEventReader

_NOTE_ID = EVENT_TYPE_IDS["note"]
_TRACK_SLOT, _CHANNEL_SLOT, _DURATION_SLOT = (1 + EVENT_PARAMETERS["note"].index(name)
                                              for name in ("track", "channel", "duration"))


def check_max_rest_bars(value: object) -> None:
    """Raise unless ``value`` is None or a positive finite number (TypeError / ValueError)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"max_rest_bars must be a number or None, not {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"max_rest_bars must be a positive number of bars, got {value}")


@dataclass
class _Sample:
    clock: MusicalClock
    sounding_until: dict[int, int] = field(default_factory=dict)  # channel -> end step of its last note


class EveryPartPlaysLogitsProcessor(LogitsProcessor, WindowedEventReader):
    r"""A part that has not sounded for ``max_rest_bars`` bars writes the next note (module docstring).

    Args:
        parts (`Mapping[int, int]`): track -> channel of each requested part (``prompts.build_prompt`` gives
            instrument ``i`` track ``i + 1``; ``prompts.instrument_channels`` the channels).
        starts (list of `MusicalClock`): for each sample, the clock after its prompt; every part counts as having
            sounded until the prompt's end.
        max_rest_bars (`float`, defaults to 1.0): the longest rest a part may take, in bars.

    Call: ``processor(input_ids, scores)`` with ``input_ids`` (batch, length) and ``scores`` (batch, vocab);
    ``compact_call(input_ids, scores, offset)`` on a column window (``scores[:, j]`` is id ``offset + j``). Works
    across the calls of ``sliding_window.generate_in_windows``.
    """

    def __init__(self, parts: Mapping[int, int], starts: Sequence[MusicalClock], max_rest_bars: float = 1.0) -> None:
        if not isinstance(parts, Mapping) or not parts:
            raise TypeError("parts must be a non-empty mapping track -> channel")
        if not starts or not all(isinstance(start, MusicalClock) for start in starts):
            raise TypeError("starts must be a non-empty list of MusicalClock (one per sample)")
        check_max_rest_bars(max_rest_bars)
        WindowedEventReader.__init__(self)
        self.parts = {int(track): int(channel) for track, channel in parts.items()}
        self.max_rest_bars = float(max_rest_bars)
        self.states = [_Sample(start.copy(), dict.fromkeys(self.parts.values(), start.step))
                              for start in starts]

    def _sync(self, input_ids: torch.Tensor) -> None:
        for _, sample, events in self.new_events(input_ids):
            state = self.states[sample]
            for row in events:
                if row[0] == _NOTE_ID:
                    channel = int(row[_CHANNEL_SLOT]) - PARAMETER_OFFSETS["channel"]
                    if channel in state.sounding_until:
                        end = event_step(state.clock.step, row) + int(row[_DURATION_SLOT]) - PARAMETER_OFFSETS[
                            "duration"]
                        state.sounding_until[channel] = max(state.sounding_until[channel], end)
                state.clock.advance(row)

    def due_tracks(self, sample: int, row: Sequence[int]) -> list[int]:
        """Tracks of the parts that must take the note ``row`` (its type, time1 and time2 written) of ``sample``:
        of the parts that have rested at least ``max_rest_bars`` by its start, those that have rested longest."""
        state = self.states[sample]
        step = event_step(state.clock.step, row)
        rests = {track: step - state.sounding_until[channel] for track, channel in self.parts.items()}
        longest = max(rests.values())
        if longest < self.max_rest_bars * state.clock.steps_per_bar:
            return []
        return [track for track, rest in rests.items() if rest == longest]

    def _apply(self, input_ids: torch.Tensor, scores: torch.Tensor, offset: int) -> torch.Tensor:
        self._sync(input_ids)
        length = input_ids.shape[1]
        slot = length % TOKENS_PER_EVENT
        if slot not in (_TRACK_SLOT, _CHANNEL_SLOT):
            return scores
        samples = self.samples or range(input_ids.shape[0])
        rows = input_ids[:, length - slot:length].tolist()
        out = None
        for i, row in enumerate(rows):
            if row[0] != _NOTE_ID:
                continue
            due = self.due_tracks(samples[i], row)
            if not due:
                continue
            if slot == _TRACK_SLOT:
                allowed = [PARAMETER_OFFSETS["track"] + track for track in due]
            else:
                track = row[_TRACK_SLOT] - PARAMETER_OFFSETS["track"]
                if track not in due:
                    continue
                allowed = [PARAMETER_OFFSETS["channel"] + self.parts[track]]
            columns = torch.tensor(allowed, device=scores.device) - offset
            columns = columns[(columns >= 0) & (columns < scores.shape[1])]
            if len(columns) == 0:
                continue
            out = scores.clone() if out is None else out
            kept = out[i, columns].clone()
            out[i] = float("-inf")
            out[i, columns] = kept if bool(torch.isfinite(kept).any()) else 0.0
        return scores if out is None else out

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self._apply(input_ids, scores, 0)

    def compact_call(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, offset: int) -> torch.FloatTensor:
        """As ``__call__`` on a window of columns: ``scores[:, j]`` is the score of id ``offset + j``."""
        return self._apply(input_ids, scores, offset)

    def __repr__(self) -> str:
        return f"EveryPartPlaysLogitsProcessor(parts={self.parts}, max_rest_bars={self.max_rest_bars})"


__all__ = ["EveryPartPlaysLogitsProcessor", "check_max_rest_bars"]
