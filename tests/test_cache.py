"""MidiEventTransformerCache: cached decoding equals uncached, batch operations, wrong caches."""

from __future__ import annotations

import pytest
import torch
from generation_helpers import tiny_config as shared_tiny_config
from transformers import DynamicCache

from midi_event_transformer.cache_midi_event_transformer import KeyValueBuffer, MidiEventTransformerCache
from midi_event_transformer.configuration_midi_event_transformer import MidiEventTransformerConfig
from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM

V = 3406


def tiny_config(event_layers: int = 2) -> MidiEventTransformerConfig:
    return shared_tiny_config(event_layers=event_layers, token_layers=2)


@pytest.fixture(scope="module")
def model() -> MidiEventTransformerForCausalLM:
    torch.manual_seed(0)
    return MidiEventTransformerForCausalLM(tiny_config()).eval()


PROMPT_LENGTH = 3 * 8 + 5  # three events plus a partial one


@pytest.fixture(scope="module")
def prompt() -> torch.Tensor:
    return torch.randint(3, V, (2, PROMPT_LENGTH), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("chunks", [[1] * PROMPT_LENGTH, [PROMPT_LENGTH], [5, 3, 8, 1, 12], [7, 1, 1, 20], [16, 13]])
def test_cached_equals_uncached_at_every_position(model, prompt, chunks):
    with torch.no_grad():
        full = model(prompt, use_cache=False).logits
        cache, pieces, start = None, [], 0
        for size in chunks:
            out = model(prompt[:, start:start + size], past_key_values=cache, use_cache=True)
            cache, start = out.past_key_values, start + size
            pieces.append(out.logits)
    assert isinstance(cache, MidiEventTransformerCache)
    assert cache.get_seq_length() == PROMPT_LENGTH and cache.num_events == 3
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-4)


def test_cached_with_left_padding(model, prompt):
    padded = torch.cat([torch.zeros(2, 8, dtype=torch.long), prompt], 1)
    mask = torch.ones_like(padded)
    mask[1, :8] = 0
    padded[0, :8] = prompt[0, :8]
    with torch.no_grad():
        full = model(padded, attention_mask=mask, use_cache=False).logits
        cache, pieces = None, []
        for p in range(padded.shape[1]):
            out = model(padded[:, p:p + 1], attention_mask=mask[:, :p + 1], past_key_values=cache)
            cache = out.past_key_values
            pieces.append(out.logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-4)


def continue_logits(model, cache, tokens):
    with torch.no_grad():
        return model(tokens, past_key_values=cache).logits


def test_batch_operations(model, prompt):
    with torch.no_grad():
        cache = model(prompt).past_key_values
        next_tokens = torch.randint(3, V, (2, 4))
        expected = model(torch.cat([prompt, next_tokens], 1), use_cache=False).logits[:, -4:]

        repeated = model(prompt).past_key_values
        repeated.batch_repeat_interleave(3)
        assert repeated.batch_size == 6
        out = continue_logits(model, repeated, next_tokens.repeat_interleave(3, dim=0))
        torch.testing.assert_close(out, expected.repeat_interleave(3, dim=0), rtol=0, atol=1e-4)

        reordered = model(prompt).past_key_values
        reordered.reorder_cache(torch.tensor([1, 0]))
        torch.testing.assert_close(continue_logits(model, reordered, next_tokens.flip(0)), expected.flip(0),
                                   rtol=0, atol=1e-4)

        selected = model(prompt).past_key_values
        selected.batch_select_indices(torch.tensor([1]))
        torch.testing.assert_close(continue_logits(model, selected, next_tokens[1:]), expected[1:], rtol=0, atol=1e-4)

    cache.reset()
    assert cache.get_seq_length() == 0 and cache.num_events == 0
    with torch.no_grad():
        torch.testing.assert_close(model(prompt, past_key_values=cache).logits, model(prompt, use_cache=False).logits,
                                   rtol=0, atol=1e-4)


def test_buffer_grows_by_doubling():
    buffer = KeyValueBuffer(min_capacity=4)
    chunks = [torch.randn(1, 2, n, 3) for n in (3, 2, 6, 1)]
    for chunk in chunks:
        keys, values = buffer.append(chunk, -chunk)
    assert buffer.length == 12 and buffer.keys.shape[2] >= 12
    torch.testing.assert_close(keys, torch.cat(chunks, dim=2))
    torch.testing.assert_close(values, -torch.cat(chunks, dim=2))
    capacity = buffer.keys.shape[2]
    buffer.reset()
    buffer.append(torch.randn(1, 2, 5, 3), torch.randn(1, 2, 5, 3))
    assert buffer.keys.shape[2] == capacity  # memory reused


def test_cache_from_another_model_is_rejected(model, prompt):
    with pytest.raises(ValueError, match="MidiEventTransformerCache"):
        model(prompt, past_key_values=DynamicCache())
    other = MidiEventTransformerCache(tiny_config(event_layers=3))
    with pytest.raises(ValueError, match="built for a model with shapes"):
        model(prompt, past_key_values=other)
    with torch.no_grad():
        cache = model(prompt).past_key_values
    with pytest.raises(ValueError, match="holds 2 rows"):
        model(prompt[:1, :8], past_key_values=cache)
    with pytest.raises(TypeError, match="MidiEventTransformerConfig"):
        MidiEventTransformerCache(object())


def test_crop_is_not_supported(model, prompt):
    with torch.no_grad():
        cache = model(prompt).past_key_values
    with pytest.raises(NotImplementedError):
        cache.crop(4)


def test_append_real_events_equals_all_true_flags():
    fast, flagged = MidiEventTransformerCache(tiny_config()), MidiEventTransformerCache(tiny_config())
    for cache in (fast, flagged):
        cache.append_event_flags(torch.ones(2, 3, dtype=torch.bool))
    for _ in range(70):  # past the first capacity (64): the flags grow
        fast.append_real_events(1)
        flagged.append_event_flags(torch.ones(2, 1, dtype=torch.bool))
    assert fast.num_events == flagged.num_events == 73
    assert torch.equal(fast.valid_event_count, flagged.valid_event_count)
    assert torch.equal(fast.event_valid[:, :73], flagged.event_valid[:, :73]) and not fast.has_padding
    padded = MidiEventTransformerCache(tiny_config())
    padded.append_event_flags(torch.tensor([[False], [True]]))
    with pytest.raises(ValueError, match="without padding"):
        padded.append_real_events(1)
    with pytest.raises(ValueError, match="started cache"):
        MidiEventTransformerCache(tiny_config()).append_real_events(1)
