"""A generation request from its options to finished pieces: what ``generate_midi``, the CLI and the
``midi-generation`` pipeline share.

1. :class:`PromptOptions` (what to start from: a MIDI prompt or controls, a track to add or write again, a
   length in seconds or bars) and :class:`SamplingOptions` (how many events, sampling settings, seed, window);
   their ``check`` methods reject bad values before a model is loaded;
2. :func:`prepare_prompt` turns one prompt into a :class:`PreparedPrompt` (its rows, its logits processors and,
   for a track edit, its ``track_editing.TrackEditPlan``);
3. :func:`generate_prepared` samples every prepared prompt (``num_samples`` times each, in one batch) through
   ``sliding_window.generate_in_windows``, seeded on a forked random state, and ends each piece at its length;
4. :meth:`GeneratedPiece.to_midi` decodes a piece (a file that lasts until the length when one was asked).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..vocabulary import BOS_ID, EOS_ID, PAD_ID
from .loading import load_model_and_tokenizer
from .musical_time import MusicalClock, TimeLimit, TimeLimitStoppingCriteria, cut_at_time_limit, end_midi_at
from .prompts import build_prompt, prompt_from_midi, prompt_logits_processors
from .sliding_window import default_context_events, generate_in_windows
from .streamers import EventProgressStreamer, StreamerGroup
from .track_editing import (
    KeptTracksLogitsProcessor,
    KeptTracksStoppingCriteria,
    TrackEditPlan,
    plan_track_edit,
)

logger = logging.getLogger(__name__)

#: Defaults of the public reference app (SkyTNT/midi-model ``app.py``).
DEFAULT_EVENTS = 512
DEFAULT_PROMPT_EVENTS = 128
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 0.94
DEFAULT_TOP_K = 20

#: Events generated at most per sample when only a length in seconds / bars or the end of a track edit bounds
#: the piece (a model that never moves on in time stops here).
OPEN_ENDED_MAX_EVENTS = 100_000


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_sampling(events: int, temperature: float, top_p: float, top_k: int, seed: int | None,
                    num_samples: int) -> None:
    _check_int("events", events, 1)
    _check_int("top_k", top_k, 0)
    _check_int("seed", seed, 0, allow_none=True)
    _check_int("num_samples", num_samples, 1)
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")



def _check_prompt_alone(**options: Any) -> None:
    given = [name for name, value in options.items() if value is not None]
    if given:
        raise ValueError(f"a prompt cannot be combined with {', '.join(given)}: the prompt's own events set them "
                         "(use one or the other)")


def build_generation_prompt(tokenizer: Any = None, *, prompt: Any = None, prompt_events: int | None = None,
                            instruments: Sequence[str | int] | str | None = None, drum_kit: str | int | None = None,
                            bpm: float | None = None, time_signature: str | tuple[int, int] | None = None,
                            key: str | tuple[int, int] | None = None,
                            disable_control_change: bool = False) -> tuple[np.ndarray, list]:
    """The prompt rows and the logits processors of a generation request (see :func:`generate_midi`).

    Returns:
        ``(rows, processors)``: ``rows`` ``(n_events, 8)`` int64 starting with BOS; ``processors`` a list of
        ``LogitsProcessor`` (no patch change and only the prompt's channels when instruments are named; no
        control change with ``disable_control_change``).

    Raises:
        ValueError: a prompt combined with instruments / drum kit / bpm / signatures, unknown names, bad values.
        TypeError: arguments of the wrong type. InvalidMidiError: a prompt that is not a readable MIDI file.
    """
    if not isinstance(disable_control_change, bool):
        raise TypeError(f"disable_control_change must be a bool, not {type(disable_control_change).__name__}")
    if prompt is not None:
        _check_prompt_alone(instruments=instruments, drum_kit=drum_kit, bpm=bpm, time_signature=time_signature,
                            key=key)
        rows = prompt_from_midi(prompt, DEFAULT_PROMPT_EVENTS if prompt_events is None else prompt_events,
                                tokenizer=tokenizer)
        return rows, prompt_logits_processors(allow_control_change=not disable_control_change)
    if prompt_events is not None:
        raise ValueError("prompt_events is only used with a prompt (the first events of a MIDI file)")
    rows = build_prompt(instruments=instruments, drum_kit=drum_kit, bpm=bpm, time_signature=time_signature,
                        key_signature=key)
    processors = prompt_logits_processors(instruments=instruments, drum_kit=drum_kit,
                                          allow_control_change=not disable_control_change)
    return rows, processors



def _check_number(name: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")


@dataclass
class PromptOptions:
    """What a generation starts from (the arguments of ``generate_midi`` with the same names)."""

    prompt: Any = None
    prompt_events: int | None = None
    instruments: Any = None
    drum_kit: str | int | None = None
    bpm: float | None = None
    time_signature: str | tuple[int, int] | None = None
    key: str | tuple[int, int] | None = None
    disable_control_change: bool = False
    add_track: str | int | None = None
    regenerate_track: int | None = None
    seconds: float | None = None
    bars: float | None = None

    @property
    def edits_track(self) -> bool:
        return self.add_track is not None or self.regenerate_track is not None

    @property
    def time_limit(self) -> TimeLimit | None:
        if self.seconds is None and self.bars is None:
            return None
        return TimeLimit(seconds=self.seconds, bars=self.bars)

    def check(self) -> None:
        """Raise on options that cannot go together or bad values that need no model to see."""
        if not isinstance(self.disable_control_change, bool):
            raise TypeError(f"disable_control_change must be a bool, not {type(self.disable_control_change).__name__}")
        _check_number("seconds", self.seconds)
        _check_number("bars", self.bars)
        if self.seconds is not None or self.bars is not None:
            TimeLimit(seconds=self.seconds, bars=self.bars)  # raises on both, or on a value <= 0
        if self.prompt is not None:
            _check_prompt_alone(instruments=self.instruments, drum_kit=self.drum_kit, bpm=self.bpm,
                                time_signature=self.time_signature, key=self.key)
            _check_int("prompt_events", self.prompt_events, 1, allow_none=True)
        if self.edits_track:
            if self.add_track is not None and self.regenerate_track is not None:
                raise ValueError("add_track and regenerate_track cannot be combined (one track edit at a time)")
            name = "add_track" if self.add_track is not None else "regenerate_track"
            if self.prompt is None:
                raise ValueError(f"{name} needs a prompt: the piece whose track is added or written again")
            if self.prompt_events is not None:
                raise ValueError(f"prompt_events does not apply with {name}: the whole prompt is used")
            if self.regenerate_track is not None and (isinstance(self.regenerate_track, bool) or not isinstance(
                    self.regenerate_track, (int, np.integer))):
                raise TypeError(f"regenerate_track must be a track number (int), not "
                                f"{type(self.regenerate_track).__name__}")


@dataclass
class SamplingOptions:
    """How a generation samples (the arguments of ``generate_midi`` with the same names)."""

    events: int | None = None
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    top_k: int = DEFAULT_TOP_K
    seed: int | None = None
    num_samples: int = 1
    context_events: int | None = None
    progress: bool = True
    streamer: Any = None

    def check(self) -> None:
        _check_sampling(DEFAULT_EVENTS if self.events is None else self.events, self.temperature, self.top_p,
                        self.top_k, self.seed, self.num_samples)
        _check_int("context_events", self.context_events, 2, allow_none=True)
        if not isinstance(self.progress, bool):
            raise TypeError(f"progress must be a bool, not {type(self.progress).__name__}")
        streamer = self.streamer
        if streamer is not None and not (callable(getattr(streamer, "put", None))
                                         and callable(getattr(streamer, "end", None))):
            raise TypeError(f"streamer must have put() and end() methods (a transformers streamer), not "
                            f"{type(streamer).__name__}")


@dataclass
class PreparedPrompt:
    """One prompt ready to sample: ``rows`` ``(n, 8)`` (BOS first), the logits ``processors`` of its controls, the
    ``plan`` of a track edit (None otherwise) and the ``options`` it came from."""

    rows: np.ndarray
    processors: list = field(default_factory=list)
    plan: TrackEditPlan | None = None
    options: PromptOptions = field(default_factory=PromptOptions)


@dataclass
class GeneratedPiece:
    """One sample: ``rows`` ``(n, 8)`` (the prompt's rows, then the generated events, without EOS) and
    ``end_step``, the step of a seconds / bars limit the piece was ended at (None: it ends with its last event)."""

    rows: np.ndarray
    end_step: int | None = None

    @property
    def events(self) -> int:
        """Events of the piece after BOS (prompt included)."""
        return int(np.sum(~np.isin(self.rows[:, 0], (BOS_ID, EOS_ID, PAD_ID))))

    def to_midi(self, tokenizer: Any) -> Any:
        """The piece as a ``mido.MidiFile`` (lasting until ``end_step`` when there is one)."""
        midi = tokenizer.decode_midi(self.rows)
        return midi if self.end_step is None else end_midi_at(midi, self.end_step)


def prepare_prompt(tokenizer: Any, options: PromptOptions) -> PreparedPrompt:
    """:class:`PreparedPrompt` of ``options`` (checked first).

    Raises:
        ValueError / TypeError: as ``generate_midi``. InvalidMidiError: a prompt that is not a readable MIDI file.
    """

    options.check()
    if options.edits_track:
        whole = prompt_from_midi(options.prompt, None, tokenizer=tokenizer)
        plan = plan_track_edit(whole, add_track=options.add_track, regenerate_track=options.regenerate_track,
                               limit=options.time_limit)
        return PreparedPrompt(plan.prompt_rows, [], plan, options)
    rows, processors = build_generation_prompt(
        tokenizer, prompt=options.prompt, prompt_events=options.prompt_events, instruments=options.instruments,
        drum_kit=options.drum_kit, bpm=options.bpm, time_signature=options.time_signature, key=options.key,
        disable_control_change=options.disable_control_change)
    return PreparedPrompt(rows, processors, None, options)


def _max_events(prompts: Sequence[PreparedPrompt], sampling: SamplingOptions) -> tuple[int, bool]:
    """Events to generate at most per sample, and whether that bound is the caller's own."""
    options = prompts[0].options
    if options.edits_track:
        kept = max(len(p.plan.kept_rows) for p in prompts)
        if sampling.events is None:
            return kept + OPEN_ENDED_MAX_EVENTS, False
        return kept + sampling.events, True
    if sampling.events is not None:
        return sampling.events, True
    if options.time_limit is not None:
        return OPEN_ENDED_MAX_EVENTS, False
    return DEFAULT_EVENTS, True


def generate_prepared(model: Any, prompts: Sequence[PreparedPrompt], sampling: SamplingOptions) -> list[GeneratedPiece]:
    """Sample ``sampling.num_samples`` pieces of each prepared prompt in one batch.

    The prompts must come from the same :class:`PromptOptions` but for the prompt itself (the processors of the
    first are used for all). Returns the pieces prompt by prompt, ``num_samples`` each.
    """
    sampling.check()
    if not prompts:
        raise ValueError("no prompts to generate from")
    options = prompts[0].options
    samples = [prompt for prompt in prompts for _ in range(sampling.num_samples)]
    processors = list(prompts[0].processors)
    criteria: list = []
    if options.edits_track:
        editor = KeptTracksLogitsProcessor([p.plan for p in samples], max_model_events=sampling.events,
                                           allow_control_change=not options.disable_control_change,
                                           temperature=float(sampling.temperature))
        processors.append(editor)
        criteria.append(KeptTracksStoppingCriteria(editor))
    limit = options.time_limit
    if limit is not None:
        criteria.append(TimeLimitStoppingCriteria(limit, [MusicalClock.after(p.rows) for p in samples]))
    max_events, bounded = _max_events(prompts, sampling)
    context = default_context_events(model) if sampling.context_events is None else sampling.context_events
    streamer = EventProgressStreamer(max_events if bounded and not options.edits_track else None,
                                     disable=not sampling.progress)
    if sampling.streamer is not None:
        streamer = StreamerGroup([streamer, sampling.streamer])
    run = dict(max_events=max_events, context_events=context, logits_processor=processors,
               stopping_criteria=criteria, streamer=streamer, do_sample=True,
               temperature=float(sampling.temperature), top_p=float(sampling.top_p), top_k=int(sampling.top_k),
               pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID)
    prompt_rows = [p.rows for p in samples]
    if sampling.seed is None:
        outputs = generate_in_windows(model, prompt_rows, **run)
    else:  # seeded on a forked random state: same seed, same files; the caller's random state is untouched
        cuda_devices = [model.device.index or 0] if model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(int(sampling.seed))
            outputs = generate_in_windows(model, prompt_rows, **run)
    if not bounded and any(len(rows) - len(p.rows) >= max_events for rows, p in zip(outputs, samples, strict=True)):
        logger.warning("generation stopped at %d events before reaching its end", max_events)
    pieces = []
    for rows, prompt in zip(outputs, samples, strict=True):
        end_step = None
        if limit is not None:
            rows, end_step = cut_at_time_limit(rows, len(prompt.rows), limit)
            if end_step is None and prompt.plan is not None:
                end_step = prompt.plan.end_step
        pieces.append(GeneratedPiece(rows, end_step))
    return pieces


def generate_pieces(model: Any, tokenizer: Any, prompt_options: PromptOptions, sampling: SamplingOptions, *,
                    device: Any = None, dtype: Any = None) -> tuple[list[GeneratedPiece], Any]:
    """Check the options, load the model (see ``model_loading.load_model_and_tokenizer``), prepare the prompt and
    sample: ``(pieces, tokenizer)``. What ``generate_midi`` and the CLI run."""
    prompt_options.check()
    sampling.check()
    prepared = None
    if prompt_options.prompt is None:  # controls only: their errors come before the (slow) model load
        prepared = prepare_prompt(None, prompt_options)
    model, tokenizer = load_model_and_tokenizer(model, tokenizer, device=device, dtype=dtype)
    if prepared is None:  # a prompt file is encoded with the model's tokenizer
        prepared = prepare_prompt(tokenizer, prompt_options)
    return generate_prepared(model, [prepared], sampling), tokenizer


__all__ = [
    "OPEN_ENDED_MAX_EVENTS",
    "GeneratedPiece",
    "PreparedPrompt",
    "PromptOptions",
    "SamplingOptions",
    "generate_pieces",
    "generate_prepared",
    "prepare_prompt",
]
