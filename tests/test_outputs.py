"""``generation.outputs``: the one writer of generated samples."""

from __future__ import annotations

import mido
import pytest
from generation_helpers import midi_bytes, reloaded

from midi_event_transformer.generation.outputs import sample_file_name, save_samples


def piece(pitch: int) -> mido.MidiFile:
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    midi.tracks.append(mido.MidiTrack([mido.Message("note_on", note=pitch, velocity=80),
                                       mido.Message("note_off", note=pitch, time=480)]))
    return midi


def test_samples_are_named_after_their_seed_or_given_names(tmp_path):
    midis = [piece(60), piece(64)]
    paths = save_samples(midis, tmp_path / "new" / "folder", seed=5)
    assert [p.name for p in paths] == [sample_file_name(5, 0), sample_file_name(5, 1)] == [
        "generated_seed5_0.mid", "generated_seed5_1.mid"]
    assert [midi_bytes(reloaded(p)) for p in paths] == [midi_bytes(m) for m in midis]
    (path,) = save_samples(midis[:1], tmp_path, names=["step_000010.mid"])
    assert path == tmp_path / "step_000010.mid" and path.is_file()


def test_seed_or_names_exactly_one(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        save_samples([piece(60)], tmp_path)
    with pytest.raises(ValueError, match="exactly one"):
        save_samples([piece(60)], tmp_path, seed=1, names=["a.mid"])
    with pytest.raises(ValueError, match="2 names for 1 samples"):
        save_samples([piece(60)], tmp_path, names=["a.mid", "b.mid"])
