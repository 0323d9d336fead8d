"""Notes of a MIDI file as a flat list, read directly with mido (no tokenizer involved).

Used by the piano roll (``pianoroll.py``) and the objective statistics (``evaluation.py``).

Example::

    >>> notes = read_notes("song.mid")
    >>> notes.ticks_per_beat, len(notes.notes), notes.notes[0]
    (480, 1532, Note(start=0, end=240, pitch=60, velocity=80, channel=0, track=1, program=0))
    >>> notes.seconds(notes.end_tick)      # through the tempo map
    183.2
"""

from __future__ import annotations

import bisect
import os
from collections import defaultdict, deque
from dataclasses import dataclass, field

import mido

from ..errors import InvalidMidiError
from ..vocabulary import DRUM_CHANNEL, PARAMETER_SIZES

DEFAULT_TEMPO = 500_000  # microseconds per beat (120 bpm)


@dataclass(frozen=True)
class Note:
    """One note: ``start`` / ``end`` in ticks (``end > start`` unless the file had a zero-length note),
    ``channel`` 0-15 (9 is drums), ``track`` index in the file, ``program`` active on the channel at ``start``."""

    start: int
    end: int
    pitch: int
    velocity: int
    channel: int
    track: int
    program: int = 0

    @property
    def is_drum(self) -> bool:
        return self.channel == DRUM_CHANNEL


@dataclass
class NoteList:
    """All notes of a file (sorted by start, then pitch) with the timing needed to place them.

    Attributes:
        ticks_per_beat: the file's resolution.
        notes: the notes.
        tempo_changes: ``(tick, microseconds_per_beat)`` sorted by tick, starting at tick 0.
        time_signatures: ``(tick, numerator, denominator)`` sorted by tick, starting at tick 0 (4/4 if absent).
        end_tick: the end of the last event of any track (>= every note's end).
        track_names: name of each track (``""`` when it has none).
    """

    ticks_per_beat: int
    notes: list[Note]
    tempo_changes: list[tuple[int, int]] = field(default_factory=lambda: [(0, DEFAULT_TEMPO)])
    time_signatures: list[tuple[int, int, int]] = field(default_factory=lambda: [(0, 4, 4)])
    end_tick: int = 0
    track_names: list[str] = field(default_factory=list)

    def pitched(self) -> list[Note]:
        """The notes not on the drum channel."""
        return [note for note in self.notes if not note.is_drum]

    def seconds(self, tick: float) -> float:
        """Time of ``tick`` in seconds through the tempo map."""
        ticks = [t for t, _ in self.tempo_changes]
        index = max(0, bisect.bisect_right(ticks, tick) - 1)
        elapsed = 0.0
        for (t0, tempo), (t1, _) in zip(self.tempo_changes[:index], self.tempo_changes[1:index + 1], strict=True):
            elapsed += (t1 - t0) * tempo / 1e6 / self.ticks_per_beat
        t0, tempo = self.tempo_changes[index]
        return elapsed + (tick - t0) * tempo / 1e6 / self.ticks_per_beat

    def beats(self, tick: float) -> float:
        """Time of ``tick`` in beats (quarter notes)."""
        return tick / self.ticks_per_beat


def _load(midi: mido.MidiFile | str | os.PathLike) -> mido.MidiFile:
    if isinstance(midi, mido.MidiFile):
        return midi
    if not isinstance(midi, (str, os.PathLike)):
        raise TypeError(f"expected a mido.MidiFile or a path, got {type(midi).__name__}")
    try:
        return mido.MidiFile(midi, clip=True)
    except (OSError, EOFError, ValueError, KeyError, IndexError) as error:
        raise InvalidMidiError(str(midi), f"mido cannot read it ({type(error).__name__}: {error})") from error


def read_notes(midi: mido.MidiFile | str | os.PathLike) -> NoteList:
    """Read the notes, tempo map and time signatures of a MIDI file.

    A note starts at a ``note_on`` with velocity > 0 and ends at the next ``note_off`` (or ``note_on`` with
    velocity 0) of the same track, channel and pitch (first in, first out for overlapping ones). A note still
    sounding at the end of its track ends there. Programs come from ``program_change`` messages per track and
    channel. Tempo and time signature messages of every track form one map (as in type 0 and type 1 files).

    Args:
        midi: a ``mido.MidiFile`` or the path of a MIDI file.

    Returns:
        [`NoteList`].

    Raises:
        InvalidMidiError: the path is not a MIDI file mido can read.
        ValueError: the file's ticks per beat is not positive (SMPTE timing is not supported).
    """
    midi = _load(midi)
    if midi.ticks_per_beat <= 0:
        raise ValueError(f"ticks_per_beat must be positive (SMPTE timing is not supported), got {midi.ticks_per_beat}")
    notes: list[Note] = []
    tempos: dict[int, int] = {}
    signatures: dict[int, tuple[int, int]] = {}
    names: list[str] = []
    end_tick = 0
    for track_index, track in enumerate(midi.tracks):
        tick = 0
        name = ""
        programs = [0] * PARAMETER_SIZES["channel"]  # one per MIDI channel
        sounding: dict[tuple[int, int], deque[tuple[int, int, int]]] = defaultdict(deque)
        for message in track:
            tick += message.time
            kind = message.type
            if kind == "note_on" and message.velocity > 0:
                sounding[message.channel, message.note].append((tick, message.velocity, programs[message.channel]))
            elif kind in ("note_off", "note_on"):
                started = sounding.get((message.channel, message.note))
                if started:
                    start, velocity, program = started.popleft()
                    notes.append(Note(start, tick, message.note, velocity, message.channel, track_index, program))
            elif kind == "program_change":
                programs[message.channel] = message.program
            elif kind == "set_tempo":
                tempos[tick] = message.tempo
            elif kind == "time_signature":
                signatures[tick] = (message.numerator, message.denominator)
            elif kind == "track_name" and not name:
                name = message.name
        for (channel, pitch), started in sounding.items():
            for start, velocity, program in started:
                notes.append(Note(start, tick, pitch, velocity, channel, track_index, program))
        names.append(name)
        end_tick = max(end_tick, tick)
    notes.sort(key=lambda note: (note.start, note.pitch, note.channel, note.track, note.end))
    tempo_changes = sorted(tempos.items())
    if not tempo_changes or tempo_changes[0][0] > 0:
        tempo_changes.insert(0, (0, DEFAULT_TEMPO))
    time_signatures = sorted((t, num, den) for t, (num, den) in signatures.items())
    if not time_signatures or time_signatures[0][0] > 0:
        time_signatures.insert(0, (0, 4, 4))
    return NoteList(midi.ticks_per_beat, notes, tempo_changes, time_signatures, end_tick, names)


__all__ = ["DRUM_CHANNEL", "Note", "NoteList", "read_notes"]
