"""Event-level decoding loop: transformers' ``custom_generate=`` callable used by default for greedy / sampling.

The plain per-token ``GenerationMixin._sample`` loop pays the whole model wrapper (input checks, cache
bookkeeping, output objects, module hooks) for each of the 8 tokens of an event. This loop instead runs,
on the model's own [`MidiEventTransformerCache`] and weights:

1. an **event step** when an event is complete: the event transformer on that one event (event-level KV),
   then row 0 of the token transformer (the new event state) -> scores of slot 0;
2. **token steps**: one token-transformer row per sampled token -> scores of the next slot;
3. **forced pads are skipped**: once no row's event has parameters left, the remaining slots can only be
   pad under the MIDI grammar, so pad is appended without running the model.

The layers are called leanly (``forward`` of the same modules, same operations as the model's forward, so
the numbers are the same), and when the processors are all "compact-safe" (the grammar, temperature,
top-k, top-p, min-p, suppress-tokens, or any processor with a ``compact_call(input_ids, scores, offset)``
method) only the ``lm_head`` rows of the id range the grammar allows are computed and processed. Other
processors get the full ``(batch, vocab)`` scores. Stopping criteria and the streamer see every token.
Greedy output equals the per-token path; sampling draws from the same distribution.
Beam search, ``return_dict_in_generate`` and multi-GPU sync fall back to transformers' own loops.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import GenerationConfig, GenerationMixin, LogitsProcessorList, StoppingCriteriaList
from transformers.generation.configuration_utils import GenerationMode
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from torch import nn

from .cache_midi_event_transformer import KeyValueBuffer, MidiEventTransformerCache
from .grammar import MidiGrammarLogitsProcessor
from .modeling_midi_event_transformer import apply_rotary

_EVENT_LOOP_MODES = (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE)
_SHAPE_AGNOSTIC_WARPERS = (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper)


def event_loop_applies(generation_config: GenerationConfig, synced_gpus: bool = False) -> bool:
    """Whether :func:`generate_events` handles this request itself (else it defers to transformers)."""
    return (generation_config.get_generation_mode() in _EVENT_LOOP_MODES
            and not generation_config.return_dict_in_generate
            and generation_config.use_cache is not False
            and not synced_gpus)


# --------------------------------------------------------------------------------------------- lean layer calls
def _decoder_layer(layer: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   kv: KeyValueBuffer, mask: torch.Tensor | None) -> torch.Tensor:
    """The operations of ``MidiEventTransformerDecoderLayer.forward`` without module-call overhead."""
    attn, mlp = layer.self_attn, layer.mlp
    batch, length, _ = x.shape
    h = layer.input_layernorm.forward(x)
    q = attn.q_proj.forward(h).view(batch, length, -1, attn.head_dim).transpose(1, 2)  # (B, h, T, d)
    k = attn.k_proj.forward(h).view(batch, length, -1, attn.head_dim).transpose(1, 2)
    v = attn.v_proj.forward(h).view(batch, length, -1, attn.head_dim).transpose(1, 2)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    k, v = kv.append(k, v)
    out = attn.attend(q, k, v, mask, False)  # (B, h, T, d)
    x = x + attn.o_proj.forward(out.transpose(1, 2).reshape(batch, length, -1))
    h = layer.post_attention_layernorm.forward(x)
    return x + mlp.down_proj.forward(mlp.act_fn(mlp.gate_proj.forward(h)) * mlp.up_proj.forward(h))


def _run_stack(stack: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               kvs: list[KeyValueBuffer], mask: torch.Tensor | None) -> torch.Tensor:
    for layer, kv in zip(stack.layers, kvs):
        x = _decoder_layer(layer, x, cos, sin, kv, mask)
    return stack.norm.forward(x)  # (B, T, H)


def _event_step(model: Any, cache: MidiEventTransformerCache, event: torch.Tensor) -> torch.Tensor:
    """Event transformer on one new event ``event`` (B, K) -> its state (B, 1, H); resets the token level."""
    net = model.net
    x = net.embed_tokens.forward(event).sum(dim=-2, keepdim=True)  # (B, 1, H)
    positions = cache.valid_event_count[:, None]  # (B, 1): rotary position = real events before
    valid = cache.append_event_flags(torch.ones_like(positions, dtype=torch.bool))  # (B, S)
    mask = valid[:, None, None, :] if cache.has_padding else None  # (B, 1, 1, S)
    cos, sin = net.rotary_emb.forward(positions, x.dtype)
    state = _run_stack(net, x, cos, sin, cache.event_layers, mask)
    cache.reset_token_level()
    return state


def _token_step(model: Any, cache: MidiEventTransformerCache, rows: torch.Tensor, row: int) -> torch.Tensor:
    """Token transformer on one input row (B, 1, H) at row index ``row`` -> hidden (B, H)."""
    cos, sin = model.net_token.rotary_emb.span(row, 1, rows.dtype)
    return _run_stack(model.net_token, rows, cos, sin, cache.token_layers, None)[:, -1]


# --------------------------------------------------------------------------------------------- scoring
class _Scorer:
    """Turns a hidden state into processed scores, on the grammar's id range when the processors allow it."""

    def __init__(self, model: Any, processors: LogitsProcessorList) -> None:
        self.model = model
        self.processors = list(processors)
        self.grammar = next((p for p in processors if isinstance(p, MidiGrammarLogitsProcessor)), None)
        self.compact = self.grammar is not None and all(
            p is self.grammar or isinstance(p, (*_SHAPE_AGNOSTIC_WARPERS, SuppressTokensLogitsProcessor))
            or hasattr(p, "compact_call") for p in self.processors)

    def __call__(self, input_ids: torch.Tensor, hidden: torch.Tensor, states: torch.Tensor | None,
                 unfinished: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Scores (B, hi - lo) float32 and ``lo``, the id of column 0 (0 when the whole vocabulary is scored)."""
        lm_head = self.model.lm_head
        if not self.compact:
            scores = lm_head(hidden).to(dtype=torch.float32)  # (B, V)
            for processor in self.processors:
                scores = processor(input_ids, scores)
            return scores, 0
        lo, hi = self.grammar.id_span(states[unfinished])  # finished rows get pad whatever is scored
        if type(lm_head) is nn.Linear:
            bias = None if lm_head.bias is None else lm_head.bias[lo:hi]
            logits = F.linear(hidden, lm_head.weight[lo:hi], bias)  # (B, hi - lo)
        else:  # quantized / adapted heads: full product, then the slice
            logits = lm_head.forward(hidden)[:, lo:hi]
        allowed = self.grammar.allowed[states, lo:hi]  # (B, hi - lo)
        allowed[:, 0] |= ~allowed.any(dim=1)  # rows with nothing allowed here (finished): any finite column
        scores = logits.to(dtype=torch.float32).masked_fill(~allowed, float("-inf"))
        for processor in self.processors:
            if processor is self.grammar:
                continue
            if isinstance(processor, SuppressTokensLogitsProcessor):
                ids = torch.arange(lo, hi, device=scores.device)
                scores = scores.masked_fill(torch.isin(ids, processor.suppress_tokens.to(ids.device)), float("-inf"))
            elif isinstance(processor, _SHAPE_AGNOSTIC_WARPERS):
                scores = processor(input_ids, scores)
            else:
                scores = processor.compact_call(input_ids, scores, lo)
        return scores, lo


def _parameter_limit(grammar: MidiGrammarLogitsProcessor | None, event_types: torch.Tensor,
                     unfinished: torch.Tensor, tokens_per_event: int) -> int:
    """Last slot of the current event that may hold a non-pad token in any unfinished row."""
    if grammar is None:
        return tokens_per_event - 1
    type_index = grammar.type_index[event_types]  # (B,) -1 for EOS / non-event ids
    counts = grammar.num_parameters[type_index.clamp(min=0)].masked_fill(type_index < 0, 0)
    return int(counts.masked_fill(~unfinished, 0).max())


# --------------------------------------------------------------------------------------------- the loop
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
    scorer = _Scorer(model, logits_processor)
    grammar = scorer.grammar
    batch, prompt_length = input_ids.shape
    max_length = max(generation_config.max_length, prompt_length)
    sequences = input_ids.new_full((batch, max_length), pad_id)  # (B, max_length)
    sequences[:, :prompt_length] = input_ids

    # prefill through the model's forward (prompt of any length, padding, partial last event)
    cache = model_kwargs.get("past_key_values")
    if cache is None:
        cache = MidiEventTransformerCache(model.config)
    out = model(input_ids=input_ids[:, cache.get_seq_length():], attention_mask=model_kwargs.get("attention_mask"),
                past_key_values=cache, use_cache=True, logits_to_keep=1)
    hidden = None
    full_logits = out.logits[:, -1]  # (B, V) for the first new token
    if grammar is not None:
        grammar._to(sequences.device)

    length = prompt_length
    unfinished = torch.ones(batch, dtype=torch.bool, device=sequences.device)
    event_start = sequences[:, length - length % k] if length % k else None
    limit = _parameter_limit(grammar, event_start, unfinished, k) if length % k else k - 1
    while True:
        # score and choose the token at `length`
        current = sequences[:, :length]
        slot = length % k
        states = None if grammar is None else grammar.state_at(slot, event_start, ~unfinished)
        if hidden is None:  # first token: logits from the prefill, processed on the whole vocabulary
            scores, lo = full_logits.to(dtype=torch.float32), 0
            for processor in scorer.processors:
                scores = processor(current, scores)
        else:
            scores, lo = scorer(current, hidden, states, unfinished)
        if generation_config.do_sample:
            tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1) + lo  # (B,)
        else:
            tokens = scores.argmax(dim=-1) + lo
        tokens = tokens.masked_fill(~unfinished, pad_id)
        sequences[:, length] = tokens
        length += 1
        if streamer is not None:
            streamer.put(tokens.cpu())
        unfinished &= ~stopping_criteria(sequences[:, :length], scores)
        if slot == 0:  # an event type was just chosen: how many of its slots can be non-pad?
            event_start = tokens
            limit = _parameter_limit(grammar, tokens, unfinished, k)
        # forced pads (past every row's parameters) are appended without running the model
        while length % k and length % k > limit and length < max_length and unfinished.any():
            sequences[:, length] = pad_id
            length += 1
            if streamer is not None:
                streamer.put(sequences[:, length - 1].cpu())
            unfinished &= ~stopping_criteria(sequences[:, :length], scores)
        if length >= max_length or not unfinished.any():
            break
        if length % k == 0:  # event complete: event step, then token row 0 from the new state
            rows = _event_step(model, cache, sequences[:, length - k:length])  # (B, 1, H)
            event_start = None
            hidden = _token_step(model, cache, rows, 0)
        else:
            rows = model.net_token.embed_tokens.forward(sequences[:, length - 1:length])  # (B, 1, H)
            hidden = _token_step(model, cache, rows, length % k)

    if streamer is not None:
        streamer.end()
    cache.reset()  # the lean steps skip the cache's flat bookkeeping: do not reuse it
    return sequences[:, :length]


__all__ = ["event_loop_applies", "generate_events"]
