"""evaluation/instruments.py: the figures of a generated piece, measured exactly on hand-made files."""

from __future__ import annotations

import mido
import pytest
from generation_helpers import tiny_model

from midi_event_transformer.evaluation.instruments import evaluate_instrument_controls, piece_parts


def quartet_file(tmp_path, time_signature=(4, 4)):
    """Four parts, 480 ticks a beat: violin 1 plays bars 1-4, violin 2 bar 1 (a note held into bar 2), the viola
    one low note (out of range) and one in range, the cello nothing."""
    midi = mido.MidiFile(ticks_per_beat=480)
    meta = mido.MidiTrack([mido.MetaMessage("time_signature", numerator=time_signature[0],
                                            denominator=time_signature[1], time=0)])
    midi.tracks.append(meta)
    bar = 480 * 4 * time_signature[0] // time_signature[1]
    parts = {0: [(i * bar, 60) for i in range(4)], 1: [(0, 67)], 2: [(0, 40), (bar, 50)], 3: []}
    lengths = {0: 240, 1: bar + 240, 2: 240}
    for channel, notes in parts.items():
        track = mido.MidiTrack([mido.Message("program_change", channel=channel, program=[40, 40, 41, 42][channel])])
        now = 0
        for start, pitch in notes:
            track.append(mido.Message("note_on", channel=channel, note=pitch, velocity=80, time=start - now))
            track.append(mido.Message("note_off", channel=channel, note=pitch, time=lengths[channel]))
            now = start + lengths[channel]
        midi.tracks.append(track)
    path = tmp_path / "quartet.mid"
    midi.save(path)
    return path


def test_piece_parts_counts_bars_sounding_and_range(tmp_path):
    parts = piece_parts(mido.MidiFile(quartet_file(tmp_path)), ["Violin", "Violin", "Viola", "Cello"])
    assert parts["bars"] == 4
    by_channel = {part["channel"]: part for part in parts["parts"]}
    assert [by_channel[c]["instrument"] for c in range(4)] == ["Violin", "Violin", "Viola", "Cello"]
    assert by_channel[0]["bars_share"] == 1.0 and by_channel[0]["in_range_share"] == 1.0
    assert by_channel[1]["bars_share"] == 0.5  # a held note counts in the bar it lasts into
    assert by_channel[2]["in_range_share"] == 0.5 and by_channel[2]["notes"] == 2
    assert by_channel[3] == {"instrument": "Cello", "program": 42, "channel": 3, "notes": 0, "bars_share": 0.0,
                             "in_range_share": 0.0}  # a silent part fails every figure


def test_bars_follow_the_time_signature(tmp_path):
    parts = piece_parts(quartet_file(tmp_path, (3, 4)), ["Violin", "Violin", "Viola", "Cello"])
    assert parts["bars"] == 4  # violin 1's four notes, one a bar of 3/4
    assert parts["parts"][1]["bars_share"] == 0.5  # held from bar 1 into bar 2 of 3/4 too


def test_evaluate_instrument_controls_on_a_tiny_model(tmp_path):
    result = evaluate_instrument_controls(tiny_model(), instruments=["Violin", "Cello"], seeds=(0, 1), events=24,
                                          save_dir=tmp_path)
    assert [piece["seed"] for piece in result["pieces"]] == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.mid", "1.mid"]
    assert all(len(piece["parts"]) == 2 and piece["bars"] >= 1 for piece in result["pieces"])
    worst = result["worst"]
    assert worst["bars"] == min(piece["bars"] for piece in result["pieces"])
    assert 0.0 <= worst["bars_share"] <= 1.0
    with pytest.raises(ValueError, match="instrument"):
        evaluate_instrument_controls(tiny_model(), instruments=["Not An Instrument"], seeds=(0,), events=8)
