"""save_pretrained writes a model card, and the remote-code copy stays free of the card machinery."""

from __future__ import annotations

import os

from midi_event_transformer import (
    MidiEventTransformerConfig,
    MidiEventTransformerForCausalLM,
    convert_skytnt_checkpoint,
)

CARD_ONLY_MODULES = {"model_card.py", "evaluation.py", "note_list.py", "pianoroll.py", "hub.py"}


def test_save_pretrained_writes_card_and_keeps_an_existing_one(tmp_path):
    model = MidiEventTransformerForCausalLM(MidiEventTransformerConfig(
        event_config={"hidden_size": 24, "num_hidden_layers": 1, "num_attention_heads": 3, "intermediate_size": 40},
        token_config={"hidden_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 36}))
    model.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert card.startswith("---") and "music-generation" in card and "How to use" in card
    assert not CARD_ONLY_MODULES & set(os.listdir(tmp_path))  # not needed by trust_remote_code
    (tmp_path / "README.md").write_text("my own card")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == "my own card"


def test_converted_checkpoint_card_names_its_source(shared_dir, tmp_path):
    out = convert_skytnt_checkpoint(shared_dir / "reference" / "skytnt_small" / "model", tmp_path / "converted",
                                    source_repo_id="skytnt/midi-model-tv2o-medium")
    card = (out / "README.md").read_text()
    assert "base_model: skytnt/midi-model-tv2o-medium" in card and "stored as float32" in card
    assert not CARD_ONLY_MODULES & set(os.listdir(out))
