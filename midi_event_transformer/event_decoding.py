"""Event-level decoding loop: transformers' ``custom_generate=`` callable used by default for greedy / sampling.

The plain per-token ``GenerationMixin._sample`` loop pays the whole model wrapper (input checks, cache
bookkeeping, output objects) for each of the 8 tokens of an event. This loop calls the two levels
directly on the model's cache:

1. **event step** when an event is complete: the event transformer on that event (one position, with the
   event-level KV cache), then row 0 of the token transformer (the new event state) -> logits of slot 0;
2. **token steps**: one token-transformer row per sampled token -> logits of the next slot;
3. **forced pads are skipped**: once every row's event has all its parameters, the remaining slots can
   only be pad under the MIDI grammar, so pad is appended without running the model.

The same logits processors (grammar, controls, user processors, temperature / top-k / top-p warpers),
stopping criteria and streamer as the standard loop are applied, so greedy output is identical to the
per-token path. Beam search, assisted decoding, ``return_dict_in_generate`` and multi-GPU sync fall back
to transformers' own methods.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationConfig, GenerationMixin, LogitsProcessorList, StoppingCriteriaList
from transformers.generation.configuration_utils import GenerationMode

from .cache_midi_event_transformer import MidiEventTransformerCache
from .grammar import MidiGrammarLogitsProcessor

_EVENT_LOOP_MODES = (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE)


def event_loop_applies(generation_config: GenerationConfig, synced_gpus: bool = False) -> bool:
    """Whether :func:`generate_events` handles this request itself (else it defers to transformers)."""
    return (generation_config.get_generation_mode() in _EVENT_LOOP_MODES
            and not generation_config.return_dict_in_generate
            and generation_config.use_cache is not False
            and not synced_gpus)


def _parameter_limit(grammar: MidiGrammarLogitsProcessor | None, event_types: torch.Tensor,
                     unfinished: torch.Tensor, tokens_per_event: int) -> int:
    """Last slot of the current event that may hold a non-pad token in any unfinished row."""
    if grammar is None:
        return tokens_per_event - 1
    type_index = grammar.type_index[event_types]  # (B,) -1 for EOS / non-event ids
    counts = grammar.num_parameters[type_index.clamp(min=0)].masked_fill(type_index < 0, 0)
    counts = counts.masked_fill(~unfinished, 0)
    return int(counts.max())


@torch.no_grad()
def generate_events(model: Any, input_ids: torch.LongTensor, logits_processor: LogitsProcessorList,
                    stopping_criteria: StoppingCriteriaList, generation_config: GenerationConfig,
                    synced_gpus: bool = False, streamer: Any = None, **model_kwargs: Any) -> torch.LongTensor:
    """Decode event by event. Signature of ``GenerationMixin._sample`` (pass as ``generate(custom_generate=...)``).

    Returns:
        `torch.LongTensor` (batch, total length): the prompts followed by the generated tokens.
    """
    if not event_loop_applies(generation_config, synced_gpus):
        method = "_sample" if generation_config.get_generation_mode() in _EVENT_LOOP_MODES else "_beam_search"
        return getattr(GenerationMixin, method)(model, input_ids, logits_processor=logits_processor,
                                               stopping_criteria=stopping_criteria,
                                               generation_config=generation_config, synced_gpus=synced_gpus,
                                               streamer=streamer, **model_kwargs)
    k = model.config.tokens_per_event
    pad_id = generation_config._pad_token_tensor
    pad_id = model.config.pad_token_id if pad_id is None else int(pad_id)
    grammar = next((p for p in logits_processor if isinstance(p, MidiGrammarLogitsProcessor)), None)
    batch, prompt_length = input_ids.shape
    max_length = max(generation_config.max_length, prompt_length)
    sequences = input_ids.new_full((batch, max_length), pad_id)  # (B, max_length)
    sequences[:, :prompt_length] = input_ids

    cache = model_kwargs.get("past_key_values")
    if cache is None:
        cache = MidiEventTransformerCache(model.config)
    logits = model(input_ids=input_ids[:, cache.get_seq_length():], attention_mask=model_kwargs.get("attention_mask"),
                   past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]  # (B, V)
    if grammar is not None:
        grammar._to(sequences.device)

    length = prompt_length
    unfinished = torch.ones(batch, dtype=torch.bool, device=sequences.device)
    event_start = length - length % k
    limit = _parameter_limit(grammar, sequences[:, event_start], unfinished, k) if length % k else k - 1
    while True:
        # sample the token at `length`
        current = sequences[:, :length]
        scores = logits_processor(current, logits.to(dtype=torch.float32))  # (B, V)
        if generation_config.do_sample:
            tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)  # (B,)
        else:
            tokens = scores.argmax(dim=-1)
        tokens = tokens.masked_fill(~unfinished, pad_id)
        sequences[:, length] = tokens
        length += 1
        if streamer is not None:
            streamer.put(tokens.cpu())
        unfinished &= ~stopping_criteria(sequences[:, :length], scores)
        if length % k == 1:  # an event type was just chosen: how many slots can be non-pad in this event?
            limit = _parameter_limit(grammar, tokens, unfinished, k)
        # append forced pads (slots past every row's parameters) without running the model
        while unfinished.any() and length % k and length % k > limit and length < max_length:
            sequences[:, length] = pad_id
            length += 1
            if streamer is not None:
                streamer.put(sequences[:, length - 1].cpu())
            unfinished &= ~stopping_criteria(sequences[:, :length], scores)
        if not unfinished.any() or length >= max_length:
            break
        logits = _next_logits(model, cache, sequences, length, k)

    if streamer is not None:
        streamer.end()
    cache.partial_event = None  # the lean steps do not keep the flat bookkeeping; the cache is spent
    return sequences[:, :length]


def _next_logits(model: Any, cache: MidiEventTransformerCache, sequences: torch.Tensor, length: int,
                 k: int) -> torch.Tensor:
    """Logits (B, V) for position ``length`` given the token just written at ``length - 1``."""
    slot = length % k
    if slot == 0:  # event complete: event step, then token row 0 from the new event state
        event = sequences[:, length - k:length].unsqueeze(1)  # (B, 1, K)
        state = model.encode_events(event, None, cache)  # (B, 1, H)
        cache.reset_token_level()
        hidden = model.decode_tokens(state, 0, cache)  # (B, 1, H)
    else:  # token step: row `slot` of the current token sequence
        rows = model.net_token.embed_tokens(sequences[:, length - 1:length])  # (B, 1, H)
        hidden = model.decode_tokens(rows, slot, cache)
    return model.lm_head(hidden[:, -1])  # (B, V)


__all__ = ["event_loop_applies", "generate_events"]
