"""Audio rendering with the fluidsynth program (skipped where it or a General MIDI soundfont is missing)."""

from __future__ import annotations

import wave

import mido
import numpy as np
import pytest

from midi_event_transformer.evaluation.audio import (
    AudioRenderingError,
    audio_problem,
    find_soundfont,
    render_audio,
)


def one_second_chord(path):
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000)])
    track += [mido.Message("note_on", note=p, velocity=100, time=0) for p in (60, 64, 67)]
    track += [mido.Message("note_off", note=p, velocity=0, time=960 if i == 0 else 0) for i, p in enumerate((60, 64, 67))]
    midi.tracks.append(track)
    midi.save(path)
    return path


@pytest.mark.skipif(audio_problem() is not None, reason=f"no audio rendering here: {audio_problem()}")
def test_renders_a_wav(tmp_path):
    path = render_audio(one_second_chord(tmp_path / "chord.mid"), tmp_path / "out" / "chord.wav", sample_rate=22050)
    with wave.open(str(path)) as wav:
        assert wav.getframerate() == 22050 and wav.getnchannels() == 2 and wav.getsampwidth() == 2
        seconds = wav.getnframes() / wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    assert 0.9 < seconds < 4.0  # one second of notes plus the release tail
    assert np.abs(samples).max() > 1000  # not silence


def test_missing_program_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("MIDI_EVENT_TRANSFORMER_FLUIDSYNTH", "no-such-fluidsynth-program")
    with pytest.raises(AudioRenderingError, match="apt-get install fluidsynth fluid-soundfont-gm"):
        render_audio(one_second_chord(tmp_path / "c.mid"), tmp_path / "c.wav")


def test_missing_soundfont(tmp_path, monkeypatch):
    monkeypatch.setenv("MIDI_EVENT_TRANSFORMER_SOUNDFONT", str(tmp_path / "none.sf2"))
    with pytest.raises(AudioRenderingError, match="none.sf2"):
        find_soundfont()
    monkeypatch.delenv("MIDI_EVENT_TRANSFORMER_SOUNDFONT")
    monkeypatch.setattr("midi_event_transformer.evaluation.audio.SOUNDFONT_PATHS", (str(tmp_path / "nothing.sf2"),))
    with pytest.raises(AudioRenderingError, match="fluid-soundfont-gm"):
        find_soundfont()


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mid"):
        render_audio(tmp_path / "missing.mid", tmp_path / "x.wav")
    with pytest.raises(ValueError, match="sample_rate"):
        render_audio(tmp_path / "missing.mid", tmp_path / "x.wav", sample_rate=1000)
    with pytest.raises(ValueError, match="gain"):
        render_audio(tmp_path / "missing.mid", tmp_path / "x.wav", gain=-1)
