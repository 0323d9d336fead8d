"""The bytes of ``generate_midi(...)[i]`` saved with mido, pinned for fp32 CPU requests on the shipped model.

The digests were taken at e40b638, before the package was laid out in subpackages (issue 26): a change that moves
them changes what users get for the same seed, and must say so (update the digest with the reason beside it).
"""

from __future__ import annotations

import hashlib

import pytest
from generation_helpers import midi_bytes, multitrack_song

from midi_event_transformer import generate_midi

CASES = {
    "new_piece": (dict(instruments=["Acoustic Grand Piano", "Violin"], bpm=96, key="D minor", events=64, seed=0,
                       num_samples=2), ["eb9b269883737a2c", "21f2f9a9e9588897"]),
    "continuation": (dict(prompt=multitrack_song(), prompt_events=40, events=64, seed=1), ["915ec5858bdd8295"]),
    "track_edit": (dict(prompt=multitrack_song(), add_track="Violin", events=48, seed=2), ["a75d5549246ed100"]),
    "seconds": (dict(instruments=["Acoustic Grand Piano"], seconds=6.0, seed=3), ["268596985b775074"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_saved_bytes_are_pinned(name):
    request, digests = CASES[name]
    files = generate_midi(**request, device="cpu", dtype="float32", progress=False)
    assert [hashlib.sha256(midi_bytes(f)).hexdigest()[:16] for f in files] == digests
