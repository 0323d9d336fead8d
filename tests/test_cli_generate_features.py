"""``midi-event-transformer generate --add-track / --regenerate-track / --seconds / --bars / --context-events``, and
the one-line warning of an instrument the model never saw in training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from generation_helpers import (
    midi_bytes,
    multitrack_song,
    notes_by_track,
    programs,
    reloaded,
    save_tiny_model,
)

from midi_event_transformer import generate_midi
from midi_event_transformer.apps.cli import main
from midi_event_transformer.generation.known_instruments import write_training_data
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("song") / "song.mid"
    multitrack_song(bars=3).save(path)
    return path


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_add_track(model_dir, song, tmp_path, capsys):
    code, out, err = run(["generate", "--model", str(model_dir), "--prompt", str(song), "--add-track", "Violin",
                          "--events", "10", "--seed", "2", "--output-dir", str(tmp_path), "--no-progress"], capsys)
    assert code == 0, err
    midi = reloaded(tmp_path / "generated_seed2_0.mid")
    tokenizer = MidiEventTransformerTokenizer()
    kept = notes_by_track(tokenizer.decode_midi(tokenizer.encode_midi(str(song))))
    notes = notes_by_track(midi)
    assert {track: notes[track] for track in kept} == kept and (2, 40) in programs(midi)
    (expected,) = generate_midi(str(model_dir), prompt=song, add_track="Violin", events=10, seed=2, progress=False)
    assert midi_bytes(midi) == midi_bytes(expected)


def test_regenerate_track_and_seconds(model_dir, song, tmp_path, capsys):
    code, out, err = run(["generate", "--model", str(model_dir), "--prompt", str(song), "--regenerate-track", "1",
                          "--events", "10", "--seconds", "3", "--seed", "4", "--output-dir", str(tmp_path),
                          "--no-progress"], capsys)
    assert code == 0, err
    midi = reloaded(tmp_path / "generated_seed4_0.mid")
    assert abs(midi.length - 3) <= 0.6  # one beat at 100 bpm
    assert "events)" in out


def test_bars_and_the_window(model_dir, tmp_path, capsys):
    code, out, err = run(["generate", "--model", str(model_dir), "--bars", "2", "--time-signature", "3/4",
                          "--bpm", "120", "--context-events", "8", "--seed", "0", "--output-dir", str(tmp_path),
                          "--no-progress"], capsys)
    assert code == 0, err
    (expected,) = generate_midi(str(model_dir), bars=2, time_signature="3/4", bpm=120, context_events=8, seed=0,
                                progress=False)
    assert midi_bytes(reloaded(tmp_path / "generated_seed0_0.mid")) == midi_bytes(expected)


@pytest.mark.parametrize(("arguments", "message"), [
    (["--add-track", "Violin"], "add_track needs a prompt"),
    (["--prompt", "SONG", "--add-track", "Violn"], "unknown instrument 'Violn'"),
    (["--prompt", "SONG", "--regenerate-track", "9"], "the prompt has no track 9"),
    (["--prompt", "SONG", "--add-track", "Violin", "--prompt-events", "4"], "prompt_events does not apply"),
    (["--seconds", "-1"], "seconds must be a positive number"),
    (["--seconds", "4", "--bars", "2"], "not both"),
    (["--context-events", "1"], "context_events must be >= 2"),
])
def test_errors_are_one_line(model_dir, song, tmp_path, capsys, arguments, message):
    arguments = [str(song) if a == "SONG" else a for a in arguments]
    code, _, err = run(["generate", "--model", str(model_dir), "--output-dir", str(tmp_path), *arguments], capsys)
    assert code == 2 and message in err and err.count("\n") == 1


def test_infill_bars_and_tracks(model_dir, song, tmp_path, capsys):  # --piano-roll: the prompt above the result
    code, out, err = run(["generate", "--model", str(model_dir), "--prompt", str(song), "--infill-bars", "2-2",
                          "--infill-tracks", "1,2", "--seed", "5", "--output-dir", str(tmp_path), "--no-progress",
                          "--piano-roll"], capsys)
    assert code == 0, err
    assert (tmp_path / "generated_seed5_0.png").read_bytes()[:4] == b"\x89PNG"
    (expected,) = generate_midi(str(model_dir), prompt=song, infill_bars=(2, 2), infill_tracks=[1, 2], seed=5,
                                progress=False)
    assert midi_bytes(reloaded(tmp_path / "generated_seed5_0.mid")) == midi_bytes(expected)


@pytest.mark.parametrize(("arguments", "message"), [
    (["--infill-bars", "2-3"], "need a prompt"),
    (["--prompt", "SONG", "--infill-bars", "2-3", "--infill-seconds", "1-2"], "not both"),
    (["--prompt", "SONG", "--infill-bars", "3-2"], "1 <= first <= last"),
    (["--prompt", "SONG", "--infill-bars", "9-12"], "starts after the piece ends"),
    (["--prompt", "SONG", "--infill-seconds", "2-2"], "start < end"),
    (["--prompt", "SONG", "--infill-bars", "2-3", "--events", "8"], "cannot be combined with events"),
    (["--prompt", "SONG", "--infill-bars", "2-3", "--add-track", "Violin"], "cannot be combined with add_track"),
    (["--prompt", "SONG", "--infill-bars", "2-3", "--bars", "2"], "cannot be combined with bars"),
    (["--prompt", "SONG", "--infill-bars", "2-3", "--infill-tracks", "7"], "no track 7 with notes"),
    (["--prompt", "SONG", "--infill-tracks", "1"], "infill_tracks needs infill_bars"),
    (["--prompt", "SONG", "--infill-bars", "2-3", "--infill-tracks", "one"], "track numbers like '2,3'"),
])
def test_infill_errors_are_one_line(model_dir, song, tmp_path, capsys, arguments, message):
    arguments = [str(song) if a == "SONG" else a for a in arguments]
    code, _, err = run(["generate", "--model", str(model_dir), "--output-dir", str(tmp_path), *arguments], capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_an_instrument_the_model_never_saw_is_one_warning_line(tmp_path, capsys):
    directory = save_tiny_model(tmp_path / "model")
    write_training_data(directory, {"format": 1, "songs": 1, "events": 9, "drum_kits": [],
                                    "programs": [{"program": 0, "name": "Acoustic Grand Piano", "notes": 9}]})
    arguments = ["generate", "--model", str(directory), "--events", "4", "--seed", "1", "--output-dir",
                 str(tmp_path / "out"), "--no-progress", "--drum-kit", "Standard"]
    code, out, err = run([*arguments, "--instruments", "Violin, Piano"], capsys)
    assert code == 0 and (tmp_path / "out" / "generated_seed1_0.mid").is_file()
    assert err == ("midi-event-transformer: warning: the model never saw Violin, Drums (Standard kit) in training: "
                   "expect them to be played like the instruments it knows (Acoustic Grand Piano)\n")
    (directory / "training_data.json").unlink()  # no record: no warning
    code, out, err = run([*arguments, "--instruments", "Violin"], capsys)
    assert code == 0 and err == ""


def test_the_shipped_model_warns_for_drums_and_a_reference_checkpoint_does_not(shared_dir, tmp_path, capsys):
    from midi_event_transformer.hub.conversion import convert_skytnt_checkpoint

    arguments = ["generate", "--events", "4", "--seed", "1", "--no-progress", "--drum-kit", "Standard",
                 "--instruments", "Violin"]
    code, out, err = run([*arguments, "--output-dir", str(tmp_path / "shipped")], capsys)
    assert code == 0 and err.count("\n") == 1, err  # the shipped model's data has no drums: one line
    assert err.startswith("midi-event-transformer: warning: the model never saw Drums (Standard kit) in training")
    assert "Violin" not in err.split(" in training")[0]  # the string quartets taught it the violin
    reference = shared_dir / "reference" / "skytnt_small" / "model"
    converted = convert_skytnt_checkpoint(reference, tmp_path / "converted")
    code, out, err = run([*arguments, "--model", str(converted), "--output-dir", str(tmp_path / "ref")], capsys)
    assert code == 0 and err == ""  # no training_data.json: nothing to warn about
