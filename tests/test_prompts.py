"""Prompt builders: exact rows (as the reference app builds them), the controls that go with them, MIDI prompts."""

from __future__ import annotations

import io

import mido
import numpy as np
import pytest

from midi_event_transformer.generation.controls import (
    DisableControlChangeLogitsProcessor,
    DisablePatchChangeLogitsProcessor,
    RestrictChannelsLogitsProcessor,
)
from midi_event_transformer.generation.prompts import (
    build_prompt,
    event_row,
    instrument_channels,
    left_pad_prompts,
    prompt_from_midi,
    prompt_logits_processors,
    validate_bpm,
)
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer

# id offsets written out independently of vocabulary.py
TIME1, TIME2, TRACK, CHANNEL, PATCH, BPM, NN, DD, SF, MI = 9, 137, 2201, 2329, 2601, 2985, 3369, 3385, 3389, 3404
BOS_ROW = [1, 0, 0, 0, 0, 0, 0, 0]


def test_empty_prompt_is_bos():
    prompt = build_prompt()
    assert prompt.dtype == np.int64 and prompt.tolist() == [BOS_ROW]


def test_full_prompt_exact_rows():
    prompt = build_prompt(instruments=["Acoustic Grand Piano", "Violin"], drum_kit="Jazz", bpm=120,
                          time_signature="3/4", key_signature="D minor")
    assert prompt.tolist() == [
        BOS_ROW,
        [7, TIME1, TIME2, TRACK, NN + 2, DD + 1, 0, 0],  # time_signature 3/4: nn-1 = 2, log2(4)-1 = 1
        [8, TIME1, TIME2, TRACK, SF + 6, MI + 1, 0, 0],  # D minor: sf -1 (+7), minor
        [6, TIME1, TIME2, TRACK, BPM + 120, 0, 0, 0],
        [4, TIME1, TIME2, TRACK + 1, CHANNEL + 0, PATCH + 0, 0, 0],
        [4, TIME1, TIME2, TRACK + 2, CHANNEL + 1, PATCH + 40, 0, 0],
        [4, TIME1, TIME2, TRACK + 3, CHANNEL + 9, PATCH + 32, 0, 0],  # drums last, channel 9
    ]


@pytest.mark.parametrize("time_signature, nn, dd", [("4/4", 3, 1), ("6/8", 5, 2), ("2/2", 1, 0), ("12/8", 11, 2),
                                                    ("5/16", 4, 3)])
def test_time_signature_values(time_signature, nn, dd):
    assert build_prompt(time_signature=time_signature)[1].tolist() == [7, TIME1, TIME2, TRACK, NN + nn, DD + dd, 0, 0]


@pytest.mark.parametrize("key, sf, mi", [("C", 0, 0), ("Cb", -7, 0), ("C#", 7, 0), ("A# minor", 7, 1),
                                         ("F# major", 6, 0), ("Bb major", -2, 0)])
def test_key_signature_values(key, sf, mi):
    assert build_prompt(key_signature=key)[1].tolist() == [8, TIME1, TIME2, TRACK, SF + sf + 7, MI + mi, 0, 0]


def test_instruments_skip_the_drum_channel():
    channels = instrument_channels(["Piano"] * 15, "Standard")
    assert list(channels) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 9]
    prompt = build_prompt(instruments=list(range(10)))
    assert prompt[1:, 4].tolist() == [CHANNEL + c for c in (0, 1, 2, 3, 4, 5, 6, 7, 8, 10)]
    assert prompt[1:, 3].tolist() == [TRACK + t for t in range(1, 11)]
    assert prompt[1:, 5].tolist() == [PATCH + p for p in range(10)]
    with pytest.raises(ValueError, match="at most 15 instruments"):
        build_prompt(instruments=["Piano"] * 16)


def test_drum_kit_alone_and_comma_separated_instruments():
    assert build_prompt(drum_kit="TR-808").tolist() == [BOS_ROW, [4, TIME1, TIME2, TRACK + 1, CHANNEL + 9, PATCH + 25,
                                                                  0, 0]]
    assert build_prompt(instruments="Cello, 73")[1:, 5].tolist() == [PATCH + 42, PATCH + 73]


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(bpm=0), ValueError, "bpm must be in 1..383"), (dict(bpm=384), ValueError, "1..383"),
    (dict(bpm="120"), TypeError, "bpm must be a number"), (dict(time_signature="3/5"), ValueError, "power of two"),
    (dict(key_signature="H"), ValueError, "unknown key"), (dict(instruments=["violn"]), ValueError, "Violin"),
    (dict(drum_kit="Jaz"), ValueError, "Jazz"),
])
def test_bad_prompt_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        build_prompt(**kwargs)


def test_bpm_rounding():
    assert validate_bpm(120.4) == 120 and validate_bpm(np.int64(90)) == 90


def test_event_row():
    assert event_row("note", time1=1, time2=2, track=3, channel=4, pitch=60, velocity=100, duration=8).tolist() == [
        3, TIME1 + 1, TIME2 + 2, TRACK + 3, CHANNEL + 4, 2345 + 60, 2473 + 100, 153 + 8]
    with pytest.raises(ValueError, match="exactly the parameters"):
        event_row("set_tempo", time1=0, time2=0, track=0)
    with pytest.raises(ValueError, match="outside"):
        event_row("set_tempo", time1=0, time2=0, track=0, bpm=400)


def test_prompt_logits_processors_as_the_reference_app():
    assert prompt_logits_processors() == []
    assert prompt_logits_processors(drum_kit="Standard") == []  # drums alone: nothing restricted
    processors = prompt_logits_processors(["Piano", "Violin"], drum_kit="Jazz", allow_control_change=False)
    assert [type(p) for p in processors] == [DisablePatchChangeLogitsProcessor, RestrictChannelsLogitsProcessor,
                                             DisableControlChangeLogitsProcessor]
    assert processors[1].allowed_channels == (0, 1, 9)
    assert prompt_logits_processors(["Piano"])[1].allowed_channels == (0,)


def _small_midi() -> bytes:
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    track.append(mido.Message("program_change", program=40, channel=0, time=0))
    for i in range(6):
        track.append(mido.Message("note_on", note=60 + i, velocity=90, channel=0, time=0))
        track.append(mido.Message("note_off", note=60 + i, velocity=0, channel=0, time=240))
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def test_prompt_from_midi_takes_the_first_rows_without_eos():
    tokenizer = MidiEventTransformerTokenizer()
    data = _small_midi()
    encoded = tokenizer.encode_midi(data)
    assert encoded[-1, 0] == 2
    whole = prompt_from_midi(data, tokenizer=tokenizer)
    assert np.array_equal(whole, encoded[:-1])
    first = prompt_from_midi(data, n_events=4, tokenizer=tokenizer)
    assert np.array_equal(first, encoded[:4]) and first[0, 0] == 1
    assert np.array_equal(prompt_from_midi(encoded, n_events=100), encoded[:-1])  # rows already encoded
    with pytest.raises(ValueError, match="n_events must be >= 1"):
        prompt_from_midi(encoded, n_events=0)
    with pytest.raises(ValueError, match="start with a BOS"):
        prompt_from_midi(encoded[1:])
    with pytest.raises(ValueError, match="shape"):
        prompt_from_midi(np.zeros((3, 7), dtype=np.int64))


def test_left_pad_prompts():
    short, long = build_prompt(), build_prompt(bpm=100, instruments=["Piano"])
    input_ids, attention_mask = left_pad_prompts([short, long])
    assert input_ids.shape == attention_mask.shape == (2, 24)
    assert input_ids[0].tolist() == [0] * 16 + BOS_ROW and attention_mask[0].tolist() == [0] * 16 + [1] * 8
    assert input_ids[1].tolist() == long.reshape(-1).tolist() and attention_mask[1].all()
    with pytest.raises(ValueError, match="no prompts"):
        left_pad_prompts([])


def test_prompt_decodes_to_the_requested_settings():
    tokenizer = MidiEventTransformerTokenizer()
    prompt = build_prompt(instruments=["Violin", "Cello"], drum_kit="Brush", bpm=90, time_signature="6/8",
                          key_signature="F# minor")
    midi = tokenizer.decode_midi(prompt)
    buffer = io.BytesIO()
    midi.save(file=buffer)
    midi = mido.MidiFile(file=io.BytesIO(buffer.getvalue()))
    messages = [m for track in midi.tracks for m in track]
    tempos = [m.tempo for m in messages if m.type == "set_tempo"]
    assert [round(mido.tempo2bpm(t)) for t in tempos] == [90]
    assert [(m.numerator, m.denominator) for m in messages if m.type == "time_signature"] == [(6, 8)]
    assert [m.key for m in messages if m.type == "key_signature"] == ["F#m"]
    assert sorted((m.channel, m.program) for m in messages if m.type == "program_change") == [(0, 40), (1, 42),
                                                                                              (9, 40)]
