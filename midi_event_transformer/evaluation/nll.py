"""Evaluation: held-out NLL of a model on MIDI files, and objective statistics of MIDI files.

**NLL.** Each song is tokenized (BOS + events + EOS) and cut into windows of ``window_events`` (513) events
taken every ``stride_events`` (512) events; in a window the first event is context only and the others are
predicted, so every event of a song but the first (BOS) is predicted exactly once. Per-token NLL (nats) is
the mean of ``-log p(token)`` over the non-pad tokens of the predicted events; on one window it equals the
reference's two-level training loss (SkyTNT/midi-model ``train.py``: ``x = window[:-1]``, ``y = window[1:]``,
cross entropy ignoring pad). Per-event NLL is the total NLL divided by the number of predicted events, and
accuracy the share of those tokens that are the model's argmax (the reference's ``val/acc``).

**Objective statistics** of one file, from its notes (drums excluded unless ``include_drums``), on a grid of
``grid`` steps per beat (16: the tokenizer's resolution) where a grid is needed, as defined by MusPy
(Dong et al., 2020) and used in the symbolic-music generation literature:

- ``pitch_class_entropy``: Shannon entropy (bits) of the histogram of the notes' pitch classes (0 .. log2 12).
- ``scale_consistency``: the largest share of notes inside one major or minor scale (24 candidates).
- ``groove_consistency``: 1 - mean Hamming distance between the onset patterns of consecutive bars, divided
  by the bar length in grid steps (bars from the first time signature).
- ``polyphony``: mean number of distinct pitches sounding, over the grid steps where at least one sounds.
- ``note_density``: notes per beat, from time 0 to the end of the last note.
- ``empty_beat_rate``: share of beats (from 0 to the end of the last note) in which no note sounds.
- ``pitch_range``: highest minus lowest pitch (semitones).

Cross-checked against muspy 0.5.0 (optional extra ``[eval]``) on POP909 and Bach files: pitch-class entropy,
scale consistency and pitch range are identical; polyphony and groove consistency agree within quantisation
(muspy uses the file's ticks, we use the grid, so generated and reference files are measured alike); for the
empty-beat rate muspy also marks busy the beat in which a note ends exactly, we do not.

Example::

    >>> result = evaluate_nll(model, sorted(Path("heldout").glob("*.mid")))
    >>> result.per_token_nll, result.per_event_nll, result.token_accuracy
    >>> report = compare_statistics({"generated": gen_files, "POP909": ref_files})
    >>> draw_statistics_comparison(report, "comparison.png")
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mido
import numpy as np

from ..errors import InvalidMidiError
from ..generation.note_list import Note, NoteList, read_notes
from ..vocabulary import PAD_ID, TOKENS_PER_EVENT

logger = logging.getLogger(__name__)

MIDI_SUFFIXES = (".mid", ".midi", ".kar", ".smf")
WINDOW_EVENTS = 513
STRIDE_EVENTS = 512

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)  # natural minor

#: The statistics computed by ``midi_statistics``, in display order.
STATISTICS = ("pitch_class_entropy", "scale_consistency", "groove_consistency", "polyphony", "note_density",
              "empty_beat_rate", "pitch_range")
STATISTIC_LABELS = {
    "pitch_class_entropy": "pitch-class entropy (bits)",
    "scale_consistency": "scale consistency",
    "groove_consistency": "groove consistency",
    "polyphony": "polyphony (pitches)",
    "note_density": "note density (notes/beat)",
    "empty_beat_rate": "empty-beat rate",
    "pitch_range": "pitch range (semitones)",
}


# ============================================================================================ files
def list_midi_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """MIDI files named by ``paths``: files as given, folders searched recursively (sorted), no duplicates.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: nothing was found.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise ValueError(f"no MIDI files ({', '.join(MIDI_SUFFIXES)}) found in {[str(p) for p in paths]}")
    return unique


# ============================================================================================ NLL
@dataclass
class NllResult:
    """Held-out likelihood figures (see the module docstring).

    Attributes:
        per_token_nll: mean ``-log p`` (nats) over the non-pad tokens of the predicted events.
        per_event_nll: total NLL over the number of predicted events.
        token_accuracy: share of those tokens equal to the argmax of the model's distribution.
        n_tokens, n_events, n_windows, n_files: what was scored.
        total_nll: sum of ``-log p`` (nats).
        window_events, stride_events: the windowing.
        skipped: ``{path: reason}`` for files that could not be tokenized or had fewer than 2 events.
    """

    per_token_nll: float
    per_event_nll: float
    token_accuracy: float
    n_tokens: int
    n_events: int
    n_windows: int
    n_files: int
    total_nll: float
    window_events: int = WINDOW_EVENTS
    stride_events: int = STRIDE_EVENTS
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sliding_windows(rows: np.ndarray, window_events: int = WINDOW_EVENTS,
                    stride_events: int = STRIDE_EVENTS) -> list[np.ndarray]:
    """Windows ``rows[s : s + window_events]`` for ``s = 0, stride, 2 * stride, ...`` while a window still has an
    event to predict (at least 2 events). With ``stride = window - 1`` each event but the first is predicted once.

    Args:
        rows: ``(n_events, 8)`` ids of one song.

    Returns:
        list of ``(<= window_events, 8)`` arrays (views of ``rows``).
    """
    if window_events < 2:
        raise ValueError(f"window_events must be >= 2 (one context event, one predicted), got {window_events}")
    if not 1 <= stride_events <= window_events - 1:
        raise ValueError(f"stride_events must be within 1..window_events - 1 = {window_events - 1} so that "
                         f"every event is predicted, got {stride_events}")
    return [rows[start:start + window_events] for start in range(0, max(len(rows) - 1, 0), stride_events)]


def window_token_scores(model: Any, windows: Sequence[np.ndarray | Any]) -> tuple[float, int, int]:
    """Score a batch of windows with one forward pass.

    Windows are right-padded with pad events to the longest (harmless: the model is causal and pad targets
    are ignored). In each window, the tokens of events 1.. are predicted (``logits`` at flat position ``p``
    predict the id at ``p + 1``); event 0 is context only.

    Args:
        model: a ``MidiEventTransformerForCausalLM`` (any model whose ``forward(input_ids)`` returns flat logits
            ``(batch, length, vocab)``).
        windows: ``(n_i, 8)`` id arrays, ``n_i >= 2``.

    Returns:
        ``(sum of -log p, number of scored tokens, number of correct argmax predictions)``.
    """
    import torch
    import torch.nn.functional as F

    k = TOKENS_PER_EVENT
    longest = max(len(window) for window in windows)
    batch = torch.full((len(windows), longest, k), PAD_ID, dtype=torch.long)  # (B, E, 8)
    for index, window in enumerate(windows):
        batch[index, :len(window)] = torch.as_tensor(np.asarray(window), dtype=torch.long)
    device = next(model.parameters()).device
    flat = batch.view(len(windows), -1).to(device)  # (B, E*8)
    with torch.inference_mode():
        logits = model(input_ids=flat, use_cache=False).logits  # (B, E*8, V)
        predictions = logits[:, k - 1:-1].float()  # (B, (E-1)*8, V): position p predicts p + 1
        targets = flat[:, k:]  # (B, (E-1)*8): tokens of events 1..
        nll = F.cross_entropy(predictions.transpose(1, 2), targets, ignore_index=PAD_ID, reduction="none")
        scored = targets != PAD_ID
        correct = (predictions.argmax(-1) == targets) & scored
    return float(nll[scored].double().sum()), int(scored.sum()), int(correct.sum())


def evaluate_nll(
    model: Any,
    files: str | os.PathLike | Iterable[str | os.PathLike | np.ndarray],
    tokenizer: Any = None,
    *,
    window_events: int = WINDOW_EVENTS,
    stride_events: int = STRIDE_EVENTS,
    batch_size: int = 4,
    progress: bool = True,
) -> NllResult:
    """Held-out per-token NLL, per-event NLL and token accuracy of ``model`` on MIDI files.

    Args:
        model: a ``MidiEventTransformerForCausalLM`` (put it on its device and dtype first; it is set to eval mode).
        files: a folder, a file, or an iterable of paths and/or already tokenized ``(n_events, 8)`` arrays.
        tokenizer: a ``MidiEventTransformerTokenizer`` (default: one with default settings).
        window_events, stride_events: the windowing (see ``sliding_windows``).
        batch_size: windows per forward pass.
        progress: show a tqdm bar over windows.

    Returns:
        [`NllResult`]. Files that cannot be tokenized are listed in ``skipped`` with the reason (and logged).

    Raises:
        ValueError: no window could be scored.
    """
    from tqdm.auto import tqdm

    if tokenizer is None:
        from ..tokenization_midi_event_transformer import MidiEventTransformerTokenizer

        tokenizer = MidiEventTransformerTokenizer()
    if isinstance(files, (str, os.PathLike)):
        files = list_midi_files(files)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    windows: list[np.ndarray] = []
    skipped: dict[str, str] = {}
    n_files = 0
    for index, item in enumerate(files):
        name = f"array {index}" if isinstance(item, np.ndarray) else str(item)
        try:
            rows = np.asarray(item) if isinstance(item, np.ndarray) else tokenizer.encode_midi(item)
        except InvalidMidiError as error:
            skipped[name] = str(error)
            logger.warning("skipping %s", error)
            continue
        if rows.ndim != 2 or rows.shape[1] != TOKENS_PER_EVENT or len(rows) < 2:
            skipped[name] = f"needs at least 2 events of {TOKENS_PER_EVENT} ids, got shape {rows.shape}"
            logger.warning("skipping %s: %s", name, skipped[name])
            continue
        n_files += 1
        windows += sliding_windows(rows, window_events, stride_events)
    if not windows:
        raise ValueError(f"nothing to score: no file gave a window of 2 or more events (skipped: {skipped})")

    was_training = model.training
    model.eval()
    windows.sort(key=len, reverse=True)  # similar lengths together: less padding
    total_nll, n_tokens, n_correct = 0.0, 0, 0
    try:
        with tqdm(total=len(windows), desc="NLL", unit="window", disable=not progress) as bar:
            for start in range(0, len(windows), batch_size):
                chunk = windows[start:start + batch_size]
                nll, tokens, correct = window_token_scores(model, chunk)
                total_nll, n_tokens, n_correct = total_nll + nll, n_tokens + tokens, n_correct + correct
                bar.update(len(chunk))
                bar.set_postfix(nll=f"{total_nll / max(n_tokens, 1):.4f}")
    finally:
        model.train(was_training)
    n_events = sum(len(window) - 1 for window in windows)
    return NllResult(
        per_token_nll=total_nll / n_tokens, per_event_nll=total_nll / n_events, token_accuracy=n_correct / n_tokens,
        n_tokens=n_tokens, n_events=n_events, n_windows=len(windows), n_files=n_files, total_nll=total_nll,
        window_events=window_events, stride_events=stride_events, skipped=skipped)


# ============================================================================================ statistics
def _grid_steps(notes: Sequence[Note], ticks_per_beat: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of each note in grid steps (end > start: every note lasts at least one step)."""
    starts = np.array([note.start for note in notes], dtype=np.int64) * grid
    ends = np.array([note.end for note in notes], dtype=np.int64) * grid
    starts = np.floor_divide(starts + ticks_per_beat // 2, ticks_per_beat)
    ends = np.maximum(np.floor_divide(ends + ticks_per_beat // 2, ticks_per_beat), starts + 1)
    return starts, ends


def pitch_class_entropy(pitches: Sequence[int]) -> float:
    """Entropy in bits of the pitch-class histogram (NaN without notes)."""
    if not len(pitches):
        return math.nan
    counts = np.bincount(np.asarray(pitches) % 12, minlength=12)
    shares = counts[counts > 0] / counts.sum()
    return float(-(shares * np.log2(shares)).sum()) + 0.0


def scale_consistency(pitches: Sequence[int]) -> float:
    """Largest share of notes within one of the 24 major / natural-minor scales (NaN without notes)."""
    if not len(pitches):
        return math.nan
    counts = np.bincount(np.asarray(pitches) % 12, minlength=12)
    best = 0
    for root in range(12):
        for scale in (MAJOR_SCALE, MINOR_SCALE):
            best = max(best, int(sum(counts[(root + step) % 12] for step in scale)))
    return best / int(counts.sum())


def midi_statistics(midi: mido.MidiFile | str | os.PathLike | NoteList, *, grid: int = 16,
                    include_drums: bool = False) -> dict[str, float]:
    """The objective statistics of one MIDI file (see the module docstring); NaN where undefined (no notes,
    fewer than two bars for groove consistency).

    Args:
        midi: a ``mido.MidiFile``, a path, or notes read with ``note_list.read_notes``.
        grid: steps per beat used by polyphony and groove consistency.
        include_drums: also count notes of the drum channel (10).

    Returns:
        ``{name: value}`` for the names in ``STATISTICS``, plus ``n_notes`` and ``length_beats``.
    """
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    notes_list = midi if isinstance(midi, NoteList) else read_notes(midi)
    notes = notes_list.notes if include_drums else notes_list.pitched()
    tpb = notes_list.ticks_per_beat
    pitches = [note.pitch for note in notes]
    stats = dict.fromkeys(STATISTICS, math.nan)
    stats.update(pitch_class_entropy=pitch_class_entropy(pitches), scale_consistency=scale_consistency(pitches),
                 n_notes=float(len(notes)), length_beats=0.0)
    if not notes:
        return stats
    length_beats = max(note.end for note in notes) / tpb
    stats["length_beats"] = length_beats
    stats["pitch_range"] = float(max(pitches) - min(pitches))
    stats["note_density"] = len(notes) / length_beats if length_beats > 0 else math.nan

    starts, ends = _grid_steps(notes, tpb, grid)
    total_steps = int(ends.max())
    sounding = np.zeros((total_steps, 128), dtype=bool)  # (steps, pitch)
    for start, end, pitch in zip(starts, ends, pitches, strict=True):
        sounding[start:end, pitch] = True
    voiced = sounding.any(axis=1)
    stats["polyphony"] = float(sounding.sum() / voiced.sum())

    n_beats = max(1, math.ceil(length_beats))
    busy = np.zeros(n_beats, dtype=bool)
    for note in notes:  # beat b is busy when a note sounds within [b, b + 1)
        first = note.start // tpb
        last = max(first, math.ceil(note.end / tpb) - 1)
        busy[first:min(last, n_beats - 1) + 1] = True
    stats["empty_beat_rate"] = float(1.0 - busy.mean())

    _, numerator, denominator = notes_list.time_signatures[0]
    bar_steps = max(1, round(numerator * 4 / denominator * grid))
    n_bars = math.ceil(total_steps / bar_steps)
    if n_bars >= 2:
        onsets = np.zeros((n_bars, bar_steps), dtype=bool)
        bars, positions = np.divmod(starts, bar_steps)
        onsets[bars, positions] = True
        distance = np.count_nonzero(onsets[1:] != onsets[:-1])
        stats["groove_consistency"] = float(1.0 - distance / (bar_steps * (n_bars - 1)))
    return stats


def _summary(values: Sequence[float]) -> dict[str, float | int | None]:
    finite = np.array([v for v in values if not math.isnan(v)], dtype=np.float64)
    if not len(finite):
        return {"mean": None, "std": None, "median": None, "n": 0}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "median": float(np.median(finite)),
            "n": int(len(finite))}


def folder_statistics(files: str | os.PathLike | Iterable[str | os.PathLike], *, grid: int = 16,
                      include_drums: bool = False, progress: bool = False) -> dict[str, Any]:
    """``midi_statistics`` of every file, summarised.

    Returns:
        ``{"n_files", "summary": {name: {"mean", "std", "median", "n"}}, "per_file": {path: {name: value}},
        "skipped": {path: reason}}`` (NaN values are left out of the summary; ``n`` counts the files used).
    """
    from tqdm.auto import tqdm

    paths = list_midi_files(files)
    per_file: dict[str, dict[str, float]] = {}
    skipped: dict[str, str] = {}
    for path in tqdm(paths, desc="statistics", unit="file", disable=not progress):
        try:
            per_file[str(path)] = midi_statistics(path, grid=grid, include_drums=include_drums)
        except (InvalidMidiError, ValueError) as error:
            skipped[str(path)] = str(error)
            logger.warning("skipping %s: %s", path, error)
    names = (*STATISTICS, "n_notes", "length_beats")
    summary = {name: _summary([values[name] for values in per_file.values()]) for name in names}
    return {"n_files": len(per_file), "summary": summary, "per_file": per_file, "skipped": skipped}


def compare_statistics(sets: dict[str, str | os.PathLike | Iterable[str | os.PathLike]], *, grid: int = 16,
                       include_drums: bool = False, progress: bool = False) -> dict[str, Any]:
    """Statistics of several sets of MIDI files side by side (e.g. ``{"generated": ..., "POP909": ...}``).

    Returns:
        ``{"statistics": STATISTICS, "grid": grid, "include_drums": ..., "sets": {name: folder_statistics(...)}}``.
    """
    if not sets:
        raise ValueError("compare_statistics needs at least one set of files")
    return {
        "statistics": list(STATISTICS), "grid": grid, "include_drums": include_drums,
        "sets": {name: folder_statistics(files, grid=grid, include_drums=include_drums, progress=progress)
                 for name, files in sets.items()},
    }


def draw_statistics_comparison(report: dict[str, Any], path_png: str | os.PathLike, *,
                               title: str | None = None) -> Path:
    """Draw ``compare_statistics``' report as one PNG: a panel per statistic with a box plot of the per-file
    values of each set (means marked with a dot).

    Raises:
        ImportError: matplotlib is not installed (the message says what to install).
    """
    from .pianoroll import import_pyplot, save_figure

    plt = import_pyplot()
    names = list(report["sets"])
    columns = 4
    rows = math.ceil(len(STATISTICS) / columns)
    figure, axes_grid = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.0 * rows), squeeze=False)
    try:
        colors = [plt.get_cmap("tab10")(i % 10) for i in range(len(names))]
        for axes, statistic in zip(axes_grid.flat, STATISTICS, strict=False):
            data = []
            for name in names:
                values = [v[statistic] for v in report["sets"][name]["per_file"].values()]
                data.append([v for v in values if not math.isnan(v)])
            positions = list(range(1, len(names) + 1))
            shown = [(p, d, c) for p, d, c in zip(positions, data, colors, strict=True) if d]
            if shown:
                parts = axes.boxplot([d for _, d, _ in shown], positions=[p for p, _, _ in shown], widths=0.6,
                                     patch_artist=True, showfliers=False)
                for box, (_, _, color) in zip(parts["boxes"], shown, strict=True):
                    box.set_facecolor((*color[:3], 0.45))
                axes.scatter([p for p, _, _ in shown], [float(np.mean(d)) for _, d, _ in shown], color="black",
                             s=12, zorder=3)
            axes.set_xticks(positions, names, fontsize="small")
            axes.set_xlim(0.4, len(names) + 0.6)
            axes.set_title(STATISTIC_LABELS[statistic], fontsize="medium")
            axes.grid(True, axis="y", alpha=0.3)
        for axes in list(axes_grid.flat)[len(STATISTICS):]:
            lines = [f"{name}: {report['sets'][name]['n_files']} files" for name in names]
            axes.axis("off")
            axes.text(0.0, 0.5, "\n".join(lines), transform=axes.transAxes, va="center", fontsize="small")
        if title:
            figure.suptitle(title)
        path_png = save_figure(figure, path_png)
    finally:
        plt.close(figure)
    return path_png


__all__ = [
    "STATISTICS",
    "NllResult",
    "compare_statistics",
    "draw_statistics_comparison",
    "evaluate_nll",
    "folder_statistics",
    "list_midi_files",
    "midi_statistics",
    "pitch_class_entropy",
    "scale_consistency",
    "sliding_windows",
    "window_token_scores",
]
