"""One call from a model to MIDI files: :func:`generate_midi`.

Example::

    >>> from midi_event_transformer import generate_midi
    >>> files = generate_midi(instruments=["Acoustic Grand Piano", "Violin"], bpm=96, key="D minor",
    ...                       time_signature="3/4", events=256, seed=0, num_samples=2)
    >>> files[0].save("duet.mid")

The steps, each usable alone:

1. :func:`~midi_event_transformer.generation.loading.load_model_and_tokenizer` -- a loaded model, a local directory (ours or a SkyTNT/midi-model
   checkpoint), a Hub id, or None for the model shipped in the package (``DEFAULT_MODEL``);
2. :func:`~midi_event_transformer.generation.requests.build_generation_prompt` -- the prompt rows ``(n, 8)`` (the first events of a MIDI file, or BOS with
   instruments / drum kit / tempo / signatures) and the logits processors that keep the model to them;
3. :func:`generate_rows` -- sampling with ``model.generate`` (MIDI grammar on, event-level loop; a sliding
   window past the context), a tqdm bar counting events, seeded without touching the global random state, with
   ``generation_requests`` (track edits, lengths in seconds / bars);
4. :func:`generate_midi` -- the above, then ``tokenizer.decode_midi`` on each sample.
"""


from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .loading import (
    DTYPE_NAMES,
    SMALL_MODEL_FP32_BYTES,
    default_compute_dtype,
    load_model_and_tokenizer,
    resolve_device,
    resolve_dtype,
)
from .requests import (
    DEFAULT_EVENTS,
    DEFAULT_PROMPT_EVENTS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    PromptOptions,
    SamplingOptions,
    build_generation_prompt,
    generate_pieces,
)
from .streamers import EventProgressStreamer

_LOADING_ARGUMENTS = ("model", "tokenizer", "device", "dtype")


def sample_file_name(seed: int, index: int) -> str:
    """The file name of sample ``index`` of a seeded generation (the ``generate`` command and the app)."""
    return f"generated_seed{seed}_{index}.mid"



def _generate(arguments: dict[str, Any]) -> tuple[list, Any]:
    """The pieces (``generation_requests.GeneratedPiece``) and the tokenizer that decodes them, for the arguments of
    :func:`generate_midi` / :func:`generate_rows` (each option goes to the dataclass field of its name)."""
    groups = {cls: {f.name for f in dataclasses.fields(cls)} for cls in (PromptOptions, SamplingOptions)}
    unplaced = set(arguments) - set(_LOADING_ARGUMENTS) - set().union(*groups.values())
    if unplaced:  # a keyword added to the signatures but to neither dataclass
        raise TypeError(f"no option field for {', '.join(sorted(unplaced))}")
    prompt_options, sampling = (cls(**{name: arguments[name] for name in names}) for cls, names in groups.items())
    return generate_pieces(arguments["model"], arguments["tokenizer"], prompt_options, sampling,
                           device=arguments["device"], dtype=arguments["dtype"])


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
    pieces, _ = _generate(locals())
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
        device, dtype: where and in which precision to run (see :func:`~midi_event_transformer.generation.loading.load_model_and_tokenizer`).
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
            streamers of ``midi_event_transformer.generation.streamers`` take one sample (``num_samples=1``).

    Returns:
        a list of ``num_samples`` ``mido.MidiFile`` (type 1, 480 ticks per beat), prompt included.

    Raises:
        ValueError: unknown instrument / drum kit / key names, a bad time signature or bpm, a prompt combined with
            those options, a directory that is not a model, bad sampling values, a track edit without a prompt or
            with ``prompt_events``, an unknown track or one without notes.
        InvalidMidiError: a prompt that is not a readable MIDI file (a ValueError too).
        TypeError: arguments of the wrong type.
    """
    pieces, tokenizer = _generate(locals())
    return [piece.to_midi(tokenizer) for piece in pieces]


__all__ = [
    "DEFAULT_EVENTS",
    "DEFAULT_PROMPT_EVENTS",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_K",
    "DEFAULT_TOP_P",
    "DTYPE_NAMES",
    "SMALL_MODEL_FP32_BYTES",
    "EventProgressStreamer",
    "build_generation_prompt",
    "default_compute_dtype",
    "generate_midi",
    "generate_rows",
    "load_model_and_tokenizer",
    "resolve_device",
    "resolve_dtype",
    "sample_file_name",
]
