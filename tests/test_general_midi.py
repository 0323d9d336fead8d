"""General MIDI names, drum kits, key and time signature parsing."""

from __future__ import annotations

import pytest

from midi_event_transformer.generation.general_midi import (
    DRUM_KITS,
    INSTRUMENT_NAMES,
    drum_kit_program,
    instrument_name,
    instrument_program,
    key_signature_name,
    parse_instruments,
    parse_key_signature,
    parse_time_signature,
)


def test_instrument_table_is_general_midi():
    assert len(INSTRUMENT_NAMES) == 128 and len(set(INSTRUMENT_NAMES)) == 128
    assert INSTRUMENT_NAMES[0] == "Acoustic Grand Piano"
    assert INSTRUMENT_NAMES[40] == "Violin"
    assert INSTRUMENT_NAMES[127] == "Gunshot"


@pytest.mark.parametrize("name, program", [
    ("Acoustic Grand Piano", 0), ("acoustic grand piano", 0), ("ACOUSTIC_GRAND-PIANO", 0), ("piano", 0),
    ("Acoustic Grand", 0),  # the reference app's (MIDI.py) name
    ("Acoustic Guitar (nylon)", 24), ("Acoustic Guitar(nylon)", 24), ("acoustic guitar nylon", 24),
    ("Electric Bass(pick)", 34), ("Lead 8 (bass+lead)", 87), ("Skakuhachi", 77), ("Shakuhachi", 77),
    ("violin", 40), ("  Cello ", 42), ("SynthStrings 1", 50), ("Synth Strings 1", 50), ("FX 8 (sci-fi)", 103),
    (0, 0), (127, 127), ("33", 33),
])
def test_instrument_program(name, program):
    assert instrument_program(name) == program


def test_every_name_round_trips():
    for program, name in enumerate(INSTRUMENT_NAMES):
        assert instrument_program(name) == program
        assert instrument_name(program) == name


def test_unknown_instrument_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown instrument 'violn'; did you mean 'Violin'"):
        instrument_program("violn")
    with pytest.raises(ValueError, match="unknown instrument .xyzzyqw.") as info:
        instrument_program("xyzzyqw")
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize("bad, error", [(128, ValueError), (-1, ValueError), ("200", ValueError),
                                        (True, TypeError), (1.5, TypeError), (None, TypeError)])
def test_bad_instrument_values(bad, error):
    with pytest.raises(error):
        instrument_program(bad)


def test_parse_instruments():
    assert parse_instruments("Piano, Violin,33") == [0, 40, 33]
    assert parse_instruments(["Cello", 0, "0"]) == [42, 0, 0]
    assert parse_instruments(5) == [5]
    with pytest.raises(ValueError, match="empty instrument name"):
        parse_instruments("Piano,,Violin")
    with pytest.raises(TypeError):
        parse_instruments({"piano"})


@pytest.mark.parametrize("name, program", [
    ("Standard", 0), ("room", 8), ("POWER", 16), ("Electric", 24), ("TR-808", 25), ("tr 808", 25), ("808", 25),
    ("Jazz", 32), ("jazz kit", 32), ("Brush", 40), ("Blush", 40), ("Orchestra", 48), ("SFX", 56), (48, 48),
])
def test_drum_kit_program(name, program):
    assert drum_kit_program(name) == program


def test_drum_kits_table():
    assert DRUM_KITS == {0: "Standard", 8: "Room", 16: "Power", 24: "Electric", 25: "TR-808", 32: "Jazz",
                         40: "Brush", 48: "Orchestra", 56: "SFX"}
    with pytest.raises(ValueError, match=r"unknown drum kit 'jaz'; did you mean 'Jazz'\?"):
        drum_kit_program("jaz")
    with pytest.raises(ValueError, match="0-127"):
        drum_kit_program(300)


@pytest.mark.parametrize("key, expected", [
    ("C major", (0, 0)), ("C", (0, 0)), ("A minor", (0, 1)), ("Am", (0, 1)), ("a min", (0, 1)),
    ("D minor", (-1, 1)), ("Dm", (-1, 1)), ("d minor", (-1, 1)), ("DM", (2, 0)), ("D", (2, 0)),
    ("F# major", (6, 0)), ("F♯", (6, 0)), ("F sharp major", (6, 0)), ("F#m", (3, 1)),
    ("Bb major", (-2, 0)), ("B♭", (-2, 0)), ("B flat", (-2, 0)), ("bb", (-2, 0)), ("Bbm", (-5, 1)),
    ("C# major", (7, 0)), ("Cb major", (-7, 0)), ("A# minor", (7, 1)), ("Ab minor", (-7, 1)),
    ("Eb", (-3, 0)), ("G#m", (5, 1)), ("E minor", (1, 1)),
    ("D# major", (-3, 0)),  # 9 sharps -> enharmonic E-flat major
    ("Fb major", (4, 0)),  # 8 flats -> E major
    ((-1, 1), (-1, 1)),
])
def test_parse_key_signature(key, expected):
    assert parse_key_signature(key) == expected


def test_key_names_round_trip():
    for sf in range(-7, 8):
        for mi in (0, 1):
            assert parse_key_signature(key_signature_name(sf, mi)) == (sf, mi)
    assert key_signature_name(-1, 1) == "D minor"
    assert key_signature_name(6, 0) == "F# major"


@pytest.mark.parametrize("bad, error", [("H major", ValueError), ("D dorian", ValueError), ("", ValueError),
                                        ((8, 0), ValueError), ((0, 2), ValueError), ((0,), TypeError),
                                        (5, TypeError)])
def test_bad_key_signatures(bad, error):
    with pytest.raises(error):
        parse_key_signature(bad)


@pytest.mark.parametrize("text, expected", [("4/4", (4, 4)), ("3/4", (3, 4)), (" 6 / 8 ", (6, 8)),
                                            ("2/2", (2, 2)), ("16/16", (16, 16)), ("1/4", (1, 4)), ((7, 8), (7, 8))])
def test_parse_time_signature(text, expected):
    assert parse_time_signature(text) == expected


@pytest.mark.parametrize("bad, message", [
    ("3/5", "power of two"), ("3/0", "power of two"), ("4/1", r"one of \(2, 4, 8, 16\)"), ("4/32", "one of"),
    ("0/4", "numerator"), ("17/4", "numerator"), ("three/four", "look like"), ("3-4", "look like"),
])
def test_bad_time_signatures(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_time_signature(bad)
    with pytest.raises(TypeError):
        parse_time_signature(3.4)
