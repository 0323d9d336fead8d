"""Piano-roll pictures of MIDI files (matplotlib, Agg backend; an optional extra).

Example::

    >>> from midi_event_transformer.evaluation.pianoroll import draw_piano_roll
    >>> draw_piano_roll("song.mid", "song.png", time_unit="seconds")
    PosixPath('song.png')

Notes are drawn as horizontal bars (pitch on the vertical axis, time on the horizontal one), coloured by
channel or by track, with opacity following velocity. Notes are read with mido (``note_list.read_notes``),
so any readable MIDI file works, including files without notes (an empty roll saying so).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import mido

from ..generation.note_list import NoteList, read_notes
from ..vocabulary import DRUM_CHANNEL, STEPS_PER_BEAT

_PITCH_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
TIME_UNITS = ("beats", "seconds")
COLOR_BY = ("channel", "track")


def import_pyplot():
    """``matplotlib.pyplot`` on the Agg backend, or an ImportError saying how to install matplotlib."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "drawing piano rolls needs matplotlib: pip install 'midi-event-transformer[plot]' "
            "(or pip install matplotlib)") from error
    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path_png: str | os.PathLike) -> Path:
    """Lay out ``figure`` and write it as a PNG at ``path_png`` (parent folders created)."""
    figure.tight_layout()
    path_png = Path(path_png)
    path_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path_png, format="png")
    return path_png


def pitch_name(pitch: int) -> str:
    """Scientific pitch name of a MIDI pitch: 60 -> ``"C4"``."""
    return f"{_PITCH_NAMES[pitch % 12]}{pitch // 12 - 1}"


def draw_piano_roll(
    midi: mido.MidiFile | str | os.PathLike | NoteList,
    path_png: str | os.PathLike,
    *,
    time_unit: str = "beats",
    color_by: str = "channel",
    title: str | None = None,
    max_time: float | None = None,
    min_time: float = 0.0,
    highlight: tuple[float, float] | None = None,
    figsize: tuple[float, float] = (12.0, 6.0),
    dpi: int = 100,
) -> Path:
    """Draw the notes of a MIDI file as a piano roll and save it as a PNG.

    Args:
        midi: a ``mido.MidiFile``, the path of a MIDI file, or notes already read with ``read_notes``.
        path_png: where to write the picture (parent folders are created).
        time_unit: ``"beats"`` (quarter notes, from the file's ticks per beat) or ``"seconds"`` (through the
            tempo map).
        color_by: ``"channel"`` (drums, channel 10, drawn as short dark-grey marks) or ``"track"``.
        title: text above the roll; defaults to the file name when ``midi`` is a path.
        max_time: draw only the first ``max_time`` beats or seconds.
        min_time: start the roll at this time (the notes that end by then are left out).
        highlight: shade this ``(start, end)`` span (in ``time_unit``), e.g. the bars an infill rewrote.
        figsize, dpi: size of the picture (inches, dots per inch).

    Returns:
        `Path` of the written PNG.

    Raises:
        ImportError: matplotlib is not installed (the message says what to install).
        ValueError: unknown ``time_unit`` / ``color_by``, or a non-positive ``max_time``.
        InvalidMidiError: ``midi`` is a path mido cannot read.
    """
    return draw_piano_rolls([midi], path_png, titles=[title], time_unit=time_unit, color_by=color_by,
                            max_time=max_time, min_time=min_time, highlight=highlight, width=figsize[0],
                            row_height=figsize[1], dpi=dpi)


def draw_piano_rolls(
    midis: Sequence[mido.MidiFile | str | os.PathLike | NoteList],
    path_png: str | os.PathLike,
    *,
    titles: Sequence[str | None] | None = None,
    time_unit: str = "beats",
    color_by: str = "channel",
    max_time: float | None = None,
    min_time: float = 0.0,
    highlight: tuple[float, float] | None = None,
    width: float = 12.0,
    row_height: float = 4.0,
    dpi: int = 100,
) -> Path:
    """Draw several MIDI files as piano rolls stacked in one PNG (e.g. a sample above a training song).

    Args:
        midis: the files (``mido.MidiFile``, paths or ``NoteList``), drawn top to bottom.
        path_png: where to write the picture.
        titles: one title per roll (None: the file name when a path is given).
        time_unit, color_by, max_time, min_time, highlight: as in :func:`draw_piano_roll` (the same on every roll).
        width, row_height, dpi: size of the picture (inches per row, dots per inch).

    Returns:
        `Path` of the written PNG.

    Raises:
        ValueError: no files, a number of titles different from the number of files, or an option
            :func:`draw_piano_roll` rejects. ImportError / InvalidMidiError: as :func:`draw_piano_roll`.
    """
    midis = list(midis)
    if not midis:
        raise ValueError("draw_piano_rolls needs at least one MIDI file")
    titles = [None] * len(midis) if titles is None else list(titles)
    if len(titles) != len(midis):
        raise ValueError(f"got {len(titles)} titles for {len(midis)} MIDI files")
    _check_options(time_unit, color_by, max_time, min_time)
    plt = import_pyplot()
    figure, axes_list = plt.subplots(len(midis), 1, figsize=(width, row_height * len(midis)), dpi=dpi,
                                     squeeze=False)
    try:
        for axes, midi, title in zip(axes_list[:, 0], midis, titles, strict=True):
            _draw_on(axes, midi, time_unit=time_unit, color_by=color_by, title=title, max_time=max_time,
                     min_time=min_time, highlight=highlight)
        path_png = save_figure(figure, path_png)
    finally:
        plt.close(figure)
    return path_png


def draw_infill_piano_rolls(prompt: mido.MidiFile | str | os.PathLike, result: mido.MidiFile | str | os.PathLike,
                            span: tuple[int, int], path_png: str | os.PathLike | None = None, *,
                            context: float = 2.0) -> Path:
    """The prompt of an infill above its result, around the rewritten span (shaded).

    Args:
        prompt, result: the files (``mido.MidiFile`` or paths).
        span: the rewritten ``(start_step, end_step)`` (16 steps a beat, as ``GeneratedPiece.span``).
        path_png: where to write the picture (default: ``result`` with ``.png`` when it is a path).
        context: how much is drawn on each side of the span, in span lengths.

    Returns:
        `Path` of the written PNG.
    """
    start, end = (step / STEPS_PER_BEAT for step in span)
    if path_png is None:
        if not isinstance(result, (str, os.PathLike)):
            raise ValueError("path_png is needed when result is not a path")
        path_png = Path(result).with_suffix(".png")
    around = (end - start) * context
    titles = ["prompt", f"rewritten: beats {start:g}-{end:g} (shaded)"]
    return draw_piano_rolls([prompt, result], path_png, titles=titles, min_time=max(0.0, start - around),
                            max_time=end + around, highlight=(start, end), row_height=3.5)


def _check_options(time_unit: str, color_by: str, max_time: float | None, min_time: float = 0.0) -> None:
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit must be one of {TIME_UNITS}, got {time_unit!r}")
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {COLOR_BY}, got {color_by!r}")
    if max_time is not None and not max_time > 0:
        raise ValueError(f"max_time must be positive, got {max_time}")
    if not 0 <= min_time < (math.inf if max_time is None else max_time):
        raise ValueError(f"min_time must be >= 0 and before max_time, got {min_time}")


def _draw_on(axes, midi: mido.MidiFile | str | os.PathLike | NoteList, *, time_unit: str, color_by: str,
             title: str | None, max_time: float | None, min_time: float = 0.0,
             highlight: tuple[float, float] | None = None) -> None:
    """One piano roll on ``axes`` (from ``min_time`` to ``max_time``, ``highlight`` shaded)."""
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch
    from matplotlib.pyplot import get_cmap

    if title is None and isinstance(midi, (str, os.PathLike)):
        title = Path(midi).name
    notes = midi if isinstance(midi, NoteList) else read_notes(midi)
    to_time = notes.beats if time_unit == "beats" else notes.seconds

    groups: dict[int, list[list[tuple[float, float]]]] = {}
    alphas: dict[int, list[float]] = {}
    low, high, end = 127, 0, 0.0
    for note in notes.notes:
        start, stop = to_time(note.start), to_time(max(note.end, note.start + 1))
        if (max_time is not None and start >= max_time) or stop <= min_time:
            continue
        stop = stop if max_time is None else min(stop, max_time)
        key = note.channel if color_by == "channel" else note.track
        y0, y1 = note.pitch - 0.4, note.pitch + 0.4
        groups.setdefault(key, []).append([(start, y0), (stop, y0), (stop, y1), (start, y1)])
        alphas.setdefault(key, []).append(0.35 + 0.65 * note.velocity / 127)
        low, high, end = min(low, note.pitch), max(high, note.pitch), max(end, stop)

    colormap = get_cmap("tab10")
    handles = []
    for index, key in enumerate(sorted(groups)):
        drum = color_by == "channel" and key == DRUM_CHANNEL
        color = (0.25, 0.25, 0.25) if drum else colormap(index % 10)[:3]
        facecolors = [(*color, alpha) for alpha in alphas[key]]
        axes.add_collection(PolyCollection(groups[key], facecolors=facecolors, edgecolors="none"))
        if color_by == "channel":
            label = f"channel {key + 1}" + (" (drums)" if drum else "")
        else:
            name = notes.track_names[key] if key < len(notes.track_names) else ""
            label = f"track {key}" + (f": {name}" if name else "")
        handles.append(Patch(facecolor=color, label=label))
    if groups:
        axes.set_xlim(min_time, max(end, min_time + 1e-9) * 1.01 if max_time is None else max_time)
        axes.set_ylim(low - 1.5, high + 1.5)
        axes.legend(handles=handles, loc="upper right", fontsize="small", framealpha=0.8)
    else:
        axes.set_xlim(min_time, max_time or min_time + 1)
        axes.set_ylim(47.5, 84.5)
        axes.text(0.5, 0.5, "no notes", transform=axes.transAxes, ha="center", va="center", color="grey")
    if highlight is not None:
        axes.axvspan(*highlight, color="gold", alpha=0.2, zorder=0)
    bottom, top = axes.get_ylim()
    ticks = [p for p in range(0, 128, 12) if bottom <= p <= top] or [round((bottom + top) / 2)]
    axes.set_yticks(ticks, [pitch_name(p) for p in ticks])
    axes.set_xlabel("time (beats)" if time_unit == "beats" else "time (s)")
    axes.set_ylabel("pitch")
    axes.grid(True, axis="both", alpha=0.25, linewidth=0.5)
    if title:
        axes.set_title(title)


__all__ = ["draw_infill_piano_rolls", "draw_piano_roll", "draw_piano_rolls", "pitch_name", "save_figure"]
