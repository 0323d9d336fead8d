"""``midi-event-transformer generate`` and ``convert``: mostly through ``main(argv)`` in-process (importing torch in a
subprocess is slow), with one real console run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import mido
import pytest
import torch
from generation_helpers import messages, midi_bytes, programs, reloaded, save_tiny_model

from midi_event_transformer import DEFAULT_MODEL, generate_midi
from midi_event_transformer.apps.cli import main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture()
def song(tmp_path) -> Path:
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(80)),
                            mido.Message("program_change", channel=0, program=73)])
    for pitch in (60, 64, 67, 72):
        track += [mido.Message("note_on", note=pitch, velocity=80), mido.Message("note_off", note=pitch, time=480)]
    midi.tracks.append(track)
    path = tmp_path / "song.mid"
    midi.save(path)
    return path


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def written_midi(out: Path) -> list[Path]:
    return sorted(out.glob("*.mid"))


def test_generate_writes_files_with_the_requested_controls(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(["generate", "--model", str(model_dir), "--events", "24", "--seed", "5",
                             "--num-samples", "2", "--output-dir", str(out), "--instruments", "Violin, Cello",
                             "--instruments", "33", "--drum-kit", "Brush", "--bpm", "132", "--time-signature", "6/8",
                             "--key", "F# major"], capsys)
    assert code == 0, err
    files = written_midi(out)
    assert [f.name for f in files] == ["generated_seed5_0.mid", "generated_seed5_1.mid"]
    assert stdout.splitlines()[0] == "seed: 5" and all(str(f) in stdout for f in files)
    assert "24/24" in err and "event/s" in err  # the progress bar
    for path in files:
        midi = reloaded(path)
        assert programs(midi) == {(0, 40), (1, 42), (2, 33), (9, 40)}  # no other instrument appears
        assert [(m.numerator, m.denominator) for m in messages(midi, "time_signature")][0] == (6, 8)
        assert [m.key for m in messages(midi, "key_signature")][0] == "F#"
        assert round(mido.tempo2bpm(messages(midi, "set_tempo")[0].tempo)) == 132
        assert {m.channel for m in messages(midi, "note_on")} <= {0, 1, 2, 9}


def test_cli_and_generate_midi_give_the_same_files(model_dir, tmp_path, capsys):
    options = dict(instruments="Acoustic Grand Piano", bpm=100, key="A minor", events=16, seed=21, num_samples=2)
    code, _, err = run(["generate", "--model", str(model_dir), "--instruments", "Acoustic Grand Piano", "--bpm", "100",
                        "--key", "A minor", "--events", "16", "--seed", "21", "--num-samples", "2",
                        "--output-dir", str(tmp_path), "--no-progress"], capsys)
    assert code == 0, err
    assert err == ""  # --no-progress
    expected = generate_midi(str(model_dir), progress=False, **options)
    assert [path.read_bytes() for path in written_midi(tmp_path)] == [midi_bytes(m) for m in expected]


def test_dtype_int8_gives_the_files_of_generate_midi_int8(model_dir, tmp_path, capsys):
    code, _, err = run(["generate", "--model", str(model_dir), "--dtype", "int8", "--events", "16", "--seed", "4",
                        "--output-dir", str(tmp_path), "--no-progress"], capsys)
    assert code == 0, err
    expected = generate_midi(str(model_dir), dtype="int8", events=16, seed=4, progress=False)
    assert [path.read_bytes() for path in written_midi(tmp_path)] == [midi_bytes(m) for m in expected]
    code, stdout, _ = run(["generate", "--help"], capsys)
    assert "int8" in stdout and "4.1x" in " ".join(stdout.split())


def test_no_control_change(model_dir, tmp_path, capsys):
    argv = ["generate", "--model", str(model_dir), "--events", "60", "--seed", "3", "--num-samples", "2",
            "--no-progress"]
    assert run(argv + ["--output-dir", str(tmp_path / "cc")], capsys)[0] == 0
    assert sum(len(messages(reloaded(p), "control_change")) for p in written_midi(tmp_path / "cc")) > 0
    assert run(argv + ["--output-dir", str(tmp_path / "no_cc"), "--no-control-change"], capsys)[0] == 0
    files = written_midi(tmp_path / "no_cc")
    assert len(files) == 2
    assert all(messages(reloaded(p), "control_change") == [] and messages(reloaded(p), "note_on") for p in files)


def test_prompt_is_continued(model_dir, song, tmp_path, capsys):
    code, _, err = run(["generate", "--model", str(model_dir), "--prompt", str(song), "--prompt-events", "6",
                        "--events", "10", "--seed", "0", "--output-dir", str(tmp_path / "out"), "--no-progress"], capsys)
    assert code == 0, err
    (path,) = written_midi(tmp_path / "out")
    midi = reloaded(path)
    # BOS, tempo, patch change and 3 notes of the prompt are kept, then 10 events follow
    assert (0, 73) in programs(midi)
    assert [m.note for m in messages(midi, "note_on") if m.velocity][:3] == [60, 64, 67]


def test_piano_roll(model_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="--piano-roll needs matplotlib (pip install 'midi-event-transformer[plot]')")
    import matplotlib.image

    code, stdout, err = run(["generate", "--model", str(model_dir), "--events", "16", "--seed", "1",
                             "--output-dir", str(tmp_path), "--piano-roll", "--no-progress"], capsys)
    assert code == 0, err
    png = tmp_path / "generated_seed1_0.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(png) in stdout
    pixels = matplotlib.image.imread(png)  # decodes the whole image
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100


def _audio_available() -> bool:
    from midi_event_transformer.evaluation.audio import AudioRenderingError, find_fluidsynth, find_soundfont

    try:
        find_fluidsynth()
        find_soundfont()
    except AudioRenderingError:
        return False
    return True


@pytest.mark.skipif(not _audio_available(), reason="fluidsynth or a General MIDI soundfont is not installed "
                                                   "(apt-get install fluidsynth fluid-soundfont-gm)")
def test_audio(model_dir, tmp_path, capsys):
    code, _, err = run(["generate", "--model", str(model_dir), "--instruments", "Acoustic Grand Piano", "--events",
                        "3", "--seed", "2", "--output-dir", str(tmp_path), "--audio", "--no-progress"], capsys)
    assert code == 0, err
    with wave.open(str(tmp_path / "generated_seed2_0.wav")) as audio:
        assert audio.getnframes() > 0 and audio.getnchannels() == 2


def test_audio_without_fluidsynth_is_a_clear_error_before_generating(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MIDI_EVENT_TRANSFORMER_FLUIDSYNTH", "no-such-fluidsynth-program")
    code, _, err = run(["generate", "--model", str(model_dir), "--events", "8", "--output-dir", str(tmp_path / "o"),
                        "--audio"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "fluidsynth program is not installed" in err and "apt-get install" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("argv", "problem"), [
    (["--instruments", "Viloin"], "unknown instrument 'Viloin'; did you mean 'Violin'?"),
    (["--instruments", "Piano,,Violin"], "empty instrument name"),
    (["--drum-kit", "Disco"], "unknown drum kit 'Disco'"),
    (["--time-signature", "3/5"], "denominator must be a power of two, got 5 in 3/5"),
    (["--time-signature", "waltz"], "time signature must look like '3/4'"),
    (["--key", "H minor"], "unknown key 'H minor'"),
    (["--bpm", "0"], "bpm must be in 1..383"),
    (["--bpm", "fast"], "argument --bpm: invalid float value: 'fast'"),
    (["--events", "0"], "events must be >= 1"),
    (["--temperature", "0"], "temperature must be > 0"),
    (["--top-p", "2"], "top_p must be in (0, 1]"),
    (["--num-samples", "0"], "num_samples must be >= 1"),
    (["--dtype", "int4"], "argument --dtype: invalid choice: 'int4'"),
    (["--dtype", "int8", "--device", "cuda"], "dtype int8 runs on the CPU only (dynamic quantization), not on cuda"),
    (["--device", "gpu"], "unknown device 'gpu'"),
    (["--prompt", "{song}", "--bpm", "90"], "a prompt cannot be combined with bpm"),
    (["--prompt-events", "8"], "prompt_events is only used with a prompt"),
    (["--prompt", "{text}"], "not a MIDI file"),
    (["--prompt", "{tmp}/missing.mid"], "cannot read file"),
    (["--model", "{tmp}"], "is not a model directory (it has no config.json)"),
    (["--model", "{text}"], "is a file, not a model directory"),
    (["--output-dir", "{text}"], "is a file, not a directory"),
    (["--colour", "blue"], "unrecognized arguments: --colour blue"),
])
def test_bad_arguments_give_one_line_errors(argv, problem, model_dir, song, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not a midi file")
    argv = [a.format(song=song, text=text, tmp=tmp_path) for a in argv]
    if "--model" not in argv:
        argv = ["--model", str(model_dir), *argv]
    if "--output-dir" not in argv:
        argv = ["--output-dir", str(tmp_path / "out"), *argv]
    code, stdout, err = run(["generate", "--events", "4", "--no-progress", *argv], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("midi-event-transformer") and "error:" in err, err
    assert problem in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and stdout == ""


def test_missing_embedded_model_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    import midi_event_transformer

    monkeypatch.setattr(midi_event_transformer, "DEFAULT_MODEL", str(tmp_path / "default_model"))
    code, _, err = run(["generate", "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "embedded default model is missing" in err


def test_generate_help(capsys):
    code, stdout, _ = run(["generate", "--help"], capsys)
    assert code == 0
    for option in ("--model", "--prompt", "--prompt-events", "--instruments", "--drum-kit", "--bpm",
                   "--time-signature", "--key", "--events", "--temperature", "--top-p", "--top-k", "--seed",
                   "--num-samples", "--no-control-change", "--output-dir", "--piano-roll", "--audio", "--device",
                   "--dtype"):
        assert option in stdout


def test_convert_reference_checkpoint(shared_dir, tmp_path, capsys):
    reference = shared_dir / "reference" / "skytnt_small" / "model"
    code, stdout, err = run(["convert", str(reference), str(tmp_path / "ours")], capsys)
    assert code == 0, err
    assert (tmp_path / "ours" / "model.safetensors").is_file() and str(tmp_path / "ours") in stdout
    # the converted directory and the reference directory generate the same files
    for name, model in (("ours", tmp_path / "ours"), ("reference", reference)):
        assert run(["generate", "--model", str(model), "--events", "8", "--seed", "4", "--no-progress",
                    "--output-dir", str(tmp_path / f"from_{name}")], capsys)[0] == 0
    assert ((tmp_path / "from_ours" / "generated_seed4_0.mid").read_bytes()
            == (tmp_path / "from_reference" / "generated_seed4_0.mid").read_bytes())


def test_convert_errors(tmp_path, capsys):
    code, _, err = run(["convert", str(tmp_path / "absent"), str(tmp_path / "out")], capsys)
    assert code == 2 and err.count("\n") == 1 and "is not a directory" in err
    code, _, err = run(["convert", str(tmp_path), str(tmp_path / "out")], capsys)
    assert code == 2 and err.count("\n") == 1 and "has no config.json" in err
    code, _, err = run(["convert", "--lora", str(tmp_path), str(tmp_path / "out")], capsys)
    assert code == 2 and err.count("\n") == 1 and "has no adapter_config.json" in err


def console_script() -> str | None:
    """The installed ``midi-event-transformer`` of this interpreter's environment (not another one on PATH)."""
    return shutil.which("midi-event-transformer", path=str(Path(sys.executable).parent))


def test_console_script_runs_generate(model_dir, tmp_path):
    """One real process: the entry point, the progress bar on stderr, a file that decodes."""
    script = console_script()
    command = [script] if script else [sys.executable, "-m", "midi_event_transformer.apps.cli"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([*command, "generate", "--model", str(model_dir), "--events", "8", "--seed", "9",
                           "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "8/8" in done.stderr and "event/s" in done.stderr
    assert reloaded(tmp_path / "generated_seed9_0.mid").tracks
    failed = subprocess.run([*command, "generate", "--model", str(model_dir), "--key", "Q major"], capture_output=True,
                            text=True, timeout=300, env=env)
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1 and "unknown key 'Q major'" in failed.stderr


needs_embedded_model = pytest.mark.skipif(
    not (Path(DEFAULT_MODEL) / "config.json").is_file(),
    reason="the embedded model (midi_event_transformer/default_model/) is not committed yet")


@needs_embedded_model
def test_embedded_model_in_process(tmp_path, capsys):
    code, _, err = run(["generate", "--output-dir", str(tmp_path), "--events", "16", "--seed", "0",
                        "--instruments", "Acoustic Grand Piano", "--bpm", "110", "--piano-roll"], capsys)
    assert code == 0, err
    midi = reloaded(tmp_path / "generated_seed0_0.mid")
    assert (0, 0) in programs(midi) and messages(midi, "note_on")
    assert (tmp_path / "generated_seed0_0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_embedded_model
@pytest.mark.slow
def test_readme_main_command(tmp_path):
    """`midi-event-transformer generate --output-dir out`, exactly, offline (the default 512 events)."""
    script = console_script()
    command = [script] if script else [sys.executable, "-m", "midi_event_transformer.apps.cli"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run([*command, "generate", "--output-dir", "out"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr
    (path,) = (tmp_path / "out").glob("generated_seed*_0.mid")
    assert messages(reloaded(path), "note_on")
