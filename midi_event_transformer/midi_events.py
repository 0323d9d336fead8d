"""Turn a parsed MIDI score into the reference's (MIDITokenizerV2) event rows.

The rules reproduce the public reference's ``MIDITokenizerV2.tokenize`` exactly (ids equal on the
POP909, Bach and fixture corpora); they are written out here step by step:

1. **Quantise** every event of the first 128 tracks to 16 steps per beat,
   ``t = round(16 * tick / ticks_per_beat)`` (Python's round-half-even on the float quotient), split
   into ``time1 = t // 16`` (beats) and ``time2 = t % 16``; note durations likewise, at least 1.
2. **Per-track filtering**: a patch change equal to the channel's previous one is dropped; a control
   change within ``cc_eps`` of the previous kept value of that (channel, controller) is dropped
   (the previous value starts at 0); a tempo (bpm, truncated, at most 383) within ``tempo_eps`` of the
   previous kept one is dropped (starts at 0); invalid time/key signatures and zero tempos are dropped.
3. **Collisions**: events are kept in a dict keyed by everything but their last value(s) (notes and
   signatures: all but two), so a later event with the same key replaces the earlier one in place.
4. **Overlap trimming**: within a track, a note cuts the previous note (in score order) of the same
   channel and pitch so that it ends at its own start; a note cut to nothing is removed.
5. **optimise_midi** (remapping): channels are renumbered in order of first use (drums stay 9, 9 is
   skipped, channels without notes go last); each (channel, original track) that carries notes
   becomes a new track 1, 2, ... in channel order; tempo and time signatures go to track 0; control
   and patch changes follow their channel's first note track; key signatures are copied to every new
   track made from their original track (with sf=0 on drum tracks); channels without notes lose
   their control and patch changes; channels without a patch get piano (patch 0) at time 0.
6. **Key signature**: if there are none, or all say C major / A minor, the key is detected from the
   pitch-class histogram of non-drum notes (7 most common classes must cover 70% and form a diatonic
   set); detected keys are added to every track (not track 0 when remapping) or replace the existing
   ones, and undetectable default ones are removed.
7. **Order**: sorted by (time1, time2, track, type) with types ordered time_signature,
   key_signature, set_tempo, patch_change, control_change, note (a stable sort: ties keep score
   order).
8. **Setup**: leading events up to the first note without a simultaneous successor are collapsed
   (the last of each kind/track/channel/... wins) and, except notes and time signatures, moved to
   time 0.
9. **Rows**: time1 becomes the delta from the previous row's time1; rows with any parameter outside
   its range are dropped.
"""

from __future__ import annotations

import numpy as np

from .midi_reading import ScoreEvent
from .vocabulary import (
    DRUM_CHANNEL,
    EVENT_PARAMETERS,
    EVENT_TYPE_IDS,
    MAX_BPM,
    PARAMETER_OFFSETS,
    PARAMETER_SIZES,
    STEPS_PER_BEAT,
    TOKENS_PER_EVENT,
)

#: Sort rank of each event type at equal (time1, time2, track).
EVENT_ORDER: dict[str, int] = {name: i for i, name in enumerate(
    ["time_signature", "key_signature", "set_tempo", "patch_change", "control_change", "note"])}

_MAX_TRACKS = 128


def tempo_to_bpm(tempo: int) -> int:
    """Microseconds per beat -> the reference's integer bpm (truncated, at most ``MAX_BPM``, 383)."""
    return min(int(60 / (tempo / 10 ** 6)), MAX_BPM)


def bpm_to_tempo(bpm: int) -> int:
    """The reference's inverse: bpm -> microseconds per beat (bpm 0 counts as 1)."""
    return int((60 / (bpm or 1)) * 10 ** 6)


def key_to_sf(key: int, minor: int) -> int:
    """Root pitch class (0 = C) -> number of sharps (negative: flats), as the reference maps it."""
    sf = (key * 7) % 12
    if sf > 6 or (minor == 1 and sf >= 5):
        sf -= 12
    return sf


def sf_to_key(sf: int) -> int:
    """Number of sharps (negative: flats) -> root pitch class of the major key."""
    return (sf * 7) % 12


def detect_key(pitch_class_histogram: list[int], threshold: float = 0.7) -> int | None:
    """Root pitch class of the major key whose scale covers the histogram, or None.

    The 7 most frequent pitch classes must hold at least ``threshold`` of the notes and contain
    exactly two semitone steps (cyclically), 5 or 7 apart, as a diatonic scale does.
    """
    total = sum(pitch_class_histogram)
    if len(pitch_class_histogram) != 12 or total == 0:
        return None
    if sum(sorted(pitch_class_histogram, reverse=True)[:7]) / total < threshold:
        return None
    # the 7 most frequent classes; equal counts keep ascending pitch-class order (stable sort)
    scale = sorted(_stable_top(pitch_class_histogram, 7))
    semitones = [scale[i] for i in range(len(scale)) if (scale[i] - scale[i - 1]) in (1, -11)]
    if len(semitones) != 2:
        return None
    gap = semitones[1] - semitones[0]
    if gap == 5:
        return semitones[0]
    if gap == 7:
        return semitones[1]
    return None


def _stable_top(histogram: list[int], count: int) -> list[int]:
    """Indices of the ``count`` largest values; ties ordered by index (like a stable descending sort)."""
    return [k for _, k in sorted(((-v, k) for k, v in enumerate(histogram)))][:count]


def score_to_events(
    ticks_per_beat: int,
    tracks: list[list[ScoreEvent]],
    *,
    remap_track_channel: bool = True,
    add_default_instr: bool = True,
    remove_empty_channels: bool = True,
    cc_eps: int = 4,
    tempo_eps: int = 4,
) -> list[list]:
    """Events ``[name, time1 (absolute beats), time2, track, *params]`` in final order (see module doc).

    Parameters are in the vocabulary's order (``EVENT_PARAMETERS`` minus time1/time2/track) and not
    yet range-checked; :func:`events_to_rows` does that.
    """
    keyed: dict[tuple, list] = {}  # collision key -> event (step 3)
    channels: list[int] = []  # channels in order of first use
    midi_channels = range(PARAMETER_SIZES["channel"])
    channel_tracks: dict[int, dict[int, int]] = {c: {} for c in midi_channels}  # channel -> {track: new track}
    note_tracks: dict[int, list[int]] = {c: [] for c in midi_channels}  # channel -> tracks with its notes
    first_note_track: dict[int, int] = {}  # channel -> first track whose note used it
    has_notes = [False] * len(midi_channels)
    patched_channels: list[int] = []
    pitch_histogram = [0] * 12
    key_signatures: list[list] = []
    track_channels: dict[int, list[int]] = {}

    for track_index, track in enumerate(tracks[:_MAX_TRACKS]):
        last_note: dict[tuple[int, int], tuple[tuple, list]] = {}
        last_patch: dict[int, int | None] = {}
        last_value: dict[tuple[int, int], int] = {}
        last_bpm = 0
        this_track_channels = track_channels.setdefault(track_index, [])
        for event in track:
            name = event[0]
            t = round(STEPS_PER_BEAT * event[1] / ticks_per_beat)
            time1, time2 = t // STEPS_PER_BEAT, t % STEPS_PER_BEAT
            channel = -1
            if name == "note":
                _, _, duration, channel, pitch, velocity = event
                duration = max(1, round(STEPS_PER_BEAT * duration / ticks_per_beat))
                new = ["note", time1, time2, track_index, channel, pitch, velocity, duration]
                has_notes[channel] = True
                first_note_track.setdefault(channel, track_index)
                if track_index not in note_tracks[channel]:
                    note_tracks[channel].append(track_index)
                if channel != DRUM_CHANNEL:
                    pitch_histogram[pitch % 12] += 1
                if channel not in this_track_channels:
                    this_track_channels.append(channel)
                key = ("note", time1, time2, track_index, channel, pitch)
            elif name == "patch_change":
                channel, patch = event[2], event[3]
                new = ["patch_change", time1, time2, track_index, channel, patch]
                if last_patch.setdefault(channel, None) == patch:
                    continue
                last_patch[channel] = patch
                if channel not in patched_channels:
                    patched_channels.append(channel)
                key = ("patch_change", time1, time2, track_index, channel)
            elif name == "control_change":
                channel, controller, value = event[2], event[3], event[4]
                new = ["control_change", time1, time2, track_index, channel, controller, value]
                if abs(last_value.setdefault((channel, controller), 0) - value) < cc_eps:
                    continue
                last_value[(channel, controller)] = value
                key = ("control_change", time1, time2, track_index, channel, controller)
            elif name == "set_tempo":
                if event[2] == 0:
                    continue
                bpm = tempo_to_bpm(event[2])
                new = ["set_tempo", time1, time2, track_index, bpm]
                if abs(last_bpm - bpm) < tempo_eps:
                    continue
                last_bpm = bpm
                key = ("set_tempo", time1, time2, track_index)
            elif name == "time_signature":
                nn, dd = event[2], event[3]
                if not (1 <= nn <= 16 and 1 <= dd <= 4):
                    continue
                new = ["time_signature", time1, time2, track_index, nn - 1, dd - 1]
                key = ("time_signature", time1, time2, track_index)
            elif name == "key_signature":
                sf, mi = event[2], event[3]
                if not (-7 <= sf <= 7 and 0 <= mi <= 1):
                    continue
                new = ["key_signature", time1, time2, track_index, sf + 7, mi]
                key_signatures.append(new)
                key = ("key_signature", time1, time2, track_index)
            else:
                continue

            if channel != -1:
                if channel not in channels:
                    channels.append(channel)
                channel_tracks[channel].setdefault(track_index, 0)

            if name == "note":  # step 4: trim the previous note of this channel and pitch
                previous = last_note.get((channel, pitch))
                if previous is not None:
                    previous_key, previous_note = previous
                    shortened = t - (previous_note[1] * STEPS_PER_BEAT + previous_note[2])
                    previous_note[-1] = max(0, min(previous_note[-1], shortened))
                    if previous_note[-1] == 0:
                        keyed.pop(previous_key, None)
                last_note[(channel, pitch)] = (key, new)
            keyed[key] = new
    events = list(keyed.values())

    empty_channels = [c for c in channels if not has_notes[c]]
    if remap_track_channel:
        events, channels, empty_channels, key_signatures, track_channels, first_note_track, patched_channels = (
            _remap_tracks_and_channels(events, channels, empty_channels, channel_tracks, note_tracks,
                                       remove_empty_channels))

    if add_default_instr:
        for channel in channels:
            if channel not in patched_channels and channel in first_note_track:
                events.append(["patch_change", 0, 0, first_note_track[channel], channel, 0])

    _settle_key_signatures(events, key_signatures, pitch_histogram, track_channels, remap_track_channel)

    events.sort(key=_sort_key)
    events = _collapse_setup(events)
    if remove_empty_channels:
        events = [e for e in events
                  if not (e[0] in ("control_change", "patch_change") and e[4] in empty_channels)]
    return events


def _sort_key(event: list) -> tuple:
    return event[1], event[2], event[3], EVENT_ORDER[event[0]]


def _remap_tracks_and_channels(events, channels, empty_channels, channel_tracks, note_tracks,
                               remove_empty_channels):
    """Step 5 (optimise_midi): renumber channels and tracks; returns the updated bookkeeping."""
    channel_map = {DRUM_CHANNEL: DRUM_CHANNEL} if DRUM_CHANNEL in channels else {}
    if remove_empty_channels:  # channels without notes go last (stable)
        channels = sorted(channels, key=lambda c: c in empty_channels)
    next_channel = 0
    for channel in channels:
        if channel == DRUM_CHANNEL:
            continue
        channel_map[channel] = next_channel
        next_channel += 1
        if next_channel == DRUM_CHANNEL:  # skipped: other channels never land on the drum channel
            next_channel += 1
    new_channels = list(channel_map.values())

    # new track numbers: first the (channel, track) pairs that keep their events, then the others
    in_channel_order = [c for c, _ in sorted(channel_map.items(), key=lambda item: item[1])]
    track_count = 0
    for removing in (False, True):
        for channel in in_channel_order:
            if (remove_empty_channels and channel in empty_channels) != removing:
                continue
            with_notes = note_tracks[channel]
            for track_index in channel_tracks[channel]:
                off_note_tracks = len(with_notes) != 0 and track_index not in with_notes
                if off_note_tracks != removing:
                    continue
                track_count += 1
                channel_tracks[channel][track_index] = track_count

    empty_channels = [channel_map[c] for c in empty_channels]
    first_note_track: dict[int, int] = {}
    patched_channels: list[int] = []
    key_signatures: list[list] = []
    added_key_signatures: list[list] = []
    orphan_key_signatures: list[list] = []
    for event in events:
        name = event[0]
        track_index = event[3]
        if name == "note":
            channel = event[4]
            event[4] = channel_map[channel]
            event[3] = channel_tracks[channel][track_index]
            first_note_track.setdefault(event[4], event[3])
        elif name in ("set_tempo", "time_signature"):
            event[3] = 0
        elif name == "key_signature":
            targets: list[tuple[int, int]] = []  # (new channel, new track) made from this track
            for channel, track_map in channel_tracks.items():
                if track_index in track_map:
                    new_track = track_map[track_index]
                    target = (channel_map[channel], new_track)
                    if new_track != 0 and target not in targets:
                        targets.append(target)
            if not targets:
                if event[3] == 0:  # a key signature of the meta track stays on track 0
                    key_signatures.append(event)
                else:
                    event[3] = -1  # marks it for removal (and unequal to any kept copy)
                    orphan_key_signatures.append(event)
                continue
            channel, new_track = targets[0]
            event[3] = new_track
            key_signatures.append(event)
            if channel == DRUM_CHANNEL:
                event[4] = 7
            for channel, new_track in targets[1:]:
                copy = [*event]
                copy[3] = new_track
                if channel == DRUM_CHANNEL:
                    copy[4] = 7
                key_signatures.append(copy)
                added_key_signatures.append(copy)
        elif name in ("control_change", "patch_change"):
            channel = event[4]
            event[4] = channel_map[channel]
            if note_tracks[channel] and track_index not in note_tracks[channel]:
                track_index = note_tracks[channel][0]
            event[3] = channel_tracks[channel][track_index]
            if name == "patch_change" and event[4] not in patched_channels:
                patched_channels.append(event[4])
    for event in orphan_key_signatures:
        events.remove(event)  # the first event equal to it (by value)
    events += added_key_signatures

    track_channels: dict[int, list[int]] = {}
    for channel, track_map in channel_tracks.items():
        if channel not in channel_map:
            continue
        for new_track in track_map.values():
            on_track = track_channels.setdefault(new_track, [])
            if channel_map[channel] not in on_track:
                on_track.append(channel_map[channel])
    return events, new_channels, empty_channels, key_signatures, track_channels, first_note_track, patched_channels


def _settle_key_signatures(events, key_signatures, pitch_histogram, track_channels, remapped) -> None:
    """Step 6: add detected key signatures, or fix or remove default (C major) ones."""
    if key_signatures and not all(k[4] == 7 for k in key_signatures):
        return
    root = detect_key(pitch_histogram)
    if root is None:
        for event in key_signatures:
            events.remove(event)  # the first event equal to it (by value)
        return
    sf = key_to_sf(root, 0)
    if not key_signatures:
        for track_index, on_track in track_channels.items():
            if remapped and track_index == 0:
                continue
            drums_only = len(on_track) == 1 and on_track[0] == DRUM_CHANNEL
            events.append(["key_signature", 0, 0, track_index, (0 if drums_only else sf) + 7, 0])
        return
    for event in key_signatures:
        on_track = track_channels.get(event[3])
        if on_track is not None and len(on_track) == 1 and on_track[0] == DRUM_CHANNEL:
            continue
        event[4] = sf + 7
        event[5] = 0


def _collapse_setup(events: list[list]) -> list[list]:
    """Step 8: collapse the leading setup events (see module docstring)."""
    setup: dict[tuple, list] = {}
    notes_in_setup = False
    for i, event in enumerate(events):
        moved = [*event]
        if event[0] not in ("note", "time_signature"):
            moved[1] = 0
            moved[2] = 0
        # (the reference compares time1 + time2, not the full time)
        has_next = i < len(events) - 1 and event[1] + event[2] == events[i + 1][1] + events[i + 1][2]
        has_previous = notes_in_setup and i > 0 and event[1] + event[2] == events[i - 1][1] + events[i - 1][2]
        if (event[0] == "note" and not has_next) or (notes_in_setup and not has_previous):
            return sorted(setup.values(), key=_sort_key) + events[i:]
        if event[0] == "note":
            notes_in_setup = True
        if event[0] in ("note", "time_signature", "key_signature"):
            key = (event[0], *event[3:-2])
        else:
            key = (event[0], *event[3:-1])
        setup[key] = moved
    return events


def _slot_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per event type id: the id offset and the value count of each of the 7 slots after the type.

    Unused slots have offset 0 and size 1, so their value 0 becomes PAD (0) and is in range.
    """
    offsets = np.zeros((max(EVENT_TYPE_IDS.values()) + 1, TOKENS_PER_EVENT - 1), dtype=np.int64)
    sizes = np.ones_like(offsets)
    for name, type_id in EVENT_TYPE_IDS.items():
        for slot, parameter in enumerate(EVENT_PARAMETERS[name]):
            offsets[type_id, slot] = PARAMETER_OFFSETS[parameter]
            sizes[type_id, slot] = PARAMETER_SIZES[parameter]
    return offsets, sizes


_SLOT_OFFSETS, _SLOT_SIZES = _slot_tables()


def events_to_rows(events: list[list]) -> np.ndarray:
    """Events with absolute time1 -> rows of ids (n, 8) with time1 as a delta; rows out of range are dropped.

    A dropped row does not move the time origin: the next row's time1 counts from the last kept row.
    """
    if not events:
        return np.zeros((0, TOKENS_PER_EVENT), dtype=np.int64)
    types = np.fromiter((EVENT_TYPE_IDS[e[0]] for e in events), dtype=np.int64, count=len(events))
    values = np.array([e[1:] + [0] * (TOKENS_PER_EVENT - len(e)) for e in events], dtype=np.int64)  # (n, 7)
    sizes = _SLOT_SIZES[types]
    in_range = ((values[:, 1:] >= 0) & (values[:, 1:] < sizes[:, 1:])).all(axis=1)
    # time1 becomes a delta from the previous kept row, which must fit in [0, 128)
    keep = np.zeros(len(events), dtype=bool)
    deltas = np.zeros(len(events), dtype=np.int64)
    last_time1 = 0
    time1_size = PARAMETER_SIZES["time1"]
    for i, (time1, ok) in enumerate(zip(values[:, 0].tolist(), in_range.tolist(), strict=True)):
        delta = time1 - last_time1
        if ok and 0 <= delta < time1_size:
            keep[i] = True
            deltas[i] = delta
            last_time1 = time1
    values[:, 0] = deltas
    rows = np.empty((int(keep.sum()), TOKENS_PER_EVENT), dtype=np.int64)
    rows[:, 0] = types[keep]
    rows[:, 1:] = values[keep] + _SLOT_OFFSETS[types[keep]]
    return rows


__all__ = [
    "EVENT_ORDER",
    "bpm_to_tempo",
    "detect_key",
    "events_to_rows",
    "key_to_sf",
    "score_to_events",
    "sf_to_key",
    "tempo_to_bpm",
]
