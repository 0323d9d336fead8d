"""The event-level loop on CUDA and MPS: greedy output equals the per-token loop, sampling is grammatical.

Each test is skipped where its device is absent (the CPU runs are in test_event_decoding.py).
"""

from __future__ import annotations

import pytest
import torch
from generation_helpers import grammar_problems, random_model, tiny_config

from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM
from midi_event_transformer.vocabulary import BOS_ID, EOS_ID, PAD_ID, TOKENS_PER_EVENT

K = TOKENS_PER_EVENT

DEVICES = [
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="no CUDA device (torch.cuda.is_available() is False)")),
    pytest.param("mps", marks=pytest.mark.skipif(not torch.backends.mps.is_available(),
                                                 reason="no MPS device (torch.backends.mps.is_available() is False)")),
]


def model_on(device: str) -> MidiEventTransformerForCausalLM:
    """A tiny random model (2 + 2 layers, event-level GQA) on ``device``, with EOS unlikely and sharpened scores."""
    model = random_model(tiny_config(event_layers=2, token_layers=2))
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
        model.lm_head.weight[EOS_ID] = 0
    return model.to(device)


def bos_prompt(batch: int, device: str) -> torch.Tensor:
    prompt = torch.full((batch, K), PAD_ID, device=device)
    prompt[:, 0] = BOS_ID
    return prompt


def left_padded_batch(model: MidiEventTransformerForCausalLM, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of 1, 3 and 2 events (sampled), left-padded by whole events to 3 events, and their attention mask."""
    torch.manual_seed(2)
    prompts = [bos_prompt(1, device)]
    prompts += [model.generate(bos_prompt(1, device), max_new_tokens=extra * K, do_sample=True) for extra in (2, 1)]
    width = max(p.shape[1] for p in prompts)
    batch = torch.cat([torch.cat([torch.full((1, width - p.shape[1]), PAD_ID, device=device), p], 1)
                       for p in prompts])
    mask = torch.ones_like(batch)
    for row, prompt in enumerate(prompts):
        mask[row, :width - prompt.shape[1]] = 0
    return batch, mask


@pytest.mark.parametrize("device", DEVICES)
def test_greedy_event_loop_equals_per_token_loop_on_device(device):
    model = model_on(device)
    prompt = bos_prompt(1, device)
    fast = model.generate(prompt, max_new_tokens=12 * K, do_sample=False)
    slow = model.generate(prompt, max_new_tokens=12 * K, do_sample=False, event_loop=False)
    assert fast.device.type == device
    assert fast.shape == (1, 13 * K)
    assert torch.equal(fast.cpu(), slow.cpu())

    batch, mask = left_padded_batch(model, device)
    assert (mask == 0).any(dim=1).tolist() == [True, False, True]
    fast = model.generate(batch, attention_mask=mask, max_new_tokens=8 * K, do_sample=False)
    slow = model.generate(batch, attention_mask=mask, max_new_tokens=8 * K, do_sample=False, event_loop=False)
    assert fast.shape == (3, batch.shape[1] + 8 * K)
    assert torch.equal(fast.cpu(), slow.cpu())
    assert torch.equal(fast[:, :batch.shape[1]].cpu(), batch.cpu())


@pytest.mark.parametrize("device", DEVICES)
def test_sampling_on_device_is_grammatical(device):
    model = model_on(device)
    torch.manual_seed(3)
    out = model.generate(bos_prompt(4, device), max_new_tokens=40 * K, do_sample=True, temperature=1.7, top_k=20,
                         top_p=0.98, suppress_tokens=[EOS_ID])
    assert out.shape == (4, 41 * K)
    rows = out[:, K:].reshape(-1, K).cpu().numpy()  # (4 * 40, K): every generated event of every batch row
    assert grammar_problems(rows) == []
    assert not (rows[:, 0] == BOS_ID).any()  # only events (EOS is suppressed)
