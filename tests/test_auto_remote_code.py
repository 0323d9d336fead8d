"""Auto-class registration and trust_remote_code loading in a fresh interpreter (offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch
from generation_helpers import random_model

from midi_event_transformer.configuration_midi_event_transformer import MidiEventTransformerConfig
from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM


def test_auto_classes_after_package_import(tmp_path):
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    import midi_event_transformer  # noqa: F401  (registers the Auto classes)

    model = random_model()
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MidiEventTransformerConfig)
    for auto in (AutoModel, AutoModelForCausalLM):
        assert type(auto.from_pretrained(tmp_path)) is MidiEventTransformerForCausalLM


def test_fresh_process_trust_remote_code(tmp_path):
    model = random_model()
    model.save_pretrained(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_midi_event_transformer.MidiEventTransformerConfig",
        "AutoModel": "modeling_midi_event_transformer.MidiEventTransformerForCausalLM",
        "AutoModelForCausalLM": "modeling_midi_event_transformer.MidiEventTransformerForCausalLM",
    }
    prompt = torch.zeros(2, 16, dtype=torch.long)
    prompt[:, 0] = 1
    prompt[1, 8:] = torch.tensor([3, 9, 137, 2201, 2329, 2405, 2533, 200])
    with torch.no_grad():
        expected_logits = model(prompt).logits
    expected_generation = model.generate(prompt, max_new_tokens=24, do_sample=False)
    torch.save({"prompt": prompt, "logits": expected_logits, "generation": expected_generation}, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        from transformers import AutoModel, AutoModelForCausalLM
        model = AutoModel.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True).eval()
        causal = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True).eval()
        expected = torch.load({str(tmp_path / 'expected.pt')!r})
        with torch.no_grad():
            logits = model(expected["prompt"]).logits
        assert (logits - expected["logits"]).abs().max() < 1e-5, "logits differ"
        generation = causal.generate(expected["prompt"], max_new_tokens=24, do_sample=False)
        assert torch.equal(generation, expected["generation"]), "generation differs"
        assert not [m for m in sys.modules if m.startswith("midi_event_transformer")], "package was imported"
        print(type(model).__module__)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().startswith("transformers_modules")


def test_saved_folder_holds_only_the_code_loading_and_generating_need(tmp_path):
    """What trust_remote_code users must read: model, config, cache, decoding loop, grammar, tokenizer and their
    MIDI reading / writing; no conversion of reference checkpoints, no training code."""
    from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer

    random_model().save_pretrained(tmp_path)
    MidiEventTransformerTokenizer().save_pretrained(tmp_path)
    code = {path.name for path in tmp_path.glob("*.py")}
    assert "modeling_midi_event_transformer.py" in code and "tokenization_midi_event_transformer.py" in code
    assert not code & {"convert_skytnt.py", "data.py", "lora.py", "pipeline.py", "cli.py", "hub.py"}, code
