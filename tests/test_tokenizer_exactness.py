"""Exactness: our ids equal the public reference's (MIDITokenizerV2 + MIDI.py, optimise_midi=True).

The reference outputs are in ``../shared/reference/v2_tokens.npz`` (int16 (n_events, 8), keys relative
to ``../shared/midi``). Every file is checked: POP909 (818), Bach (368) and the fixtures (494).
"""

from __future__ import annotations

import io
from pathlib import Path

import mido
import numpy as np
import pytest

from midi_event_transformer import InvalidMidiError, MidiEventTransformerTokenizer
from midi_event_transformer.vocabulary import PARAMETER_OFFSETS as OFF

# The reference returns just [BOS, EOS] for corrupt files (it swallows its parser's errors); we raise.
# file -> words the InvalidMidiError message must contain.
EXPECTED_INVALID: dict[str, str] = {
    "fixtures/jazzsoft/midi/test-empty-file.mid": "empty file",
    "fixtures/jazzsoft/midi/test-not-a-midi-file.mid": "not a MIDI file",
    "fixtures/nfroidure/sounds/MIDIBadHeaderChunk.mid": "not a MIDI file",  # starts with 'MThD'
    "fixtures/nfroidure/sounds/MIDIBadHeaderLength.mid": "bad header",
    "fixtures/jazzsoft/midi/test-corrupt-file-missing-byte.mid": "truncated chunk",
    "fixtures/nfroidure/sounds/MIDIBadTrackLength.mid": "truncated chunk",
    "fixtures/jazzsoft/midi/test-illegal-message-all.mid": "undefined status byte",
    "fixtures/jazzsoft/midi/test-illegal-message-f4.mid": "undefined status byte 0xF4",
    "fixtures/jazzsoft/midi/test-illegal-message-f5.mid": "undefined status byte 0xF5",
    "fixtures/jazzsoft/midi/test-illegal-message-f9.mid": "undefined status byte 0xF9",
    "fixtures/jazzsoft/midi/test-illegal-message-fd.mid": "undefined status byte 0xFD",
    # The reference reads these two and tokenizes them; we refuse them, as mido does:
    # a SMPTE division has no beats (MIDI.py reads 0xE0C0 as 57536 ticks per beat) ...
    "fixtures/nfroidure/sounds/MIDIBadHeaderSMTPE.mid": "SMPTE",
    # ... and the only track chunk is spelt 'mTrk' (MIDI.py warns and decodes it anyway).
    "fixtures/nfroidure/sounds/MIDIBadTrackHdr.mid": "no MTrk chunk",
}

# Files mido reads (and we read) where the reference's parser MIDI.py loses the track: it reads the
# one-byte system realtime messages 0xF8/0xFA/0xFB/0xFC/0xFE as if they carried a data byte, runs out
# of step with the track and returns [BOS, EOS]; we (like mido) read them as data-less and tokenize
# the C major scale that follows.
KNOWN_DIFFERENCES: dict[str, str] = {
    f"fixtures/jazzsoft/midi/test-illegal-message-{status}.mid":
        f"MIDI.py reads a data byte after realtime status 0x{status.upper()} and loses the track"
    for status in ("f8", "fa", "fb", "fc", "fe")
}


@pytest.fixture(scope="module")
def reference(shared_dir: Path) -> dict[str, np.ndarray]:
    path = shared_dir / "reference" / "v2_tokens.npz"
    if not path.is_file():
        pytest.skip(f"reference ids not found at {path}")
    with np.load(path) as archive:
        return {key: archive[key].astype(np.int64) for key in archive.files if key != "__rejected__"}


@pytest.fixture(scope="module")
def tokenizer() -> MidiEventTransformerTokenizer:
    return MidiEventTransformerTokenizer()


def _first_difference(got: np.ndarray, want: np.ndarray) -> str:
    rows = min(len(got), len(want))
    differing = np.nonzero((got[:rows] != want[:rows]).any(axis=1))[0]
    first = int(differing[0]) if len(differing) else rows
    return f"shapes {got.shape} vs {want.shape}, first differing row {first}"


@pytest.mark.parametrize("corpus", ["pop909", "bach", "fixtures"])
def test_ids_equal_reference(corpus, reference, tokenizer, shared_dir):
    keys = sorted(k for k in reference if k.startswith(corpus + "/"))
    assert keys, f"no reference entries for {corpus}"
    mismatches, unexpected_errors = [], []
    for key in keys:
        if key in EXPECTED_INVALID or key in KNOWN_DIFFERENCES:
            continue
        try:
            got = tokenizer.encode_midi(shared_dir / "midi" / key)
        except InvalidMidiError as err:
            unexpected_errors.append(f"{key}: {err}")
            continue
        if got.shape != reference[key].shape or not np.array_equal(got, reference[key]):
            mismatches.append(f"{key}: {_first_difference(got, reference[key])}")
    assert not unexpected_errors, unexpected_errors[:10]
    assert not mismatches, f"{len(mismatches)} of {len(keys)} differ: {mismatches[:10]}"


@pytest.mark.parametrize("key", sorted(EXPECTED_INVALID))
def test_corrupt_files_raise_invalid_midi_error(key, reference, tokenizer, shared_dir):
    path = shared_dir / "midi" / key
    with pytest.raises(InvalidMidiError) as caught:
        tokenizer.encode_midi(path)
    message = str(caught.value)
    assert EXPECTED_INVALID[key] in message
    assert str(path) in message  # the message names the source
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("key", sorted(KNOWN_DIFFERENCES))
def test_known_differences_still_differ(key, reference, tokenizer, shared_dir):
    """Keeps the list honest: each file reads fine and really differs from the reference."""
    got = tokenizer.encode_midi(shared_dir / "midi" / key)
    assert reference[key].shape == (2, 8)  # the reference lost the track
    assert len(got) > 2 and (got[1:-1, 0] == 3).any()  # we read its notes


def test_every_reference_entry_is_classified(reference):
    listed = set(EXPECTED_INVALID) | set(KNOWN_DIFFERENCES)
    assert listed <= set(reference)
    empty_in_reference = {k for k, v in reference.items() if v.shape == (2, 8)}
    assert set(EXPECTED_INVALID) - {
        "fixtures/nfroidure/sounds/MIDIBadHeaderSMTPE.mid", "fixtures/nfroidure/sounds/MIDIBadTrackHdr.mid",
    } <= empty_in_reference


@pytest.mark.parametrize("corpus", ["pop909", "bach"])
def test_every_source_kind_gives_the_same_ids(corpus, reference, tokenizer, shared_dir):
    """Paths, bytes, binary file objects and mido.MidiFile objects all tokenize identically."""
    keys = sorted(k for k in reference if k.startswith(corpus + "/"))[::40]
    for key in keys:
        path = shared_dir / "midi" / key
        data = path.read_bytes()
        want = reference[key]
        assert np.array_equal(tokenizer.encode_midi(str(path)), want), key
        assert np.array_equal(tokenizer.encode_midi(data), want), key
        with open(path, "rb") as handle:
            assert np.array_equal(tokenizer.encode_midi(handle), want), key
        assert np.array_equal(tokenizer.encode_midi(mido.MidiFile(file=io.BytesIO(data))), want), key


def _tiny_midi(ticks_per_beat: int = 480) -> bytes:
    midi = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat)
    meta = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000),
                           mido.MetaMessage("time_signature", numerator=3, denominator=4)])
    piano = mido.MidiTrack([
        mido.Message("program_change", channel=0, program=5),
        mido.Message("note_on", channel=0, note=60, velocity=90, time=ticks_per_beat),  # beat 1
        mido.Message("note_on", channel=0, note=64, velocity=80),
        mido.Message("note_off", channel=0, note=60, velocity=0, time=ticks_per_beat // 2),  # 8 steps
        mido.Message("note_on", channel=0, note=64, velocity=0, time=ticks_per_beat // 2),  # 16 steps
    ])
    midi.tracks += [meta, piano]
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def test_hand_computed_ids(tokenizer):
    """A tiny file whose rows are worked out by hand from the vocabulary layout."""
    got = tokenizer.encode_midi(_tiny_midi())

    def row(kind: int, *ids: int) -> list[int]:
        return [kind, *ids] + [0] * (7 - len(ids))

    t1, t2, tr, ch = OFF["time1"], OFF["time2"], OFF["track"], OFF["channel"]
    want = np.array([
        row(1),
        row(7, t1 + 0, t2 + 0, tr + 0, OFF["nn"] + 2, OFF["dd"] + 1),  # 3/4: nn-1, log2(4)-1
        row(6, t1 + 0, t2 + 0, tr + 0, OFF["bpm"] + 120),
        row(4, t1 + 0, t2 + 0, tr + 1, ch + 0, OFF["patch"] + 5),
        # C4 then E4 at beat 1: notes starting together are listed in note-off order
        row(3, t1 + 1, t2 + 0, tr + 1, ch + 0, OFF["pitch"] + 60, OFF["velocity"] + 90, OFF["duration"] + 8),
        row(3, t1 + 0, t2 + 0, tr + 1, ch + 0, OFF["pitch"] + 64, OFF["velocity"] + 80, OFF["duration"] + 16),
        row(2),
    ])
    # (C-E has no detectable key: 2 pitch classes give no semitone pair, so no key signature is added)
    assert np.array_equal(got, want), got
    assert got.dtype == np.int64


def test_ticks_per_beat_is_respected(tokenizer):
    assert np.array_equal(tokenizer.encode_midi(_tiny_midi(96)), tokenizer.encode_midi(_tiny_midi(480)))
