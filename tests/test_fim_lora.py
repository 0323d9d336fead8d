"""LoRA + fill in the middle on a converted reference checkpoint: the sentinel rows train through peft's
``trainable_token_indices``, the rest of the base stays frozen, and the adapter reloads onto a fresh base."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from generation_helpers import load_script
from safetensors.torch import load_file

from midi_event_transformer.generation.fim import draw_span, fim_rows
from midi_event_transformer.hub.conversion import convert_skytnt_checkpoint
from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM
from midi_event_transformer.training.lora import (
    FIM_RECORD_FILE,
    add_lora,
    load_adapter,
    read_fim_record,
    write_fim_record,
)
from midi_event_transformer.vocabulary import FIM_MIDDLE_ID, FIM_SPAN_ID, FIM_VOCAB_SIZE, VOCAB_SIZE

REPO_ROOT = Path(__file__).resolve().parents[1]
SENTINELS = [FIM_SPAN_ID, FIM_MIDDLE_ID]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def reference(shared_dir) -> Path:
    return shared_dir / "reference" / "skytnt_small"


@pytest.fixture(scope="module")
def converted(reference, tmp_path_factory) -> Path:
    return convert_skytnt_checkpoint(reference / "model", tmp_path_factory.mktemp("converted") / "model")


@pytest.fixture(scope="module")
def example(reference) -> torch.Tensor:
    """A FIM training example (1, n * 8) from the reference's 65 rows of pop909/001."""
    rows = np.load(reference / "expected.npz")["input_ids"].astype(np.int64)  # (65, 8)
    span = draw_span(rows, np.random.default_rng(0), 1, 4)
    layout = fim_rows(rows, *span, training=True)
    assert (layout[:, 0] == FIM_SPAN_ID).sum() == 2
    return torch.from_numpy(layout).reshape(1, -1)


def effective_tables(model) -> dict[str, torch.Tensor]:
    """The (V, H) tables the model computes with (through peft's wrappers when present)."""
    inner = model.base_model.model if hasattr(model, "base_model") else model
    ids = torch.arange(inner.config.vocab_size)
    with torch.no_grad():
        return {"net.embed_tokens": inner.net.embed_tokens(ids).clone(),
                "net_token.embed_tokens": inner.net_token.embed_tokens(ids).clone(),
                "lm_head": inner.lm_head(torch.eye(inner.config.hidden_size)).T.clone()}


def test_lora_trains_the_sentinel_rows_only(converted, example, tmp_path):
    base = MidiEventTransformerForCausalLM.from_pretrained(converted).resize_for_fim()
    model = add_lora(base, r=4, lora_alpha=8, fim=True)
    base_weights = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k and "token_adapter" not in k}
    before = effective_tables(model)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        model(input_ids=example, labels=example).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    after = effective_tables(model)
    for name in before:
        assert not torch.equal(after[name][SENTINELS], before[name][SENTINELS]), name  # trained
        assert torch.equal(after[name][:VOCAB_SIZE], before[name][:VOCAB_SIZE]), name  # frozen
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in base_weights.items())  # the base itself never moves
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "trainable_tokens_delta" in n for n in trainable)
    assert sum("trainable_tokens_delta" in n for n in trainable) == 3

    model.save_pretrained(tmp_path / "adapter", save_embedding_layers=False)
    write_fim_record(tmp_path / "adapter")
    assert read_fim_record(tmp_path / "adapter")["fill_in_the_middle"] is True
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    deltas = {k: v for k, v in saved.items() if "trainable_tokens" in k}
    assert len(deltas) == 3 and all(v.shape == (2, 256) for v in deltas.values())  # the sentinel rows alone
    fresh = MidiEventTransformerForCausalLM.from_pretrained(converted)
    assert fresh.config.vocab_size == VOCAB_SIZE
    reloaded = load_adapter(fresh, tmp_path / "adapter").eval()
    assert fresh.config.vocab_size == FIM_VOCAB_SIZE and fresh.config.fill_in_the_middle
    with torch.no_grad():
        expected = model(input_ids=example).logits
        torch.testing.assert_close(reloaded(input_ids=example).logits, expected, rtol=0, atol=1e-5)
        merged = load_adapter(MidiEventTransformerForCausalLM.from_pretrained(converted), tmp_path / "adapter",
                              merge=True).eval()
        assert type(merged) is MidiEventTransformerForCausalLM and merged.lm_head.weight.shape[0] == FIM_VOCAB_SIZE
        torch.testing.assert_close(merged(input_ids=example).logits, expected, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="resize_for_fim"):
        add_lora(MidiEventTransformerForCausalLM.from_pretrained(converted), fim=True)


def test_train_script_lora_fim(converted, pop909_files, tmp_path):
    script = load_script("train")
    out = tmp_path / "run"
    script.main(["--data", *[str(p) for p in pop909_files[:4]], "--init_from", str(converted),
                 "--output_dir", str(out), "--max_events", "40", "--batch_size", "2", "--max_steps", "2",
                 "--learning_rate", "1e-2", "--warmup_steps", "1", "--log_every", "1", "--eval_every", "0",
                 "--save_every", "0", "--validation_fraction", "0", "--final_eval", "false", "--num_threads", "1",
                 "--lora", "true", "--lora_rank", "4", "--lora_alpha", "8", "--fim_rate", "1.0"])
    final = out / "final"
    assert json.loads((final / FIM_RECORD_FILE).read_text())["fill_in_the_middle"] is True
    assert not (final / "model.safetensors").exists()
    saved = load_file(final / "adapter_model.safetensors")
    assert sum("trainable_tokens" in k for k in saved) == 3
    base = MidiEventTransformerForCausalLM.from_pretrained(converted)
    tuned = load_adapter(base, final).eval()
    assert base.config.fill_in_the_middle
    ids = torch.tensor([[1] + [0] * 7 + [FIM_SPAN_ID] + [0] * 7 + [FIM_MIDDLE_ID] + [0] * 7])
    with torch.no_grad():
        assert tuned(input_ids=ids).logits.shape == (1, 24, FIM_VOCAB_SIZE)
