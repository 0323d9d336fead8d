"""The fused (chunked) linear cross entropy equals logits + F.cross_entropy, in value and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from midi_event_transformer.losses import (
    flat_causal_lm_targets,
    fused_flat_causal_lm_loss,
    fused_linear_cross_entropy,
)
from midi_event_transformer.vocabulary import PAD_ID, TOKENS_PER_EVENT


def _inputs(n: int = 37, h: int = 12, v: int = 29, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, v, (n,), generator=g)
    targets[::4] = -100
    return hidden, weight, targets


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 1000])
def test_value_and_gradients_match_unfused(chunk_size):
    hidden, weight, targets = _inputs()
    want = F.cross_entropy(hidden @ weight.t(), targets, ignore_index=-100)
    want_h, want_w = torch.autograd.grad(want, (hidden, weight))
    got = fused_linear_cross_entropy(hidden, weight, targets, chunk_size=chunk_size)
    got_h, got_w = torch.autograd.grad(got * 1.0, (hidden, weight))
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_h, want_h, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(got_w.double(), want_w, rtol=1e-6, atol=1e-9)


def test_upstream_gradient_scales_and_batched_shapes():
    hidden, weight, targets = _inputs(n=24)
    h3 = hidden.detach().view(2, 12, -1).requires_grad_()
    loss = 3.0 * fused_linear_cross_entropy(h3, weight, targets.view(2, 12), chunk_size=7)
    loss.backward()
    ref_h = hidden.detach().clone().requires_grad_()
    (3.0 * F.cross_entropy(ref_h @ weight.detach().t(), targets, ignore_index=-100)).backward()
    torch.testing.assert_close(h3.grad.view(24, -1), ref_h.grad, rtol=1e-6, atol=1e-9)


def test_all_ignored_gives_zero_and_zero_gradients():
    hidden, weight, _ = _inputs(n=6)
    loss = fused_linear_cross_entropy(hidden, weight, torch.full((6,), -100))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert hidden.grad.abs().max() == 0 and weight.grad.abs().max() == 0


def test_bad_shapes_raise():
    hidden, weight, targets = _inputs()
    with pytest.raises(ValueError, match="targets"):
        fused_linear_cross_entropy(hidden, weight, targets[:-1])
    with pytest.raises(ValueError, match="weight"):
        fused_linear_cross_entropy(hidden, weight[:, :-1], targets)
    with pytest.raises(ValueError, match="chunk_size"):
        fused_linear_cross_entropy(hidden, weight, targets, chunk_size=0)


def test_bf16_autocast_close_to_fp32():
    hidden, weight, targets = _inputs(n=64, h=32, v=50)
    hidden, weight = hidden.detach().float(), weight.detach().float()
    want = F.cross_entropy(hidden @ weight.t(), targets, ignore_index=-100)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fused_linear_cross_entropy(hidden, weight, targets)
    assert got.dtype == torch.float32
    assert abs(got.item() - want.item()) < 0.05


def test_flat_targets_shift_and_ignore_first_event_and_pad():
    k = TOKENS_PER_EVENT
    labels = torch.arange(1, 3 * k + 1).view(1, -1)  # (1, 24), no pad
    labels[0, 2 * k + 5:] = PAD_ID
    targets = flat_causal_lm_targets(labels, PAD_ID, k)
    assert (targets[0, :k - 1] == -100).all()  # event 0's own tokens have no state to come from
    assert targets[0, k - 1] == labels[0, k]  # the first event's state predicts event 1's first id
    assert (targets[0, k:2 * k + 4] == labels[0, k + 1:2 * k + 5]).all()
    assert (targets[0, 2 * k + 4:] == -100).all()  # pad targets and the last position
    with_offset = flat_causal_lm_targets(labels, PAD_ID, k, label_offset=k)
    assert with_offset[0, 0] == labels[0, 1]


def test_fused_model_loss_equals_model_loss():
    from midi_event_transformer import MidiEventTransformerConfig, MidiEventTransformerForCausalLM

    torch.manual_seed(0)
    config = MidiEventTransformerConfig(
        event_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48),
        token_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=1, intermediate_size=40))
    model = MidiEventTransformerForCausalLM(config).train()
    ids = torch.randint(3, config.vocab_size, (2, 6 * TOKENS_PER_EVENT))
    ids[:, 5::TOKENS_PER_EVENT] = PAD_ID  # some pad slots inside events
    labels = ids.masked_fill(ids == PAD_ID, -100)
    want = model(input_ids=ids, labels=labels).loss
    lm_head = model.lm_head
    model.lm_head = torch.nn.Identity()
    hidden = model(input_ids=ids).logits  # (B, L, H): what lm_head reads
    model.lm_head = lm_head
    got = fused_flat_causal_lm_loss(hidden, lm_head.weight, labels, PAD_ID, TOKENS_PER_EVENT, chunk_size=7)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
