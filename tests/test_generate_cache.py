"""generate() with a cache the caller passes: both argument names, what the cache holds afterwards."""

from __future__ import annotations

import pytest
import torch
from generation_helpers import random_model
from transformers import DynamicCache

from midi_event_transformer.cache_midi_event_transformer import MidiEventTransformerCache
from midi_event_transformer.modeling_midi_event_transformer import CACHE_ARGUMENT
from midi_event_transformer.vocabulary import BOS_ID, EOS_ID, TOKENS_PER_EVENT

K = TOKENS_PER_EVENT


@pytest.fixture(scope="module")
def model():
    return random_model()


def bos_prompt(batch: int = 1) -> torch.Tensor:
    prompt = torch.zeros(batch, K, dtype=torch.long)
    prompt[:, 0] = BOS_ID
    return prompt


def test_cache_argument_follows_the_installed_transformers():
    import inspect

    from transformers import GenerationMixin

    names = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    assert CACHE_ARGUMENT in names


@pytest.mark.parametrize("name", ["past_key_values", "cache"])
@pytest.mark.parametrize("event_loop", [True, False])
def test_a_passed_cache_is_filled_and_continues(model, name, event_loop):
    """After generate the cache holds the returned ids but the last few; the logits it gives for the rest equal an
    uncached forward over the whole sequence, and its tensors are ordinary ones (usable outside inference mode)."""
    cache = MidiEventTransformerCache(model.config)
    out = model.generate(bos_prompt(2), max_new_tokens=8 * 20 + 3, do_sample=True, top_k=5,
                         suppress_tokens=[EOS_ID], event_loop=event_loop, **{name: cache})
    seen = cache.get_seq_length()
    assert 8 * 19 < seen < out.shape[1]
    for layer in cache.event_layers + cache.token_layers:
        assert layer.keys is not None and not layer.keys.is_inference()
    with torch.no_grad():
        rest = model(out[:, seen:], past_key_values=cache, use_cache=True).logits  # (B, L - seen, V)
        whole = model(out, use_cache=False).logits
    torch.testing.assert_close(rest, whole[:, seen:], rtol=1e-4, atol=1e-4)


def test_generate_continues_from_a_filled_cache(model):
    """A second generate on the returned ids with the same cache equals one generate without it (greedy)."""
    cache = MidiEventTransformerCache(model.config)
    first = model.generate(bos_prompt(), max_new_tokens=8 * 6, do_sample=False, past_key_values=cache)
    second = model.generate(first, max_new_tokens=8 * 6, do_sample=False, past_key_values=cache)
    alone = model.generate(first, max_new_tokens=8 * 6, do_sample=False)
    assert torch.equal(second, alone)


def test_cache_after_a_prompt_shorter_than_one_event(model):
    cache = MidiEventTransformerCache(model.config)
    prompt = torch.tensor([[BOS_ID]])
    out = model.generate(prompt, max_new_tokens=8 * 3, do_sample=False, past_key_values=cache)
    seen = cache.get_seq_length()
    assert 0 < seen < out.shape[1]
    with torch.no_grad():
        rest = model(out[:, seen:], past_key_values=cache).logits
        whole = model(out).logits
    torch.testing.assert_close(rest, whole[:, seen:], rtol=1e-4, atol=1e-4)


def test_bad_cache_arguments(model):
    cache = MidiEventTransformerCache(model.config)
    with pytest.raises(ValueError, match="not both"):
        model.generate(bos_prompt(), max_new_tokens=8, past_key_values=cache, cache=cache)
    with pytest.raises(TypeError, match="MidiEventTransformerCache"):
        model.generate(bos_prompt(), max_new_tokens=8, past_key_values=DynamicCache())


def test_beam_search_is_refused_by_the_event_loop_callable(model):
    from transformers import GenerationConfig

    from midi_event_transformer.event_decoding import generate_events

    config = GenerationConfig(num_beams=2, max_length=16)
    with pytest.raises(ValueError, match="event_loop=False"):
        generate_events(model, bos_prompt(), [], [], config)
