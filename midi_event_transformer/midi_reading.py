"""Read Standard MIDI File bytes into per-track lists of absolute-tick musical events.

This is a lean byte parser (no ``mido`` message objects) that produces exactly the events the
tokenizer needs, in the order the public reference's parser (``MIDI.py``'s ``midi2score``) yields
them, so that tokenization reproduces the reference ids:

* a note is one event ``["note", start_tick, duration_ticks, channel, pitch, velocity]`` appended
  when its note-off arrives (a ``note_on`` with velocity 0 is a note-off); a note-off closes the
  *oldest* open note of the same channel and pitch; notes still open when the track ends last until
  the track's final tick and are appended after the other events, grouped by (channel, pitch) in
  the order those pairs were first opened;
* ``patch_change``, ``control_change``, ``set_tempo``, ``time_signature`` (``nn``, ``dd`` as the raw
  exponent byte), ``key_signature`` (signed ``sf``, ``mi``) events are appended in file order;
* a track ends at its End-of-Track meta event (whose delta time still counts) or at its chunk end;
* running status survives meta and sysex events (as in ``MIDI.py``).

Damaged input raises :class:`~midi_event_transformer.errors.InvalidMidiError` naming the source and
the problem (empty file, not MIDI, bad header, SMPTE division, truncated chunk or event, running
status without a status byte, data byte above 127, undefined status byte). Chunks that are not
``MTrk`` are skipped, as the MIDI file specification asks (but a file with no ``MTrk`` chunk and
only other chunks, such as a misspelt ``mTrk``, is an error); the header's track count is not trusted
(the chunks actually present are read), so a header declaring 65535 tracks costs nothing.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import InvalidMidiError

#: A score event: ``[name, start_tick, *params]`` (notes: ``duration, channel, pitch, velocity``).
ScoreEvent = list
#: ``(ticks_per_beat, tracks)``: one list of score events per ``MTrk`` chunk, in file order.
Score = tuple[int, list[list[ScoreEvent]]]

#: File names read as MIDI files (lower case), by the tokenizer and by the folder finder.
MIDI_SUFFIXES: tuple[str, ...] = (".mid", ".midi", ".kar", ".smf")

# Data bytes after a channel status (high nibble 0x8..0xE).
_CHANNEL_DATA_BYTES = {0x8: 2, 0x9: 2, 0xA: 2, 0xB: 2, 0xC: 1, 0xD: 1, 0xE: 2}
# Data bytes after a system common / realtime status other than sysex and meta.
_SYSTEM_DATA_BYTES = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0, 0xF8: 0, 0xFA: 0, 0xFB: 0, 0xFC: 0, 0xFE: 0}


def describe_source(source: Any) -> str:
    """A short human description of a MIDI source for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    name = getattr(source, "name", None) or getattr(source, "filename", None)
    if isinstance(name, str):
        return name
    return f"<{type(source).__name__}>"


def read_source_bytes(source: Any) -> tuple[bytes, str]:
    """The raw bytes of ``source`` (path, bytes, binary file object or ``mido.MidiFile``) and its description.

    Raises:
        TypeError: ``source`` is none of the supported kinds.
        InvalidMidiError: the file cannot be read, or a ``mido.MidiFile`` cannot be serialised.
    """
    described = describe_source(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as handle:
                return handle.read(), described
        except OSError as err:
            raise InvalidMidiError(described, f"cannot read file ({err.strerror or err})") from err
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), described
    if hasattr(source, "tracks") and hasattr(source, "ticks_per_beat"):  # a mido.MidiFile
        buffer = io.BytesIO()
        try:
            source.save(file=buffer)
        except (ValueError, TypeError, OSError, KeyError) as err:
            raise InvalidMidiError(described, f"mido.MidiFile cannot be serialised ({err})") from err
        return buffer.getvalue(), described
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"file object {described} must be opened in binary mode")
        return bytes(data), described
    raise TypeError(
        f"MIDI source must be a path, bytes, a binary file object or a mido.MidiFile, not {type(source).__name__}"
    )


def parse_midi_bytes(data: bytes, source: str = "<bytes>") -> Score:
    """Parse Standard MIDI File bytes into ``(ticks_per_beat, tracks)`` of score events.

    Raises:
        InvalidMidiError: the bytes are not a readable MIDI file (see the module docstring).
    """
    if len(data) == 0:
        raise InvalidMidiError(source, "empty file")
    if data[:4] != b"MThd":
        raise InvalidMidiError(source, f"not a MIDI file (starts with {bytes(data[:4])!r}, expected b'MThd')")
    if len(data) < 14:
        raise InvalidMidiError(source, f"bad header: file ends after {len(data)} bytes, inside the header")
    header_length = int.from_bytes(data[4:8], "big")
    if header_length != 6:
        raise InvalidMidiError(source, f"bad header: header chunk length is {header_length}, expected 6")
    division = int.from_bytes(data[12:14], "big")
    if division & 0x8000:
        raise InvalidMidiError(source, "SMPTE time division is not supported (the tokenizer counts beats)")
    if division == 0:
        raise InvalidMidiError(source, "bad header: ticks per beat is 0")

    tracks = []
    alien_chunks: list[bytes] = []
    position, end = 14, len(data)
    while end - position >= 8:
        chunk_type = data[position:position + 4]
        chunk_length = int.from_bytes(data[position + 4:position + 8], "big")
        position += 8
        if chunk_length > end - position:
            raise InvalidMidiError(
                source, f"truncated chunk: {chunk_type!r} #{len(tracks) + 1} declares {chunk_length} bytes "
                        f"but only {end - position} remain")
        if chunk_type == b"MTrk":
            tracks.append(_parse_track(data, position, position + chunk_length, source, len(tracks)))
        else:
            alien_chunks.append(bytes(chunk_type))
        position += chunk_length
    if alien_chunks and not tracks:
        raise InvalidMidiError(source, f"bad track header: no MTrk chunk, only {alien_chunks[:3]!r}")
    return division, tracks


def _parse_track(data: bytes, position: int, end: int, source: str, track_index: int) -> list[ScoreEvent]:
    """Decode one ``MTrk`` chunk (``data[position:end]``) into score events (see module docstring)."""
    events: list[ScoreEvent] = []
    open_notes: dict[int, list[list]] = {}  # channel * 128 + pitch -> open note events, oldest first
    tick = 0
    status = -1  # running status

    def fail(problem: str) -> InvalidMidiError:
        return InvalidMidiError(source, f"track {track_index}: {problem}")

    while position < end:
        # delta time (variable-length quantity)
        byte = data[position]
        position += 1
        delta = byte & 0x7F
        while byte & 0x80:
            if position >= end:
                raise fail("truncated event (delta time runs past the end of the track)")
            byte = data[position]
            position += 1
            delta = (delta << 7) | (byte & 0x7F)
        tick += delta
        if position >= end:
            raise fail("truncated event (track ends after a delta time)")
        first = data[position]
        if first < 0xF0:  # channel message, possibly in running status
            if first & 0x80:
                status = first
                position += 1
            elif status < 0:
                raise fail(f"running status without a previous status byte (byte 0x{first:02X})")
            kind = status >> 4
            channel = status & 0x0F
            if kind in (0xC, 0xD):
                if position >= end:
                    raise fail("truncated channel message")
                a = data[position]
                position += 1
                if a > 127:
                    raise fail(f"data byte 0x{a:02X} above 127 in a channel message")
                if kind == 0xC:
                    events.append(["patch_change", tick, channel, a])
                continue
            if position + 2 > end:
                raise fail("truncated channel message")
            a = data[position]
            b = data[position + 1]
            position += 2
            if a > 127 or b > 127:
                raise fail(f"data byte above 127 in a channel message (0x{a:02X} 0x{b:02X})")
            if kind == 0x9 and b:
                key = (channel << 7) | a
                note = ["note", tick, 0, channel, a, b]
                queue = open_notes.get(key)
                if queue:
                    queue.append(note)
                else:
                    open_notes[key] = [note]
            elif kind == 0x8 or kind == 0x9:
                queue = open_notes.get((channel << 7) | a)
                if queue:
                    note = queue.pop(0)
                    note[2] = tick - note[1]
                    events.append(note)
            elif kind == 0xB:
                events.append(["control_change", tick, channel, a, b])
            continue

        position += 1
        if first == 0xFF:  # meta event
            if position >= end:
                raise fail("truncated meta event")
            meta_type = data[position]
            position += 1
            length, position = _read_length(data, position, end, fail)
            if position + length > end:
                raise fail(f"truncated meta event 0x{meta_type:02X} ({length} bytes declared)")
            body = data[position:position + length]
            position += length
            if meta_type == 0x2F:  # end of track: its delta time counts, nothing after it does
                break
            if meta_type == 0x51:
                if length < 3:
                    raise fail(f"set_tempo meta event has {length} data bytes, expected 3")
                events.append(["set_tempo", tick, (body[0] << 16) | (body[1] << 8) | body[2]])
            elif meta_type == 0x58:
                if length < 4:
                    raise fail(f"time_signature meta event has {length} data bytes, expected 4")
                events.append(["time_signature", tick, body[0], body[1], body[2], body[3]])
            elif meta_type == 0x59:
                if length < 2:
                    raise fail(f"key_signature meta event has {length} data bytes, expected 2")
                sf = body[0] - 256 if body[0] > 127 else body[0]
                events.append(["key_signature", tick, sf, body[1]])
        elif first == 0xF0 or first == 0xF7:  # sysex: skip its body
            length, position = _read_length(data, position, end, fail)
            if position + length > end:
                raise fail(f"truncated sysex event ({length} bytes declared)")
            position += length
        elif first in _SYSTEM_DATA_BYTES:
            size = _SYSTEM_DATA_BYTES[first]
            if position + size > end:
                raise fail(f"truncated system message 0x{first:02X}")
            position += size
        else:
            raise fail(f"undefined status byte 0x{first:02X}")

    # notes never switched off last until the end of the track
    for queue in open_notes.values():
        for note in queue:
            note[2] = tick - note[1]
            events.append(note)
    return events


def _read_length(data: bytes, position: int, end: int, fail) -> tuple[int, int]:
    """A variable-length quantity at ``position``: ``(value, next_position)``."""
    value = 0
    while True:
        if position >= end:
            raise fail("truncated variable-length quantity")
        byte = data[position]
        position += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, position


def read_midi(source: Any) -> Score:
    """Read ``source`` (path, bytes, binary file object or ``mido.MidiFile``) into ``(ticks_per_beat, tracks)``.

    Raises:
        TypeError: unsupported source type.
        InvalidMidiError: the source is not a readable MIDI file.
    """
    data, described = read_source_bytes(source)
    return parse_midi_bytes(data, described)


def find_midi_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The MIDI files named by ``paths``: files as given, folders searched recursively for ``MIDI_SUFFIXES``
    (sorted), each file once, in order. What training, evaluation and the scripts read.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: nothing was found.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such MIDI file or folder: {path}")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise ValueError(f"no MIDI files ({', '.join(MIDI_SUFFIXES)}) found in {[str(p) for p in paths]}")
    return unique


__all__ = [
    "MIDI_SUFFIXES",
    "Score",
    "ScoreEvent",
    "describe_source",
    "find_midi_files",
    "parse_midi_bytes",
    "read_midi",
    "read_source_bytes",
]
