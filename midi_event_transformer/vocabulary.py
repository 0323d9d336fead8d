"""The MIDI event vocabulary: the public reference's MIDITokenizerV2 id layout (3406 ids).

Every event is a row of ``TOKENS_PER_EVENT`` (8) ids: the event type id, then one id per
parameter of that event type, then ``PAD_ID`` up to 8. A file is framed by a BOS row and an EOS
row (the special id followed by 7 pads).

Layout (ids are allocated in this order, each block contiguous)::

    0 pad, 1 bos, 2 eos,
    3..8   event types  note, patch_change, control_change, set_tempo, time_signature, key_signature
    9..    parameters   time1 128, time2 16, duration 2048, track 128, channel 16, pitch 128,
                        velocity 128, patch 128, controller 128, value 128, bpm 384, nn 16, dd 4,
                        sf 15, mi 2   (ending at 3405)

Fill-in-the-middle (FIM) sentinels come after the reference's ids: ``FIM_SPAN_ID`` (3406) and
``FIM_MIDDLE_ID`` (3407), so a FIM model has ``FIM_VOCAB_SIZE`` (3408) ids. ``VOCAB_SIZE`` stays 3406: the
tokenizer never writes a sentinel, and every reference id and checkpoint is unchanged. The layout that uses
them is described in ``generation/fim.py``.

This module is pure Python (no torch) so that the tokenizer, the model's grammar and the data
pipeline all share one definition.
"""

from __future__ import annotations

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
TOKENS_PER_EVENT = 8

#: The MIDI channel (0-based) General MIDI reserves for drums (channel 10 counted from 1); the tokenizer keeps it
#: when it renumbers channels, augmentation neither shifts it nor transposes its notes.
DRUM_CHANNEL = 9

#: Parameters of each event type, in row order (after the event type id).
EVENT_PARAMETERS: dict[str, tuple[str, ...]] = {
    "note": ("time1", "time2", "track", "channel", "pitch", "velocity", "duration"),
    "patch_change": ("time1", "time2", "track", "channel", "patch"),
    "control_change": ("time1", "time2", "track", "channel", "controller", "value"),
    "set_tempo": ("time1", "time2", "track", "bpm"),
    "time_signature": ("time1", "time2", "track", "nn", "dd"),
    "key_signature": ("time1", "time2", "track", "sf", "mi"),
}

#: Number of values of each parameter, in id allocation order.
PARAMETER_SIZES: dict[str, int] = {
    "time1": 128,
    "time2": 16,
    "duration": 2048,
    "track": 128,
    "channel": 16,
    "pitch": 128,
    "velocity": 128,
    "patch": 128,
    "controller": 128,
    "value": 128,
    "bpm": 384,
    "nn": 16,
    "dd": 4,
    "sf": 15,
    "mi": 2,
}

#: Steps of the tokenizer's time grid in one beat (the values of ``time2``): times are quantised to 1/16 beat.
STEPS_PER_BEAT: int = PARAMETER_SIZES["time2"]
#: The largest tempo a ``set_tempo`` row holds, in (integer) beats per minute.
MAX_BPM: int = PARAMETER_SIZES["bpm"] - 1

EVENT_TYPES: tuple[str, ...] = tuple(EVENT_PARAMETERS)

#: Id of each event type (3..8).
EVENT_TYPE_IDS: dict[str, int] = {name: 3 + i for i, name in enumerate(EVENT_TYPES)}
ID_TO_EVENT_TYPE: dict[int, str] = {i: name for name, i in EVENT_TYPE_IDS.items()}


def _parameter_offsets() -> dict[str, int]:
    offsets, next_id = {}, 3 + len(EVENT_TYPES)
    for name, size in PARAMETER_SIZES.items():
        offsets[name] = next_id
        next_id += size
    return offsets


#: First id of each parameter's block: id = PARAMETER_OFFSETS[name] + value.
PARAMETER_OFFSETS: dict[str, int] = _parameter_offsets()

VOCAB_SIZE: int = 3 + len(EVENT_TYPES) + sum(PARAMETER_SIZES.values())
assert VOCAB_SIZE == 3406 and TOKENS_PER_EVENT == 1 + max(len(p) for p in EVENT_PARAMETERS.values())

#: Fill-in-the-middle sentinel of the two rows around the suffix: ``[FIM_SPAN_ID, time1, time1, time2, pad x4]`` (where
#: the span ends) before it, ``[FIM_SPAN_ID, pad x7]`` after it (see ``generation/fim.py``).
FIM_SPAN_ID: int = VOCAB_SIZE
#: Fill-in-the-middle sentinel of the middle row ``[FIM_MIDDLE_ID, time1, time2, time1, time2, pad x3]`` (where the
#: span starts after the prefix and how long it is): the span's events follow.
FIM_MIDDLE_ID: int = VOCAB_SIZE + 1
#: Vocabulary size of a model trained for fill-in-the-middle (the reference's ids + the two sentinels).
FIM_VOCAB_SIZE: int = VOCAB_SIZE + 2
assert (FIM_SPAN_ID, FIM_MIDDLE_ID, FIM_VOCAB_SIZE) == (3406, 3407, 3408)


def parameter_id(name: str, value: int) -> int:
    """Token id of ``value`` for parameter ``name``.

    Raises:
        KeyError: ``name`` is not a parameter.
        ValueError: ``value`` is outside ``[0, PARAMETER_SIZES[name])``.
    """
    size = PARAMETER_SIZES[name]
    if not 0 <= value < size:
        raise ValueError(f"{name}={value} is outside [0, {size})")
    return PARAMETER_OFFSETS[name] + value


def parameter_range(name: str) -> range:
    """The ids of parameter ``name`` as a ``range``."""
    return range(PARAMETER_OFFSETS[name], PARAMETER_OFFSETS[name] + PARAMETER_SIZES[name])


def slot_id_ranges(event_type: str) -> list[range]:
    """For each of the 7 slots after the event type id, the allowed ids (pad-only slots: ``range(0, 1)``)."""
    params = EVENT_PARAMETERS[event_type]
    return [parameter_range(params[i]) if i < len(params) else range(PAD_ID, PAD_ID + 1)
            for i in range(TOKENS_PER_EVENT - 1)]


def tokenizer_dict(optimise_midi: bool = True) -> dict:
    """The reference's ``MIDITokenizerV2.to_dict()`` for this layout (as found in its checkpoints' config)."""
    return {
        "version": "v2",
        "optimise_midi": optimise_midi,
        "vocab_size": VOCAB_SIZE,
        "events": {name: list(params) for name, params in EVENT_PARAMETERS.items()},
        "event_parameters": dict(PARAMETER_SIZES),
        "max_token_seq": TOKENS_PER_EVENT,
        "pad_id": PAD_ID,
        "bos_id": BOS_ID,
        "eos_id": EOS_ID,
    }


__all__ = [
    "BOS_ID",
    "DRUM_CHANNEL",
    "EOS_ID",
    "EVENT_PARAMETERS",
    "EVENT_TYPES",
    "EVENT_TYPE_IDS",
    "FIM_MIDDLE_ID",
    "FIM_SPAN_ID",
    "FIM_VOCAB_SIZE",
    "ID_TO_EVENT_TYPE",
    "MAX_BPM",
    "PAD_ID",
    "PARAMETER_OFFSETS",
    "PARAMETER_SIZES",
    "STEPS_PER_BEAT",
    "TOKENS_PER_EVENT",
    "VOCAB_SIZE",
    "parameter_id",
    "parameter_range",
    "slot_id_ranges",
    "tokenizer_dict",
]
