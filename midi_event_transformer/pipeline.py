"""One call from a model to MIDI files: :func:`generate_midi`.

Example::

    >>> from midi_event_transformer import generate_midi
    >>> files = generate_midi(instruments=["Acoustic Grand Piano", "Violin"], bpm=96, key="D minor",
    ...                       time_signature="3/4", events=256, seed=0, num_samples=2)
    >>> files[0].save("duet.mid")

The steps, each usable alone:

1. :func:`load_model_and_tokenizer` -- a loaded model, a local directory (ours or a SkyTNT/midi-model
   checkpoint), a Hub id, or None for the model shipped in the package (``DEFAULT_MODEL``);
2. :func:`build_generation_prompt` -- the prompt rows ``(n, 8)`` (the first events of a MIDI file, or BOS with
   instruments / drum kit / tempo / signatures) and the logits processors that keep the model to them;
3. :func:`generate_rows` -- sampling with ``model.generate`` (MIDI grammar on, event-level loop; a sliding
   window past the context), a tqdm bar counting events, seeded without touching the global random state, with
   ``generation_requests`` (track edits, lengths in seconds / bars);
4. :func:`generate_midi` -- the above, then ``tokenizer.decode_midi`` on each sample.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.generation.streamers import BaseStreamer

from .vocabulary import TOKENS_PER_EVENT

logger = logging.getLogger(__name__)

#: Defaults of the public reference app (SkyTNT/midi-model ``app.py``).
DEFAULT_EVENTS = 512
DEFAULT_PROMPT_EVENTS = 128
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 0.94
DEFAULT_TOP_K = 20

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # "owner/name" or "name"
#: ``dtype`` names accepted by :func:`generate_midi` and ``--dtype``.
DTYPE_NAMES: tuple[str, ...] = ("float32", "bfloat16", "float16")

#: On a CPU, a model whose weights take fewer bytes than this in float32 computes in float32 unless a dtype is asked
#: for: its decoding steps are bound by per-operation overhead rather than by reading the weights, so a bf16 copy
#: saves no time there and CPUs without bf16 units run it slower. Larger models keep their stored dtype (bf16 halves
#: the bytes a memory-bound step reads). A property of the model, not of the processor.
SMALL_MODEL_FP32_BYTES = 256 * 2**20


# ----------------------------------------------------------------------------------------- model + tokenizer
def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device``; None picks CUDA when available, else the CPU.

    Raises:
        TypeError: not a string or ``torch.device``. ValueError: not a device name, or CUDA requested without one.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string like 'cpu' or 'cuda:0' or a torch.device, not {type(device).__name__}")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r} (use e.g. 'cpu', 'cuda', 'cuda:1', 'mps')") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available on this machine")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``dtype`` as a floating ``torch.dtype`` (``"float32"``, ``"bfloat16"``/``"bf16"``, ``"float16"``/``"fp16"``)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if isinstance(dtype, torch.dtype) and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point type, got {dtype}")
        return dtype
    if not isinstance(dtype, str):
        raise TypeError(f"dtype must be a string like 'bfloat16' or a torch.dtype, not {type(dtype).__name__}")
    key = dtype.lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_NAMES)}")
    return _DTYPES[key]


def sample_file_name(seed: int, index: int) -> str:
    """The file name of sample ``index`` of a seeded generation (the ``generate`` command and the app)."""
    return f"generated_seed{seed}_{index}.mid"


def default_compute_dtype(model: Any, device: torch.device) -> torch.dtype | None:
    """The dtype a model loaded without an asked dtype computes in on ``device``: float32 for a small model on a CPU
    (see ``SMALL_MODEL_FP32_BYTES``), else None (its stored dtype)."""
    if device.type != "cpu" or not model.dtype.is_floating_point or model.dtype == torch.float32:
        return None
    fp32_bytes = 4 * sum(parameter.numel() for parameter in model.parameters())
    return torch.float32 if fp32_bytes < SMALL_MODEL_FP32_BYTES else None


def _model_directory_problem(directory: Path) -> str | None:
    """Why ``directory`` cannot be one of our (or a reference) model directories, or None if it looks fine."""
    from .configuration_midi_event_transformer import MidiEventTransformerConfig
    from .convert_skytnt import REFERENCE_MODEL_TYPE

    if not directory.is_dir():
        return "is a file, not a model directory"
    config_path = directory / "config.json"
    if not config_path.is_file():
        return "is not a model directory (it has no config.json)"
    try:
        with open(config_path, encoding="utf-8") as file:
            model_type = json.load(file).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        return f"has an unreadable config.json ({error})"
    if model_type not in (MidiEventTransformerConfig.model_type, REFERENCE_MODEL_TYPE):
        return (f"holds a {model_type!r} model, not a midi-event-transformer model (model_type "
                f"{MidiEventTransformerConfig.model_type!r}) or a SkyTNT/midi-model checkpoint")
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _load_model(source: str | os.PathLike | None) -> tuple[Any, str | None]:
    """The model of a directory / Hub id / None (the embedded model), and where its tokenizer may be."""
    from . import DEFAULT_MODEL
    from .modeling_midi_event_transformer import MidiEventTransformerForCausalLM

    if source is None:
        if not (Path(DEFAULT_MODEL) / "config.json").is_file():
            raise ValueError(f"the embedded default model is missing from this installation ({DEFAULT_MODEL}); "
                             "pass a model directory or Hub id instead")
        source = DEFAULT_MODEL
    name = os.fspath(source)
    path = Path(name)
    if path.exists():
        problem = _model_directory_problem(path)
        if problem is not None:
            raise ValueError(f"{name} {problem}")
    elif not _HUB_ID.fullmatch(name):
        raise ValueError(f"model directory {name} does not exist")
    try:
        model = MidiEventTransformerForCausalLM.from_pretrained(name)
    except (OSError, ValueError, KeyError) as error:
        where = "directory" if path.exists() else "Hub id (no such local directory)"
        raise ValueError(f"cannot load the model {where} {name}: {_first_line(error)}") from error
    return model.eval(), name


def _load_tokenizer(location: str | None) -> Any:
    """The tokenizer saved with the model, or (none saved there) a default one."""
    from .convert_skytnt import is_reference_checkpoint, reference_config_to_ours
    from .tokenization_midi_event_transformer import MidiEventTransformerTokenizer

    if location is not None and Path(location).is_dir():
        if (Path(location) / "tokenizer_config.json").is_file():
            return MidiEventTransformerTokenizer.from_pretrained(location)
        if is_reference_checkpoint(location):  # the tokenizer settings are in the reference's config.json
            with open(Path(location) / "config.json", encoding="utf-8") as file:
                _, optimise_midi = reference_config_to_ours(json.load(file))
            return MidiEventTransformerTokenizer(optimise_midi=optimise_midi)
    elif location is not None:  # a Hub id: its tokenizer if it has one
        try:
            return MidiEventTransformerTokenizer.from_pretrained(location)
        except (OSError, ValueError) as error:
            logger.info("no tokenizer with %s (%s); using the default tokenizer", location, _first_line(error))
    return MidiEventTransformerTokenizer()


def load_model_and_tokenizer(model: Any = None, tokenizer: Any = None, *, device: str | torch.device | None = None,
                             dtype: str | torch.dtype | None = None) -> tuple[Any, Any]:
    """The model and tokenizer :func:`generate_midi` works with.

    Args:
        model: a loaded ``MidiEventTransformerForCausalLM``, a local directory (saved with ``save_pretrained`` or a
            SkyTNT/midi-model checkpoint, converted on load), a Hugging Face Hub id, or None for the model shipped
            in the package (``midi_event_transformer.DEFAULT_MODEL``).
        tokenizer: a ``MidiEventTransformerTokenizer``; None loads the one saved with the model (default settings
            if there is none).
        device: where to run; None keeps a loaded model where it is and puts a model loaded here on CUDA when
            available, else on the CPU. A loaded model is moved in place.
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` or a ``torch.dtype``; None keeps the model's, except
            that a small model loaded here for a CPU computes in float32 (:func:`default_compute_dtype`).

    Returns:
        ``(model, tokenizer)``, the model in eval mode when it was loaded here.

    Raises:
        ValueError: a directory that is not a model, a missing embedded model, an unloadable Hub id, a bad
            device / dtype. TypeError: ``model`` of another type.
    """
    from .modeling_midi_event_transformer import MidiEventTransformerForCausalLM
    from .tokenization_midi_event_transformer import MidiEventTransformerTokenizer

    if tokenizer is not None and not isinstance(tokenizer, MidiEventTransformerTokenizer):
        raise TypeError(f"tokenizer must be a MidiEventTransformerTokenizer, not {type(tokenizer).__name__}")
    torch_dtype = resolve_dtype(dtype)
    if isinstance(model, MidiEventTransformerForCausalLM):
        location = getattr(model, "name_or_path", None) or None
        target = model.device if device is None else resolve_device(device)
    elif model is None or isinstance(model, (str, os.PathLike)):
        target = resolve_device(device)
        model, location = _load_model(model)
        if torch_dtype is None:
            torch_dtype = default_compute_dtype(model, target)
    else:
        raise TypeError("model must be a MidiEventTransformerForCausalLM, a directory, a Hub id or None, not "
                        f"{type(model).__name__}")
    if model.device != target or (torch_dtype is not None and model.dtype != torch_dtype):
        model.to(device=target, dtype=torch_dtype)
    if tokenizer is None:
        tokenizer = _load_tokenizer(location)
    return model, tokenizer


# ----------------------------------------------------------------------------------------- prompt + controls
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
    from .prompts import build_prompt, prompt_from_midi, prompt_logits_processors

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


# ----------------------------------------------------------------------------------------- sampling
class EventProgressStreamer(BaseStreamer):
    """A tqdm bar counting generated events (8 tokens each, the whole batch at once) and events per second.

    Pass it as ``model.generate(streamer=...)``: the first ``put`` is the prompt (not counted), then one ``put``
    per generated token position.
    """

    def __init__(self, total_events: int | None, disable: bool = False, description: str = "generating") -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_events, desc=description, unit="event", disable=disable, dynamic_ncols=True)
        self.prompt_seen = False
        self.tokens = 0

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.tokens += 1
        if self.tokens % TOKENS_PER_EVENT == 0:
            self.bar.update(1)

    def end(self) -> None:
        self.bar.close()


class _StreamerGroup(BaseStreamer):
    """Hands every ``put`` and ``end`` of ``generate`` to each of ``streamers``, in order."""

    def __init__(self, streamers: Sequence[Any]) -> None:
        self.streamers = list(streamers)

    def put(self, value: Any) -> None:
        for streamer in self.streamers:
            streamer.put(value)

    def end(self) -> None:
        for streamer in self.streamers:
            streamer.end()


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


def _generate(model: Any = None, tokenizer: Any = None, *, prompt: Any = None, prompt_events: int | None = None,
              instruments: Sequence[str | int] | str | None = None, drum_kit: str | int | None = None,
              bpm: float | None = None, time_signature: str | tuple[int, int] | None = None,
              key: str | tuple[int, int] | None = None, events: int | None = None,
              temperature: float = DEFAULT_TEMPERATURE, top_p: float = DEFAULT_TOP_P, top_k: int = DEFAULT_TOP_K,
              seed: int | None = None, num_samples: int = 1, disable_control_change: bool = False,
              device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
              progress: bool = True, add_track: str | int | None = None, regenerate_track: int | None = None,
              seconds: float | None = None, bars: float | None = None,
              context_events: int | None = None, streamer: Any = None) -> tuple[list, Any]:
    """The generated pieces (``generation_requests.GeneratedPiece``) and the tokenizer that decodes them."""
    from .generation_requests import PromptOptions, SamplingOptions, generate_pieces

    prompt_options = PromptOptions(
        prompt=prompt, prompt_events=prompt_events, instruments=instruments, drum_kit=drum_kit, bpm=bpm,
        time_signature=time_signature, key=key, disable_control_change=disable_control_change, add_track=add_track,
        regenerate_track=regenerate_track, seconds=seconds, bars=bars)
    sampling = SamplingOptions(events=events, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                               num_samples=num_samples, context_events=context_events, progress=progress,
                               streamer=streamer)
    return generate_pieces(model, tokenizer, prompt_options, sampling, device=device, dtype=dtype)


def generate_rows(model: Any = None, tokenizer: Any = None, *, prompt: Any = None, prompt_events: int | None = None,
                  instruments: Sequence[str | int] | str | None = None, drum_kit: str | int | None = None,
                  bpm: float | None = None, time_signature: str | tuple[int, int] | None = None,
                  key: str | tuple[int, int] | None = None, events: int | None = None,
                  temperature: float = DEFAULT_TEMPERATURE, top_p: float = DEFAULT_TOP_P, top_k: int = DEFAULT_TOP_K,
                  seed: int | None = None, num_samples: int = 1, disable_control_change: bool = False,
                  device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                  progress: bool = True, add_track: str | int | None = None, regenerate_track: int | None = None,
                  seconds: float | None = None, bars: float | None = None,
                  context_events: int | None = None, streamer: Any = None) -> list[np.ndarray]:
    """:func:`generate_midi` before decoding: the event rows of each sample (same arguments).

    Returns:
        a list of ``num_samples`` arrays ``(n_i, 8)`` int64: the prompt's rows (BOS first) followed by the generated
        events. When the model ends a piece (EOS), that row and the padding after it are left out; with
        ``seconds`` / ``bars`` the rows end before the first event at the limit, notes cut there (the file
        :func:`generate_midi` writes also lasts until the limit). With a track edit the prompt's rows are BOS and
        the setup, then the whole piece.
    """
    pieces, _ = _generate(
        model, tokenizer, prompt=prompt, prompt_events=prompt_events, instruments=instruments, drum_kit=drum_kit,
        bpm=bpm, time_signature=time_signature, key=key, events=events, temperature=temperature, top_p=top_p,
        top_k=top_k, seed=seed, num_samples=num_samples, disable_control_change=disable_control_change,
        device=device, dtype=dtype, progress=progress, add_track=add_track, regenerate_track=regenerate_track,
        seconds=seconds, bars=bars, context_events=context_events, streamer=streamer)
    return [piece.rows for piece in pieces]


def generate_midi(model: Any = None, tokenizer: Any = None, *, prompt: Any = None, prompt_events: int | None = None,
                  instruments: Sequence[str | int] | str | None = None, drum_kit: str | int | None = None,
                  bpm: float | None = None, time_signature: str | tuple[int, int] | None = None,
                  key: str | tuple[int, int] | None = None, events: int | None = None,
                  temperature: float = DEFAULT_TEMPERATURE, top_p: float = DEFAULT_TOP_P, top_k: int = DEFAULT_TOP_K,
                  seed: int | None = None, num_samples: int = 1, disable_control_change: bool = False,
                  device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                  progress: bool = True, add_track: str | int | None = None, regenerate_track: int | None = None,
                  seconds: float | None = None, bars: float | None = None,
                  context_events: int | None = None, streamer: Any = None) -> list:
    """Generate MIDI files: load the model, build the prompt, sample, decode.

    Args:
        model: a loaded ``MidiEventTransformerForCausalLM``, a local model directory (``save_pretrained`` output or a
            SkyTNT/midi-model checkpoint), a Hub id, or None for the embedded model (``DEFAULT_MODEL``).
        tokenizer: a ``MidiEventTransformerTokenizer``; None loads the model's (or a default one).
        prompt: continue a piece: a MIDI path, bytes, file object or ``mido.MidiFile``, or encoded rows ``(n, 8)``.
            Cannot be combined with the five options below.
        prompt_events: how many of the prompt's rows to keep, BOS included (default 128, as the reference app).
        instruments: General MIDI names or 0-based program numbers (a list, or a comma-separated string) for a new
            piece; the model then keeps to them (no patch changes, only their channels and the drum kit's).
        drum_kit: a drum kit name (``"Standard"``, ``"Jazz"``, ...) or program for channel 10.
        bpm: tempo of a new piece (1..383).
        time_signature: ``"3/4"`` or ``(3, 4)``.
        key: ``"D minor"``, ``"F#"``, ``"Bb major"`` or ``(sf, mi)``.
        events: events to generate after the prompt (fewer if the model ends the piece); default 512, or no limit
            but the length with ``seconds`` / ``bars``; with a track edit, the events the model may write.
        temperature, top_p, top_k: sampling settings (``top_k=0``: no top-k filter).
        seed: the same seed (with the same arguments, model and device) gives the same files; None is random.
        num_samples: pieces generated at once (one batch).
        disable_control_change: forbid control change events (pedal, volume, ...).
        device, dtype: where and in which precision to run (see :func:`load_model_and_tokenizer`).
        progress: show a tqdm bar of generated events and events per second.
        add_track: add a track to ``prompt`` (the whole piece): an instrument name or program, a drum kit name or
            ``"drums"``. The kept tracks are reproduced exactly and the model writes the new track between their
            events (constrained decoding, see ``track_editing``); the piece ends where the prompt ends.
        regenerate_track: write the prompt's track of this number (as ``midi-event-transformer tokenize`` shows
            it) again, on its channel and program, the other tracks kept.
        seconds, bars: stop at the first event at or past this length from the prompt's end (from the start with a
            track edit), tempo and time-signature changes counted; notes still sounding end there, and so does the
            file.
        context_events: the sliding window: no ``model.generate`` call sees more events (default: the training
            window, 512); longer pieces go on from the last events (``sliding_window``).
        streamer: also hand the tokens to this streamer (``put`` / ``end``, as ``model.generate(streamer=...)``):
            first the prompts ``(num_samples, prompt_length)``, then each new token ``(num_samples,)``. The
            streamers of ``midi_event_transformer.streamers`` take one sample (``num_samples=1``).

    Returns:
        a list of ``num_samples`` ``mido.MidiFile`` (type 1, 480 ticks per beat), prompt included.

    Raises:
        ValueError: unknown instrument / drum kit / key names, a bad time signature or bpm, a prompt combined with
            those options, a directory that is not a model, bad sampling values, a track edit without a prompt or
            with ``prompt_events``, an unknown track or one without notes.
        InvalidMidiError: a prompt that is not a readable MIDI file (a ValueError too).
        TypeError: arguments of the wrong type.
    """
    pieces, tokenizer = _generate(
        model, tokenizer, prompt=prompt, prompt_events=prompt_events, instruments=instruments, drum_kit=drum_kit,
        bpm=bpm, time_signature=time_signature, key=key, events=events, temperature=temperature, top_p=top_p,
        top_k=top_k, seed=seed, num_samples=num_samples, disable_control_change=disable_control_change,
        device=device, dtype=dtype, progress=progress, add_track=add_track, regenerate_track=regenerate_track,
        seconds=seconds, bars=bars, context_events=context_events, streamer=streamer)
    return [piece.to_midi(tokenizer) for piece in pieces]


__all__ = [
    "DEFAULT_EVENTS",
    "DEFAULT_PROMPT_EVENTS",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_K",
    "DEFAULT_TOP_P",
    "DTYPE_NAMES",
    "sample_file_name",
    "EventProgressStreamer",
    "build_generation_prompt",
    "generate_midi",
    "generate_rows",
    "load_model_and_tokenizer",
    "resolve_device",
    "resolve_dtype",
]
