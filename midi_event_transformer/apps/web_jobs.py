"""The web app's work, without any web framework: one request, its generation in a worker thread, its files.

The app (``midi_event_transformer.apps.web``) turns the page's inputs into an :class:`AppRequest`, gets the model
from a :class:`ModelStore` and runs a :class:`GenerationJob`:

* the job calls :func:`~midi_event_transformer.generation.api.generate_midi` in a worker thread, with a
  :class:`LivePreview` streamer that gathers every sample's finished events and notes as they come; it never makes
  the generation wait (nothing is queued for the page: a frame is read from the preview when the page wants one);
* :meth:`GenerationJob.updates` yields :class:`JobUpdate` snapshots (events so far, events/s, the musical time
  reached when the length is in seconds / bars or a track is edited, and now and then a :class:`PreviewFrame`:
  every sample's notes so far, for a live piano roll, as often as the page has time to take them) until the worker
  is done, and a last one with the whole piece;
* :func:`write_samples_in_stages` then writes each sample's ``.mid`` (``generation.outputs.save_samples``), then
  its piano-roll PNG, then (with fluidsynth) its WAV, handing each stage on as soon as it is ready
  (:func:`write_samples`: all at once).

Example::

    >>> from midi_event_transformer.apps.web_jobs import AppRequest, GenerationJob, ModelStore, write_samples
    >>> job = GenerationJob(AppRequest(instruments=["Violin"], events=64, seed=1), ModelStore("my_model_dir"))
    >>> for update in job.start().updates():
    ...     print(update.events_done, "/", update.events_total)
    >>> write_samples(job.result(), "out", seed=1)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.generation.streamers import BaseStreamer

from ..errors import error_line
from ..generation.api import generate_midi
from ..generation.loading import is_small_model, load_model_and_tokenizer, resolve_dtype
from ..generation.musical_time import MusicalClock, TimeLimit
from ..generation.outputs import save_samples
from ..generation.requests import LoadingOptions, PromptOptions, instrument_warning, option_fields
from ..generation.streamers import MidiEventStreamer
from ..vocabulary import EVENT_PARAMETERS, EVENT_TYPE_IDS, PARAMETER_OFFSETS, STEPS_PER_BEAT, TOKENS_PER_EVENT

logger = logging.getLogger(__name__)

#: Longer pieces get no audio (a WAV of 16-bit stereo at 44.1 kHz takes about 10 MB a minute).
MAX_AUDIO_SECONDS = 600.0
#: How often a job reports its progress: each update costs the server and the page some milliseconds of the cores
#: the generation runs on.
POLL_SECONDS = 0.5
#: The live piano roll's pace: a new frame at most every ``FRAME_SECONDS``, and ...
FRAME_SECONDS = 0.5
#: ... frames take at most this share of the time: after a frame that took ``t`` seconds to hand over (reading it
#: and the page's handling of the update, longer on a busy machine), the next one waits at least ``t / FRAME_SHARE``.
FRAME_SHARE = 0.1


# ----------------------------------------------------------------------------------------- request
#: The options a page does not set, each with its reason; every other option (but the Python objects: the
#: tokenizer and the streamer) is a field of :class:`AppRequest` and has a control on the page (a test checks it).
NOT_ON_THE_PAGE: dict[str, str] = {
    "device": "one model serves every request, on the app's device (--device / MidiApp(device=...))",
    "progress": "a tqdm bar is for a terminal: the page shows its own progress (JobUpdate)",
    "infill_seconds": "the page rewrites whole bars (infill_bars), the span a composer counts in; a span in "
                      "seconds from Python or the CLI (--infill-seconds)",
}


def _request_fields() -> list[tuple[str, Any, dataclasses.Field]]:
    """``(name, type, field)`` of each option a page sets: the option's field, with the app's default where the
    option declares one (``metadata["app_default"]``)."""
    return [(option.name, option.type, dataclasses.field(default=option.metadata.get("app_default", option.default),
                                                         metadata=option.metadata))
            for option in option_fields()
            if not option.metadata.get("python_only") and option.name not in NOT_ON_THE_PAGE]


class AppRequest(dataclasses.make_dataclass("_AppRequestFields", _request_fields())):  # type: ignore[misc]
    """What one press of Generate asks for: the options a page sets (the fields of ``generation.requests``'
    ``PromptOptions``, ``SamplingOptions`` and ``LoadingOptions`` but the device, see :data:`NOT_ON_THE_PAGE`),
    ``None`` where the page says "auto", with the app's defaults (512 events, seed 0: the files are named after it).

    The values are not checked here: :func:`generate_midi` checks them, once, when the job runs (a bad request is
    reported by :meth:`GenerationJob.result`). ``model`` is a model directory or Hub id; None: the app's model
    (``--model``, or the embedded one). ``dtype``: one of ``loading.DTYPE_NAMES``; None: the app's
    (``--dtype``, or the model's default).
    """

    def generate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`generate_midi` (all but the model, tokenizer and streamer)."""
        loading = {option.name for option in dataclasses.fields(LoadingOptions)}
        kwargs = {option.name: getattr(self, option.name) for option in dataclasses.fields(self)
                  if option.name not in loading}
        if kwargs["prompt"] is not None:
            kwargs["prompt"] = os.fspath(kwargs["prompt"])
        return {**kwargs, "progress": False}

    @property
    def edits_track(self) -> bool:
        """Whether the request adds a track or writes one again (``PromptOptions.edits_track``, unchecked)."""
        return self.add_track is not None or self.regenerate_track is not None

    @property
    def time_limit(self) -> TimeLimit | None:
        """The length in musical time, or None (raises as ``generate_midi`` on both or a bad value)."""
        if self.seconds is None and self.bars is None:
            return None
        return TimeLimit(seconds=self.seconds, bars=self.bars)


# ----------------------------------------------------------------------------------------- model
class ModelStore:
    """Loads models for the app and keeps the last one, by model and dtype (loading takes seconds; requests reuse
    it; one model is kept at a time, so memory holds one).

    Args:
        default: what an :class:`AppRequest` without ``model`` uses: a loaded model, a directory, a Hub id, or None
            for the embedded model.
        device, dtype: as in :func:`load_model_and_tokenizer`; ``dtype`` is what a request without one uses.
    """

    def __init__(self, default: Any = None, *, device: Any = None, dtype: Any = None) -> None:
        self.default = default
        self.device = device
        self.dtype = dtype
        self._lock = threading.Lock()
        self._key: tuple[str | None, Any] | None = None
        self._loaded: tuple[Any, Any] | None = None

    def get(self, name: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
        """``(model, tokenizer)`` of ``name`` (a directory or Hub id; None or empty: the default model) in ``dtype``
        (a ``loading.DTYPE_NAMES`` name or a torch.dtype; None: the store's); loaded again only when either
        differs from the last call's. int8 quantizes a fresh load or a copy of a default model passed in.

        Raises:
            ValueError / TypeError: as :func:`load_model_and_tokenizer` (not a model, cannot be loaded, a bad
                dtype, int8 on a device that is not the CPU, ...).
        """
        name = name.strip() if isinstance(name, str) and name.strip() else None
        if name is not None and name == self.default:
            name = None
        key = (name, resolve_dtype(self.dtype if dtype is None or dtype == "" else dtype))
        with self._lock:
            if self._loaded is None or key != self._key:
                self._loaded = self._key = None  # the old model is released before the new one loads
                self._loaded = load_model_and_tokenizer(self.default if name is None else name,
                                                        device=self.device, dtype=key[1])
                self._key = key
            return self._loaded

    def tokenizer(self) -> Any:
        """The loaded model's tokenizer, or (none loaded yet) a tokenizer with default settings."""
        from ..tokenization_midi_event_transformer import MidiEventTransformerTokenizer

        loaded = self._loaded
        return MidiEventTransformerTokenizer() if loaded is None else loaded[1]


# ----------------------------------------------------------------------------------------- streaming
class GenerationCancelled(Exception):
    """Raised inside ``generate`` (from the streamer) to stop a job whose page went away or pressed Stop."""


_NOTE_ID = EVENT_TYPE_IDS["note"]
_NOTE_SLOTS = {name: 1 + EVENT_PARAMETERS["note"].index(name) for name in ("channel", "pitch", "duration")}


class _SampleRows(MidiEventStreamer):
    """One sample's finished rows (``self.rows``, BOS and prompt included), the musical time they reach
    (``clock``: after the last event; ``start``: after the prompt), its events counted (``prompt_events``,
    ``generated_events``) and its notes (``notes``: ``(start, duration, pitch, channel)``, in steps of 1/16 beat)."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = MusicalClock()
        self.start: MusicalClock | None = None
        self.prompt_events = 0
        self.generated_events = 0
        self.notes: list[tuple[int, int, int, int]] = []

    def feed(self, tokens: list[int], from_prompt: bool) -> None:
        """Read ids (a list of ints: the prompt, or one new token)."""
        self._feed(tokens, from_prompt)

    def on_event(self, row: np.ndarray, from_prompt: bool) -> None:
        self.clock.advance(row)
        if from_prompt:
            self.prompt_events += 1
        else:
            self.generated_events += 1
        if row[0] == _NOTE_ID:
            self.notes.append((self.clock.step,
                               int(row[_NOTE_SLOTS["duration"]]) - PARAMETER_OFFSETS["duration"],
                               int(row[_NOTE_SLOTS["pitch"]]) - PARAMETER_OFFSETS["pitch"],
                               int(row[_NOTE_SLOTS["channel"]]) - PARAMETER_OFFSETS["channel"]))


@dataclass
class PreviewFrame:
    """What a live piano roll shows: each sample's notes so far, ``(start, duration, pitch, channel)`` with the
    times in steps (16 a beat, ``vocabulary.STEPS_PER_BEAT``), prompt included, and the events each sample has
    generated so far."""

    notes: list[list[tuple[int, int, int, int]]]
    generated_events: list[int]


class LivePreview(BaseStreamer):
    """A streamer for ``generate_midi(streamer=...)`` with several samples: their events and notes so far.

    Each sample's tokens go to a :class:`~midi_event_transformer.generation.streamers.MidiEventStreamer` of its own
    (rows of 8, EOS ends that sample). The generation never waits for the page: :meth:`put` only records the token
    (a few microseconds), and whoever shows the piece reads :meth:`frame` when it has time (a frame the page has not
    taken is never kept: the next read gives the newer one).

    Args:
        num_samples: the batch size of the generation.
        events: the events asked for (the progress bar's total), or None when the length is not in events.
        limit: the length in seconds or bars (counted from the prompt's end): the progress then follows
            :meth:`time_done` to ``limit.amount``.
    """

    def __init__(self, num_samples: int, events: int | None, limit: TimeLimit | None = None) -> None:
        self.samples = [_SampleRows() for _ in range(num_samples)]
        self.events_total = events
        self.tokens = 0  # generated token positions (the whole batch at once)
        self.started: float | None = None  # time.monotonic() when the prompt arrived
        self.ended: float | None = None  # ... and when the generation ended
        self.finished = threading.Event()
        self.cancelled = threading.Event()
        self.time_total: float | None = None
        self.time_unit = "s"
        if limit is not None:
            self.set_time_total(limit.amount, "bars" if limit.bars is not None else "s")

    def set_time_total(self, total: float, unit: str = "s") -> None:
        """Follow the musical time reached, to ``total`` seconds (``unit="s"``) or bars (``"bars"``)."""
        if unit not in ("s", "bars"):
            raise ValueError(f"unit must be 's' or 'bars', got {unit!r}")
        self.time_total, self.time_unit = float(total), unit

    @property
    def events_done(self) -> int:
        """Generated event positions so far (all samples advance together)."""
        return self.tokens // TOKENS_PER_EVENT

    @property
    def prompt_events(self) -> int:
        """The prompt's events (BOS not counted; the same prompt for every sample)."""
        return self.samples[0].prompt_events

    def time_done(self) -> float | None:
        """The musical time (``time_unit``) the furthest sample has reached after its prompt, at most
        ``time_total``; None when the progress is not in musical time."""
        if self.time_total is None:
            return None
        reached = 0.0
        for sample in self.samples:
            if sample.start is not None:
                clock, start = sample.clock, sample.start
                reached = max(reached, clock.bars - start.bars if self.time_unit == "bars"
                              else clock.seconds - start.seconds)
        return min(reached, self.time_total)

    def seconds(self) -> float:
        """Seconds of generation: from the prompt's arrival to the end (or now); 0 before the prompt."""
        if self.started is None:
            return 0.0
        return (time.monotonic() if self.ended is None else self.ended) - self.started

    def events_per_second(self) -> float:
        """Generated events per second (event positions: each sample's rate) since the prompt arrived (0 before)."""
        return self.events_done / max(self.seconds(), 1e-9) if self.started is not None else 0.0

    def snapshot(self) -> list[np.ndarray]:
        """Every sample's finished rows so far: ``(n_i, 8)`` int64 arrays, BOS first."""
        return [np.stack(list(sample.rows)) if sample.rows else np.zeros((0, TOKENS_PER_EVENT), dtype=np.int64)
                for sample in self.samples]

    def frame(self) -> PreviewFrame:
        """Every sample's notes so far (copies: the generation goes on appending)."""
        return PreviewFrame([list(sample.notes) for sample in self.samples],
                            [sample.generated_events for sample in self.samples])

    def put(self, value: Any) -> None:
        if self.cancelled.is_set():
            raise GenerationCancelled("generation stopped")
        ids = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=np.int64)
        if self.started is None:  # the prompts (num_samples, length)
            if ids.ndim != 2 or ids.shape[0] != len(self.samples):
                raise ValueError(f"expected prompts of shape ({len(self.samples)}, length), got {ids.shape}")
            self.started = time.monotonic()
            for sample, prompt in zip(self.samples, ids.tolist(), strict=True):
                sample.feed(prompt, from_prompt=True)
                sample.start = sample.clock.copy()
            return
        tokens = ids.reshape(-1).tolist()
        if len(tokens) != len(self.samples):
            raise ValueError(f"expected one token per sample ({len(self.samples)}), got {len(tokens)}")
        for sample, token in zip(self.samples, tokens, strict=True):
            sample.feed([token], from_prompt=False)
        self.tokens += 1

    def end(self) -> None:
        self.ended = time.monotonic()
        for sample in self.samples:
            sample.end()
        self.finished.set()


# ----------------------------------------------------------------------------------------- the job
@dataclass
class JobUpdate:
    """Where a running job stands.

    Attributes:
        stage: ``"loading"`` (the model) or ``"generating"``.
        events_done, events_total: generated events so far (with a track edit the kept events count too), and
            asked for (None: the length is not in events).
        events_per_second: the generation's speed so far.
        frame: every sample's notes so far (:class:`PreviewFrame`) when a new frame is due, else None.
        time_done, time_total, time_unit: the musical time reached after the prompt and the length asked for, in
            ``time_unit`` (``"s"`` or ``"bars"``), when the length is in seconds / bars or a track is edited (the
            total is then the prompt's length in seconds); None otherwise.
        warning: the request's new instruments the model never saw in training, in one line
            (:attr:`GenerationJob.warning`), or None.
    """

    stage: str
    events_done: int
    events_total: int | None
    events_per_second: float
    frame: PreviewFrame | None = None
    time_done: float | None = None
    time_total: float | None = None
    time_unit: str = "s"
    warning: str | None = None


@contextlib.contextmanager
def job_thread_decoding(model: Any) -> Iterator[None]:
    """Decode a small model on a CPU with one intra-op thread while in a job's thread, then restore the count.

    A job runs in a thread of its own, not in the process's main thread. GNU OpenMP (PyTorch's CPU wheels) lets
    an idle thread team spin only while the process holds no more OpenMP threads than CPUs, and the main thread's
    team already holds them: a second team in the job's thread waits by sleeping, and each of the thousands of small
    operations of a decoding step then pays a wake-up. One thread has no team to wake, which is faster for a model
    whose operations are small (``generation.loading.is_small_model``); a larger model keeps its threads.
    (``scripts/bench_app.py`` gives both, against ``generate_midi`` in the main thread.)
    """
    on_cpu = getattr(model, "device", torch.device("cpu")).type == "cpu"
    if not on_cpu or not is_small_model(model) or threading.current_thread() is threading.main_thread():
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class GenerationJob:
    """One generation request run in a worker thread (the caller's thread stays free to report progress).

    Args:
        request: what to generate.
        models: where the model comes from.
        frame_seconds: the shortest time between two live frames (see :data:`FRAME_SECONDS`, :meth:`updates`).
    """

    def __init__(self, request: AppRequest, models: ModelStore, frame_seconds: float = FRAME_SECONDS) -> None:
        if not isinstance(request, AppRequest):
            raise TypeError(f"request must be an AppRequest, not {type(request).__name__}")
        self.request = request
        self.models = models
        self.frame_seconds = frame_seconds
        try:
            limit = request.time_limit
        except (TypeError, ValueError):  # generate_midi reports it from the worker, as the other bad values
            limit = None
        self.preview = LivePreview(request.num_samples, None if request.edits_track else request.events,
                                   limit=limit)
        self.tokenizer: Any = None
        #: One line naming the request's new instruments the model never saw in training (set once the model is
        #: loaded; ``requests.instrument_warning``), or None.
        self.warning: str | None = None
        self._midis: list | None = None
        self._error: BaseException | None = None
        self._loaded = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._work, name="midi-event-transformer-generate", daemon=True)

    def _work(self) -> None:
        try:
            model, self.tokenizer = self.models.get(self.request.model, self.request.dtype)
            self.warning = self._instrument_warning(model)
            if self.request.edits_track and self.preview.time_total is None:  # it ends where the prompt ends
                self.preview.set_time_total(self._prompt_seconds())
            self._loaded.set()
            with job_thread_decoding(model):
                self._midis = generate_midi(model, self.tokenizer, streamer=self.preview,
                                            **self.request.generate_kwargs())
        except BaseException as error:  # handed to the caller by result()
            self._error = error
        finally:
            self._loaded.set()
            self.preview.finished.set()
            self._done.set()

    def _instrument_warning(self, model: Any) -> str | None:
        """``requests.instrument_warning`` of the request (None for a bad one: ``generate_midi`` reports it)."""
        names = {option.name for option in dataclasses.fields(PromptOptions)}
        try:
            options = PromptOptions(**{name: value for name, value in self.request.generate_kwargs().items()
                                       if name in names})
            return instrument_warning(model, options)
        except (TypeError, ValueError):
            return None

    def _prompt_seconds(self) -> float:
        """Where the prompt's last event starts, in seconds (a track edit's piece ends there)."""
        from ..generation.prompts import prompt_from_midi

        return MusicalClock.after(prompt_from_midi(self.request.prompt, None, tokenizer=self.tokenizer)).seconds

    def rewritten_beats(self) -> tuple[float, float] | None:
        """The span an infill request rewrote, in beats (for the piano rolls), or None for other requests."""
        if self.request.infill_bars is None:  # the page rewrites bars (see NOT_ON_THE_PAGE)
            return None
        from ..generation.infilling import span_steps
        from ..generation.prompts import prompt_from_midi

        rows = prompt_from_midi(self.request.prompt, None, tokenizer=self.tokenizer)
        start, end = span_steps(rows, bars=self.request.infill_bars)
        return start / STEPS_PER_BEAT, end / STEPS_PER_BEAT

    def start(self) -> GenerationJob:
        """Start the worker thread; returns ``self``."""
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def updates(self, poll_seconds: float = POLL_SECONDS) -> Iterator[JobUpdate]:
        """Yield a :class:`JobUpdate` at once, then every ``poll_seconds`` until the worker has finished, and a last
        one as soon as it has (with the whole piece's frame).

        An update carries a frame when the piece has grown since the last one, ``frame_seconds`` have passed and
        so has ``1 / FRAME_SHARE`` times what the last frame took to hand over (reading it, and the caller's
        handling of the update until it asks for the next: on a busy machine frames come less often). The
        generation never waits for the caller: one that stops asking only gets no frames.
        """
        preview = self.preview
        shown = 0  # events_done of the last frame
        next_frame = 0.0
        while True:
            done = self._done.is_set()
            frame = None
            began = time.monotonic()
            # the last update always shows the whole piece, even when the frame before already had every event
            # (the worker was still writing the files then)
            if (done and preview.events_done) or (preview.events_done > shown and began >= next_frame):
                shown, frame = preview.events_done, preview.frame()
            yield self._update(frame)
            if done:
                break
            if frame is not None:
                took = time.monotonic() - began
                next_frame = began + max(self.frame_seconds, took / FRAME_SHARE)
            self._done.wait(poll_seconds)
        self._thread.join()

    def _update(self, frame: PreviewFrame | None = None) -> JobUpdate:
        preview = self.preview
        return JobUpdate("generating" if self._loaded.is_set() else "loading", preview.events_done,
                         preview.events_total, preview.events_per_second(), frame, preview.time_done(),
                         preview.time_total, preview.time_unit, self.warning)

    def progress(self) -> JobUpdate:
        """Where the job stands now (no frame)."""
        return self._update()

    def cancel(self) -> None:
        """Stop the generation at its next token (``result`` then raises :class:`GenerationCancelled`)."""
        self.preview.cancelled.set()

    def result(self) -> list:
        """The ``mido.MidiFile`` of each sample, once the worker has finished; raises the worker's error."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return list(self._midis or [])


# ----------------------------------------------------------------------------------------- files
@dataclass
class SampleFiles:
    """The files of one generated sample: ``midi`` always, ``piano_roll`` and ``audio`` when they were asked for
    and could be made, and ``note``: why there is no audio (a piece too long to render, fluidsynth failed), or
    None."""

    midi: Path
    piano_roll: Path | None = None
    audio: Path | None = None
    note: str | None = None


def write_samples_in_stages(midis: list, output_dir: str | os.PathLike, seed: int, *, piano_roll: bool = True,
                            audio: bool = False, max_audio_seconds: float = MAX_AUDIO_SECONDS,
                            highlight: tuple[float, float] | None = None) -> Iterator[tuple[str, list[SampleFiles]]]:
    """Write the files of each sample, one kind at a time, and yield ``(stage, files)`` after each kind, so that
    the first files can be shown while the next are made: ``"midi"`` (each sample's ``generated_seed<seed>_<i>.mid``
    in ``output_dir``: ``generation.outputs.save_samples``, as the ``generate`` command), then with ``piano_roll``
    ``"piano_roll"`` (a PNG beside it), then with ``audio`` ``"audio"`` (a WAV by fluidsynth for pieces of at most
    ``max_audio_seconds`` (``mido.MidiFile.length``); a longer one, or one fluidsynth fails on, gets a ``note``
    instead). ``files`` is the same list each time, filled in as the stages go. ``highlight``: a span of beats the
    piano rolls shade (the bars an infill rewrote).

    Raises:
        ImportError: ``piano_roll`` without matplotlib.
    """
    from ..evaluation.audio import AudioRenderingError, render_audio
    from ..evaluation.pianoroll import draw_piano_roll

    written = [SampleFiles(midi=path) for path in save_samples(midis, output_dir, seed)]
    yield "midi", written
    if piano_roll:
        for index, (midi, files) in enumerate(zip(midis, written, strict=True)):
            files.piano_roll = draw_piano_roll(midi, files.midi.with_suffix(".png"), title=f"Sample {index + 1}",
                                               highlight=highlight, figsize=(10.0, 4.0), dpi=80)
        yield "piano_roll", written
    if audio:
        for midi, files in zip(midis, written, strict=True):
            if midi.length > max_audio_seconds:
                files.note = (f"no audio: the piece lasts {midi.length / 60:.0f} min, longer than the "
                              f"{max_audio_seconds / 60:g} min rendered to audio")
                continue
            try:
                files.audio = render_audio(files.midi, files.midi.with_suffix(".wav"))
            except AudioRenderingError as error:
                logger.warning("no audio for %s: %s", files.midi.name, error)
                files.note = f"no audio: {error_line(error)}"
        yield "audio", written


def write_samples(midis: list, output_dir: str | os.PathLike, seed: int, *, piano_roll: bool = True,
                  audio: bool = False, max_audio_seconds: float = MAX_AUDIO_SECONDS) -> list[SampleFiles]:
    """Every file of :func:`write_samples_in_stages` at once: each sample's ``.mid``, piano-roll PNG and, with
    ``audio``, WAV (or a ``note`` saying why there is none).

    Raises:
        ImportError: ``piano_roll`` without matplotlib.
    """
    stages = list(write_samples_in_stages(midis, output_dir, seed, piano_roll=piano_roll, audio=audio,
                                          max_audio_seconds=max_audio_seconds))
    return stages[-1][1]


__all__ = [
    "FRAME_SECONDS",
    "FRAME_SHARE",
    "MAX_AUDIO_SECONDS",
    "NOT_ON_THE_PAGE",
    "POLL_SECONDS",
    "AppRequest",
    "GenerationCancelled",
    "GenerationJob",
    "JobUpdate",
    "LivePreview",
    "ModelStore",
    "PreviewFrame",
    "SampleFiles",
    "write_samples",
    "write_samples_in_stages",
]
