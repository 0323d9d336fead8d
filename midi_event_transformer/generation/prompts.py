"""Prompt builders: the event rows a generation starts from.

:func:`build_prompt` makes the rows the public reference app (SkyTNT/midi-model ``app.py``, "custom prompt")
builds from its instrument, drum kit, tempo, time signature and key controls, in the same order:

1. a BOS row;
2. ``time_signature`` (if given), ``key_signature`` (if given), ``set_tempo`` (if given): time 0, track 0;
3. one ``patch_change`` per instrument at time 0: instrument ``i`` on channel ``i`` for the first nine, then
   channels 10..15 (channel 9 is left to drums), track ``i + 1``; then the drum kit (if given) on channel 9,
   on the next track.

:func:`prompt_logits_processors` gives the controls the app applies with such a prompt: when instruments are
named, no further patch changes and only the channels of the prompt; optionally no control changes.
:func:`prompt_from_midi` takes the first events of a MIDI file instead, and :func:`left_pad_prompts` batches
prompts of different lengths (left padding by whole events, as the model expects).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import LogitsProcessor

from ..vocabulary import (
    BOS_ID,
    DRUM_CHANNEL,
    EOS_ID,
    EVENT_PARAMETERS,
    EVENT_TYPE_IDS,
    MAX_BPM,
    PAD_ID,
    PARAMETER_SIZES,
    TOKENS_PER_EVENT,
    parameter_id,
)
from .controls import (
    DisableControlChangeLogitsProcessor,
    DisablePatchChangeLogitsProcessor,
    RestrictChannelsLogitsProcessor,
)
from .general_midi import (
    drum_kit_program,
    parse_instruments,
    parse_key_signature,
    parse_time_signature,
)

#: Channels given to instruments, in order: 0..8 then 10..15 (9 is the drum channel).
MELODIC_CHANNELS: tuple[int, ...] = tuple(c for c in range(PARAMETER_SIZES["channel"]) if c != DRUM_CHANNEL)


def event_row(event_type: str, **values: int) -> np.ndarray:
    """One event as a row of 8 ids: ``event_row("set_tempo", time1=0, time2=0, track=0, bpm=120)``.

    Every parameter of the event type must be given (see ``vocabulary.EVENT_PARAMETERS``).

    Raises:
        ValueError: unknown event type, missing / extra parameter, or a value out of range.
    """
    if event_type not in EVENT_PARAMETERS:
        raise ValueError(f"unknown event type {event_type!r}; choose from {sorted(EVENT_PARAMETERS)}")
    parameters = EVENT_PARAMETERS[event_type]
    if set(values) != set(parameters):
        raise ValueError(f"{event_type} takes exactly the parameters {list(parameters)}, got {sorted(values)}")
    row = np.full(TOKENS_PER_EVENT, PAD_ID, dtype=np.int64)
    row[0] = EVENT_TYPE_IDS[event_type]
    for slot, name in enumerate(parameters, start=1):
        row[slot] = parameter_id(name, int(values[name]))
    return row


def _special_row(special_id: int) -> np.ndarray:
    row = np.full(TOKENS_PER_EVENT, PAD_ID, dtype=np.int64)
    row[0] = special_id
    return row


def validate_bpm(bpm: Any) -> int:
    """``bpm`` as the integer the tokenizer stores (rounded), checked to be in 1..383."""
    if isinstance(bpm, bool) or not isinstance(bpm, (int, float, np.integer, np.floating)):
        raise TypeError(f"bpm must be a number, not {type(bpm).__name__}")
    value = int(round(float(bpm)))
    if not 1 <= value <= MAX_BPM:
        raise ValueError(f"bpm must be in 1..{MAX_BPM} (what the tokenizer encodes), got {bpm}")
    return value


def instrument_channels(instruments: Sequence[str | int] | str | None = None,
                        drum_kit: str | int | None = None) -> dict[int, int]:
    """Channel -> program for the prompt's instruments, as the reference app assigns them.

    Instruments take channels 0..8 then 10..15 in order (duplicates get their own channel); the drum kit takes
    channel 9 and comes last. At most 15 instruments.

    Raises:
        ValueError: more than 15 instruments, or an unknown instrument / drum kit name.
    """
    programs = [] if instruments is None else parse_instruments(instruments)
    if len(programs) > len(MELODIC_CHANNELS):
        raise ValueError(f"at most {len(MELODIC_CHANNELS)} instruments fit on the melodic MIDI channels, "
                         f"got {len(programs)}")
    channels = dict(zip(MELODIC_CHANNELS, programs, strict=False))
    if drum_kit is not None:
        channels[DRUM_CHANNEL] = drum_kit_program(drum_kit)
    return channels


def instrument_tracks(instruments: Sequence[str | int] | str | None = None,
                      drum_kit: str | int | None = None) -> dict[int, int]:
    """Track -> channel of each requested part in :func:`build_prompt`'s prompt: instrument ``i`` (and then the drum
    kit) on track ``i + 1``, channels as :func:`instrument_channels` gives them."""
    return {track: channel for track, channel in enumerate(instrument_channels(instruments, drum_kit), start=1)}


def build_prompt(instruments: Sequence[str | int] | str | None = None, drum_kit: str | int | None = None,
                 bpm: int | float | None = None, time_signature: str | tuple[int, int] | None = None,
                 key_signature: str | tuple[int, int] | None = None) -> np.ndarray:
    """Rows that start a new piece with the given instruments, drum kit, tempo and signatures.

    Args:
        instruments: General MIDI names or 0-based program numbers (a list, or a comma-separated string);
            see ``general_midi.instrument_program``.
        drum_kit: a drum kit name or program for channel 9 (``"Standard"``, ``"Jazz"``, ...), or None.
        bpm: tempo in beats per minute (1..383), or None for no tempo event.
        time_signature: ``"3/4"`` or ``(3, 4)``, or None.
        key_signature: ``"D minor"``, ``"F#"``, ``(sf, mi)``, or None.

    Returns:
        `np.ndarray` of shape ``(n_events, 8)``, int64: BOS, then the signature / tempo / patch change rows
        (see the module docstring for order, tracks and channels). With no argument: the BOS row alone.
    """
    rows = [_special_row(BOS_ID)]
    at_start = {"time1": 0, "time2": 0}
    channels = instrument_channels(instruments, drum_kit)
    if time_signature is not None:
        numerator, denominator = parse_time_signature(time_signature)
        rows.append(event_row("time_signature", **at_start, track=0, nn=numerator - 1,
                              dd=denominator.bit_length() - 2))  # dd = log2(denominator) - 1
    if key_signature is not None:
        sf, mi = parse_key_signature(key_signature)
        rows.append(event_row("key_signature", **at_start, track=0, sf=sf + 7, mi=mi))
    if bpm is not None:
        rows.append(event_row("set_tempo", **at_start, track=0, bpm=validate_bpm(bpm)))
    for track, channel in instrument_tracks(instruments, drum_kit).items():
        rows.append(event_row("patch_change", **at_start, track=track, channel=channel, patch=channels[channel]))
    return np.stack(rows)


def prompt_logits_processors(instruments: Sequence[str | int] | str | None = None,
                             drum_kit: str | int | None = None,
                             allow_control_change: bool = True) -> list[LogitsProcessor]:
    """The controls the reference app applies with :func:`build_prompt`'s prompt.

    When instruments are named, the model may not change instruments (no ``patch_change``) and may only use the
    prompt's channels (the instruments' and, with a drum kit, channel 9). ``allow_control_change=False``
    also forbids ``control_change`` events.

    Returns:
        a list of ``LogitsProcessor`` for ``model.generate(logits_processor=...)`` (possibly empty).
    """
    if not isinstance(allow_control_change, bool):
        raise TypeError(f"allow_control_change must be a bool, not {type(allow_control_change).__name__}")
    processors: list[LogitsProcessor] = []
    channels = instrument_channels(instruments, drum_kit)
    if any(channel != DRUM_CHANNEL for channel in channels):
        processors.append(DisablePatchChangeLogitsProcessor())
        processors.append(RestrictChannelsLogitsProcessor(sorted(channels)))
    if not allow_control_change:
        processors.append(DisableControlChangeLogitsProcessor())
    return processors


def prompt_from_midi(source: Any, n_events: int | None = None, tokenizer: Any = None) -> np.ndarray:
    """The first events of a MIDI file (or of already encoded rows) as a prompt.

    Args:
        source: a MIDI path, bytes, file object or ``mido.MidiFile`` (encoded with ``tokenizer``), or rows
            ``(n, 8)`` already encoded (a numpy array, list or tensor).
        n_events: keep the first ``n_events`` rows, the BOS row included (as the reference app counts);
            None keeps them all.
        tokenizer: a ``MidiEventTransformerTokenizer`` (default: a new one with default settings).

    Returns:
        `np.ndarray` ``(n, 8)`` int64 starting with BOS, without the EOS row (a prompt must not end the piece).

    Raises:
        ValueError: ``n_events < 1``, or encoded rows that are not ``(n, 8)`` / do not start with BOS.
        InvalidMidiError: the source is not a readable MIDI file.
    """
    if n_events is not None and (isinstance(n_events, bool) or not isinstance(n_events, (int, np.integer))):
        raise TypeError(f"n_events must be an int or None, not {type(n_events).__name__}")
    if n_events is not None and n_events < 1:
        raise ValueError(f"n_events must be >= 1 (the BOS row counts as one), got {n_events}")
    if isinstance(source, np.ndarray) or hasattr(source, "detach") or (
            isinstance(source, list) and source and isinstance(source[0], (list, tuple, np.ndarray))):
        rows = np.asarray(source.detach().cpu() if hasattr(source, "detach") else source, dtype=np.int64)
        if rows.ndim != 2 or rows.shape[1] != TOKENS_PER_EVENT:
            raise ValueError(f"encoded rows must have shape (n_events, {TOKENS_PER_EVENT}), got {rows.shape}")
        if len(rows) == 0 or rows[0, 0] != BOS_ID:
            raise ValueError("encoded rows must start with a BOS row (encode with add_bos_eos=True)")
    else:
        if tokenizer is None:
            from ..tokenization_midi_event_transformer import MidiEventTransformerTokenizer

            tokenizer = MidiEventTransformerTokenizer()
        rows = tokenizer.encode_midi(source, add_bos_eos=True)
    eos = np.flatnonzero(rows[:, 0] == EOS_ID)
    if len(eos):
        rows = rows[:eos[0]]
    if n_events is not None:
        rows = rows[:n_events]
    return rows.copy()


def left_pad_prompts(prompts: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Batch prompts of different lengths, left-padded by whole pad events.

    Args:
        prompts: ``(n_i, 8)`` arrays.

    Returns:
        ``(input_ids, attention_mask)``: both ``(batch, max_n * 8)`` int64, flat as ``model.generate`` takes them;
        the mask is 0 on padding events and 1 elsewhere.
    """
    if not prompts:
        raise ValueError("no prompts to batch")
    arrays = [np.asarray(p, dtype=np.int64) for p in prompts]
    for i, rows in enumerate(arrays):
        if rows.ndim != 2 or rows.shape[1] != TOKENS_PER_EVENT or len(rows) == 0:
            raise ValueError(f"prompt {i} must have shape (n_events >= 1, {TOKENS_PER_EVENT}), got {rows.shape}")
    longest = max(len(rows) for rows in arrays)
    input_ids = np.full((len(arrays), longest, TOKENS_PER_EVENT), PAD_ID, dtype=np.int64)
    attention_mask = np.zeros((len(arrays), longest, TOKENS_PER_EVENT), dtype=np.int64)
    for i, rows in enumerate(arrays):
        input_ids[i, longest - len(rows):] = rows
        attention_mask[i, longest - len(rows):] = 1
    return input_ids.reshape(len(arrays), -1), attention_mask.reshape(len(arrays), -1)


__all__ = [
    "MAX_BPM",
    "MELODIC_CHANNELS",
    "build_prompt",
    "event_row",
    "instrument_channels",
    "instrument_tracks",
    "left_pad_prompts",
    "prompt_from_midi",
    "prompt_logits_processors",
    "validate_bpm",
]
