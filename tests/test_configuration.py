"""MidiEventTransformerConfig: named shapes, validation, serialisation."""

from __future__ import annotations

import json

import pytest

from midi_event_transformer.configuration_midi_event_transformer import (
    MidiEventTransformerConfig,
    MidiEventTransformerLevelConfig,
)


def test_small_matches_reference_shapes(shared_dir):
    config = MidiEventTransformerConfig.from_name("small")
    reference = json.loads((shared_dir / "reference/skytnt_small/model/config.json").read_text())
    for ours, theirs in ((config.event_config, reference["net_config"]),
                         (config.token_config, reference["net_token_config"])):
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                    "intermediate_size", "head_dim", "max_position_embeddings"):
            assert getattr(ours, key) == theirs[key], key
    assert config.vocab_size == 3406 and config.tokens_per_event == 8
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (0, 1, 2)


@pytest.mark.parametrize(("name", "event_layers", "token_layers"), [("tv2o-medium", 12, 3), ("tv2o-large", 24, 6)])
def test_reference_named_shapes(name, event_layers, token_layers):
    config = MidiEventTransformerConfig.from_name(name)
    assert (config.event_config.num_hidden_layers, config.token_config.num_hidden_layers) == (event_layers, token_layers)
    assert config.event_config.hidden_size == config.token_config.hidden_size == 1024
    assert (config.event_config.num_attention_heads, config.token_config.num_attention_heads) == (16, 4)
    assert (config.event_config.intermediate_size, config.token_config.intermediate_size) == (4096, 1024)
    assert config.event_config.max_position_embeddings == 4096


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown config name"):
        MidiEventTransformerConfig.from_name("huge")


def test_sub_configs_are_not_text_config():
    config = MidiEventTransformerConfig.from_name("small")
    assert set(config.sub_configs) == {"event_config", "token_config"}
    assert config.get_text_config() is config


def test_round_trip(tmp_path):
    config = MidiEventTransformerConfig(event_config={"hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 3,
                                                      "num_key_value_heads": 1, "intermediate_size": 40},
                                        token_config={"hidden_size": 24, "num_hidden_layers": 1,
                                                      "num_attention_heads": 2, "intermediate_size": 36})
    config.save_pretrained(tmp_path)
    loaded = MidiEventTransformerConfig.from_pretrained(tmp_path)
    assert isinstance(loaded.event_config, MidiEventTransformerLevelConfig)
    assert loaded.event_config.num_key_value_heads == 1 and loaded.event_config.head_dim == 8
    assert loaded.token_config.head_dim == 12
    assert loaded.to_dict()["event_config"] == config.to_dict()["event_config"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"event_config": {"hidden_size": 24, "num_attention_heads": 5}}, "not divisible by num_attention_heads"),
    ({"event_config": {"hidden_size": 24, "num_attention_heads": 3, "num_key_value_heads": 2}}, "not a multiple"),
    ({"event_config": {"hidden_size": 32, "num_attention_heads": 4},
      "token_config": {"hidden_size": 24, "num_attention_heads": 3}}, "must equal"),
    ({"event_config": {"hidden_size": 0}}, "positive integer"),
    ({"vocab_size": 2}, "vocab_size"),
    ({"eos_token_id": 5000}, "eos_token_id"),
    ({"tie_word_embeddings": True}, "tie_word_embeddings"),
    ({"event_config": {"hidden_act": "tanh"}}, "hidden_act"),
    ({"tokens_per_event": 4}, r"tokens_per_event must be 8.*got 4"),
    ({"tokens_per_event": 16}, r"tokens_per_event must be 8.*got 16"),
    ({"tokens_per_event": 8.0}, r"tokens_per_event must be 8.*got 8\.0"),
])
def test_validation_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MidiEventTransformerConfig(**kwargs)


def test_unknown_keys_are_rejected():
    with pytest.raises(ValueError, match=r"unknown keys \['n_embd'\]"):
        MidiEventTransformerConfig(n_embd=256)
    with pytest.raises(ValueError, match=r"unknown keys \['typo_layers'\]"):
        MidiEventTransformerConfig(event_config={"typo_layers": 3})


def test_unknown_key_in_saved_config(tmp_path):
    MidiEventTransformerConfig.from_name("small").save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["mystery"] = 1
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="mystery"):
        MidiEventTransformerConfig.from_pretrained(tmp_path)
