"""Turn event rows (ids of shape (n_events, 8)) back into a ``mido.MidiFile``.

Decoding never raises on ids: rows whose event type or parameters are out of range are skipped and
counted (BOS, EOS and all-pad rows are framing, not errors). Like the reference's ``detokenize``,
times are 480 ticks per beat (30 ticks per 1/16-beat step, so times round-trip exactly), a note that
would overlap the next note of the same channel and pitch on its track is cut at that note's start
(and dropped if nothing remains), and time signatures get ``clocks_per_click=24,
notated_32nd_notes_per_beat=8``.

To make ``encode(decode(ids)) == ids`` as often as possible, messages at the same tick are written
note-offs first, then in the tokenizer's type order (signatures, tempo, patch, control, note-on);
equal keys keep row order, and note-offs at one tick follow the row order of their notes, so the
reader pairs and orders the notes as the rows did. Tempos are the largest microseconds-per-beat
value that reads back as the same bpm (clamped to the MIDI maximum 0xFFFFFF); velocity 0 (which MIDI
would read as a note-off) is written as 1.
"""

from __future__ import annotations

import numpy as np

from .midi_events import EVENT_ORDER, bpm_to_tempo
from .vocabulary import (
    BOS_ID,
    EOS_ID,
    EVENT_PARAMETERS,
    ID_TO_EVENT_TYPE,
    PAD_ID,
    PARAMETER_OFFSETS,
    PARAMETER_SIZES,
    STEPS_PER_BEAT,
    TOKENS_PER_EVENT,
)

TICKS_PER_BEAT = 480
_TICKS_PER_STEP = TICKS_PER_BEAT // STEPS_PER_BEAT
_MAX_TEMPO = 0xFFFFFF

#: (sf, mi) -> mido's key name.
KEY_NAMES: dict[tuple[int, int], str] = {
    **{(sf, 0): name for sf, name in zip(range(-7, 8), "Cb Gb Db Ab Eb Bb F C G D A E B F# C#".split(), strict=True)},
    **{(sf, 1): name for sf, name in zip(range(-7, 8), "Abm Ebm Bbm Fm Cm Gm Dm Am Em Bm F#m C#m G#m D#m A#m".split(), strict=True)},
}


def row_to_event(row) -> list | None:
    """``[name, *values]`` of a row of ids (values in vocabulary order), or None if the row is not a valid event."""
    name = ID_TO_EVENT_TYPE.get(int(row[0]))
    if name is None:
        return None
    values = []
    for i, parameter in enumerate(EVENT_PARAMETERS[name]):
        value = int(row[1 + i]) - PARAMETER_OFFSETS[parameter]
        if not 0 <= value < PARAMETER_SIZES[parameter]:
            return None
        values.append(value)
    return [name, *values]


def row_to_named_event(row) -> tuple[str, dict[str, int]] | None:
    """``(name, {parameter: value})`` of a row of ids (:func:`row_to_event` with the values named, in vocabulary
    order), or None if the row is not a valid event."""
    event = row_to_event(row)
    if event is None:
        return None
    return event[0], dict(zip(EVENT_PARAMETERS[event[0]], event[1:], strict=True))


def as_rows(ids) -> np.ndarray:
    """Any id sequence (flat or (n, 8); list, ndarray or tensor) as an int64 array (n, 8).

    A flat length that is not a multiple of 8 is padded with PAD; values that do not fit int64 become -1.
    """
    if hasattr(ids, "detach"):  # torch tensor
        ids = ids.detach().cpu().numpy()
    try:
        array = np.asarray(ids, dtype=np.int64)
    except (OverflowError, ValueError, TypeError):
        flat = []
        for value in np.asarray(ids, dtype=object).reshape(-1):
            try:
                number = int(value)
            except (TypeError, ValueError, OverflowError):
                number = -1
            flat.append(number if -(2 ** 63) <= number < 2 ** 63 else -1)
        array = np.asarray(flat, dtype=np.int64)
    if array.ndim == 2 and array.shape[1] == TOKENS_PER_EVENT:
        return array
    flat = array.reshape(-1)
    remainder = (-len(flat)) % TOKENS_PER_EVENT
    if remainder:
        flat = np.concatenate([flat, np.full(remainder, PAD_ID, dtype=np.int64)])
    return flat.reshape(-1, TOKENS_PER_EVENT)


def tempo_for_bpm(bpm: int) -> int:
    """Microseconds per beat written for ``bpm``: a value that the tokenizer reads back as ``bpm``."""
    return min(bpm_to_tempo(bpm), _MAX_TEMPO)


def rows_to_tracks(rows: np.ndarray) -> tuple[dict[int, list[list]], int]:
    """Decode rows into ``{track: [[name, tick, row_index, *params]]}`` and the number of invalid rows."""
    tracks: dict[int, list[list]] = {}
    invalid = 0
    time1 = 0
    for index, row in enumerate(rows.tolist()):
        event = row_to_event(row)
        if event is None:
            if not (row[0] in (BOS_ID, EOS_ID, PAD_ID) and all(v == PAD_ID for v in row[1:])):
                invalid += 1
            continue
        name = event[0]
        time1 += event[1]
        tick = (time1 * STEPS_PER_BEAT + event[2]) * _TICKS_PER_STEP
        tracks.setdefault(event[3], []).append([name, tick, index, *event[4:]])
    for events in tracks.values():
        _trim_overlapping_notes(events)
    return tracks, invalid


def _trim_overlapping_notes(events: list[list]) -> None:
    """Cut each note at the next note of the same channel and pitch (in time order); drop empty notes.

    Each kept note's duration becomes ticks, and it gets two more fields: the latest tick its note-off
    may move to without changing how the tokenizer reads it back (``None`` unless the note was cut to
    end exactly where the next one starts: the tokenizer cuts it there again), and the start of the
    next note of the same channel and pitch (``None`` if none).
    """
    events.sort(key=lambda e: e[1])
    following: dict[tuple[int, int], tuple[int, int]] = {}  # (channel, pitch) -> (start, end) of next note
    empty = []
    for event in reversed(events):
        if event[0] != "note":
            continue
        tick, channel, pitch, duration = event[1], event[3], event[4], event[6] * _TICKS_PER_STEP
        key = (channel, pitch)
        latest_end = next_start = None
        if key in following:
            next_start, next_end = following[key]
            if duration >= next_start - tick:
                duration = max(next_start - tick, 0)
                latest_end = next_end
        event[6] = duration  # now in ticks
        event += [latest_end, next_start]
        if duration == 0:
            empty.append(id(event))
        else:
            following[key] = (tick, tick + duration)
    if empty:
        dropped = set(empty)
        events[:] = [e for e in events if id(e) not in dropped]


def _note_timing(events: list[list]) -> dict[int, tuple[int, int]]:
    """``{row_index: (on_tick, off_tick)}`` for the notes of one track.

    The tokenizer lists notes that start on the same step in the order of their note-offs, and pairs
    note-offs with the oldest open note of the same pitch. So that decoding re-encodes to the same
    rows, note-offs must be ordered: (a) notes starting together end in row order, (b) notes of the
    same channel and pitch end in start order. Each note may move within its step: its on by up to
    14 ticks either way and its length by up to 14 ticks still round to the same steps (a note the
    tokenizer will cut back, i.e. one that ends where the next note of its pitch starts, may end any
    time later). Off ticks are then solved as precedence constraints over intervals, as close to the
    exact times as possible; if no solution exists the exact times are used.
    """
    slack = _TICKS_PER_STEP // 2 - 1  # 14 ticks still round to the same step
    notes = sorted((e for e in events if e[0] == "note"), key=lambda e: (e[1], e[2]))
    exact = {e[2]: (e[1], e[1] + e[6]) for e in notes}
    if not notes:
        return exact
    low, high, natural = [], [], []
    for e in notes:
        start, duration, cut_back = e[1], e[6], e[7] is not None
        low.append(max(0, start - slack) + duration - slack)
        high.append(float("inf") if cut_back else start + slack + duration + slack)
        natural.append(start + duration)
    successors: list[list[int]] = [[] for _ in notes]
    predecessors: list[list[int]] = [[] for _ in notes]

    def precede(a: int, b: int) -> None:
        successors[a].append(b)
        predecessors[b].append(a)

    last_of_start: dict[int, int] = {}
    last_of_pitch: dict[tuple[int, int], int] = {}
    for i, e in enumerate(notes):  # sorted by (start, row): a topological order of both relations
        if e[1] in last_of_start:
            precede(last_of_start[e[1]], i)
        last_of_start[e[1]] = i
        pitch_key = (e[3], e[4])
        if pitch_key in last_of_pitch:
            precede(last_of_pitch[pitch_key], i)
        last_of_pitch[pitch_key] = i
    if all(natural[p] <= natural[i] for i in range(len(notes)) for p in predecessors[i]):
        return exact
    earliest = []
    for i in range(len(notes)):
        earliest.append(max([low[i]] + [earliest[p] for p in predecessors[i]]))
        if earliest[i] > high[i]:
            return exact  # unsatisfiable: keep the exact times
    latest = [0.0] * len(notes)
    for i in reversed(range(len(notes))):
        latest[i] = min([high[i]] + [latest[s] for s in successors[i]])
    timing = {}
    off = [0] * len(notes)
    for i, e in enumerate(notes):
        floor = max([natural[i]] + [off[p] for p in predecessors[i]])
        off[i] = int(min(floor, latest[i]))
        start, duration = e[1], e[6]
        on = start
        if off[i] - on > duration + slack and e[7] is None:
            on = off[i] - duration - slack
        elif off[i] - on < duration - slack:
            on = max(0, off[i] - duration + slack)
        timing[e[2]] = (on, off[i])
    return timing


_META_KINDS = frozenset({"set_tempo", "time_signature", "key_signature"})


def _make_message(kind: str, fields: dict, time: int):
    """A mido message (created once, with its delta time: mido validates on every construction)."""
    import mido

    if kind in _META_KINDS:
        return mido.MetaMessage(kind, time=time, **fields)
    return mido.Message(kind, time=time, **fields)


def _event_messages(event: list, timing: dict[int, tuple[int, int]]) -> list[tuple[int, int, str, dict]]:
    """``(tick, rank, kind, fields)`` of the messages of one decoded event (a note gives its on and off)."""
    name, tick = event[0], event[1]
    rank = 1 + EVENT_ORDER[name]
    if name == "note":
        channel, pitch, velocity = event[3:6]
        on, off = timing[event[2]]
        return [(on, rank, "note_on", {"channel": channel, "note": pitch, "velocity": max(1, velocity)}),
                (off, 0, "note_off", {"channel": channel, "note": pitch, "velocity": 0})]
    if name == "patch_change":
        return [(tick, rank, "program_change", {"channel": event[3], "program": event[4]})]
    if name == "control_change":
        return [(tick, rank, "control_change", {"channel": event[3], "control": event[4], "value": event[5]})]
    if name == "set_tempo":
        return [(tick, rank, "set_tempo", {"tempo": tempo_for_bpm(event[3])})]
    if name == "time_signature":
        return [(tick, rank, "time_signature", {
            "numerator": event[3] + 1, "denominator": 2 ** (event[4] + 1),
            "clocks_per_click": 24, "notated_32nd_notes_per_beat": 8})]
    sf, mi = event[3] - 7, event[4]
    return [(tick, rank, "key_signature", {"key": KEY_NAMES[(sf, mi)]})]


class _RepeatGuard:
    """Mirrors the tokenizer's per-track de-duplication so that decoding can keep repeated values.

    The tokenizer drops a patch equal to the channel's previous one, a control value within
    ``cc_eps`` of the previous kept one, a bpm within ``tempo_eps`` of the previous one. When a row
    repeats a value like that, a *primer* message with a distant value is written just before it at
    the same step: the tokenizer keeps the primer, then the real message replaces it in place (same
    time, track and channel), so the row comes back at the same position.
    """

    def __init__(self, cc_eps: int, tempo_eps: int) -> None:
        self.cc_eps, self.tempo_eps = cc_eps, tempo_eps
        self.last: dict[tuple, int | None] = {}
        self.seen_keys: set[tuple] = set()

    def primer(self, tick: int, kind: str, fields: dict) -> dict | None:
        """Fields of the primer to write before this message (same kind), or None; updates the mirrored state."""
        if kind == "control_change":
            state, value_field, eps, candidates = ("cc", fields["channel"], fields["control"]), "value", self.cc_eps, (127, 0, 64)
            value = fields["value"]
        elif kind == "program_change":
            state, value_field, eps, candidates = ("patch", fields["channel"]), "program", 1, (0, 1, 2)
            value = fields["program"]
        elif kind == "set_tempo":
            from .midi_events import tempo_to_bpm

            state, value_field, eps, candidates = ("bpm",), "tempo", self.tempo_eps, (383, 3, 191)
            value = tempo_to_bpm(fields["tempo"])
        else:
            return None
        if kind == "program_change":
            last = self.last.get(state)
            repeated = last == value
        else:
            last = self.last.get(state, 0)
            repeated = abs(last - value) < eps
        key = (*state, tick)
        collides = key in self.seen_keys
        self.seen_keys.add(key)
        primer = None
        if repeated and not collides:
            for candidate in candidates:
                far_from_last = candidate != last if kind == "program_change" else abs(candidate - last) >= eps
                if far_from_last and abs(candidate - value) >= eps:
                    primer = {**fields, value_field: tempo_for_bpm(candidate) if kind == "set_tempo" else candidate}
                    break
        if primer is not None or not repeated:
            self.last[state] = value
        return primer


def tracks_to_midi(tracks: dict[int, list[list]], cc_eps: int = 4, tempo_eps: int = 4):
    """Build a type-1 ``mido.MidiFile`` (480 ticks per beat) from decoded tracks (gaps become empty tracks)."""
    import mido

    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    for track_index in range(max(tracks) + 1 if tracks else 0):
        events = tracks.get(track_index, [])
        timing = _note_timing(events)
        timed = []  # (tick, rank, row_index, kind, fields)
        for event in events:
            for tick, rank, kind, fields in _event_messages(event, timing):
                timed.append((tick, rank, event[2], kind, fields))
        timed.sort(key=lambda item: item[:3])
        guard = _RepeatGuard(cc_eps, tempo_eps)
        track = mido.MidiTrack()
        last_tick = 0
        for tick, _, _, kind, fields in timed:
            primer = guard.primer(tick, kind, fields)
            if primer is not None:
                track.append(_make_message(kind, primer, tick - last_tick))
                last_tick = tick
            track.append(_make_message(kind, fields, tick - last_tick))
            last_tick = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        midi.tracks.append(track)
    return midi


__all__ = ["KEY_NAMES", "TICKS_PER_BEAT", "as_rows", "row_to_event", "row_to_named_event", "rows_to_tracks",
           "tempo_for_bpm", "tracks_to_midi"]
