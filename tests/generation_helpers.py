"""Helpers shared by the tests: tiny random models (odd sizes), a tiny saved model, checks on generated files."""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import torch

from midi_event_transformer.configuration_midi_event_transformer import MidiEventTransformerConfig
from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer
from midi_event_transformer.vocabulary import (
    BOS_ID,
    EOS_ID,
    EVENT_PARAMETERS,
    ID_TO_EVENT_TYPE,
    PAD_ID,
    TOKENS_PER_EVENT,
    parameter_range,
)


def tiny_config(event_layers: int = 2, token_layers: int = 1, **config_kwargs) -> MidiEventTransformerConfig:
    """Odd sizes, as in transformers' tests: hidden 24, 3 event heads over 1 kv head, 2 token heads, MLPs 40 / 36.
    ``config_kwargs`` go to the config (e.g. ``attn_implementation``)."""
    return MidiEventTransformerConfig(
        event_config={"hidden_size": 24, "num_hidden_layers": event_layers, "num_attention_heads": 3,
                      "num_key_value_heads": 1, "intermediate_size": 40},
        token_config={"hidden_size": 24, "num_hidden_layers": token_layers, "num_attention_heads": 2,
                      "intermediate_size": 36}, **config_kwargs)


def random_model(config: MidiEventTransformerConfig | None = None) -> MidiEventTransformerForCausalLM:
    """A model with seeded random weights (``tiny_config()`` by default), in eval mode."""
    torch.manual_seed(0)
    return MidiEventTransformerForCausalLM(config or tiny_config()).eval()


def tiny_model() -> MidiEventTransformerForCausalLM:
    """A random model with odd sizes; sharpened scores, and EOS suppressed so that pieces have the asked length."""
    model = random_model()
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    model.generation_config.suppress_tokens = [EOS_ID]
    return model


def save_tiny_model(directory: Path) -> Path:
    """The tiny model and a default tokenizer saved with ``save_pretrained`` in ``directory``."""
    tiny_model().save_pretrained(directory)
    MidiEventTransformerTokenizer().save_pretrained(directory)
    return directory


def grammar_problems(rows: np.ndarray) -> list[str]:
    """What is wrong in generated rows (empty when every row is BOS, an event or EOS, as the grammar allows)."""
    problems = []
    for index, row in enumerate(np.asarray(rows).tolist()):
        if row[0] in (BOS_ID, EOS_ID):
            if row[1:] != [PAD_ID] * (TOKENS_PER_EVENT - 1):
                problems.append(f"row {index}: special row with parameters {row}")
            continue
        name = ID_TO_EVENT_TYPE.get(row[0])
        if name is None:
            problems.append(f"row {index}: unknown event type id {row[0]}")
            continue
        parameters = EVENT_PARAMETERS[name]
        for slot, value in enumerate(row[1:]):
            if slot < len(parameters):
                if value not in parameter_range(parameters[slot]):
                    problems.append(f"row {index}: {name}.{parameters[slot]} id {value} out of range")
            elif value != PAD_ID:
                problems.append(f"row {index}: {name} has id {value} after its parameters")
    return problems


def event_types(rows: np.ndarray) -> list[str | None]:
    return [ID_TO_EVENT_TYPE.get(int(i)) for i in np.asarray(rows)[:, 0]]


def messages(midi: mido.MidiFile, kind: str) -> list:
    return [message for track in midi.tracks for message in track if message.type == kind]


def programs(midi: mido.MidiFile) -> set[tuple[int, int]]:
    """(channel, program) of every program change."""
    return {(m.channel, m.program) for m in messages(midi, "program_change")}


def midi_bytes(midi: mido.MidiFile) -> bytes:
    import io

    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def reloaded(midi_or_path) -> mido.MidiFile:
    """The file as mido reads it back from bytes (proves it decodes)."""
    import io

    data = Path(midi_or_path).read_bytes() if isinstance(midi_or_path, (str, Path)) else midi_bytes(midi_or_path)
    return mido.MidiFile(file=io.BytesIO(data))


def multitrack_song(bars: int = 6, bpm: int = 100) -> mido.MidiFile:
    """A 4/4 piece of ``bars`` bars in three tracks: a piano melody (channel 1), a bass (channel 2, a program
    change halfway) and drums (channel 10), with a tempo change and a sustain pedal."""
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    midi.tracks.append(mido.MidiTrack([
        mido.MetaMessage("time_signature", numerator=4, denominator=4),
        mido.MetaMessage("key_signature", key="G"),
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)),
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm + 20), time=480 * 4 * (bars // 2))]))
    for channel, program, pitches, step in ((0, 0, [67, 71, 74, 72, 69, 66], 240), (1, 33, [43, 38], 960),
                                            (9, 0, [36, 42, 38, 42], 480)):
        track = mido.MidiTrack([mido.Message("program_change", channel=channel, program=program)])
        if channel == 0:
            track.append(mido.Message("control_change", channel=0, control=64, value=100))
        for index in range(bars * 4 * 480 // step):
            if channel == 1 and index == bars * 4 * 480 // step // 2:
                track.append(mido.Message("program_change", channel=1, program=34))
            pitch = pitches[index % len(pitches)]
            track.append(mido.Message("note_on", channel=channel, note=pitch, velocity=70 + index % 20, time=0))
            track.append(mido.Message("note_off", channel=channel, note=pitch, velocity=0, time=step))
        midi.tracks.append(track)
    return midi


def notes_by_track(midi) -> dict[int, list[tuple]]:
    """Track index -> sorted (start in beats, channel, pitch, velocity, duration in beats) of its notes."""
    from fractions import Fraction

    from midi_event_transformer.generation.note_list import read_notes

    notes = read_notes(midi)
    beat = notes.ticks_per_beat
    tracks: dict[int, list[tuple]] = {}
    for note in notes.notes:
        tracks.setdefault(note.track, []).append(
            (Fraction(note.start, beat), note.channel, note.pitch, note.velocity, Fraction(note.end - note.start, beat)))
    return {track: sorted(values) for track, values in tracks.items()}


def load_script(name: str):
    """``scripts/<name>.py`` imported as a module (``train``: its ``main(argv)`` runs a training in this process).

    ``scripts/`` goes on ``sys.path`` first, as ``python scripts/<name>.py`` puts it there, for ``bench_common``.
    """
    import importlib.util
    import sys

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    if str(scripts) not in sys.path:
        sys.path.insert(0, str(scripts))
    spec = importlib.util.spec_from_file_location(f"{name}_script", scripts / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module
