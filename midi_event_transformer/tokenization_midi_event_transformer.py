"""Tokenizer for midi-event-transformer: MIDI files <-> rows of 8 token ids (the reference's v2 vocabulary).

A MIDI file becomes an array of events of shape ``(n_events, 8)``: a BOS row, one row per event
(event type id, then its parameters, padded with PAD), an EOS row. The ids are exactly those of the
public reference's ``MIDITokenizerV2`` (SkyTNT/midi-model) with ``optimise_midi=True``.

Example::

    >>> tokenizer = MidiEventTransformerTokenizer()
    >>> ids = tokenizer.encode_midi("song.mid")          # (n_events, 8) int64
    >>> tokenizer.decode_midi(ids).save("again.mid")     # a mido.MidiFile
    >>> batch = tokenizer(["a.mid", "b.mid"], padding=True, return_tensors="pt")
    >>> batch["input_ids"].shape                         # (2, max_events * 8), left padded

Token strings (for the generic ``PreTrainedTokenizer`` API) are ``<pad> <bos> <eos>``, the event
names (``note``, ``patch_change``, ...) and ``{parameter}_{value}`` (``time1_3``, ``pitch_60``, ...).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from transformers import BatchEncoding, PreTrainedTokenizer

from .midi_augment import augment_rows, quality_report
from .midi_events import events_to_rows, score_to_events
from .midi_reading import MIDI_SUFFIXES, read_midi
from .midi_writing import as_rows, rows_to_tracks, tracks_to_midi
from .vocabulary import (
    BOS_ID,
    EOS_ID,
    EVENT_TYPES,
    PAD_ID,
    PARAMETER_SIZES,
    TOKENS_PER_EVENT,
    VOCAB_SIZE,
    tokenizer_dict,
)

logger = logging.getLogger(__name__)

def _build_token_strings() -> list[str]:
    tokens = ["<pad>", "<bos>", "<eos>", *EVENT_TYPES]
    for parameter, size in PARAMETER_SIZES.items():
        tokens += [f"{parameter}_{value}" for value in range(size)]
    assert len(tokens) == VOCAB_SIZE
    return tokens


def _is_midi_source(value: Any) -> bool:
    """Whether ``value`` is a MIDI source (not text): bytes, a path object, a MIDI path string, a file or MidiFile."""
    if isinstance(value, (bytes, bytearray, memoryview, os.PathLike)):
        return True
    if isinstance(value, str):
        return value.lower().endswith(MIDI_SUFFIXES) or (len(value) < 4096 and os.path.isfile(value))
    return hasattr(value, "read") or (hasattr(value, "tracks") and hasattr(value, "ticks_per_beat"))


class MidiEventTransformerTokenizer(PreTrainedTokenizer):
    r"""MIDI tokenizer with the reference's v2 vocabulary (3406 ids, 8 ids per event).

    Args:
        optimise_midi (`bool`, *optional*, defaults to `True`):
            Renumber tracks and channels, add default instruments and drop empty channels, as the
            reference's "tv2o" models were trained (the setting of its ``MIDITokenizerV2.optimise_midi``).
        cc_eps (`int`, *optional*, defaults to 4):
            A control change closer than this to the previous kept value of its controller is dropped.
        tempo_eps (`int`, *optional*, defaults to 4):
            A tempo change closer than this (in bpm) to the previous kept tempo of its track is dropped.
    """

    vocab_files_names: dict[str, str] = {}
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"

    def __init__(self, optimise_midi: bool = True, cc_eps: int = 4, tempo_eps: int = 4, **kwargs) -> None:
        if not isinstance(optimise_midi, bool):
            raise TypeError(f"optimise_midi must be a bool, not {type(optimise_midi).__name__}")
        for name, value in (("cc_eps", cc_eps), ("tempo_eps", tempo_eps)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.optimise_midi = optimise_midi
        self.cc_eps = cc_eps
        self.tempo_eps = tempo_eps
        self._id_to_token = _build_token_strings()
        self._token_to_id = {token: i for i, token in enumerate(self._id_to_token)}
        kwargs.setdefault("pad_token", "<pad>")
        kwargs.setdefault("bos_token", "<bos>")
        kwargs.setdefault("eos_token", "<eos>")
        kwargs.setdefault("padding_side", "left")
        kwargs.setdefault("model_max_length", 4096 * TOKENS_PER_EVENT)
        super().__init__(optimise_midi=optimise_midi, cc_eps=cc_eps, tempo_eps=tempo_eps, **kwargs)

    # ----------------------------------------------------------------- vocabulary (PreTrainedTokenizer API)
    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    @property
    def tokens_per_event(self) -> int:
        """Ids per event row (8)."""
        return TOKENS_PER_EVENT

    def get_vocab(self) -> dict[str, int]:
        return dict(self._token_to_id)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return text.split()

    def _convert_token_to_id(self, token: str) -> int:
        return self._token_to_id.get(token, PAD_ID)

    def _convert_id_to_token(self, index: int) -> str:
        return self._id_to_token[index] if 0 <= index < VOCAB_SIZE else "<pad>"

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return " ".join(tokens)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()  # the vocabulary is fixed by the init arguments

    def to_reference_dict(self) -> dict:
        """The reference's ``MIDITokenizerV2.to_dict()`` for this tokenizer (as in its checkpoints' config)."""
        return tokenizer_dict(self.optimise_midi)

    # ----------------------------------------------------------------- MIDI <-> ids
    def encode_midi(self, source: Any, add_bos_eos: bool = True) -> np.ndarray:
        """Tokenize a MIDI file.

        Args:
            source: a path (``str`` / ``os.PathLike``), the file's ``bytes``, a binary file object or a
                ``mido.MidiFile``.
            add_bos_eos: frame the events with a BOS row and an EOS row.

        Returns:
            `np.ndarray` of shape ``(n_events, 8)``, int64: one row per event (type id, parameter ids, pads).

        Raises:
            InvalidMidiError: the source is not a readable MIDI file (message names source and problem).
            TypeError: the source is of an unsupported type.
        """
        ticks_per_beat, tracks = read_midi(source)
        events = score_to_events(
            ticks_per_beat, tracks,
            remap_track_channel=self.optimise_midi, add_default_instr=self.optimise_midi,
            remove_empty_channels=self.optimise_midi, cc_eps=self.cc_eps, tempo_eps=self.tempo_eps)
        rows = events_to_rows(events)
        if add_bos_eos:
            framed = np.zeros((len(rows) + 2, TOKENS_PER_EVENT), dtype=np.int64)
            framed[0, 0], framed[1:-1], framed[-1, 0] = BOS_ID, rows, EOS_ID
            rows = framed
        return rows

    def decode_midi(self, ids: Any):
        """Turn ids back into a ``mido.MidiFile`` (type 1, 480 ticks per beat). Never raises on ids.

        Args:
            ids: ``(n_events, 8)`` or flat ``(n_events * 8,)`` ids; a list, ``np.ndarray`` or ``torch.Tensor``.
                BOS/EOS/pad rows are ignored; rows with an unknown type or out-of-range parameter are
                skipped and counted in one logged warning.

        Returns:
            `mido.MidiFile`: saves and reloads with mido.
        """
        rows = as_rows(ids)
        tracks, invalid = rows_to_tracks(rows)
        if invalid:
            logger.warning("decode_midi skipped %d invalid event row(s) of %d", invalid, len(rows))
        return tracks_to_midi(tracks, cc_eps=self.cc_eps, tempo_eps=self.tempo_eps)

    # ----------------------------------------------------------------- batches
    def __call__(self, midi: Any = None, *args, **kwargs) -> BatchEncoding:
        """Tokenize one MIDI source or a list of them (text and token strings go to the base class).

        For MIDI inputs, ``input_ids`` are the flattened rows (``n_events * 8``), with an
        ``attention_mask``. Keyword arguments: ``add_special_tokens`` (BOS/EOS rows, default True),
        ``padding`` (``True``/``"longest"``, ``"max_length"``, ``False``), ``max_length`` and
        ``truncation`` (whole events: the first ``max_length // 8`` events are kept, or the last with
        ``truncation_side="left"``), ``pad_to_multiple_of`` (in ids, a multiple of 8), ``return_tensors``
        (``"pt"``, ``"np"``). Padding is on the left, by whole events.
        """
        if midi is None:  # e.g. tokenizer(text=...)
            return super().__call__(*args, **kwargs)
        batched = isinstance(midi, (list, tuple))
        items = list(midi) if batched else [midi]
        if not items or not all(_is_midi_source(item) for item in items):
            return super().__call__(midi, *args, **kwargs)
        if args:
            raise TypeError("positional arguments after the MIDI source are not supported; use keywords")
        add_special_tokens = kwargs.pop("add_special_tokens", True)
        padding = kwargs.pop("padding", False)
        truncation = kwargs.pop("truncation", None)
        max_length = kwargs.pop("max_length", None)
        pad_to_multiple_of = kwargs.pop("pad_to_multiple_of", None)
        return_tensors = kwargs.pop("return_tensors", None)
        return_attention_mask = kwargs.pop("return_attention_mask", True)
        padding_side = kwargs.pop("padding_side", None)
        if kwargs:
            raise TypeError(f"unsupported keyword arguments for MIDI inputs: {sorted(kwargs)}")
        if max_length is not None and max_length % TOKENS_PER_EVENT:
            raise ValueError(f"max_length must be a multiple of {TOKENS_PER_EVENT} (whole events), got {max_length}")
        if pad_to_multiple_of is not None and pad_to_multiple_of % TOKENS_PER_EVENT:
            raise ValueError(f"pad_to_multiple_of must be a multiple of {TOKENS_PER_EVENT}, got {pad_to_multiple_of}")

        sequences = []
        for item in items:
            rows = self.encode_midi(item, add_bos_eos=add_special_tokens)
            if truncation and max_length is not None and len(rows) * TOKENS_PER_EVENT > max_length:
                keep = max_length // TOKENS_PER_EVENT
                rows = rows[-keep:] if self.truncation_side == "left" and keep else rows[:keep]
            sequences.append(rows.reshape(-1).tolist())
        encoded: dict[str, list] = {"input_ids": sequences}
        if padding not in (False, None, "do_not_pad"):
            encoded = dict(self.pad(
                encoded, padding=padding, max_length=max_length,
                pad_to_multiple_of=pad_to_multiple_of or TOKENS_PER_EVENT, padding_side=padding_side,
                return_attention_mask=return_attention_mask))
        elif return_attention_mask:
            encoded["attention_mask"] = [[1] * len(s) for s in sequences]
        if not batched and return_tensors is None:
            encoded = {key: value[0] for key, value in encoded.items()}
        return BatchEncoding(encoded, tensor_type=return_tensors)

    def batch_encode_midi(self, sources: list[Any], add_bos_eos: bool = True) -> list[np.ndarray]:
        """``encode_midi`` on each source (no padding): a list of ``(n_events_i, 8)`` arrays."""
        return [self.encode_midi(source, add_bos_eos=add_bos_eos) for source in sources]

    # ----------------------------------------------------------------- training helpers
    def augment(
        self,
        ids: Any,
        max_pitch_shift: int = 4,
        max_vel_shift: int = 10,
        max_cc_val_shift: int = 10,
        max_bpm_shift: int = 10,
        max_track_shift: int = 0,
        max_channel_shift: int = 16,
        generator: np.random.Generator | int | None = None,
    ) -> np.ndarray:
        """Randomly shift pitch, velocity, control values, tempo, track and channel, as the reference does.

        Each shift is drawn uniformly from ``[-max, max]`` (track and channel: ``[0, max]``) with
        ``generator`` (a ``np.random.Generator`` or a seed). Pitches are not shifted on drums (channel
        9), key signatures are transposed with the pitches; if any note would leave 0..127 the ids come
        back unchanged.

        Returns:
            `np.ndarray` of shape ``(n_events, 8)``.
        """
        rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)

        def draw(low: int, high: int) -> int:
            return int(rng.integers(low, high + 1))

        shifts = dict(
            pitch_shift=draw(-max_pitch_shift, max_pitch_shift),
            velocity_shift=draw(-max_vel_shift, max_vel_shift),
            cc_value_shift=draw(-max_cc_val_shift, max_cc_val_shift),
            bpm_shift=draw(-max_bpm_shift, max_bpm_shift),
            track_shift=draw(0, max_track_shift),
            channel_shift=draw(0, max_channel_shift),
        )
        return augment_rows(as_rows(ids), **shifts)

    def check_quality(self, ids: Any, **thresholds) -> tuple[bool, list[str]]:
        """The reference's quality filter: ``(ok, reasons)``, reasons among ``total_min``, ``total_max``,
        ``drum_only``, ``alignment``, ``tonality``, ``bandwidth``, ``density``, ``piano``.

        Keyword thresholds as in the reference (``alignment_min=0.3``, ``tonality_min=0.8``,
        ``piano_max=0.7``, ``notes_bandwidth_min=3``, ``notes_density_max=50``, ``notes_density_min=2.5``,
        ``total_notes_max=20000``, ``total_notes_min=256``, ``note_window_size=16``).
        """
        return quality_report(as_rows(ids), **thresholds)


MidiEventTransformerTokenizer.register_for_auto_class("AutoTokenizer")

__all__ = ["MidiEventTransformerTokenizer"]
