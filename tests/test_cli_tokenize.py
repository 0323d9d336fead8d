"""The ``midi-event-transformer tokenize`` command."""

from __future__ import annotations

import io
import subprocess
import sys

import mido
import pytest

from midi_event_transformer.apps.cli import main


@pytest.fixture()
def song(tmp_path):
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    midi.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000),
                                       mido.MetaMessage("time_signature", numerator=3, denominator=4)]))
    midi.tracks.append(mido.MidiTrack([
        mido.Message("program_change", channel=2, program=40),
        mido.Message("note_on", channel=2, note=69, velocity=100, time=480),
        mido.Message("note_off", channel=2, note=69, velocity=0, time=240),
    ]))
    path = tmp_path / "song.mid"
    midi.save(path)
    return path


def test_tokenize_prints_an_event_table(song, capsys):
    assert main(["tokenize", str(song)]) == 0
    out = capsys.readouterr().out
    assert "2 events (+ BOS/EOS)" not in out  # 4 events: time signature, tempo, patch, note
    assert "4 events (+ BOS/EOS)" in out
    lines = out.splitlines()
    assert lines[1].split()[:5] == ["index", "type", "time", "track", "channel"]
    note = next(line for line in lines if " note " in f" {line} ")
    assert note.split()[:5] == ["4", "note", "1.0000", "1", "0"]  # channel 2 renumbered to 0 (optimise_midi)
    assert "pitch=69 (A4) velocity=100 duration=0.5" in note
    assert any("time_signature" in line and "3/4" in line for line in lines)
    assert any("set_tempo" in line and "bpm=120" in line for line in lines)


def test_tokenize_options(song, capsys):
    assert main(["tokenize", str(song), "--no-optimise", "--limit", "2", "--ids"]) == 0
    out = capsys.readouterr().out
    assert "optimise_midi=False" in out and "more rows" in out
    assert "[1 0 0 0 0 0 0 0]" in out


@pytest.mark.parametrize("argv", [
    ["tokenize"],
    ["frobnicate"],
    [],
    ["tokenize", "x.mid", "--limit", "many"],
])
def test_bad_arguments_give_one_line_errors(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error:" in err and "Traceback" not in err


def test_unreadable_files_give_one_line_errors(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not a midi file")
    truncated = tmp_path / "cut.mid"
    buffer = io.BytesIO()
    mido.MidiFile(tracks=[mido.MidiTrack([mido.Message("note_on")])]).save(file=buffer)
    truncated.write_bytes(buffer.getvalue()[:-2])
    for path, problem in ((text, "not a MIDI file"), (truncated, "truncated"),
                          (tmp_path / "missing.mid", "cannot read file")):
        assert main(["tokenize", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and problem in err and str(path) in err


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert "tokenize" in capsys.readouterr().out


def test_console_script_entry_point(song):
    result = subprocess.run([sys.executable, "-m", "midi_event_transformer.apps.cli", "tokenize", str(song)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "note" in result.stdout
