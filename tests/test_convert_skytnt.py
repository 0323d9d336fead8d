"""Conversion of the reference's (SkyTNT/midi-model) checkpoints and LoRA adapters."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from midi_event_transformer.hub.conversion import convert_skytnt_checkpoint, convert_skytnt_lora
from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM


@pytest.fixture(scope="module")
def reference(shared_dir) -> Path:
    return shared_dir / "reference" / "skytnt_small"


@pytest.fixture(scope="module")
def expected(reference) -> dict[str, np.ndarray]:
    return dict(np.load(reference / "expected.npz"))


def check_against_reference(model, expected, prefix: str = "") -> None:
    events = torch.from_numpy(expected["input_ids"].astype(np.int64))[None]  # (1, 65, 8)
    flat = events.reshape(1, -1)
    with torch.no_grad():
        if not prefix:
            hidden = model.encode_events(events)[0, :16]
            np.testing.assert_allclose(hidden.numpy(), expected["event_hidden"], atol=1e-4, rtol=0)
        out = model(input_ids=events, labels=flat.masked_fill(flat == 0, -100), use_cache=False)
    logits = out.logits[0]  # expected[e, j] predicts token j of event e + 1: flat position 8(e+1) + j - 1
    ours = torch.stack([logits[8 * e + 7:8 * e + 15] for e in range(16)]).numpy()
    np.testing.assert_allclose(ours, expected[prefix + "logits"], atol=1e-4, rtol=0)
    assert abs(out.loss.item() - float(expected[prefix + "loss"])) < 1e-5


def test_converted_model_reproduces_reference(reference, expected, tmp_path):
    out = convert_skytnt_checkpoint(reference / "model", tmp_path / "converted")
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "modeling_midi_event_transformer.py"} <= files
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "midi_event_transformer" and "AutoModel" in config["auto_map"]
    original, converted = load_file(str(reference / "model" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert original.keys() == converted.keys()
    assert all(torch.equal(original[name], converted[name]) for name in original)
    model = MidiEventTransformerForCausalLM.from_pretrained(out).eval()
    check_against_reference(model, expected)


def test_from_pretrained_converts_reference_directory(reference, expected):
    model = MidiEventTransformerForCausalLM.from_pretrained(reference / "model").eval()
    assert model.config.event_config.num_hidden_layers == 4 and model.config.token_config.head_dim == 256
    check_against_reference(model, expected)


def test_reference_lora_adapter(reference, expected, tmp_path):
    model = MidiEventTransformerForCausalLM.from_pretrained(reference / "model").eval()
    model.load_adapter(str(reference / "lora"))  # the reference's own adapter layout
    check_against_reference(model, expected, prefix="lora_")

    from peft import PeftModel

    adapter = convert_skytnt_lora(reference / "lora", tmp_path / "lora")
    base = MidiEventTransformerForCausalLM.from_pretrained(reference / "model").eval()
    peft_model = PeftModel.from_pretrained(base, str(adapter)).eval()
    check_against_reference(peft_model, expected, prefix="lora_")


def test_dtype_is_kept(reference, tmp_path):
    src = tmp_path / "bf16"
    src.mkdir()
    shutil.copy(reference / "model" / "config.json", src / "config.json")
    state = {k: v.to(torch.bfloat16) for k, v in load_file(str(reference / "model" / "model.safetensors")).items()}
    save_file(state, str(src / "model.safetensors"), metadata={"format": "pt"})
    out = convert_skytnt_checkpoint(src, tmp_path / "out")
    assert {t.dtype for t in load_file(str(out / "model.safetensors")).values()} == {torch.bfloat16}
    assert MidiEventTransformerForCausalLM.from_pretrained(out).dtype == torch.bfloat16


def edited_reference(reference: Path, tmp_path: Path, config_edit=None, state_edit=None) -> Path:
    src = tmp_path / "edited"
    src.mkdir(exist_ok=True)
    config = json.loads((reference / "model" / "config.json").read_text())
    if config_edit:
        config_edit(config)
    (src / "config.json").write_text(json.dumps(config))
    state = load_file(str(reference / "model" / "model.safetensors"))
    if state_edit:
        state_edit(state)
    save_file(state, str(src / "model.safetensors"), metadata={"format": "pt"})
    return src


@pytest.mark.parametrize(("config_edit", "state_edit", "message"), [
    (lambda c: c.update(model_type="llama"), None, "not a SkyTNT/midi-model config"),
    (lambda c: c["tokenizer"].update(version="v1"), None, "only MIDITokenizerV2"),
    (lambda c: c.pop("net_token_config"), None, "no 'net_token_config'"),
    (lambda c: c["net_config"].update(vocab_size=100), None, "vocab_size"),
    (None, lambda s: s.pop("net.layers.2.mlp.up_proj.weight"), r"missing weights \['net.layers.2.mlp.up_proj.weight'\]"),
    (None, lambda s: s.update(extra=torch.zeros(2)), r"unexpected weights \['extra'\]"),
    (None, lambda s: s.update({"lm_head.weight": torch.zeros(10, 256)}), "mismatched shapes"),
    (lambda c: c["net_config"].update(num_hidden_layers=5), None, "missing weights"),
])
def test_bad_reference_checkpoints(reference, tmp_path, config_edit, state_edit, message):
    src = edited_reference(reference, tmp_path, config_edit, state_edit)
    with pytest.raises(ValueError, match=message):
        convert_skytnt_checkpoint(src, tmp_path / "out")


def test_missing_files(reference, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        convert_skytnt_checkpoint(tmp_path, tmp_path / "out")
    src = tmp_path / "no_weights"
    src.mkdir()
    shutil.copy(reference / "model" / "config.json", src / "config.json")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        convert_skytnt_checkpoint(src, tmp_path / "out")


def test_cli(reference, tmp_path):
    """``midi-event-transformer convert`` in a process of its own (tests/test_cli_generate.py runs it in-process)."""
    command = [sys.executable, "-m", "midi_event_transformer.apps.cli", "convert"]
    done = subprocess.run([*command, str(reference / "model"), str(tmp_path / "cli")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cli" / "model.safetensors").is_file()
    failed = subprocess.run([*command, str(tmp_path), str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=300)
    assert failed.returncode == 2 and "error:" in failed.stderr
