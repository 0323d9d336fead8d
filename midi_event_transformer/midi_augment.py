"""Data augmentation and the quality filter on event rows, as the public reference applies them.

* :func:`augment_rows` shifts pitches (not drums), velocities, the values of controllers 1, 2, 7
  and 11, tempos, tracks and channels (drums stay on 9; a channel that would land on 9 goes to
  ``9 + shift``), and transposes key signatures with the pitch shift (sf=0 on drum-only tracks).
  If any note would leave the pitch range the rows are returned unchanged, as the reference does.
* :func:`quality_report` is the reference's training-set filter: too few or too many notes, drums
  only, poor alignment of onsets to the 1/16 grid, atonal note windows, melodic-line-only texture
  (small pitch bandwidth), note density out of bounds, or mostly piano in a multi-instrument file.
"""

from __future__ import annotations

import numpy as np

from .midi_events import key_to_sf, sf_to_key
from .midi_writing import row_to_event
from .vocabulary import (
    DRUM_CHANNEL,
    EVENT_PARAMETERS,
    MAX_BPM,
    PARAMETER_OFFSETS,
    PARAMETER_SIZES,
    STEPS_PER_BEAT,
)


def augment_rows(
    rows: np.ndarray,
    pitch_shift: int = 0,
    velocity_shift: int = 0,
    cc_value_shift: int = 0,
    bpm_shift: int = 0,
    track_shift: int = 0,
    channel_shift: int = 0,
) -> np.ndarray:
    """Apply the given shifts to rows (n, 8); invalid rows (and BOS/EOS/pad) are copied unchanged."""
    new_rows = rows.copy()
    key_signature_rows = []
    track_channels: dict[int, list[int]] = {}
    for i, row in enumerate(rows.tolist()):
        event = row_to_event(row)
        if event is None:
            continue
        name = event[0]
        parameters = EVENT_PARAMETERS[name]
        values = dict(zip(parameters, event[1:], strict=True))
        new_values = dict(values)
        new_values["track"] = (values["track"] + track_shift) % PARAMETER_SIZES["track"]
        if "channel" in values:
            channel = values["channel"]
            if channel != DRUM_CHANNEL:
                channel = (channel + channel_shift) % PARAMETER_SIZES["channel"]
                if channel == DRUM_CHANNEL:
                    channel = (DRUM_CHANNEL + channel_shift) % PARAMETER_SIZES["channel"]
            new_values["channel"] = channel
        if name == "note":
            pitch = values["pitch"] + (pitch_shift if values["channel"] != DRUM_CHANNEL else 0)
            if not 0 <= pitch < 128:
                return rows.copy()
            new_values["pitch"] = pitch
            new_values["velocity"] = max(1, min(127, values["velocity"] + velocity_shift))
            on_track = track_channels.setdefault(values["track"], [])
            if values["channel"] not in on_track:
                on_track.append(values["channel"])
        elif name == "control_change":
            if values["controller"] in (1, 2, 7, 11):
                new_values["value"] = max(1, min(127, values["value"] + cc_value_shift))
        elif name == "set_tempo":
            new_values["bpm"] = max(1, min(MAX_BPM, values["bpm"] + bpm_shift))
        elif name == "key_signature":
            key = (sf_to_key(values["sf"] - 7) + pitch_shift) % 12
            new_values["sf"] = key_to_sf(key, values["mi"]) + 7
            key_signature_rows.append(i)
        new_rows[i, 1:1 + len(parameters)] = [PARAMETER_OFFSETS[p] + new_values[p] for p in parameters]
    # drum-only tracks get sf=0 (looked up, as in the reference, by the shifted track number)
    for i in key_signature_rows:
        on_track = track_channels.get(int(new_rows[i, 3]) - PARAMETER_OFFSETS["track"])
        if on_track is not None and on_track == [DRUM_CHANNEL]:
            new_rows[i, 4] = PARAMETER_OFFSETS["sf"] + 7
    return new_rows


def quality_report(
    rows: np.ndarray,
    alignment_min: float = 0.3,
    tonality_min: float = 0.8,
    piano_max: float = 0.7,
    notes_bandwidth_min: float = 3,
    notes_density_max: float = 50,
    notes_density_min: float = 2.5,
    total_notes_max: int = 20000,
    total_notes_min: int = 256,
    note_window_size: int = 16,
) -> tuple[bool, list[str]]:
    """``(ok, reasons)``: the reference's quality filter on rows (n, 8); reasons name the failed checks."""
    total_notes = 0
    channels: list[int] = []
    onset_steps = [0] * STEPS_PER_BEAT
    note_windows: dict[int, list[int]] = {}
    sounding: list[tuple[int, int]] = []  # (last step, pitch) of notes sounding at the previous onset
    bandwidths: list[int] = []
    instruments: dict[int, int] = {}
    piano_channels: list[int] = []
    time1 = 0
    last_t = 0
    for row in rows.tolist():
        event = row_to_event(row)
        if event is None:
            continue
        time1 += event[1]
        t = time1 * STEPS_PER_BEAT + event[2]
        channel = None
        if event[0] == "note":
            channel, pitch, _, duration = event[4:]
            total_notes += 1
            onset_steps[event[2]] += 1
            if channel != DRUM_CHANNEL:
                if channel not in instruments:
                    instruments[channel] = 0
                    if channel not in piano_channels:
                        piano_channels.append(channel)
                note_windows.setdefault(time1 // note_window_size, []).append(pitch)
            if last_t != t:
                sounding = [(end, p) for end, p in sounding if end > last_t]
                if sounding:
                    pitches = [p for _, p in sounding]
                    bandwidths.append(max(pitches) - min(pitches))
            sounding.append((t + duration - 1, pitch))
        elif event[0] == "patch_change":
            channel, patch = event[4:]
            instruments[channel] = patch
            if patch == 0 and channel not in piano_channels:
                piano_channels.append(channel)
        if channel is not None and channel not in channels:
            channels.append(channel)
        last_t = t

    reasons = []
    if total_notes < total_notes_min:
        reasons.append("total_min")
    if total_notes > total_notes_max:
        reasons.append("total_max")
    if not note_windows and total_notes > 0:
        reasons.append("drum_only")
    if reasons:
        return False, reasons
    alignment = sum(sorted(onset_steps, reverse=True)[:2]) / total_notes
    tonalities, densities = [], []
    for pitches in note_windows.values():
        histogram = [0] * 12
        for pitch in pitches:
            histogram[pitch % 12] += 1
        tonalities.append(sum(sorted(histogram, reverse=True)[:7]) / len(pitches))
        densities.append(len(pitches) / note_window_size)
    tonality = sum(tonalities) / len(tonalities)
    bandwidth = sum(bandwidths) / len(bandwidths) if bandwidths else 0
    density = max(densities) if densities else 0
    piano_ratio = len(piano_channels) / len(channels)
    if len(channels) <= 3:  # a piano solo may be all piano
        piano_max = 1
    if alignment < alignment_min:
        reasons.append("alignment")
    if tonality < tonality_min:
        reasons.append("tonality")
    if bandwidth < notes_bandwidth_min:
        reasons.append("bandwidth")
    if not notes_density_min < density < notes_density_max:
        reasons.append("density")
    if piano_ratio > piano_max:
        reasons.append("piano")
    return not reasons, reasons


__all__ = ["augment_rows", "quality_report"]
