"""A generation request from its options to finished pieces: what ``generate_midi``, the CLI, the web app and the
``midi-generation`` pipeline share.

1. the options: :class:`LoadingOptions` (which model, where, in which precision), :class:`PromptOptions` (what to
   start from: a MIDI prompt or controls, a track to add or write again, a length in seconds or bars) and
   :class:`SamplingOptions` (how many events, sampling settings, seed, window). Each option is one dataclass field:
   its name, its default, its help (``metadata["help"]``, as peft's configs) and, in ``check`` (run by
   ``__post_init__``, so a constructed object is valid), its validation. The other layers read the fields
   (:func:`options_from_keywords`, :func:`document_options`, the CLI flags, the Pipeline's keywords, the app's
   request); the metadata keys they read are listed in :data:`OPTION_METADATA`;
2. :func:`prepare_prompt` turns one prompt into a :class:`PreparedPrompt` (its rows, its logits processors and,
   for a track edit, its ``track_editing.TrackEditPlan``);
3. :func:`generate_prepared` samples every prepared prompt (``num_samples`` times each, in one batch) through
   ``sliding_window.generate_in_windows``, seeded on a forked random state, and ends each piece at its length;
4. :meth:`GeneratedPiece.to_midi` decodes a piece (a file that lasts until the length when one was asked).

Adding an option is one field (with its help and checks) plus its handling in steps 2-3; ``generate_midi`` also
lists it as a keyword (a test keeps the two in step).
"""

from __future__ import annotations

import dataclasses
import logging
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from ..vocabulary import BOS_ID, EOS_ID, PAD_ID
from .general_midi import DRUM_KITS
from .infilling import InfillPlan, assemble_infill, check_span, plan_infill, span_steps, with_both_sides
from .known_instruments import read_training_data, unseen_instruments_warning
from .loading import DTYPE_NAMES, load_model_and_tokenizer
from .musical_time import MusicalClock, TimeLimit, TimeLimitStoppingCriteria, cut_at_time_limit, end_midi_at
from .part_balance import EveryPartPlaysLogitsProcessor, check_max_rest_bars
from .prompts import MAX_BPM, build_prompt, instrument_tracks, prompt_from_midi, prompt_logits_processors
from .sliding_window import DEFAULT_CONTEXT_EVENTS, default_context_events, generate_in_windows
from .streamers import EventProgressStreamer, StreamerGroup
from .track_editing import (
    KeptTracksLogitsProcessor,
    KeptTracksStoppingCriteria,
    TrackEditPlan,
    plan_track_edit,
)

logger = logging.getLogger(__name__)

#: What ``events=None`` generates without a length in seconds / bars (the public reference app's default).
DEFAULT_EVENTS = 512
#: What ``prompt_events=None`` keeps of a prompt (the public reference app's default).
DEFAULT_PROMPT_EVENTS = 128

#: Events generated at most per sample when only a length in seconds / bars or the end of a track edit bounds
#: the piece (a model that never moves on in time stops here).
OPEN_ENDED_MAX_EVENTS = 100_000

#: The keys of the options' field metadata and what reads them.
OPTION_METADATA: dict[str, str] = {
    "help": "what the option does: the CLI's --help, the app's hints and generate_midi's Args",
    "python_only": "True: a Python object (no CLI flag, no page control)",
    "cli_flag": "the CLI flag where it is not --<name-with-dashes> (a bool defaulting to True is a --no-... switch)",
    "cli_help": "the CLI's wording where the help speaks of Python values",
    "cli_metavar": "the flag's metavar",
    "cli_group": "the --help section: prompt, edit, length, sampling or output (none: the command's own options)",
    "choices": "the values offered: the CLI flag's choices and the web app's list",
    "cli_append": "True: the flag may be repeated, its values joined with commas",
    "app_default": "the web app's default where it differs from the field's (with its reason in a comment)",
    "not_with_infill": "True: a prompt option an infill (infill_bars / infill_seconds) cannot be combined with",
}


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_number(name: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")


def _check_prompt_alone(**options: Any) -> None:
    given = [name for name, value in options.items() if value is not None]
    if given:
        raise ValueError(f"a prompt cannot be combined with {', '.join(given)}: the prompt's own events set them "
                         "(use one or the other)")


# ----------------------------------------------------------------------------------------- the options
@dataclass
class LoadingOptions:
    """Which model and tokenizer a request runs with, where and in which precision (the arguments of
    ``generate_midi`` with the same names).

    The values are checked where they are used, once per request: by ``loading.load_model_and_tokenizer``
    (``resolve_device`` / ``resolve_dtype``) before the model loads.
    """

    model: Any = field(default=None, metadata={
        "help": "a model directory (saved with save_pretrained, or a SkyTNT/midi-model checkpoint, converted on "
                "load) or a Hugging Face Hub id; default: the model shipped in the package (DEFAULT_MODEL). From "
                "Python also a loaded MidiEventTransformerForCausalLM",
        "cli_metavar": "DIR_OR_HUB_ID"})
    tokenizer: Any = field(default=None, metadata={
        "help": "a MidiEventTransformerTokenizer; None loads the one saved with the model (default settings if "
                "there is none)",
        "python_only": True})
    device: str | torch.device | None = field(default=None, metadata={
        "help": "where to run: cpu, cuda, cuda:1, mps (default: cuda if available; a loaded model stays where it "
                "is and is moved when a device is given)",
        "cli_group": "sampling"})
    dtype: str | torch.dtype | None = field(default=None, metadata={
        "help": f"the compute precision: {', '.join(DTYPE_NAMES)} or a torch.dtype (default: the model's stored "
                "dtype; float32 for a small model loaded for a CPU). int8 quantizes the Linear layers "
                "(model.quantize_dynamic_int8(): a fresh load, or a copy of a model passed in) and runs on the CPU "
                "only; measured on the developers' 2-core AMD EPYC CPU it generates 4.1x as fast as float32 with "
                "tv2o-medium at batch 1, but slower with the small shipped model (236 against 256 events/s), and "
                "costs +0.006 held-out NLL per token on the shipped model",
        "cli_group": "sampling", "choices": DTYPE_NAMES})


@dataclass
class PromptOptions:
    """What a generation starts from (the arguments of ``generate_midi`` with the same names); checked on
    construction (:meth:`check`)."""

    prompt: Any = field(default=None, metadata={
        "help": "continue this MIDI file (from Python also bytes, a file object, a mido.MidiFile or encoded rows "
                "(n, 8)); it cannot be combined with instruments, drum_kit, bpm, time_signature or key",
        "cli_metavar": "SONG.mid", "cli_group": "prompt"})
    prompt_events: int | None = field(default=None, metadata={
        "help": f"how many of the prompt's events to keep, BOS included (default {DEFAULT_PROMPT_EVENTS}, as the "
                "reference app)",
        "cli_metavar": "N", "cli_group": "prompt", "not_with_infill": True})
    instruments: Sequence[str | int] | str | None = field(default=None, metadata={
        "help": "General MIDI instrument names or program numbers 0-127 for a new piece, a list or "
                "comma-separated (e.g. \"Acoustic Grand Piano, Violin\"); the model then keeps to them (no patch "
                "changes, only their channels and the drum kit's)",
        "cli_metavar": "NAMES", "cli_group": "prompt", "cli_append": True})
    drum_kit: str | int | None = field(default=None, metadata={
        "help": f"a drum kit on channel 10 for a new piece: {', '.join(DRUM_KITS.values())} (or its program)",
        "cli_metavar": "KIT", "cli_group": "prompt"})
    bpm: float | None = field(default=None, metadata={
        "help": f"the tempo of a new piece in beats per minute (1-{MAX_BPM})", "cli_group": "prompt"})
    time_signature: str | tuple[int, int] | None = field(default=None, metadata={
        "help": "the time signature of a new piece, e.g. 3/4 or 6/8 (from Python also (3, 4))",
        "cli_metavar": "N/D", "cli_group": "prompt"})
    key: str | tuple[int, int] | None = field(default=None, metadata={
        "help": "the key signature of a new piece, e.g. \"D minor\", \"F# major\", Bb (from Python also (sf, mi))",
        "cli_group": "prompt"})
    max_rest_bars: float | None = field(default=1.0, metadata={
        "help": "with instruments / drum_kit: a requested part that has not sounded for this many bars plays the "
                "model's next note, so that every instrument keeps its part (see part_balance); 0 or None: parts "
                "may rest as long as the model likes",
        "cli_metavar": "B", "cli_group": "prompt"})
    disable_control_change: bool = field(default=False, metadata={
        "help": "forbid control change events (pedal, volume, ...)",
        "cli_flag": "--no-control-change", "cli_group": "prompt"})
    add_track: str | int | None = field(default=None, metadata={
        "help": "add a track to the prompt (the whole piece): a General MIDI instrument name or program, a drum "
                "kit name or \"drums\"; the other tracks are kept note for note and the model writes the new one "
                "between their events (constrained decoding, see track_editing); the piece ends where the prompt "
                "ends",
        "cli_metavar": "INSTRUMENT", "cli_group": "edit", "not_with_infill": True})
    regenerate_track: int | None = field(default=None, metadata={
        "help": "write the prompt's track of this number (numbered as the tokenize command shows them) again, on "
                "its channel and program, the other tracks kept",
        "cli_metavar": "N", "cli_group": "edit", "not_with_infill": True})
    seconds: float | None = field(default=None, metadata={
        "help": "stop at the first event at or past this many seconds after the prompt (from the start with a "
                "track edit), tempo changes counted; notes still sounding end there, and so does the file",
        "cli_metavar": "S", "cli_group": "length", "not_with_infill": True})
    bars: float | None = field(default=None, metadata={
        "help": "stop at this many bars after the prompt (from the start with a track edit), time-signature "
                "changes counted; otherwise as seconds",
        "cli_metavar": "B", "cli_group": "length", "not_with_infill": True})
    infill_bars: tuple[int, int] | str | None = field(default=None, metadata={
        "help": "rewrite these bars of the prompt (the whole piece), both included: (9, 12) or \"9-12\"; bar 1 starts "
                "at time 0, bars counted with the prompt's time signatures. Every note that starts outside them is "
                "kept note for note, and so are tempo and signature events inside; a model trained with "
                "fill-in-the-middle also reads what follows (see infilling)",
        "cli_metavar": "FIRST-LAST", "cli_group": "edit"})
    infill_seconds: tuple[float, float] | str | None = field(default=None, metadata={
        "help": "rewrite the prompt from this second to that one, half-open: (20.0, 30.0) or \"20-30\" (tempo changes "
                "counted); otherwise as infill_bars",
        "cli_metavar": "START-END", "cli_group": "edit"})
    infill_tracks: Sequence[int] | str | None = field(default=None, metadata={
        "help": "with infill_bars / infill_seconds, rewrite only these tracks (numbered as the tokenize command "
                "shows them), e.g. [2, 3] or \"2,3\"; the other tracks stay note for note inside the span too "
                "(default: every track with notes)",
        "cli_metavar": "N,N", "cli_group": "edit"})

    def __post_init__(self) -> None:
        if isinstance(self.infill_tracks, str):  # "2,3", as the CLI and the page give it
            try:
                self.infill_tracks = [int(part) for part in self.infill_tracks.replace(" ", "").split(",") if part]
            except ValueError as error:
                raise ValueError(f"infill_tracks must be track numbers like '2,3', got {self.infill_tracks!r}") \
                    from error
        if self.max_rest_bars == 0 and not isinstance(self.max_rest_bars, bool):  # the CLI's and the page's "off"
            self.max_rest_bars = None
        self.check()

    @property
    def edits_track(self) -> bool:
        return self.add_track is not None or self.regenerate_track is not None

    @property
    def infills(self) -> bool:
        """Whether the request rewrites a span of the prompt (``infill_bars`` or ``infill_seconds``)."""
        return self.infill_bars is not None or self.infill_seconds is not None

    @property
    def time_limit(self) -> TimeLimit | None:
        if self.seconds is None and self.bars is None:
            return None
        return TimeLimit(seconds=self.seconds, bars=self.bars)

    def check(self) -> None:
        """Raise on options that cannot go together or bad values that need no model to see (run on construction).

        Raises:
            ValueError: a prompt combined with new-piece controls, a track edit without a prompt or with
                ``prompt_events``, both track edits, both lengths, a length <= 0, an infill span that is empty or
                given in bars and seconds, an infill without a prompt or with a track edit, ``prompt_events`` or a
                length. TypeError: values of the wrong type.
        """
        if self.infills:
            check_span(self.infill_bars, self.infill_seconds)
            if self.prompt is None:
                raise ValueError("infill_bars / infill_seconds need a prompt: the piece whose passage is rewritten")
            combined = [option.name for option in dataclasses.fields(self)
                        if option.metadata.get("not_with_infill") and getattr(self, option.name) is not None]
            if combined:
                raise ValueError(f"infilling (infill_bars / infill_seconds) cannot be combined with "
                                 f"{', '.join(combined)}: it rewrites a span of the whole prompt, which keeps its "
                                 "length")
        elif self.infill_tracks is not None:
            raise ValueError("infill_tracks needs infill_bars or infill_seconds: the span to rewrite")
        _check_bool("disable_control_change", self.disable_control_change)
        check_max_rest_bars(self.max_rest_bars)
        _check_number("seconds", self.seconds)
        _check_number("bars", self.bars)
        if self.seconds is not None or self.bars is not None:
            TimeLimit(seconds=self.seconds, bars=self.bars)  # raises on both, or on a value <= 0
        if self.prompt is not None:
            _check_prompt_alone(instruments=self.instruments, drum_kit=self.drum_kit, bpm=self.bpm,
                                time_signature=self.time_signature, key=self.key)
            _check_int("prompt_events", self.prompt_events, 1, allow_none=True)
        elif self.prompt_events is not None and not self.edits_track:
            raise ValueError("prompt_events is only used with a prompt (the first events of a MIDI file)")
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
    """How a generation samples (the arguments of ``generate_midi`` with the same names); checked on construction
    (:meth:`check`)."""

    events: int | None = field(default=None, metadata={
        "help": f"events to generate after the prompt (fewer if the model ends the piece); default {DEFAULT_EVENTS}, "
                "or no limit but the length with seconds / bars; with a track edit, the events the model may write",
        "cli_metavar": "N", "cli_group": "sampling",
        "app_default": DEFAULT_EVENTS})  # the page's length is a number of events unless seconds / bars are chosen
    temperature: float = field(default=1.0, metadata={
        "help": "the sampling temperature (> 0)", "cli_group": "sampling"})
    top_p: float = field(default=0.94, metadata={
        "help": "nucleus sampling: the most likely tokens up to this probability mass (0 < top_p <= 1)",
        "cli_group": "sampling"})
    top_k: int = field(default=20, metadata={
        "help": "the k most likely tokens only (0: no top-k filter)", "cli_group": "sampling"})
    seed: int | None = field(default=None, metadata={
        "help": "the random seed: the same seed (with the same options, model and device) gives the same files; "
                "default: a random one",
        "cli_group": "sampling",
        "app_default": 0})  # the page always shows the seed its files are named after
    num_samples: int = field(default=1, metadata={
        "help": "pieces generated at once (one batch)", "cli_metavar": "N", "cli_group": "sampling"})
    context_events: int | None = field(default=None, metadata={
        "help": f"the sliding window: no model.generate call sees more events (default: the training window, "
                f"{DEFAULT_CONTEXT_EVENTS}); longer pieces go on from the last events (sliding_window)",
        "cli_metavar": "W", "cli_group": "length"})
    progress: bool = field(default=True, metadata={
        "help": "show a tqdm bar of generated events and events per second",
        "cli_flag": "--no-progress", "cli_help": "hide the progress bar", "cli_group": "output"})
    streamer: Any = field(default=None, metadata={
        "help": "also hand the tokens to this streamer (put / end, as model.generate(streamer=...)): first the "
                "prompts (num_samples, prompt_length), then each new token (num_samples,); the streamers of "
                "midi_event_transformer.generation.streamers take one sample (num_samples=1)",
        "python_only": True})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise on bad values (run on construction).

        Raises:
            ValueError: a value out of its range. TypeError: values of the wrong type.
        """
        _check_int("events", self.events, 1, allow_none=True)
        _check_int("top_k", self.top_k, 0)
        _check_int("seed", self.seed, 0, allow_none=True)
        _check_int("num_samples", self.num_samples, 1)
        _check_number("temperature", self.temperature, allow_none=False)
        _check_number("top_p", self.top_p, allow_none=False)
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        _check_int("context_events", self.context_events, 2, allow_none=True)
        _check_bool("progress", self.progress)
        streamer = self.streamer
        if streamer is not None and not (callable(getattr(streamer, "put", None))
                                         and callable(getattr(streamer, "end", None))):
            raise TypeError(f"streamer must have put() and end() methods (a transformers streamer), not "
                            f"{type(streamer).__name__}")


#: The options of a request, in the order their values are checked (loading last: its values are checked as the
#: model loads).
OPTION_CLASSES: tuple[type, ...] = (PromptOptions, SamplingOptions, LoadingOptions)


def check_request(prompt_options: PromptOptions, sampling: SamplingOptions) -> None:
    """Raise on prompt and sampling options that cannot go together (each checked alone when it was made).

    Raises:
        ValueError: ``events`` with an infill (the span's own length decides how many events the model writes).
    """
    if prompt_options.infills and sampling.events is not None:
        raise ValueError("infilling (infill_bars / infill_seconds) cannot be combined with events: the span's length "
                         "decides how many events the model writes")


def option_fields(*classes: type) -> list[dataclasses.Field]:
    """The fields of ``classes`` (default: every option class, :data:`OPTION_CLASSES`), in order."""
    return [f for cls in (classes or OPTION_CLASSES) for f in dataclasses.fields(cls)]


def options_from_keywords(keywords: Mapping[str, Any], caller: str = "generate_midi"
                          ) -> tuple[LoadingOptions, PromptOptions, SamplingOptions]:
    """The options of ``generate_midi``-style keywords, each value in the field of its name (absent ones keep
    their defaults); the prompt and sampling options are checked here, once.

    Raises:
        TypeError: a keyword that is no option field (named after ``caller``), or a value of the wrong type.
        ValueError: as :meth:`PromptOptions.check` / :meth:`SamplingOptions.check`.
    """
    unknown = sorted(set(keywords) - {f.name for f in option_fields()})
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword argument(s) {', '.join(unknown)}")
    built = {cls: cls(**{f.name: keywords[f.name] for f in dataclasses.fields(cls) if f.name in keywords})
             for cls in OPTION_CLASSES}
    check_request(built[PromptOptions], built[SamplingOptions])
    return built[LoadingOptions], built[PromptOptions], built[SamplingOptions]


_Function = TypeVar("_Function", bound=Callable[..., Any])


def document_options(*classes: type) -> Callable[[_Function], _Function]:
    """A decorator that writes an ``Args:`` section, each field of ``classes`` with its help, into the
    function's docstring, before its ``Returns:`` section (as transformers' docstring decorators)."""

    def decorate(function: _Function) -> _Function:
        lines = ["    Args:"]
        for option in option_fields(*classes):
            lines.append(textwrap.fill(f"{option.name}: {option.metadata['help']}.", width=116,
                                       initial_indent=" " * 8, subsequent_indent=" " * 12,
                                       break_on_hyphens=False))
        doc = function.__doc__ or ""
        marker = "    Returns:"
        head, found, tail = doc.partition(marker)
        function.__doc__ = (head + "\n".join(lines) + "\n\n" + found + tail) if found else doc + "\n".join(lines)
        return function

    return decorate


@dataclass
class PreparedPrompt:
    """One prompt ready to sample: ``rows`` ``(n, 8)`` (BOS first), the logits ``processors`` of its controls, the
    ``plan`` of a track edit or an infill (None otherwise), the ``options`` it came from and the ``parts`` that must
    keep playing (track -> channel of a new piece's instruments under ``max_rest_bars``; empty otherwise)."""

    rows: np.ndarray
    processors: list = field(default_factory=list)
    plan: TrackEditPlan | InfillPlan | None = None
    options: PromptOptions = field(default_factory=PromptOptions)
    parts: dict[int, int] = field(default_factory=dict)


@dataclass
class GeneratedPiece:
    """One sample: ``rows`` ``(n, 8)`` (the prompt's rows, then the generated events, without EOS),
    ``end_step``, the step of a seconds / bars limit the piece was ended at (None: it ends with its last event), and
    the ``span`` ``(start_step, end_step)`` an infill rewrote (None without one)."""

    rows: np.ndarray
    end_step: int | None = None
    span: tuple[int, int] | None = None

    @property
    def events(self) -> int:
        """Events of the piece after BOS (prompt included)."""
        return int(np.sum(~np.isin(self.rows[:, 0], (BOS_ID, EOS_ID, PAD_ID))))

    def to_midi(self, tokenizer: Any) -> Any:
        """The piece as a ``mido.MidiFile`` (lasting until ``end_step`` when there is one)."""
        midi = tokenizer.decode_midi(self.rows)
        return midi if self.end_step is None else end_midi_at(midi, self.end_step)


def prepare_prompt(tokenizer: Any, options: PromptOptions) -> PreparedPrompt:
    """:class:`PreparedPrompt` of ``options`` (checked when they were made).

    Args:
        tokenizer: encodes a prompt file (None: a tokenizer with default settings; not needed for controls).
        options: the prompt options.

    Raises:
        ValueError / TypeError: as ``generate_midi``. InvalidMidiError: a prompt that is not a readable MIDI file.
    """
    if options.edits_track:
        whole = prompt_from_midi(options.prompt, None, tokenizer=tokenizer)
        plan = plan_track_edit(whole, add_track=options.add_track, regenerate_track=options.regenerate_track,
                               limit=options.time_limit)
        return PreparedPrompt(plan.prompt_rows, [], plan, options)
    if options.infills:
        whole = prompt_from_midi(options.prompt, None, tokenizer=tokenizer)
        start, end = span_steps(whole, bars=options.infill_bars, seconds=options.infill_seconds)
        plan = plan_infill(whole, start, end, tracks=options.infill_tracks)
        return PreparedPrompt(plan.prompt_rows, [], plan, options)
    allow_control_change = not options.disable_control_change
    if options.prompt is not None:
        rows = prompt_from_midi(options.prompt, DEFAULT_PROMPT_EVENTS if options.prompt_events is None
                                else options.prompt_events, tokenizer=tokenizer)
        return PreparedPrompt(rows, prompt_logits_processors(allow_control_change=allow_control_change), None,
                              options)
    rows = build_prompt(instruments=options.instruments, drum_kit=options.drum_kit, bpm=options.bpm,
                        time_signature=options.time_signature, key_signature=options.key)
    processors = prompt_logits_processors(instruments=options.instruments, drum_kit=options.drum_kit,
                                          allow_control_change=allow_control_change)
    parts = {} if options.max_rest_bars is None else instrument_tracks(options.instruments, options.drum_kit)
    return PreparedPrompt(rows, processors, None, options, parts)


def build_generation_prompt(tokenizer: Any = None, **options: Any) -> tuple[np.ndarray, list]:
    """The prompt rows and the logits processors of a generation request (see :func:`prepare_prompt`).

    Args:
        tokenizer: encodes a prompt file (None: a tokenizer with default settings).
        options: :class:`PromptOptions` fields (as ``generate_midi``'s keywords), but a track edit.

    Returns:
        ``(rows, processors)``: ``rows`` ``(n_events, 8)`` int64 starting with BOS; ``processors`` a list of
        ``LogitsProcessor`` (no patch change and only the prompt's channels when instruments are named; no
        control change with ``disable_control_change``).

    Raises:
        ValueError: a prompt combined with instruments / drum kit / bpm / signatures, unknown names, bad values, a
            track edit. TypeError: arguments of the wrong type. InvalidMidiError: a prompt that is not a readable
            MIDI file.
    """
    prompt_options = PromptOptions(**options)
    if prompt_options.edits_track:
        raise ValueError("build_generation_prompt builds no track edit (use prepare_prompt)")
    prepared = prepare_prompt(tokenizer, prompt_options)
    return prepared.rows, prepared.processors


def _max_events(prompts: Sequence[PreparedPrompt], sampling: SamplingOptions) -> tuple[int, bool]:
    """Events to generate at most per sample, and whether that bound is the caller's own."""
    options = prompts[0].options
    if options.infills:
        return max(len(p.plan.kept_rows) + p.plan.max_model_events for p in prompts), False
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
    if not prompts:
        raise ValueError("no prompts to generate from")
    options = prompts[0].options
    context = default_context_events(model) if sampling.context_events is None else sampling.context_events
    if options.infills:
        prompts = [_infill_path(model, prompt, context) for prompt in prompts]
    samples = [prompt for prompt in prompts for _ in range(sampling.num_samples)]
    processors = list(prompts[0].processors)
    criteria: list = []
    if options.edits_track or options.infills:
        editor = KeptTracksLogitsProcessor([p.plan for p in samples], max_model_events=sampling.events,
                                           allow_control_change=not options.disable_control_change,
                                           temperature=float(sampling.temperature))
        processors.append(editor)
        criteria.append(KeptTracksStoppingCriteria(editor))
    if prompts[0].parts:
        processors.append(EveryPartPlaysLogitsProcessor(prompts[0].parts, [MusicalClock.after(p.rows) for p in samples],
                                                        options.max_rest_bars))
    limit = options.time_limit
    if limit is not None:
        criteria.append(TimeLimitStoppingCriteria(limit, [MusicalClock.after(p.rows) for p in samples]))
    max_events, bounded = _max_events(prompts, sampling)
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
        if isinstance(prompt.plan, InfillPlan):  # the whole piece, lasting as long as the prompt
            plan = prompt.plan
            pieces.append(GeneratedPiece(assemble_infill(rows, plan), plan.piece_end, (plan.start_step, plan.end_step)))
            continue
        end_step = None
        if limit is not None:
            rows, end_step = cut_at_time_limit(rows, len(prompt.rows), limit)
            if end_step is None and prompt.plan is not None:
                end_step = prompt.plan.end_step
        pieces.append(GeneratedPiece(rows, end_step))
    return pieces


def _infill_path(model: Any, prompt: PreparedPrompt, context_events: int) -> PreparedPrompt:
    """``prompt`` as the model infills it: with both sides (a FIM layout) when it was trained for
    fill-in-the-middle and the span fits, past only otherwise; the choice is logged."""
    plan = prompt.plan
    span = f"steps {plan.start_step}-{plan.end_step}"
    if not getattr(model.config, "fill_in_the_middle", False):
        logger.info("infilling %s past only (the model was not trained with fill-in-the-middle)", span)
        return prompt
    try:
        plan = with_both_sides(plan, context_events)
    except ValueError as reason:
        logger.info("infilling %s past only: %s", span, reason)
        return prompt
    logger.info("infilling %s with both sides (fill-in-the-middle: %d prompt rows)", span, len(plan.prompt_rows))
    return dataclasses.replace(prompt, rows=plan.prompt_rows, plan=plan)


def instrument_warning(model: Any, options: PromptOptions) -> str | None:
    """The one line that warns of a request's new instruments (``instruments``, ``drum_kit``, ``add_track``) the
    model never saw in training, or None: all seen, none asked for, or no record beside the model (see
    ``known_instruments``; an unreadable record is logged and ignored). What :func:`generate_pieces` logs and the
    web app shows.

    Raises:
        ValueError / TypeError: unknown instrument names (as :meth:`PromptOptions.check` and the prompt raise them).
    """
    if options.instruments is None and options.drum_kit is None and options.add_track is None:
        return None
    try:
        training_data = read_training_data(model)
    except ValueError as error:  # a broken record does not stop a generation
        logger.warning("ignoring what the model saw in training: %s", error)
        return None
    return unseen_instruments_warning(training_data, options.instruments, options.drum_kit, options.add_track)


def generate_pieces(loading: LoadingOptions, prompt_options: PromptOptions, sampling: SamplingOptions
                    ) -> tuple[list[GeneratedPiece], Any]:
    """Load the model (see ``loading.load_model_and_tokenizer``), prepare the prompt and sample:
    ``(pieces, tokenizer)``. What ``generate_midi``, the CLI and the web app run (the options were checked when
    they were made). New instruments the model never saw in training are logged as one warning
    (:func:`instrument_warning`); the generation goes on."""
    prepared = None
    if prompt_options.prompt is None:  # controls only: their errors come before the (slow) model load
        prepared = prepare_prompt(None, prompt_options)
    model, tokenizer = load_model_and_tokenizer(loading.model, loading.tokenizer, device=loading.device,
                                                dtype=loading.dtype)
    if prepared is None:  # a prompt file is encoded with the model's tokenizer
        prepared = prepare_prompt(tokenizer, prompt_options)
    warning = instrument_warning(model, prompt_options)
    if warning is not None:
        logger.warning("%s", warning)
    return generate_prepared(model, [prepared], sampling), tokenizer


__all__ = [
    "DEFAULT_EVENTS",
    "DEFAULT_PROMPT_EVENTS",
    "OPEN_ENDED_MAX_EVENTS",
    "OPTION_CLASSES",
    "OPTION_METADATA",
    "GeneratedPiece",
    "LoadingOptions",
    "PreparedPrompt",
    "PromptOptions",
    "SamplingOptions",
    "build_generation_prompt",
    "check_request",
    "document_options",
    "generate_pieces",
    "generate_prepared",
    "instrument_warning",
    "option_fields",
    "options_from_keywords",
    "prepare_prompt",
]
