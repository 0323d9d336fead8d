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
