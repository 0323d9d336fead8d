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
   :mod:`~midi_event_transformer.generation.requests` (the options, track edits, lengths in seconds / bars);
4. :func:`generate_midi` -- the above, then ``tokenizer.decode_midi`` on each sample.
"""


from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .requests import (
    LoadingOptions,
    PromptOptions,
    SamplingOptions,
    document_options,
    generate_pieces,
    options_from_keywords,
)


def _generate(keywords: dict[str, Any], caller: str) -> tuple[list, Any]:
    """The pieces (``requests.GeneratedPiece``) and the tokenizer that decodes them, for the keywords of
    :func:`generate_midi` / :func:`generate_rows` (each option goes to the dataclass field of its name)."""
    return generate_pieces(*options_from_keywords(keywords, caller))


@document_options(LoadingOptions, PromptOptions, SamplingOptions)
def generate_midi(model: Any = None, tokenizer: Any = None, *, prompt: Any = None, prompt_events: int | None = None,
                  instruments: Sequence[str | int] | str | None = None, drum_kit: str | int | None = None,
                  bpm: float | None = None, time_signature: str | tuple[int, int] | None = None,
                  key: str | tuple[int, int] | None = None, events: int | None = None,
                  temperature: float = 1.0, top_p: float = 0.94, top_k: int = 20,
                  seed: int | None = None, num_samples: int = 1, disable_control_change: bool = False,
                  max_rest_bars: float | None = 1.0,
                  device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                  progress: bool = True, add_track: str | int | None = None, regenerate_track: int | None = None,
                  seconds: float | None = None, bars: float | None = None,
                  infill_bars: tuple[int, int] | str | None = None,
                  infill_seconds: tuple[float, float] | str | None = None,
                  infill_tracks: Sequence[int] | str | None = None,
                  context_events: int | None = None, streamer: Any = None) -> list:
    """Generate MIDI files: load the model, build the prompt, sample, decode.

    Each keyword is the field of its name in ``requests.LoadingOptions``, ``PromptOptions`` or ``SamplingOptions``,
    where its default, its checks and its help are defined (the help is listed under Args by ``help()``). A prompt
    cannot be combined with instruments / drum_kit / bpm / time_signature / key; a track edit (add_track or
    regenerate_track) and an infill (infill_bars or infill_seconds) take the whole prompt.

    Returns:
        a list of ``num_samples`` ``mido.MidiFile`` (type 1, 480 ticks per beat), prompt included.

    Raises:
        ValueError: unknown instrument / drum kit / key names, a bad time signature or bpm, a prompt combined with
            those options, a directory that is not a model, bad sampling values, a track edit without a prompt or
            with ``prompt_events``, an unknown track or one without notes, an infill span that is empty or starts
            after the piece ends, an infill combined with a track edit, ``events``, ``prompt_events`` or a length.
        InvalidMidiError: a prompt that is not a readable MIDI file (a ValueError too).
        TypeError: arguments of the wrong type.
    """
    pieces, tokenizer = _generate(locals(), "generate_midi")
    return [piece.to_midi(tokenizer) for piece in pieces]


def generate_rows(model: Any = None, tokenizer: Any = None, **options: Any) -> list[np.ndarray]:
    """:func:`generate_midi` before decoding: the event rows of each sample (the same keywords).

    Returns:
        a list of ``num_samples`` arrays ``(n_i, 8)`` int64: the prompt's rows (BOS first) followed by the generated
        events. When the model ends a piece (EOS), that row and the padding after it are left out; with
        ``seconds`` / ``bars`` the rows end before the first event at the limit, notes cut there (the file
        :func:`generate_midi` writes also lasts until the limit). With a track edit the prompt's rows are BOS and
        the setup, then the whole piece.

    Raises:
        TypeError: a keyword :func:`generate_midi` does not take; else as :func:`generate_midi`.
    """
    pieces, _ = _generate({"model": model, "tokenizer": tokenizer, **options}, "generate_rows")
    return [piece.rows for piece in pieces]


# help() and editors that inspect show generate_midi's keywords for generate_rows too
generate_rows.__signature__ = inspect.signature(generate_midi).replace(  # type: ignore[attr-defined]
    return_annotation=inspect.signature(generate_rows).return_annotation)


__all__ = ["generate_midi", "generate_rows"]
