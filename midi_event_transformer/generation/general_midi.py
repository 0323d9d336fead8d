"""General MIDI names: instruments, drum kits, key signatures and time signatures.

Lookups used by the prompt builders and the command line:

* :func:`instrument_program` -- a General MIDI instrument name (case, spacing and punctuation do not matter;
  the public reference app's short names such as ``"Acoustic Grand"`` also work) or a 0-based program number
  (0 = Acoustic Grand Piano .. 127 = Gunshot) -> program number;
* :func:`drum_kit_program` -- a drum kit name (Standard, Room, Power, Electric, TR-808, Jazz, Brush,
  Orchestra, SFX) or a program number -> the program played on the drum channel (9);
* :func:`track_instrument` -- what ``add_track`` names: an instrument, a drum kit or ``"drums"`` ->
  ``(program, is_drum_kit)``;
* :func:`parse_key_signature` -- ``"D minor"``, ``"F# major"``, ``"Bb"``, ``"C#m"`` -> ``(sf, mi)`` as in a MIDI
  key signature (sharps > 0, flats < 0; mi 1 = minor). The tokenizer stores ``sf + 7`` and ``mi``;
* :func:`parse_time_signature` -- ``"3/4"`` -> ``(3, 4)``; the tokenizer stores ``numerator - 1`` and
  ``log2(denominator) - 1``, so numerators 1..16 and denominators 2, 4, 8, 16 are representable.

Unknown names raise ``ValueError`` naming the input and suggesting close matches.
"""

from __future__ import annotations

import difflib
import re
import unicodedata

from ..vocabulary import DRUM_CHANNEL  # re-exported: the channel the drum kits play on

#: The 128 General MIDI (level 1) instrument names, indexed by 0-based program number.
INSTRUMENT_NAMES: tuple[str, ...] = (
    "Acoustic Grand Piano", "Bright Acoustic Piano", "Electric Grand Piano", "Honky-tonk Piano",
    "Electric Piano 1", "Electric Piano 2", "Harpsichord", "Clavi",
    "Celesta", "Glockenspiel", "Music Box", "Vibraphone", "Marimba", "Xylophone", "Tubular Bells", "Dulcimer",
    "Drawbar Organ", "Percussive Organ", "Rock Organ", "Church Organ", "Reed Organ", "Accordion", "Harmonica",
    "Tango Accordion",
    "Acoustic Guitar (nylon)", "Acoustic Guitar (steel)", "Electric Guitar (jazz)", "Electric Guitar (clean)",
    "Electric Guitar (muted)", "Overdriven Guitar", "Distortion Guitar", "Guitar Harmonics",
    "Acoustic Bass", "Electric Bass (finger)", "Electric Bass (pick)", "Fretless Bass", "Slap Bass 1",
    "Slap Bass 2", "Synth Bass 1", "Synth Bass 2",
    "Violin", "Viola", "Cello", "Contrabass", "Tremolo Strings", "Pizzicato Strings", "Orchestral Harp", "Timpani",
    "String Ensemble 1", "String Ensemble 2", "SynthStrings 1", "SynthStrings 2", "Choir Aahs", "Voice Oohs",
    "Synth Voice", "Orchestra Hit",
    "Trumpet", "Trombone", "Tuba", "Muted Trumpet", "French Horn", "Brass Section", "SynthBrass 1", "SynthBrass 2",
    "Soprano Sax", "Alto Sax", "Tenor Sax", "Baritone Sax", "Oboe", "English Horn", "Bassoon", "Clarinet",
    "Piccolo", "Flute", "Recorder", "Pan Flute", "Blown Bottle", "Shakuhachi", "Whistle", "Ocarina",
    "Lead 1 (square)", "Lead 2 (sawtooth)", "Lead 3 (calliope)", "Lead 4 (chiff)", "Lead 5 (charang)",
    "Lead 6 (voice)", "Lead 7 (fifths)", "Lead 8 (bass + lead)",
    "Pad 1 (new age)", "Pad 2 (warm)", "Pad 3 (polysynth)", "Pad 4 (choir)", "Pad 5 (bowed)", "Pad 6 (metallic)",
    "Pad 7 (halo)", "Pad 8 (sweep)",
    "FX 1 (rain)", "FX 2 (soundtrack)", "FX 3 (crystal)", "FX 4 (atmosphere)", "FX 5 (brightness)",
    "FX 6 (goblins)", "FX 7 (echoes)", "FX 8 (sci-fi)",
    "Sitar", "Banjo", "Shamisen", "Koto", "Kalimba", "Bagpipe", "Fiddle", "Shanai",
    "Tinkle Bell", "Agogo", "Steel Drums", "Woodblock", "Taiko Drum", "Melodic Tom", "Synth Drum", "Reverse Cymbal",
    "Guitar Fret Noise", "Breath Noise", "Seashore", "Bird Tweet", "Telephone Ring", "Helicopter", "Applause",
    "Gunshot",
)
assert len(INSTRUMENT_NAMES) == 128

#: Other accepted spellings (the reference app's MIDI.py names among them) -> program number.
INSTRUMENT_ALIASES: dict[str, int] = {
    "Piano": 0, "Grand Piano": 0, "Acoustic Grand": 0, "Bright Acoustic": 1, "Electric Grand": 2, "Honky-Tonk": 3,
    "Clav": 7, "Clavinet": 7, "Harp": 46, "Skakuhachi": 77, "Bag pipe": 109,
}

#: Drum kits (program numbers on the drum channel), as the reference app offers them, plus GS "SFX".
DRUM_KITS: dict[int, str] = {
    0: "Standard", 8: "Room", 16: "Power", 24: "Electric", 25: "TR-808", 32: "Jazz", 40: "Brush", 48: "Orchestra",
    56: "SFX",
}
#: Other accepted drum kit spellings ("Blush" is the reference app's spelling of Brush).
DRUM_KIT_ALIASES: dict[str, int] = {"Blush": 40, "808": 25, "Analog": 25, "Orchestral": 48}
#: Words that ask for a drum track (the Standard kit) where a track's instrument is named, besides the drum kit
#: names (:func:`track_instrument`).
DRUM_TRACK_NAMES = ("drums", "drum kit", "percussion")

def _normalise(name: str) -> str:
    """Lower case, without spaces or punctuation ("Acoustic Guitar (nylon)" -> "acousticguitarnylon")."""
    name = unicodedata.normalize("NFKC", name).casefold()
    return "".join(character for character in name if character.isalnum())


def _lookup_table(names: dict[int, str], aliases: dict[str, int]) -> dict[str, int]:
    table: dict[str, int] = {}
    for number, name in [*names.items(), *((n, a) for a, n in aliases.items())]:
        key = _normalise(name)
        if table.get(key, number) != number:
            raise AssertionError(f"name {name!r} is ambiguous")
        table[key] = number
    return table


_INSTRUMENT_LOOKUP = _lookup_table(dict(enumerate(INSTRUMENT_NAMES)), INSTRUMENT_ALIASES)
_DRUM_KIT_LOOKUP = _lookup_table(DRUM_KITS, DRUM_KIT_ALIASES)
_DRUM_KIT_LOOKUP.update({key + "kit": number for key, number in list(_DRUM_KIT_LOOKUP.items())})


def _program_number(value: object, what: str) -> int | None:
    """``value`` as a program number if it is an int or a string of digits, else None (a name)."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a name or a program number 0-127, not a bool")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        return None
    if not 0 <= number <= 127:
        raise ValueError(f"{what} program number must be in 0-127, got {number}")
    return number


def _unknown_name(value: str, what: str, lookup: dict[str, int], names: dict[int, str], usage: str) -> ValueError:
    close = difflib.get_close_matches(_normalise(value), list(lookup), n=3, cutoff=0.6)
    suggestions = list(dict.fromkeys(names[lookup[key]] for key in close))
    hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
    return ValueError(f"unknown {what} {value!r}{hint} ({usage})")


def instrument_program(instrument: str | int) -> int:
    """0-based General MIDI program number of an instrument name or number.

    Args:
        instrument: a name from :data:`INSTRUMENT_NAMES` or :data:`INSTRUMENT_ALIASES` (case, spaces and
            punctuation ignored: ``"acoustic guitar nylon"``), or a program number ``0..127`` (int or digits).

    Raises:
        TypeError: ``instrument`` is neither a string nor an int.
        ValueError: unknown name (close matches are suggested) or number outside 0..127.
    """
    number = _program_number(instrument, "instrument")
    if number is not None:
        return number
    if not isinstance(instrument, str):
        raise TypeError(f"instrument must be a name (str) or a program number (int), not {type(instrument).__name__}")
    key = _normalise(instrument)
    if key in _INSTRUMENT_LOOKUP:
        return _INSTRUMENT_LOOKUP[key]
    raise _unknown_name(instrument, "instrument", _INSTRUMENT_LOOKUP, dict(enumerate(INSTRUMENT_NAMES)),
                        "use a General MIDI instrument name or a program number 0-127")


def parse_instruments(instruments: str | int | list | tuple) -> list[int]:
    """Program numbers of a comma-separated string (``"Piano, Violin, 33"``) or a sequence of names/numbers."""
    if isinstance(instruments, str):
        items = [item.strip() for item in instruments.split(",")]
        if any(not item for item in items):
            raise ValueError(f"empty instrument name in {instruments!r} (separate names with single commas)")
    elif isinstance(instruments, (list, tuple)):
        items = list(instruments)
    elif isinstance(instruments, int) and not isinstance(instruments, bool):
        items = [instruments]
    else:
        raise TypeError(f"instruments must be a string, an int or a list, not {type(instruments).__name__}")
    return [instrument_program(item) for item in items]


def instrument_name(program: int) -> str:
    """General MIDI name of a 0-based program number."""
    number = _program_number(program, "instrument")
    if number is None:
        raise TypeError(f"program must be an int, not {type(program).__name__}")
    return INSTRUMENT_NAMES[number]


def drum_kit_program(drum_kit: str | int) -> int:
    """Program number of a drum kit name (``"Jazz"``, ``"tr 808"``, ``"Brush kit"``) or number 0..127.

    Raises:
        TypeError / ValueError: as :func:`instrument_program`.
    """
    if isinstance(drum_kit, str) and _normalise(drum_kit) in _DRUM_KIT_LOOKUP:  # names first: "808" is TR-808
        return _DRUM_KIT_LOOKUP[_normalise(drum_kit)]
    number = _program_number(drum_kit, "drum kit")
    if number is not None:
        return number
    if not isinstance(drum_kit, str):
        raise TypeError(f"drum kit must be a name (str) or a program number (int), not {type(drum_kit).__name__}")
    key = _normalise(drum_kit)
    if key in _DRUM_KIT_LOOKUP:
        return _DRUM_KIT_LOOKUP[key]
    raise _unknown_name(drum_kit, "drum kit", _DRUM_KIT_LOOKUP, DRUM_KITS,
                        f"use one of {', '.join(DRUM_KITS.values())} or a program number 0-127")


def track_instrument(instrument: str | int) -> tuple[int, bool]:
    """``(program, is_drum_kit)`` of a new track's instrument, as ``add_track`` names it: a General MIDI
    instrument name or program number, a drum kit name (:func:`drum_kit_program`) or one of
    :data:`DRUM_TRACK_NAMES` (the Standard kit, program 0). A number is an instrument's program.

    Raises:
        TypeError / ValueError: as :func:`instrument_program` (an unknown name is reported as an instrument).
    """
    if isinstance(instrument, str) and not instrument.strip().isdigit():
        if " ".join(instrument.lower().split()) in DRUM_TRACK_NAMES:
            return 0, True
        try:
            return drum_kit_program(instrument), True
        except ValueError:  # not a drum kit: an instrument (or an unknown name, reported as an instrument)
            pass
    return instrument_program(instrument), False


# ----------------------------------------------------------------------------------------- key signatures
#: Sharps (negative: flats) of the major key on each natural note.
_MAJOR_SHARPS = {"C": 0, "D": 2, "E": 4, "F": -1, "G": 1, "A": 3, "B": 5}
_ACCIDENTALS = {"": 0, "#": 1, "♯": 1, "sharp": 1, "b": -1, "♭": -1, "flat": -1, "##": 2, "x": 2, "𝄪": 2,
                "bb": -2, "𝄫": -2, "doublesharp": 2, "doubleflat": -2, "♮": 0, "natural": 0}
_KEY_PATTERN = re.compile(
    r"^(?P<letter>[A-Ga-g])\s*-?\s*(?P<accidental>double\s*sharp|double\s*flat|sharp|flat|natural|##|bb|[#♯b♭x𝄪𝄫♮])?"
    r"\s*-?\s*(?P<mode>major|minor|maj|min|m|M|dur|moll)?$", re.IGNORECASE)

_MAJOR_NAMES = "Cb Gb Db Ab Eb Bb F C G D A E B F# C#".split()
_MINOR_NAMES = "Ab Eb Bb F C G D A E B F# C# G# D# A#".split()


def parse_key_signature(key: str | tuple[int, int]) -> tuple[int, int]:
    """``(sf, mi)`` of a key name, as in a MIDI key signature event.

    ``sf`` is the number of sharps (-7..7, negative for flats), ``mi`` is 1 for minor, 0 for major. Accepted:
    ``"D minor"``, ``"d min"``, ``"Dm"``, ``"F# major"``, ``"F♯"``, ``"Bb"``, ``"B flat major"``, ``"C#m"``, or an
    ``(sf, mi)`` pair. A bare note is major; ``"M"`` is major and ``"m"`` minor. Keys that need more than 7
    sharps or flats (``"D# major"``) become their enharmonic equivalent (E-flat major, sf -3).

    Raises:
        TypeError: ``key`` is not a string or a pair.
        ValueError: the name is not a key, or the pair is out of range.
    """
    if isinstance(key, tuple):
        if len(key) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in key):
            raise TypeError(f"key signature pair must be (sf, mi) ints, got {key!r}")
        sf, mi = key
        if not -7 <= sf <= 7 or mi not in (0, 1):
            raise ValueError(f"key signature (sf, mi) must have sf in -7..7 and mi 0 or 1, got {key!r}")
        return sf, mi
    if not isinstance(key, str):
        raise TypeError(f"key signature must be a name like 'D minor', not {type(key).__name__}")
    match = _KEY_PATTERN.match(unicodedata.normalize("NFC", key.strip()))
    if match is None:
        raise ValueError(f"unknown key {key!r}: write a note A-G, an optional # or b, and major/minor "
                         "(e.g. 'D minor', 'F# major', 'Bb', 'C#m')")
    mode = match.group("mode") or ""
    minor = mode == "m" or mode.lower() in ("minor", "min", "moll")
    accidental = (match.group("accidental") or "").lower().replace(" ", "")
    sf = _MAJOR_SHARPS[match.group("letter").upper()] + 7 * _ACCIDENTALS[accidental] - (3 if minor else 0)
    while sf > 7:
        sf -= 12
    while sf < -7:
        sf += 12
    return sf, int(minor)


def key_signature_name(sf: int, mi: int) -> str:
    """Name of a key signature: ``(-1, 1)`` -> ``"D minor"``, ``(6, 0)`` -> ``"F# major"``."""
    sf, mi = parse_key_signature((sf, mi))
    return f"{(_MINOR_NAMES if mi else _MAJOR_NAMES)[sf + 7]} {'minor' if mi else 'major'}"


# ----------------------------------------------------------------------------------------- time signatures
#: Denominators the tokenizer's ``dd`` parameter represents (``dd = log2(denominator) - 1``, 0..3).
TIME_SIGNATURE_DENOMINATORS = (2, 4, 8, 16)
MAX_TIME_SIGNATURE_NUMERATOR = 16


def parse_time_signature(time_signature: str | tuple[int, int]) -> tuple[int, int]:
    """``(numerator, denominator)`` of ``"3/4"`` (or of a pair), validated against what the tokenizer encodes.

    Raises:
        TypeError: not a string or a pair of ints.
        ValueError: not ``"N/D"``, numerator outside 1..16, or denominator not 2, 4, 8 or 16.
    """
    if isinstance(time_signature, str):
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", time_signature)
        if match is None:
            raise ValueError(f"time signature must look like '3/4' (numerator/denominator), got {time_signature!r}")
        numerator, denominator = int(match.group(1)), int(match.group(2))
    elif isinstance(time_signature, tuple) and len(time_signature) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in time_signature):
        numerator, denominator = time_signature
    else:
        raise TypeError(f"time signature must be a string like '3/4' or a (numerator, denominator) pair of ints, "
                        f"got {time_signature!r}")
    if not 1 <= numerator <= MAX_TIME_SIGNATURE_NUMERATOR:
        raise ValueError(f"time signature numerator must be in 1..{MAX_TIME_SIGNATURE_NUMERATOR}, "
                         f"got {numerator} in {numerator}/{denominator}")
    if denominator <= 0 or denominator & (denominator - 1):
        raise ValueError(f"time signature denominator must be a power of two, got {denominator} in "
                         f"{numerator}/{denominator}")
    if denominator not in TIME_SIGNATURE_DENOMINATORS:
        raise ValueError(f"time signature denominator must be one of {TIME_SIGNATURE_DENOMINATORS} (what the "
                         f"tokenizer encodes), got {denominator} in {numerator}/{denominator}")
    return numerator, denominator


__all__ = [
    "DRUM_CHANNEL",
    "DRUM_KITS",
    "DRUM_KIT_ALIASES",
    "DRUM_TRACK_NAMES",
    "INSTRUMENT_ALIASES",
    "INSTRUMENT_NAMES",
    "MAX_TIME_SIGNATURE_NUMERATOR",
    "TIME_SIGNATURE_DENOMINATORS",
    "drum_kit_program",
    "instrument_name",
    "instrument_program",
    "key_signature_name",
    "parse_instruments",
    "parse_key_signature",
    "parse_time_signature",
    "track_instrument",
]
