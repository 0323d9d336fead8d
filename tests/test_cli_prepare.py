"""``midi-event-transformer prepare``: a folder of MIDI files -> a saved train/validation dataset."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import mido
import numpy as np
import pytest

from midi_event_transformer.apps.cli import main
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer
from midi_event_transformer.training.data import is_validation_file


def write_song(path: Path, pitches: list[int], channel: int = 3) -> Path:
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    track = mido.MidiTrack([mido.Message("program_change", channel=channel, program=24)])
    for pitch in pitches:
        track += [mido.Message("note_on", channel=channel, note=pitch, velocity=70),
                  mido.Message("note_off", channel=channel, note=pitch, time=240)]
    midi.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    midi.save(path)
    return path


@pytest.fixture()
def folder(tmp_path) -> Path:
    root = tmp_path / "midi"
    for index in range(8):
        write_song(root / ("nested" if index % 2 else "") / f"song{index}.mid", [60 + index, 64, 67 + index][: 1 + index % 3])
    (root / "broken.mid").write_bytes(b"MThd\x00\x00")
    (root / "readme.txt").write_text("not picked up: wrong extension")
    return root


def test_prepare_saves_a_split_dataset_and_a_report(folder, tmp_path, capsys):
    out = tmp_path / "dataset"
    assert main(["prepare", str(folder), "--output-dir", str(out), "--validation-fraction", "0.4"]) == 0
    stdout = capsys.readouterr().out
    assert "8 files tokenized" in stdout and "1 skipped" in stdout
    splits = datasets.load_from_disk(str(out))
    assert set(splits) == {"train", "validation"}
    names = list(splits["train"]["name"]) + list(splits["validation"]["name"])
    assert sorted(Path(n).name for n in names) == [f"song{i}.mid" for i in range(8)]
    assert all(is_validation_file(n, 0.4) for n in splits["validation"]["name"])
    assert not any(is_validation_file(n, 0.4) for n in splits["train"]["name"])
    tokenizer = MidiEventTransformerTokenizer()
    for example in splits["train"]:
        rows = tokenizer.encode_midi(example["name"])
        np.testing.assert_array_equal(np.asarray(example["input_ids"]), rows.reshape(-1))
        assert example["num_events"] == len(rows)
    report = json.loads((out / "skipped_files.json").read_text())
    assert report["skipped"] == 1 and report["files"][0]["path"].endswith("broken.mid")


def test_prepare_no_optimise(folder, tmp_path, capsys):
    out = tmp_path / "raw"
    assert main(["prepare", str(folder / "song0.mid"), "--output-dir", str(out), "--no-optimise",
                 "--validation-fraction", "0"]) == 0
    splits = datasets.load_from_disk(str(out))
    assert set(splits) == {"train"}  # the empty validation split is left out
    (example,) = splits["train"]
    rows = MidiEventTransformerTokenizer(optimise_midi=False).encode_midi(folder / "song0.mid")
    np.testing.assert_array_equal(np.asarray(example["input_ids"]), rows.reshape(-1))


@pytest.mark.parametrize(("argv", "problem"), [
    (["{tmp}/absent"], "no such MIDI file or folder"),
    (["{tmp}/empty"], "no MIDI files"),
    (["{tmp}/empty", "--validation-fraction", "1.5"], "--validation-fraction must be in [0, 1)"),
    (["{tmp}/empty", "--num-proc", "0"], "--num-proc must be >= 1"),
    (["{tmp}/empty", "--output-dir", "{tmp}/file.txt"], "is a file, not a directory"),
])
def test_prepare_errors(argv, problem, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--output-dir" not in argv:
        argv += ["--output-dir", str(tmp_path / "out")]
    assert main(["prepare", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and problem in err, err
