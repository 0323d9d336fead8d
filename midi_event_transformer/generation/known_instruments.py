"""What a model saw in training: the programs and drum kits of its training data, recorded beside its weights.

A model's folder may hold :data:`TRAINING_DATA_FILE` (``training_data.json``, a file of its own: the config rejects
unknown keys), written by training from the encoded songs (:func:`count_instruments`, :func:`write_training_data`)::

    {"format": 1, "songs": 909, "events": 3012345,
     "programs": [{"program": 0, "name": "Acoustic Grand Piano", "notes": 1234567}, ...],
     "drum_kits": [{"program": 0, "name": "Standard", "notes": 4567}, ...],
     "sources": ["pop909"]}

``programs`` lists each melodic program that played notes (channels other than the drum channel), ``drum_kits``
each program of the drum channel (``vocabulary.DRUM_CHANNEL``) that played notes, both sorted by program; extra
keys (``sources`` ...) are kept as given. A request that names a new instrument the model never saw
(``instruments``, ``drum_kit``, ``add_track``) gets one warning line (:func:`unseen_instruments_warning`); a model
without the file (a converted reference checkpoint, a random model) gets none.

Example::

    >>> counts = count_instruments(tokenizer.encode_midi(path) for path in files)
    >>> write_training_data("out/model", counts, sources=["pop909"])
    >>> unseen_instruments_warning(read_training_data("out/model"), instruments=["Violin"], drum_kit="Standard")
    'the model never saw Violin, Drums (Standard kit) in training: expect them to be played like the instruments it knows (Acoustic Grand Piano)'
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..vocabulary import (
    DRUM_CHANNEL,
    EVENT_PARAMETERS,
    EVENT_TYPE_IDS,
    PARAMETER_OFFSETS,
    PARAMETER_SIZES,
    TOKENS_PER_EVENT,
)
from .general_midi import DRUM_KITS, INSTRUMENT_NAMES, drum_kit_program, parse_instruments, track_instrument

logger = logging.getLogger(__name__)

#: The file beside a model's weights that records what it saw in training.
TRAINING_DATA_FILE = "training_data.json"
#: The version of :data:`TRAINING_DATA_FILE`'s layout written here (``"format"``).
TRAINING_DATA_FORMAT = 1
#: How many of the instruments the model saw most (by notes) the warning names.
KNOWN_SHOWN = 3

_NOTE = EVENT_TYPE_IDS["note"]
_PATCH = EVENT_TYPE_IDS["patch_change"]
_EVENT_IDS = np.array(sorted(EVENT_TYPE_IDS.values()))
_CHANNEL_SLOT = 1 + EVENT_PARAMETERS["note"].index("channel")
_PATCH_SLOT = 1 + EVENT_PARAMETERS["patch_change"].index("patch")
assert _CHANNEL_SLOT == 1 + EVENT_PARAMETERS["patch_change"].index("channel")  # one column for both
_PROGRAMS = PARAMETER_SIZES["patch"]
_COUNT_KEYS = ("format", "songs", "events", "programs", "drum_kits")


# ----------------------------------------------------------------------------------------- counting
def _song_rows(song: Any, index: int) -> np.ndarray:
    if isinstance(song, (str, bytes, os.PathLike)) or not hasattr(song, "__len__"):
        raise TypeError(f"song {index} must be an (n_events, {TOKENS_PER_EVENT}) array of token ids, not "
                        f"{type(song).__name__}")
    rows = np.asarray(song.detach().cpu() if hasattr(song, "detach") else song)
    if rows.size == 0:
        return np.zeros((0, TOKENS_PER_EVENT), dtype=np.int64)
    if rows.ndim != 2 or rows.shape[1] != TOKENS_PER_EVENT:
        raise ValueError(f"song {index} must have shape (n_events, {TOKENS_PER_EVENT}), got {rows.shape}")
    if not np.issubdtype(rows.dtype, np.integer):
        raise TypeError(f"song {index} must hold integer token ids, not {rows.dtype}")
    return rows


def _count_song(rows: np.ndarray, melodic: np.ndarray, drums: np.ndarray) -> None:
    """Add the notes of one song's rows to the per-program counts (vectorised: no Python loop over rows)."""
    kinds = rows[:, 0]
    rows = rows[(kinds == _NOTE) | (kinds == _PATCH)]
    channel = rows[:, _CHANNEL_SLOT].astype(np.int64) - PARAMETER_OFFSETS["channel"]
    is_patch = rows[:, 0] == _PATCH
    program = np.where(is_patch, rows[:, _PATCH_SLOT].astype(np.int64) - PARAMETER_OFFSETS["patch"], 0)
    valid = (channel >= 0) & (channel < PARAMETER_SIZES["channel"]) & (program >= 0) & (program < _PROGRAMS)
    channel, is_patch, program = channel[valid], is_patch[valid], program[valid]
    if not len(channel):
        return
    # each channel's rows in song order; a channel's program is its last patch change (0 before any)
    order = np.argsort(channel, kind="stable")
    channel, is_patch, program = channel[order], is_patch[order], program[order]
    first = np.ones(len(channel), dtype=bool)
    first[1:] = channel[1:] != channel[:-1]
    positions = np.arange(len(channel))
    current = program[np.maximum.accumulate(np.where(is_patch | first, positions, 0))]
    notes = ~is_patch
    on_drums = channel == DRUM_CHANNEL
    melodic += np.bincount(current[notes & ~on_drums], minlength=_PROGRAMS)
    drums += np.bincount(current[notes & on_drums], minlength=_PROGRAMS)


def _drum_kit_name(program: int) -> str:
    return DRUM_KITS.get(program, f"program {program}")


def count_instruments(songs: Iterable[Any]) -> dict[str, Any]:
    """The notes each program and drum kit plays in encoded songs.

    A channel plays program 0 until its first ``patch_change`` and then the program of its last one; notes on the
    drum channel (``vocabulary.DRUM_CHANNEL``, 9) count for the drum kit that channel's program selects, the other
    notes for their melodic program. Rows that are not valid notes / patch changes are skipped.

    Args:
        songs: each an ``(n_events, 8)`` array (or nested list, or tensor) of token ids, as
            ``MidiEventTransformerTokenizer.encode_midi`` returns (BOS / EOS / pad rows allowed).

    Returns:
        `dict`, JSON-able: ``{"format": 1, "songs": n, "events": event rows (BOS / EOS / pad not counted),
        "programs": [{"program": p, "name": General MIDI name, "notes": n}, ...], "drum_kits": [{"program": p,
        "name": kit name, "notes": n}, ...]}``, each list sorted by program and holding only what played notes.

    Raises:
        TypeError: ``songs`` is not an iterable of arrays, or a song holds no integers.
        ValueError: a song of another shape than ``(n_events, 8)``.
    """
    if isinstance(songs, (str, bytes, os.PathLike, Mapping)) or not isinstance(songs, Iterable):
        raise TypeError(f"songs must be an iterable of (n_events, {TOKENS_PER_EVENT}) arrays, not "
                        f"{type(songs).__name__}")
    if isinstance(songs, np.ndarray) and songs.ndim == 2:
        raise TypeError("songs must be an iterable of songs, not one song's array: pass [rows]")
    melodic = np.zeros(_PROGRAMS, dtype=np.int64)
    drums = np.zeros(_PROGRAMS, dtype=np.int64)
    count = events = 0
    for index, song in enumerate(songs):
        rows = _song_rows(song, index)
        count += 1
        events += int(np.isin(rows[:, 0], _EVENT_IDS).sum())
        _count_song(rows, melodic, drums)
    return {
        "format": TRAINING_DATA_FORMAT,
        "songs": count,
        "events": events,
        "programs": [{"program": int(p), "name": INSTRUMENT_NAMES[p], "notes": int(melodic[p])}
                     for p in np.flatnonzero(melodic)],
        "drum_kits": [{"program": int(p), "name": _drum_kit_name(int(p)), "notes": int(drums[p])}
                      for p in np.flatnonzero(drums)],
    }


# ----------------------------------------------------------------------------------------- the file
def _check_training_data(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must hold a JSON object, not {type(data).__name__}")
    if data.get("format") != TRAINING_DATA_FORMAT:
        raise ValueError(f"{where} has format {data.get('format')!r}; this version reads format "
                         f"{TRAINING_DATA_FORMAT}")
    for key in ("programs", "drum_kits"):
        entries = data.get(key)
        if not isinstance(entries, list) or not all(
                isinstance(entry, Mapping) and isinstance(entry.get("program"), int)
                and 0 <= entry["program"] < _PROGRAMS and isinstance(entry.get("notes"), int) for entry in entries):
            raise ValueError(f"{where}: {key!r} must be a list of {{'program': 0-127, 'notes': int, ...}} objects")
    return dict(data)


def write_training_data(directory: str | os.PathLike, counts: Mapping[str, Any], **extra: Any) -> Path:
    """Write :data:`TRAINING_DATA_FILE` in a model's folder (overwritten).

    Args:
        directory: the saved model's folder (created if missing).
        counts: :func:`count_instruments`' result.
        **extra: more keys to record, e.g. ``sources=["pop909"]`` (JSON-able; not one of the counts' keys).

    Returns:
        `Path` of the written file.

    Raises:
        TypeError: ``counts`` is not a dict, or an extra value is not JSON-able.
        ValueError: ``counts`` is not :func:`count_instruments`' layout, or an extra key repeats one of its keys.
    """
    if not isinstance(counts, Mapping):
        raise TypeError(f"counts must be count_instruments()'s dict, not {type(counts).__name__}")
    data = _check_training_data(counts, "counts")
    clashes = sorted(set(extra) & set(_COUNT_KEYS))
    if clashes:
        raise ValueError(f"extra keys {clashes} would replace the counts' own")
    text = json.dumps({**data, **extra}, indent=2, ensure_ascii=False)
    path = Path(directory) / TRAINING_DATA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _model_location(model: Any) -> str | None:
    """Where a model was loaded from (its base model's for a peft model), or None."""
    if callable(getattr(model, "get_base_model", None)):  # a peft PeftModel
        model = model.get_base_model()
    config = getattr(model, "config", None)
    location = getattr(config, "name_or_path", None) or getattr(model, "name_or_path", None)
    return os.fspath(location) if location else None


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # "owner/name" or "name"
_HUB_FILES: dict[str, str | None] = {}


def _hub_file(repo_id: str) -> str | None:
    """The cached path of a Hub repository's :data:`TRAINING_DATA_FILE` (downloaded once per process), or None."""
    if repo_id not in _HUB_FILES:
        from transformers.utils import cached_file

        try:
            _HUB_FILES[repo_id] = cached_file(repo_id, TRAINING_DATA_FILE, _raise_exceptions_for_missing_entries=False,
                                              _raise_exceptions_for_connection_errors=False)
        except (OSError, ValueError) as error:  # not a repository, no access: no record
            logger.info("no %s for %s (%s)", TRAINING_DATA_FILE, repo_id, error)
            _HUB_FILES[repo_id] = None
    return _HUB_FILES[repo_id]


def read_training_data(model_or_path: Any) -> dict[str, Any] | None:
    """What a model saw in training, from the :data:`TRAINING_DATA_FILE` beside its weights.

    Args:
        model_or_path: a model folder (str or path), a Hub id, or a loaded model (its ``config.name_or_path``; a
            peft model's base model's).

    Returns:
        `dict` as written by :func:`write_training_data`, or None when there is no such file (a converted reference
        checkpoint, a model built in memory).

    Raises:
        TypeError: ``model_or_path`` is neither a path nor a model.
        ValueError: the file is not valid JSON or not this layout (the message names the file).
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        location: str | None = os.fspath(model_or_path)
    elif hasattr(model_or_path, "config") or callable(getattr(model_or_path, "get_base_model", None)):
        location = _model_location(model_or_path)
    else:
        raise TypeError(f"model_or_path must be a model folder, a Hub id or a model, not "
                        f"{type(model_or_path).__name__}")
    if not location:
        return None
    directory = Path(location)
    if directory.is_dir():
        path: str | Path | None = directory / TRAINING_DATA_FILE
        if not Path(path).is_file():
            return None
    elif directory.exists() or not _HUB_ID.fullmatch(location):
        return None  # a file, or a folder that is gone
    else:
        path = _hub_file(location)
        if path is None:
            return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    return _check_training_data(data, str(path))


# ----------------------------------------------------------------------------------------- the warning
def _instrument_label(program: int) -> str:
    return INSTRUMENT_NAMES[program]


def _drum_kit_label(program: int) -> str:
    return f"Drums ({DRUM_KITS[program]} kit)" if program in DRUM_KITS else f"Drums (kit program {program})"


def _requested(instruments: Sequence[str | int] | str | int | None, drum_kit: str | int | None,
               add_track: str | int | None) -> list[tuple[int, bool]]:
    """``(program, is_drum_kit)`` of each new instrument a request names, in order, without repeats."""
    wanted: list[tuple[int, bool]] = []
    if instruments is not None:
        wanted += [(program, False) for program in parse_instruments(instruments)]
    if drum_kit is not None:
        wanted.append((drum_kit_program(drum_kit), True))
    if add_track is not None:
        wanted.append(track_instrument(add_track))
    return list(dict.fromkeys(wanted))


def unseen_instruments(training_data: Mapping[str, Any] | None,
                       instruments: Sequence[str | int] | str | int | None = None,
                       drum_kit: str | int | None = None, add_track: str | int | None = None) -> list[str]:
    """The new instruments of a request that the model never saw play a note in training.

    Args:
        training_data: :func:`read_training_data`'s dict; None (no record) gives no instrument.
        instruments, drum_kit, add_track: as ``generate_midi``'s (names or program numbers, read by the same
            ``general_midi`` parsers as the prompt and the track edit).

    Returns:
        `list[str]`: labels in the request's order, e.g. ``["Violin", "Drums (Standard kit)"]``; empty when every
        one was seen or there is no record.

    Raises:
        TypeError / ValueError: ``training_data`` that is not such a dict; names as ``generate_midi`` raises them.
    """
    if training_data is None:
        return []
    if not isinstance(training_data, Mapping):
        raise TypeError(f"training_data must be read_training_data()'s dict or None, not "
                        f"{type(training_data).__name__}")
    data = _check_training_data(training_data, "training_data")
    seen = {(entry["program"], False) for entry in data["programs"] if entry["notes"] > 0}
    seen |= {(entry["program"], True) for entry in data["drum_kits"] if entry["notes"] > 0}
    return [_drum_kit_label(program) if drums else _instrument_label(program)
            for program, drums in _requested(instruments, drum_kit, add_track) if (program, drums) not in seen]


def known_instruments(training_data: Mapping[str, Any], limit: int | None = None) -> list[str]:
    """Labels of the instruments and drum kits a model saw, most notes first (at most ``limit``)."""
    data = _check_training_data(training_data, "training_data")
    entries = [(entry["notes"], _instrument_label(entry["program"])) for entry in data["programs"]]
    entries += [(entry["notes"], _drum_kit_label(entry["program"])) for entry in data["drum_kits"]]
    ranked = [label for notes, label in sorted(entries, key=lambda item: -item[0]) if notes > 0]
    return ranked if limit is None else ranked[:limit]


def unseen_instruments_warning(training_data: Mapping[str, Any] | None,
                               instruments: Sequence[str | int] | str | int | None = None,
                               drum_kit: str | int | None = None, add_track: str | int | None = None) -> str | None:
    """One line that names the request's new instruments the model never saw, or None (all seen, or no record).

    Example: ``"the model never saw Violin, Drums (Standard kit) in training: expect them to be played like the
    instruments it knows (Acoustic Grand Piano)"`` (the :data:`KNOWN_SHOWN` it saw most, by notes).

    Args and raises: as :func:`unseen_instruments`.
    """
    unseen = unseen_instruments(training_data, instruments, drum_kit, add_track)
    if not unseen:
        return None
    known = known_instruments(training_data, KNOWN_SHOWN)  # type: ignore[arg-type]
    them = "them" if len(unseen) > 1 else "it"
    if not known:
        return f"the model never saw {', '.join(unseen)} in training (it saw no notes at all): expect noise"
    return (f"the model never saw {', '.join(unseen)} in training: expect {them} to be played like the instruments "
            f"it knows ({', '.join(known)})")


__all__ = [
    "KNOWN_SHOWN",
    "TRAINING_DATA_FILE",
    "TRAINING_DATA_FORMAT",
    "count_instruments",
    "known_instruments",
    "read_training_data",
    "unseen_instruments",
    "unseen_instruments_warning",
    "write_training_data",
]
