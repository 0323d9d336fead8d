"""Training data: MIDI sources -> a tokenized ``datasets.Dataset`` -> event windows -> padded batches.

Three steps, each usable alone:

1. :func:`tokenize_midi_dataset` turns a folder, a list of paths or a ``datasets.Dataset`` with a
   ``path`` or ``bytes`` column into a dataset of event rows (``datasets.map`` with ``num_proc``,
   cached on disk under ``cache_dir``). Files that fail to parse (or fail the optional quality filter)
   are skipped, counted and listed with their reason in a report file: one bad file never aborts a run.
2. :class:`MidiWindowDataset` cuts a window of at most ``max_events`` events from each song, with a
   random start as the reference does, and applies the tokenizer's augmentation on the fly. The
   randomness is a pure function of ``(seed, epoch, index)``, so a resumed run sees the same data. With
   ``fim_rate > 0`` that share of windows become fill-in-the-middle examples (``generation/fim.py``).
   ``windows_per_file`` weighs a mixture of corpora (a file may give several windows per epoch, or a share of one).
3. :class:`DataCollatorForMidiEvents` pads a batch by whole events (right or left), builds the
   ``attention_mask`` and the ``labels`` (pad -> -100).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from ..errors import InvalidMidiError
from ..generation.fim import bar_steps, draw_span, event_steps, fim_rows
from ..midi_reading import find_midi_files
from ..vocabulary import EVENT_TYPE_IDS, PAD_ID, TOKENS_PER_EVENT

logger = logging.getLogger(__name__)

_NO_IDS = np.zeros(0, dtype=np.int16)


def is_validation_file(name: str, validation_fraction: float) -> bool:
    """Deterministic by-file split: a stable hash of the file's name decides, independent of order."""
    digest = hashlib.sha1(Path(name).name.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < validation_fraction


def _source_fingerprint(dataset: datasets.Dataset, tokenizer: Any, quality_filter: bool) -> str:
    """Hash of the inputs (names, sizes, mtimes or bytes) and tokenizer options: the cache key."""
    h = hashlib.sha1()
    h.update(json.dumps({"optimise_midi": getattr(tokenizer, "optimise_midi", None),
                         "quality_filter": quality_filter, "format": 1}).encode())
    column = "path" if "path" in dataset.column_names else "bytes"
    for value in dataset[column]:
        if column == "path":
            stat = os.stat(value)
            h.update(f"{value}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        else:
            h.update(hashlib.sha1(value).digest())
    return h.hexdigest()[:16]


def _encode_example(example: dict[str, Any], tokenizer: Any, quality_filter: bool) -> dict[str, Any]:
    source = example["path"] if example.get("path") is not None else example["bytes"]
    try:
        rows = tokenizer.encode_midi(source)
    except InvalidMidiError as err:
        return {"input_ids": _NO_IDS, "num_events": 0, "error": f"invalid MIDI: {err.problem}"}
    if quality_filter:
        ok, reasons = tokenizer.check_quality(rows)
        if not ok:
            return {"input_ids": _NO_IDS, "num_events": 0, "error": "quality filter: " + ", ".join(reasons)}
    return {"input_ids": rows.reshape(-1).astype(np.int16), "num_events": len(rows), "error": None}


def tokenize_midi_dataset(
    sources: str | os.PathLike | Sequence[str | os.PathLike] | datasets.Dataset,
    tokenizer: Any = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    num_proc: int | None = None,
    quality_filter: bool = False,
    report_path: str | os.PathLike | None = None,
) -> datasets.Dataset:
    """Tokenize MIDI sources into a dataset with columns ``name``, ``input_ids`` (flat int16) and ``num_events``.

    Args:
        sources: a folder, a list of paths/folders, or a ``datasets.Dataset`` with a ``path`` or ``bytes``
            column (and optionally ``name``).
        tokenizer: a ``MidiEventTransformerTokenizer`` (default: a new one, v2 with optimise_midi).
        cache_dir: where the tokenized Arrow file is kept; a second call with the same inputs loads it
            instead of tokenizing again. ``None``: no on-disk cache.
        num_proc: processes for ``datasets.map``.
        quality_filter: also drop files failing the reference's quality filter (off by default, as in the
            reference's training, whose filter rejects piano-only music).
        report_path: JSON file listing every skipped file and why (also logged).

    Returns:
        `datasets.Dataset` of the files that tokenized, in input order.
    """
    if tokenizer is None:
        from ..tokenization_midi_event_transformer import MidiEventTransformerTokenizer

        tokenizer = MidiEventTransformerTokenizer()
    if isinstance(sources, datasets.Dataset):
        raw = sources
        if "path" not in raw.column_names and "bytes" not in raw.column_names:
            raise ValueError(f"a MIDI dataset needs a 'path' or 'bytes' column, got {raw.column_names}")
        if "name" not in raw.column_names:
            names = raw["path"] if "path" in raw.column_names else [f"item-{i}" for i in range(len(raw))]
            raw = raw.add_column("name", [str(n) for n in names])
    else:
        paths = [str(path) for path in find_midi_files(sources)]
        raw = datasets.Dataset.from_dict({"path": paths, "name": paths})

    map_kwargs: dict[str, Any] = {}
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        fingerprint = _source_fingerprint(raw, tokenizer, quality_filter)
        map_kwargs = {"cache_file_name": str(Path(cache_dir) / f"midi-tokens-{fingerprint}.arrow"),
                      "load_from_cache_file": True, "new_fingerprint": fingerprint}
    features = datasets.Features({**{k: v for k, v in raw.features.items()},
                                  "input_ids": datasets.Sequence(datasets.Value("int16")),
                                  "num_events": datasets.Value("int32"), "error": datasets.Value("string")})
    encoded = raw.map(_encode_example, fn_kwargs={"tokenizer": tokenizer, "quality_filter": quality_filter},
                      num_proc=num_proc, features=features, desc="Tokenizing MIDI", **map_kwargs)

    errors = [(name, err) for name, err in zip(encoded["name"], encoded["error"], strict=True) if err is not None]
    if errors:
        logger.warning("skipped %d of %d MIDI files (first: %s: %s)", len(errors), len(encoded), *errors[0])
    if report_path is not None:
        report = {"total": len(encoded), "kept": len(encoded) - len(errors), "skipped": len(errors),
                  "files": [{"path": name, "reason": err} for name, err in errors]}
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(json.dumps(report, indent=2))
    keep_columns = ["name", "input_ids", "num_events"]
    kept = encoded.filter(lambda err: err is None, input_columns="error", num_proc=None)
    return kept.remove_columns([c for c in kept.column_names if c not in keep_columns])


def split_by_file(dataset: datasets.Dataset, validation_fraction: float = 0.05) -> datasets.DatasetDict:
    """Deterministic train/validation split by file name (see :func:`is_validation_file`)."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    flags = [is_validation_file(name, validation_fraction) for name in dataset["name"]]
    return datasets.DatasetDict({
        "train": dataset.select([i for i, f in enumerate(flags) if not f]),
        "validation": dataset.select([i for i, f in enumerate(flags) if f]),
    })


class MidiWindowDataset(torch.utils.data.Dataset):
    """One window of at most ``max_events`` events per song, as ``(n, 8)`` int64 tensors.

    The start is random as in the reference (half of the draws start at the song's first event), and
    ``augment=True`` applies ``tokenizer.augment``. Randomness depends only on ``(seed, epoch, index)``:
    call :meth:`set_epoch` each epoch. With ``random_start=False`` the window starts at the first event.

    Fill in the middle: with ``fim_rate > 0``, that share of windows (drawn per item) become FIM examples
    (``generation.fim.fim_rows(training=True)``): a span of ``fim_bars`` whole bars (uniform, the bars of the whole
    song from its time signatures) is drawn in the window and the window is laid out SPAN / suffix / SPAN / prefix /
    MIDDLE / middle / END, the suffix's tail dropped so that the example keeps at most ``max_events`` rows. Those
    draws use their own generator seeded by ``(seed, epoch, index)``, so the windows themselves (start, augmentation)
    are the same whatever the rate, and a resumed run sees the same examples. A window where no span fits stays
    plain. The model needs the sentinel ids (``model.resize_for_fim()``).

    Mixtures: ``windows_per_file[i]`` is how many windows file ``i`` gives per epoch (its corpus' weight); the
    integer part is repeated, a fractional part gives one more window to that share of the files (drawn once, from
    ``seed``). Each window is then an item of its own, drawn as above from ``(seed, epoch, item)``.

    Instrument prompts: with ``patches_first_rate > 0``, that share of the windows that start at a song's first
    event have the song's time-0 events reordered so that its signatures, tempo and patch changes come before its
    first notes, the layout of ``generation.prompts.build_prompt``'s instrument prompts (scores rendered to MIDI
    often put each part's patch change just before that part's first note). Every event keeps its time.
    """

    def __init__(self, dataset: datasets.Dataset, max_events: int = 512, *, tokenizer: Any = None,
                 augment: bool = False, random_start: bool = True, seed: int = 0, fim_rate: float = 0.0,
                 fim_bars: tuple[int, int] = (1, 8), windows_per_file: Sequence[float] | None = None,
                 patches_first_rate: float = 0.0) -> None:
        if max_events < 2:
            raise ValueError(f"max_events must be >= 2 (context + one predicted event), got {max_events}")
        if augment and tokenizer is None:
            raise ValueError("augment=True needs the tokenizer (its augment method)")
        if not 0.0 <= fim_rate <= 1.0:
            raise ValueError(f"fim_rate must be in [0, 1], got {fim_rate}")
        if not 1 <= fim_bars[0] <= fim_bars[1]:
            raise ValueError(f"fim_bars must be (min, max) with 1 <= min <= max, got {fim_bars}")
        if fim_rate and max_events < 8:
            raise ValueError(f"fill-in-the-middle examples need max_events >= 8, got {max_events}")
        if not 0.0 <= patches_first_rate <= 1.0:
            raise ValueError(f"patches_first_rate must be in [0, 1], got {patches_first_rate}")
        self.dataset = dataset.with_format("numpy", columns=["input_ids"])
        self.items = self._mixture_items(len(dataset), windows_per_file, seed)
        self.patches_first_rate = patches_first_rate
        self.max_events, self.tokenizer = max_events, tokenizer
        self.augment, self.random_start, self.seed, self.epoch = augment, random_start, seed, 0
        self.fim_rate, self.fim_bars = fim_rate, (int(fim_bars[0]), int(fim_bars[1]))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @staticmethod
    def _mixture_items(n_files: int, windows_per_file: Sequence[float] | None, seed: int) -> np.ndarray:
        """``(n_items,)`` file index of every item of an epoch."""
        if windows_per_file is None:
            return np.arange(n_files)
        weights = np.asarray(windows_per_file, dtype=np.float64)
        if weights.shape != (n_files,):
            raise ValueError(f"windows_per_file needs one weight per file ({n_files}), got shape {weights.shape}")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("windows_per_file must be finite and >= 0")
        whole = np.floor(weights)
        extra = np.random.default_rng([seed, 2**31 - 1]).random(n_files) < weights - whole
        items = np.repeat(np.arange(n_files), (whole + extra).astype(np.int64))
        if len(items) == 0:
            raise ValueError("windows_per_file gives no window at all")
        return items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self.items):
            raise IndexError(f"item {index} out of range for {len(self.items)} windows")
        rows = self.dataset[int(self.items[index])]["input_ids"].astype(np.int64).reshape(-1, TOKENS_PER_EVENT)  # (n, 8)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.random_start and len(rows) > self.max_events:
            start = int(rng.integers(0, len(rows) - self.max_events))
            start = start if rng.random() < 0.5 else 0
        else:
            start = 0
        song = rows
        rows = rows[start:start + self.max_events]
        if self.augment:
            rows = self.tokenizer.augment(rows, generator=rng)
        if self.patches_first_rate and start == 0:
            if np.random.default_rng([self.seed, self.epoch, index, 2]).random() < self.patches_first_rate:
                rows = patches_first(rows)
        if self.fim_rate:
            fim_rng = np.random.default_rng([self.seed, self.epoch, index, 1])
            if fim_rng.random() < self.fim_rate:
                rows = self._fim_example(song, start, rows, fim_rng)
        return torch.from_numpy(np.ascontiguousarray(rows))

    def _fim_example(self, song: np.ndarray, start: int, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The FIM layout of the window ``rows = song[start:...]`` (augmented), or ``rows`` when no span fits."""
        steps = event_steps(song)  # (n,) absolute: the window is timed after the event before it
        previous = int(steps[start - 1]) if start else 0
        overflow = max(0, len(rows) + 4 - self.max_events)  # two SPAN rows, MIDDLE and END
        span = draw_span(rows, rng, *self.fim_bars, bars=bar_steps(song, steps=steps), previous_step=previous,
                         min_rows_after=overflow)
        if span is None:
            return rows
        return fim_rows(rows, *span, training=True, previous_step=previous, max_rows=self.max_events)


def patches_first(rows: np.ndarray) -> np.ndarray:
    """``rows`` (a piece from its start, ``(n, 8)``) with the events at time 0 reordered: everything that is not a
    note (signatures, tempo, patch and control changes) first, then the notes, each group in its own order.

    Every moved row has a zero time delta (it is at time 0, like the rows around it), so every event keeps its
    time; the rows after the first one at a later time stay where they are.
    """
    later = event_steps(rows) > 0
    at_zero = int(np.argmax(later)) if later.any() else len(rows)
    head = rows[:at_zero]
    is_note = head[:, 0] == EVENT_TYPE_IDS["note"]
    return np.concatenate([head[~is_note], head[is_note], rows[at_zero:]])


@dataclass
class DataCollatorForMidiEvents:
    """Pad ``(n_i, 8)`` event windows to a batch of flat ``input_ids`` (B, E*8) by whole events.

    Returns ``input_ids``, ``attention_mask`` (0 on padding events) and ``labels`` (``input_ids`` with
    pad -> -100). ``padding_side="left"`` suits generation prompts; training uses "right".
    """

    padding_side: str = "right"
    pad_to_multiple_of: int | None = None
    pad_token_id: int = PAD_ID

    def __post_init__(self) -> None:
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {self.pad_to_multiple_of}")

    def __call__(self, features: Sequence[Any]) -> dict[str, torch.Tensor]:
        windows = [self._as_rows(f["input_ids"] if isinstance(f, dict) else f) for f in features]
        if not windows:
            raise ValueError("cannot collate an empty batch")
        length = max(len(w) for w in windows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(windows), length, TOKENS_PER_EVENT), self.pad_token_id, dtype=torch.long)
        event_mask = torch.zeros(len(windows), length, dtype=torch.long)
        for i, rows in enumerate(windows):
            span = slice(length - len(rows), length) if self.padding_side == "left" else slice(0, len(rows))
            input_ids[i, span], event_mask[i, span] = rows, 1
        input_ids = input_ids.reshape(len(windows), -1)  # (B, E*8)
        attention_mask = event_mask.repeat_interleave(TOKENS_PER_EVENT, dim=1)  # (B, E*8)
        labels = input_ids.masked_fill(input_ids == self.pad_token_id, -100)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    @staticmethod
    def _as_rows(window: Any) -> torch.Tensor:
        rows = torch.as_tensor(np.asarray(window), dtype=torch.long)
        if rows.dim() == 1:
            if rows.numel() % TOKENS_PER_EVENT:
                raise ValueError(f"a flat window must hold a multiple of {TOKENS_PER_EVENT} ids, got {rows.numel()}")
            rows = rows.reshape(-1, TOKENS_PER_EVENT)
        if rows.dim() != 2 or rows.shape[1] != TOKENS_PER_EVENT:
            raise ValueError(f"a window must be (n_events, {TOKENS_PER_EVENT}), got shape {tuple(rows.shape)}")
        return rows


__all__ = [
    "DataCollatorForMidiEvents",
    "MidiWindowDataset",
    "is_validation_file",
    "patches_first",
    "split_by_file",
    "tokenize_midi_dataset",
]
