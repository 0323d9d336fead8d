"""The web app's work, without any web framework: one request, its generation in a worker thread, its files.

The app (``midi_event_transformer.apps.web``) turns the page's inputs into an :class:`AppRequest`, gets the model
from a :class:`ModelStore` and runs a :class:`GenerationJob`:

* the job calls :func:`~midi_event_transformer.generation.api.generate_midi` in a worker thread, with a
  :class:`LivePreview` streamer that gathers every sample's finished events as they come;
* :meth:`GenerationJob.updates` yields :class:`JobUpdate` snapshots (events so far, events/s, the musical time
  reached when the length is in seconds / bars or a track is edited, and now and then a frame: the rows of every
  sample so far, for a live piano roll) until the worker is done;
* :func:`write_samples` then writes each sample's ``.mid`` (``generation.outputs.save_samples``), piano-roll PNG
  and (with fluidsynth) WAV.

Example::

    >>> from midi_event_transformer.apps.web_jobs import AppRequest, GenerationJob, ModelStore, write_samples
    >>> job = GenerationJob(AppRequest(instruments=["Violin"], events=64, seed=1), ModelStore("my_model_dir"))
    >>> for update in job.start().updates():
    ...     print(update.events_done, "/", update.events_total)
    >>> write_samples(job.result(), "out", seed=1)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Full, Queue
from typing import Any

import numpy as np
from transformers.generation.streamers import BaseStreamer

from ..generation.api import generate_midi
from ..generation.loading import load_model_and_tokenizer
from ..generation.musical_time import MusicalClock, TimeLimit
from ..generation.outputs import save_samples
from ..generation.requests import LoadingOptions, option_fields
from ..generation.streamers import MidiEventStreamer
from ..vocabulary import TOKENS_PER_EVENT

logger = logging.getLogger(__name__)

#: Longer pieces get no audio (a WAV of 16-bit stereo at 44.1 kHz takes about 10 MB a minute).
MAX_AUDIO_SECONDS = 600.0
#: How many live piano-roll frames a generation hands out (one every ``ceil(events / PREVIEW_FRAMES)`` events, or
#: every ``1 / PREVIEW_FRAMES`` of the length in musical time).
PREVIEW_FRAMES = 10


# ----------------------------------------------------------------------------------------- request
#: The options a page does not set, each with its reason; every other option (but the Python objects: the
#: tokenizer and the streamer) is a field of :class:`AppRequest` and has a control on the page (a test checks it).
NOT_ON_THE_PAGE: dict[str, str] = {
    "device": "one model serves every request, on the app's device (--device / MidiApp(device=...))",
    "dtype": "one model serves every request, in the app's dtype (--dtype / MidiApp(dtype=...))",
    "progress": "a tqdm bar is for a terminal: the page shows its own progress (JobUpdate)",
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
    ``PromptOptions``, ``SamplingOptions`` and ``LoadingOptions.model``, see :data:`NOT_ON_THE_PAGE`), ``None``
    where the page says "auto", with the app's defaults (512 events, seed 0: the files are named after it).

    The values are not checked here: :func:`generate_midi` checks them, once, when the job runs (a bad request is
    reported by :meth:`GenerationJob.result`). ``model`` is a model directory or Hub id; None: the app's model
    (``--model``, or the embedded one).
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
    """Loads models for the app and keeps the last one (loading takes seconds; requests reuse it).

    Args:
        default: what an :class:`AppRequest` without ``model`` uses: a loaded model, a directory, a Hub id, or None
            for the embedded model.
        device, dtype: as in :func:`load_model_and_tokenizer`.
    """

    def __init__(self, default: Any = None, *, device: Any = None, dtype: Any = None) -> None:
        self.default = default
        self.device = device
        self.dtype = dtype
        self._lock = threading.Lock()
        self._name: str | None = None
        self._loaded: tuple[Any, Any] | None = None

    def get(self, name: str | None = None) -> tuple[Any, Any]:
        """``(model, tokenizer)`` of ``name`` (a directory or Hub id; None or empty: the default model).

        Raises:
            ValueError / TypeError: as :func:`load_model_and_tokenizer` (not a model, cannot be loaded, ...).
        """
        name = name.strip() if isinstance(name, str) and name.strip() else None
        if name is not None and name == self.default:
            name = None
        with self._lock:
            if self._loaded is None or name != self._name:
                self._loaded = None  # the old model is released before the new one loads
                self._loaded = load_model_and_tokenizer(self.default if name is None else name,
                                                        device=self.device, dtype=self.dtype)
                self._name = name
            return self._loaded

    def tokenizer(self) -> Any:
        """The loaded model's tokenizer, or (none loaded yet) a tokenizer with default settings."""
        from ..tokenization_midi_event_transformer import MidiEventTransformerTokenizer

        loaded = self._loaded
        return MidiEventTransformerTokenizer() if loaded is None else loaded[1]


# ----------------------------------------------------------------------------------------- streaming
class GenerationCancelled(Exception):
    """Raised inside ``generate`` (from the streamer) to stop a job whose page went away or pressed Stop."""


class _SampleRows(MidiEventStreamer):
    """One sample's finished rows (``self.rows``, BOS and prompt included) and the musical time they reach
    (``clock``: after the last event; ``start``: after the prompt)."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = MusicalClock()
        self.start: MusicalClock | None = None

    def on_event(self, row: np.ndarray, from_prompt: bool) -> None:
        self.clock.advance(row)


class LivePreview(BaseStreamer):
    """A streamer for ``generate_midi(streamer=...)`` with several samples: their events so far, and frames.

    Each sample's tokens go to a :class:`~midi_event_transformer.generation.streamers.MidiEventStreamer` of its own (rows of 8,
    EOS ends that sample). A frame (the rows of every sample so far) is put in ``frames``, a queue of one, every
    ``frame_every`` generated events or, when the length is in musical time (``time_total``), every
    ``time_total / frames`` of it: when the page has not taken the previous frame yet, generation waits for it (at
    most ``frame_timeout`` seconds, then that frame is dropped), so that even a fast generation shows the piece
    growing, at a cost of at most ``frames`` drawings.

    Args:
        num_samples: the batch size of the generation.
        events: the events asked for (the progress bar's total), or None when the length is not in events.
        frames: about how many frames to hand out.
        frame_timeout: the longest wait for the page to take a frame.
        limit: the length in seconds or bars (counted from the prompt's end): the progress then follows
            :meth:`time_done` to ``limit.amount``.
    """

    def __init__(self, num_samples: int, events: int | None, frames: int = PREVIEW_FRAMES,
                 frame_timeout: float = 2.0, limit: TimeLimit | None = None) -> None:
        self.samples = [_SampleRows() for _ in range(num_samples)]
        self.events_total = events
        self.frame_count = max(1, frames)
        self.frame_every = math.ceil(events / self.frame_count) if events else None
        self.frame_timeout = frame_timeout
        self.frames: Queue[list[np.ndarray]] = Queue(maxsize=1)
        self.tokens = 0  # generated token positions (the whole batch at once)
        self.started: float | None = None  # time.monotonic() when the prompt arrived
        self.finished = threading.Event()
        self.cancelled = threading.Event()
        self.time_total: float | None = None
        self.time_unit = "s"
        if limit is not None:
            self.set_time_total(limit.amount, "bars" if limit.bars is not None else "s")
        self._next_frame = 1  # frames handed out so far + 1

    def set_time_total(self, total: float, unit: str = "s") -> None:
        """Follow the musical time reached, to ``total`` seconds (``unit="s"``) or bars (``"bars"``)."""
        if unit not in ("s", "bars"):
            raise ValueError(f"unit must be 's' or 'bars', got {unit!r}")
        self.time_total, self.time_unit = float(total), unit

    @property
    def events_done(self) -> int:
        """Generated event positions so far (all samples advance together)."""
        return self.tokens // TOKENS_PER_EVENT

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

    def events_per_second(self) -> float:
        """Generated events per second since the prompt arrived (0 before)."""
        if self.started is None:
            return 0.0
        return self.events_done / max(time.monotonic() - self.started, 1e-9)

    def snapshot(self) -> list[np.ndarray]:
        """Every sample's finished rows so far: ``(n_i, 8)`` int64 arrays, BOS first."""
        return [np.stack(list(sample.rows)) if sample.rows else np.zeros((0, TOKENS_PER_EVENT), dtype=np.int64)
                for sample in self.samples]

    def _frame_due(self) -> bool:
        if self.time_total is not None:
            done = self.time_done() / max(self.time_total, 1e-9) * self.frame_count
        elif self.frame_every is not None:
            done = self.events_done / self.frame_every
        else:
            return False
        if done < self._next_frame - 1e-9:
            return False
        self._next_frame = math.floor(done + 1e-9) + 1
        return True

    def put(self, value: Any) -> None:
        if self.cancelled.is_set():
            raise GenerationCancelled("generation stopped")
        ids = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=np.int64)
        if self.started is None:  # the prompts (num_samples, length)
            if ids.ndim != 2 or ids.shape[0] != len(self.samples):
                raise ValueError(f"expected prompts of shape ({len(self.samples)}, length), got {ids.shape}")
            self.started = time.monotonic()
            for sample, prompt in zip(self.samples, ids, strict=True):
                sample.put(prompt)
                sample.start = sample.clock.copy()
            return
        ids = ids.reshape(-1)
        if ids.shape[0] != len(self.samples):
            raise ValueError(f"expected one token per sample ({len(self.samples)}), got {ids.shape[0]}")
        for sample, token in zip(self.samples, ids, strict=True):
            sample.put(token)
        self.tokens += 1
        if self.tokens % TOKENS_PER_EVENT == 0 and self._frame_due():
            try:
                self.frames.put(self.snapshot(), timeout=self.frame_timeout)
            except Full:
                logger.debug("live preview frame at %d events dropped (the page is busy)", self.events_done)

    def end(self) -> None:
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
        frame: every sample's rows so far (``(n_i, 8)`` arrays) when a new frame is ready, else None.
        time_done, time_total, time_unit: the musical time reached after the prompt and the length asked for, in
            ``time_unit`` (``"s"`` or ``"bars"``), when the length is in seconds / bars or a track is edited (the
            total is then the prompt's length in seconds); None otherwise.
    """

    stage: str
    events_done: int
    events_total: int | None
    events_per_second: float
    frame: list[np.ndarray] | None = None
    time_done: float | None = None
    time_total: float | None = None
    time_unit: str = "s"


class GenerationJob:
    """One generation request run in a worker thread (the caller's thread stays free to report progress).

    Args:
        request: what to generate.
        models: where the model comes from.
        frames: live frames to hand out (see :class:`LivePreview`).
    """

    def __init__(self, request: AppRequest, models: ModelStore, frames: int = PREVIEW_FRAMES) -> None:
        if not isinstance(request, AppRequest):
            raise TypeError(f"request must be an AppRequest, not {type(request).__name__}")
        self.request = request
        self.models = models
        try:
            limit = request.time_limit
        except (TypeError, ValueError):  # generate_midi reports it from the worker, as the other bad values
            limit = None
        self.preview = LivePreview(request.num_samples, None if request.edits_track else request.events,
                                   frames=frames, limit=limit)
        self.tokenizer: Any = None
        self._midis: list | None = None
        self._error: BaseException | None = None
        self._loaded = threading.Event()
        self._thread = threading.Thread(target=self._work, name="midi-event-transformer-generate", daemon=True)

    def _work(self) -> None:
        try:
            model, self.tokenizer = self.models.get(self.request.model)
            if self.request.edits_track and self.preview.time_total is None:  # it ends where the prompt ends
                self.preview.set_time_total(self._prompt_seconds())
            self._loaded.set()
            self._midis = generate_midi(model, self.tokenizer, streamer=self.preview,
                                        **self.request.generate_kwargs())
        except BaseException as error:  # handed to the caller by result()
            self._error = error
        finally:
            self._loaded.set()
            self.preview.finished.set()

    def _prompt_seconds(self) -> float:
        """Where the prompt's last event starts, in seconds (a track edit's piece ends there)."""
        from ..generation.prompts import prompt_from_midi

        return MusicalClock.after(prompt_from_midi(self.request.prompt, None, tokenizer=self.tokenizer)).seconds

    def start(self) -> GenerationJob:
        """Start the worker thread; returns ``self``."""
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def updates(self, poll_seconds: float = 0.25) -> Iterator[JobUpdate]:
        """Yield a :class:`JobUpdate` at least every ``poll_seconds`` (with each frame as soon as it is ready)
        until the worker has finished."""
        preview = self.preview
        while self._thread.is_alive():
            try:
                frame = preview.frames.get(timeout=poll_seconds)
            except Empty:
                frame = None
            yield self._update(frame)
        self._thread.join()

    def _update(self, frame: list[np.ndarray] | None = None) -> JobUpdate:
        preview = self.preview
        return JobUpdate("generating" if self._loaded.is_set() else "loading", preview.events_done,
                         preview.events_total, preview.events_per_second(), frame, preview.time_done(),
                         preview.time_total, preview.time_unit)

    def progress(self) -> JobUpdate:
        """Where the job stands now (no frame)."""
        return self._update()

    def cancel(self) -> None:
        """Stop the generation at its next token (``result`` then raises :class:`GenerationCancelled`)."""
        self.preview.cancelled.set()
        try:  # a generation waiting to hand out a frame goes on at once
            self.preview.frames.get_nowait()
        except Empty:
            pass

    def result(self) -> list:
        """The ``mido.MidiFile`` of each sample, once :meth:`updates` is exhausted; raises the worker's error."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return list(self._midis or [])


# ----------------------------------------------------------------------------------------- files
@dataclass
class SampleFiles:
    """The files of one generated sample: ``midi`` always, ``piano_roll`` and ``audio`` when they were asked for
    and could be made, and ``note``: why there is no audio (a piece too long to render), or None."""

    midi: Path
    piano_roll: Path | None = None
    audio: Path | None = None
    note: str | None = None


def write_samples(midis: list, output_dir: str | os.PathLike, seed: int, *, piano_roll: bool = True,
                  audio: bool = False, max_audio_seconds: float = MAX_AUDIO_SECONDS) -> list[SampleFiles]:
    """Save each sample as ``generated_seed<seed>_<i>.mid`` in ``output_dir`` (``generation.outputs.save_samples``,
    as the ``generate`` command), with a piano-roll PNG and, with ``audio``, a WAV (fluidsynth) beside it for
    pieces of at most ``max_audio_seconds`` (``mido.MidiFile.length``; a longer one gets a ``note`` instead).

    Raises:
        ImportError: ``piano_roll`` without matplotlib. AudioRenderingError: ``audio`` and fluidsynth failed.
    """
    from ..evaluation.audio import render_audio
    from ..evaluation.pianoroll import draw_piano_roll

    written = []
    for index, (midi, path) in enumerate(zip(midis, save_samples(midis, output_dir, seed), strict=True)):
        files = SampleFiles(midi=path)
        if piano_roll:
            files.piano_roll = draw_piano_roll(midi, path.with_suffix(".png"), title=f"Sample {index + 1}",
                                               figsize=(10.0, 4.0), dpi=80)
        if audio and midi.length > max_audio_seconds:
            files.note = (f"no audio: the piece lasts {midi.length / 60:.0f} min, longer than the "
                          f"{max_audio_seconds / 60:g} min rendered to audio")
        elif audio:
            files.audio = render_audio(path, path.with_suffix(".wav"))
        written.append(files)
    return written


__all__ = [
    "MAX_AUDIO_SECONDS",
    "NOT_ON_THE_PAGE",
    "PREVIEW_FRAMES",
    "AppRequest",
    "GenerationCancelled",
    "GenerationJob",
    "JobUpdate",
    "LivePreview",
    "ModelStore",
    "SampleFiles",
    "write_samples",
]
