"""LoRA through peft: only the adapter trains, saved adapters reload exactly, generate and merge work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from generation_helpers import load_script
from generation_helpers import tiny_config as shared_tiny_config
from peft import PeftModel
from safetensors.torch import load_file

from midi_event_transformer.configuration_midi_event_transformer import MidiEventTransformerConfig
from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer
from midi_event_transformer.training.lora import (
    LORA_TARGET_MODULES,
    add_lora,
    default_lora_config,
    load_adapter,
)
from midi_event_transformer.vocabulary import BOS_ID, PAD_ID

REPO_ROOT = Path(__file__).resolve().parents[1]
V = 3406


def tiny_config() -> MidiEventTransformerConfig:
    return shared_tiny_config(event_layers=2, token_layers=2)


def base_model() -> MidiEventTransformerForCausalLM:
    torch.manual_seed(0)  # every call: the same base weights
    return MidiEventTransformerForCausalLM(tiny_config()).eval()


def random_events(batch: int, events: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (batch, events, 8), generator=generator)
    lengths = torch.randint(4, 9, (batch, events), generator=generator)
    return ids.masked_fill(torch.arange(8) >= lengths[..., None], PAD_ID).reshape(batch, -1)  # (B, E*8)


def train_steps(model, steps: int = 2, lr: float = 1e-2) -> None:
    """A few AdamW steps over *all* parameters: frozen ones get no gradient and must not move."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    ids = random_events(2, 6, seed=1)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.fixture(scope="module")
def trained_adapter(tmp_path_factory):
    """A LoRA model after a few optimizer steps, its weights before and after, and its saved adapter."""
    model = add_lora(base_model(), r=4, lora_alpha=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_steps(model)
    directory = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(directory)
    return model, before, directory


def test_default_targets_are_all_projections_of_both_transformers():
    model = add_lora(base_model(), default_lora_config(r=2, lora_alpha=4))
    adapted = {name.split(".lora_A.")[0] for name, _ in model.named_parameters() if "lora_A" in name}
    for level, layers in (("net", 2), ("net_token", 2)):
        for layer in range(layers):
            for module in LORA_TARGET_MODULES:
                group = "self_attn" if module.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
                assert any(n.endswith(f"{level}.layers.{layer}.{group}.{module}") for n in adapted), (level, module)
    assert len(adapted) == 4 * len(LORA_TARGET_MODULES)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    with pytest.raises(ValueError, match="rank"):
        default_lora_config(r=0)
    with pytest.raises(ValueError, match="dropout"):
        default_lora_config(lora_dropout=1.0)


def test_only_adapter_weights_change(trained_adapter):
    model, before, _ = trained_adapter
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed)
    assert any("lora_B" in k for k in changed)  # B starts at zero: the adapter now does something
    unchanged_base = [k for k in before if "lora_" not in k]
    assert unchanged_base and all(torch.equal(before[k], after[k]) for k in unchanged_base)


def test_saved_adapter_reloads_to_identical_logits(trained_adapter):
    model, _, directory = trained_adapter
    assert (directory / "adapter_config.json").is_file()
    saved = load_file(directory / "adapter_model.safetensors")
    assert saved and all("lora_" in k for k in saved)
    config = json.loads((directory / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8
    ids = random_events(2, 5, seed=2)
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        plain = base_model()(input_ids=ids).logits
        reloaded = PeftModel.from_pretrained(base_model(), str(directory)).eval()(input_ids=ids).logits
        helper = load_adapter(base_model(), directory).eval()(input_ids=ids).logits
    assert not torch.allclose(expected, plain, atol=1e-4)  # the adapter matters
    assert torch.equal(reloaded, expected)
    assert torch.equal(helper, expected)
    with pytest.raises(ValueError, match="adapter_config.json"):
        load_adapter(base_model(), directory.parent)


def test_peft_model_generates(trained_adapter):
    _, _, directory = trained_adapter
    model = load_adapter(base_model(), directory)
    prompt = torch.tensor([[BOS_ID] + [PAD_ID] * 7])
    out = model.generate(input_ids=prompt, max_new_tokens=24, do_sample=False)
    assert out.shape[0] == 1 and out.shape[1] > 8 and out.shape[1] % 8 == 0
    assert torch.equal(out[:, :8], prompt)
    merged = load_adapter(base_model(), directory, merge=True)
    assert torch.equal(merged.generate(input_ids=prompt, max_new_tokens=24, do_sample=False), out)


def test_merge_and_unload_same_logits(trained_adapter):
    model, _, directory = trained_adapter
    ids = random_events(2, 5, seed=3)
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        merged = load_adapter(base_model(), directory, merge=True).eval()
        assert type(merged) is MidiEventTransformerForCausalLM
        assert not any("lora_" in name for name in merged.state_dict())
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-5, rtol=0)


def test_train_script_lora_trains_and_saves_only_the_adapter(pop909_files, tmp_path):
    base_dir = tmp_path / "base"
    base_model().save_pretrained(base_dir)
    MidiEventTransformerTokenizer().save_pretrained(base_dir)
    out = tmp_path / "run"
    load_script("train").main([
        "--data", *[str(p) for p in pop909_files[:4]], "--init_from", str(base_dir), "--output_dir", str(out),
        "--max_events", "16", "--batch_size", "2", "--max_steps", "4", "--learning_rate", "1e-2",
        "--warmup_steps", "1", "--log_every", "2", "--eval_every", "0", "--save_every", "0",
        "--validation_fraction", "0", "--final_eval", "false", "--num_threads", "1",
        "--lora", "true", "--lora_rank", "4", "--lora_alpha", "8", "--lora_target_modules", "q_proj", "v_proj"])
    final = out / "final"
    assert (final / "adapter_config.json").is_file() and (final / "adapter_model.safetensors").is_file()
    assert not (final / "model.safetensors").exists()  # only the adapter is written
    config = json.loads((final / "adapter_config.json").read_text())
    assert config["r"] == 4 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    saved = load_file(final / "adapter_model.safetensors")
    assert len(saved) == 2 * 2 * 2 * 2  # (A, B) x (q, v) x 2 layers x 2 transformers
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in saved.items())  # trained
    # the base is untouched: the adapter on a fresh copy of it reproduces the trained model
    assert torch.equal(MidiEventTransformerForCausalLM.from_pretrained(base_dir).lm_head.weight,
                       base_model().lm_head.weight)
    tuned = load_adapter(MidiEventTransformerForCausalLM.from_pretrained(base_dir), final).eval()
    ids = random_events(1, 4)
    with torch.no_grad():
        assert not torch.allclose(tuned(input_ids=ids).logits, base_model()(input_ids=ids).logits, atol=1e-5)
    assert len([r for r in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in r]) == 2
