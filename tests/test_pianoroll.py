"""Piano-roll pictures: valid PNGs for real, odd and empty files; clear errors."""

from __future__ import annotations

import sys

import mido
import numpy as np
import pytest

from midi_event_transformer.errors import InvalidMidiError
from midi_event_transformer.evaluation.pianoroll import draw_piano_roll, draw_piano_rolls, pitch_name

matplotlib_image = pytest.importorskip("matplotlib.image", reason="matplotlib is an optional extra ([plot])")


def two_channel_midi() -> mido.MidiFile:
    midi = mido.MidiFile(ticks_per_beat=96)
    for channel, pitches in ((0, [60, 64, 67]), (9, [36, 38])):
        track = mido.MidiTrack()
        for index, pitch in enumerate(pitches):
            track += [mido.Message("note_on", channel=channel, note=pitch, velocity=100, time=0 if index == 0 else 0),
                      mido.Message("note_off", channel=channel, note=pitch, velocity=0, time=96)]
        midi.tracks.append(track)
    return midi


def read_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib_image.imread(path)  # (height, width, 4)


def test_draws_notes_by_channel(tmp_path):
    path = draw_piano_roll(two_channel_midi(), tmp_path / "sub" / "roll.png", figsize=(6, 3), dpi=50)
    image = read_png(path)
    assert image.shape[:2] == (150, 300)
    coloured = np.abs(image[..., 0] - image[..., 2]) > 0.2  # tab10 bars are not grey
    assert coloured.sum() > 100


def test_time_in_seconds_by_track_from_a_path(tmp_path):
    midi_path = tmp_path / "two.mid"
    two_channel_midi().save(midi_path)
    read_png(draw_piano_roll(midi_path, tmp_path / "roll.png", time_unit="seconds", color_by="track", max_time=0.5))


def test_empty_file_still_draws(tmp_path):
    midi = mido.MidiFile()
    midi.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=400000)]))
    read_png(draw_piano_roll(midi, tmp_path / "empty.png", figsize=(4, 3), dpi=40))


def test_real_song(tmp_path, pop909_files):
    read_png(draw_piano_roll(pop909_files[0], tmp_path / "song.png", max_time=64))


def test_several_rolls_stacked_in_one_picture(tmp_path):
    empty = mido.MidiFile()
    empty.tracks.append(mido.MidiTrack())
    image = read_png(draw_piano_rolls([two_channel_midi(), empty], tmp_path / "rolls.png", titles=["a", "b"],
                                      width=6, row_height=2, dpi=50))
    assert image.shape[:2] == (200, 300)
    top, bottom = image[:100], image[100:]
    assert (np.abs(top[..., 0] - top[..., 2]) > 0.2).sum() > 50  # notes in the first roll only
    assert (np.abs(bottom[..., 0] - bottom[..., 2]) > 0.2).sum() == 0
    with pytest.raises(ValueError, match="2 titles for 1 MIDI files"):
        draw_piano_rolls([empty], tmp_path / "x.png", titles=["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        draw_piano_rolls([], tmp_path / "x.png")


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="time_unit"):
        draw_piano_roll(two_channel_midi(), tmp_path / "x.png", time_unit="bars")
    with pytest.raises(ValueError, match="color_by"):
        draw_piano_roll(two_channel_midi(), tmp_path / "x.png", color_by="velocity")
    (tmp_path / "bad.mid").write_bytes(b"not midi")
    with pytest.raises(InvalidMidiError, match="bad.mid"):
        draw_piano_roll(tmp_path / "bad.mid", tmp_path / "x.png")
    with pytest.raises(TypeError, match="mido.MidiFile or a path"):
        draw_piano_roll(b"MThd", tmp_path / "x.png")


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"midi-event-transformer\[plot\]"):
        draw_piano_roll(two_channel_midi(), tmp_path / "x.png")


def test_pitch_names():
    assert [pitch_name(p) for p in (0, 60, 69, 127)] == ["C-1", "C4", "A4", "G9"]


def test_infill_piano_rolls_show_the_span_with_context(tmp_path):
    from generation_helpers import multitrack_song

    from midi_event_transformer.evaluation.pianoroll import draw_infill_piano_rolls

    song = multitrack_song(bars=8)
    png = draw_infill_piano_rolls(song, song, (128, 256), tmp_path / "infill.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="path_png is needed"):
        draw_infill_piano_rolls(song, song, (128, 256))
    with pytest.raises(ValueError, match="min_time must be >= 0 and before max_time"):
        draw_piano_roll(song, tmp_path / "bad.png", min_time=4, max_time=2)
