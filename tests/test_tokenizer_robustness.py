"""Robustness: damaged input raises InvalidMidiError (never a bare parser error) and never hangs;
any id sequence decodes to a file that saves and reloads with mido."""

from __future__ import annotations

import io
import logging
import signal
from pathlib import Path

import mido
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midi_event_transformer import InvalidMidiError, MidiEventTransformerTokenizer
from midi_event_transformer.vocabulary import VOCAB_SIZE

TOKENIZER = MidiEventTransformerTokenizer()


def _small_midi() -> bytes:
    """A two-track file with notes, a running-status run, tempo, signatures, a sysex and a controller."""
    midi = mido.MidiFile(type=1, ticks_per_beat=96)
    midi.tracks.append(mido.MidiTrack([
        mido.MetaMessage("set_tempo", tempo=400000),
        mido.MetaMessage("time_signature", numerator=4, denominator=4),
        mido.MetaMessage("key_signature", key="G"),
    ]))
    notes = mido.MidiTrack([mido.Message("program_change", program=40),
                            mido.Message("sysex", data=[0x7E, 0x7F, 0x09, 0x01]),
                            mido.Message("control_change", control=7, value=100)])
    for i, pitch in enumerate([60, 62, 64, 65, 67]):
        notes.append(mido.Message("note_on", note=pitch, velocity=64 + i, time=48))
        notes.append(mido.Message("note_on", note=pitch, velocity=0, time=48))
    midi.tracks.append(notes)
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


SMALL_MIDI = _small_midi()


class _Timeout(Exception):
    pass


def _encode_with_deadline(path: Path, seconds: int = 10):
    def on_alarm(signum, frame):
        raise _Timeout(f"{path} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        return TOKENIZER.encode_midi(path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_every_fixture_encodes_or_raises_invalid_midi_error(shared_dir):
    """Every file under fixtures/ (READMEs, a .syx and 65535-track headers included), 10 s each at most."""
    files = sorted(p for p in (shared_dir / "midi" / "fixtures").rglob("*") if p.is_file())
    assert len(files) > 400
    encoded = refused = 0
    for path in files:
        try:
            ids = _encode_with_deadline(path)
        except InvalidMidiError as err:
            assert str(path) in str(err)
            refused += 1
            continue
        assert ids.ndim == 2 and ids.shape[1] == 8 and ids.dtype == np.int64
        assert (ids >= 0).all() and (ids < VOCAB_SIZE).all()
        encoded += 1
    assert encoded > 450 and refused >= 13


@pytest.mark.parametrize(("data", "problem"), [
    (b"", "empty file"),
    (b"RIFF\x00\x00", "not a MIDI file"),
    (b"MThd\x00\x00", "bad header"),
    (b"MThd\x00\x00\x00\x07\x00\x01\x00\x01\x00\x60\x00", "bad header"),
    (b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\xe7\x28", "SMPTE"),
    (b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x00", "ticks per beat is 0"),
    (SMALL_MIDI[:-3], "truncated chunk"),
    (b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk\x00\x00\x00\x02\x00\x40", "running status"),
    (b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk\x00\x00\x00\x03\x00\x90\x40", "truncated"),
    (b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk\x00\x00\x00\x04\x00\x90\x80\x40", "data byte"),
    (b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk\x00\x00\x00\x02\x00\xf4", "undefined status"),
    (b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk\x00\x00\x00\x06\x00\xff\x51\x02\x07\xa1", "set_tempo"),
])
def test_damaged_bytes_raise_a_clear_error(data, problem):
    with pytest.raises(InvalidMidiError, match=problem) as caught:
        TOKENIZER.encode_midi(data)
    assert f"<{len(data)} bytes>" in str(caught.value)


def test_header_with_65535_tracks_and_no_chunks_is_empty():
    data = b"MThd\x00\x00\x00\x06\x00\x01\xff\xff\x01\xe0"
    assert TOKENIZER.encode_midi(data).tolist() == [[1] + [0] * 7, [2] + [0] * 7]


def test_missing_file_and_wrong_types():
    with pytest.raises(InvalidMidiError, match="cannot read file"):
        TOKENIZER.encode_midi("/nonexistent/song.mid")
    with pytest.raises(TypeError, match="MIDI source"):
        TOKENIZER.encode_midi(12)
    with pytest.raises(TypeError, match="binary mode"):
        TOKENIZER.encode_midi(io.StringIO("MThd"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_midi_bytes_raise_only_invalid_midi_error(data):
    raw = bytearray(SMALL_MIDI)
    for _ in range(data.draw(st.integers(1, 8), label="mutations")):
        kind = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]), label="kind")
        position = data.draw(st.integers(0, max(0, len(raw) - 1)), label="position")
        if kind == "flip" and raw:
            raw[position] = data.draw(st.integers(0, 255), label="byte")
        elif kind == "delete" and raw:
            del raw[position]
        elif kind == "insert":
            raw.insert(position, data.draw(st.integers(0, 255), label="byte"))
        else:
            del raw[position:]
    try:
        ids = TOKENIZER.encode_midi(bytes(raw))
    except InvalidMidiError:
        return
    assert ids.ndim == 2 and ids.shape[1] == 8
    assert (ids >= 0).all() and (ids < VOCAB_SIZE).all()


def _assert_saves_and_reloads(midi: mido.MidiFile) -> bytes:
    buffer = io.BytesIO()
    midi.save(file=buffer)
    mido.MidiFile(file=io.BytesIO(buffer.getvalue()))
    return buffer.getvalue()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(2 ** 40), 2 ** 40) | st.integers(0, VOCAB_SIZE - 1), max_size=400))
def test_random_ids_decode_save_and_reload(ids):
    midi = TOKENIZER.decode_midi(ids)
    data = _assert_saves_and_reloads(midi)
    TOKENIZER.encode_midi(data)  # and our own reader accepts what we write


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(0, VOCAB_SIZE - 1), min_size=8, max_size=8), max_size=120))
def test_random_rows_with_valid_types_decode(rows):
    """Rows with a valid event type in front and random ids behind (the hard case for decoding)."""
    array = np.array(rows, dtype=np.int64).reshape(-1, 8)
    if len(array):
        array[:, 0] = 3 + array[:, 0] % 6
    _assert_saves_and_reloads(TOKENIZER.decode_midi(array))


def test_garbage_rows_are_counted_in_one_warning(caplog):
    ids = np.array([[1] + [0] * 7, [99] * 8, [3, 9, 137, 0, 0, 0, 0, 0], [2] + [0] * 7])
    with caplog.at_level(logging.WARNING, logger="midi_event_transformer"):
        midi = TOKENIZER.decode_midi(ids)
    warnings = [r for r in caplog.records if "invalid" in r.getMessage()]
    assert len(warnings) == 1 and "2 invalid" in warnings[0].getMessage()
    assert len(midi.tracks) == 0


def test_generated_style_rows_decode_to_the_expected_notes():
    """A valid row sequence (as a model would write it) decodes to exactly its notes."""
    ids = TOKENIZER.encode_midi(SMALL_MIDI)
    midi = TOKENIZER.decode_midi(ids)
    pitches = [m.note for t in midi.tracks for m in t if m.type == "note_on" and m.velocity > 0]
    assert pitches == [60, 62, 64, 65, 67]
