"""Event-level decoding loop: transformers' ``custom_generate=`` callable used by default for greedy / sampling.

The plain per-token ``GenerationMixin._sample`` loop pays the whole model wrapper (input checks, cache
bookkeeping, output objects, module hooks) for each of the 8 tokens of an event. This loop instead runs,
on the model's own [`MidiEventTransformerCache`] and weights:

1. an **event step** when an event is complete: the event transformer on that one event (event-level KV),
   then row 0 of the token transformer (the new event state) -> scores of slot 0;
2. **token steps**: one token-transformer row per sampled token -> scores of the next slot. Such a row is
   the embedding of the token just chosen, so its first-layer attention inputs (norm, q/k/v product,
   rotation by the row index) depend on (id, row) only: they are computed once per pair and looked up after;
3. **forced pads are skipped**: once no row's event has parameters left, the remaining slots can only be
   pad under the MIDI grammar, so pad is appended without running the model.

The layers run the same modules in the same operations as the model's forward (the same values within float
rounding) without its per-call bookkeeping (masks, position ids, output objects), on the cache's preallocated
buffers.
When the processors are all "compact-safe" (the grammar, temperature, top-k, top-p, min-p, suppress-tokens,
or any processor with a ``compact_call(input_ids, scores, offset)`` method) only the ``lm_head`` rows of the
id range the grammar allows are computed and processed. Other
processors get the full ``(batch, vocab)`` scores. Stopping criteria and the streamer see every token.
Greedy output equals the per-token path; sampling draws from the same distribution.
``generate`` leaves beam search, ``return_dict_in_generate`` and multi-GPU sync to transformers' own loops.

Each optional mechanism (forced-pad skipping, grammar-span scoring, the fused top-k / top-p sampler, the token-input
lookup, the fused RMS norm, inference mode) can be switched off through [`EventDecodingOptions`], passed as
``model.generate(..., decoding_options=EventDecodingOptions(...))``: they change how fast the tokens come, not which
(``scripts/bench_mechanisms.py`` measures what each one gains).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    EosTokenCriteria,
    GenerationConfig,
    LogitsProcessorList,
    MaxLengthCriteria,
    MinPLogitsWarper,
    StoppingCriteriaList,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation import GenerationMode

from .cache_midi_event_transformer import KeyValueBuffer, MidiEventTransformerCache
from .grammar import MidiGrammarLogitsProcessor
from .modeling_midi_event_transformer import (
    CACHE_ARGUMENT,
    MidiEventTransformerRMSNorm,
    apply_rotary,
)

_EVENT_LOOP_MODES = (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE)
_SHAPE_AGNOSTIC_WARPERS = (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper)


@dataclass(frozen=True)
class EventDecodingOptions:
    """Which optional mechanisms the event-level loop uses; each is on by default.

    Every mechanism changes only how fast the tokens come: with any of them off, greedy output is the same and
    sampling draws from the same distribution. Switch one off to measure what it gains
    (``scripts/bench_mechanisms.py``) or to rule it out while debugging::

        model.generate(prompt, max_new_tokens=64, decoding_options=EventDecodingOptions(fused_rms_norm=False))

    ``generate`` hands the options to the event-level loop; transformers' per-token loop (``event_loop=False``, beam
    search, dict outputs) has none of these mechanisms and ignores them.

    Args:
        skip_forced_pads (`bool`, defaults to `True`): append the pads after every unfinished row's last parameter
            without running the model. Off: a token step for each of those slots too.
        grammar_span_scoring (`bool`, defaults to `True`): when the processors allow it, compute only the
            ``lm_head`` rows of the id range the grammar allows and process those scores. Off: the full ``lm_head``
            and every processor on ``(batch, vocab)`` scores (which also turns the fused sampler off).
        fused_top_k_top_p (`bool`, defaults to `True`): sample top-k then top-p in one pass on the top-k values.
            Off: transformers' top-k and top-p warpers, then softmax and multinomial.
        token_input_lookup (`bool`, defaults to `True`): compute the embedding and first-layer attention inputs of
            a (token id, row) pair once per generation and look them up after. Off: computed at every token step.
        fused_rms_norm (`bool`, defaults to `True`): float32 RMS norms through ``torch.rms_norm``. Off: the norm
            module's own forward.
        inference_mode (`bool`, defaults to `True`): run the loop under ``torch.inference_mode``. Off: under
            ``torch.no_grad`` only.
    """

    skip_forced_pads: bool = True
    grammar_span_scoring: bool = True
    fused_top_k_top_p: bool = True
    token_input_lookup: bool = True
    fused_rms_norm: bool = True
    inference_mode: bool = True


def event_loop_applies(generation_config: GenerationConfig, synced_gpus: bool = False) -> bool:
    """Whether :func:`generate_events` handles this request itself (else it defers to transformers)."""
    return (generation_config.get_generation_mode() in _EVENT_LOOP_MODES
            and not generation_config.return_dict_in_generate
            and generation_config.use_cache is not False
            and not synced_gpus)


# --------------------------------------------------------------------------------------------- lean layer calls
def _bound_norm(norm: nn.Module, dtype: torch.dtype, fused: bool = True):
    """``norm`` for inputs of ``dtype``: for float32 inputs and weight (and ``fused``), the fused op its forward
    ends in."""
    if fused and isinstance(norm, MidiEventTransformerRMSNorm) and dtype == norm.weight.dtype == torch.float32:
        return partial(torch.rms_norm, normalized_shape=norm.weight.shape, weight=norm.weight,
                       eps=norm.variance_epsilon)
    return norm


class _LeanLayer:
    """A decoder layer's operations, as ``MidiEventTransformerDecoderLayer.forward``, on a ``KeyValueBuffer``.

    The projections are the layer's own modules, so wrapped Linear layers (LoRA, int8) and module hooks work.
    """

    def __init__(self, layer: nn.Module, dtype: torch.dtype, fused_norm: bool = True) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.input_norm = _bound_norm(layer.input_layernorm, dtype, fused_norm)
        self.post_norm = _bound_norm(layer.post_attention_layernorm, dtype, fused_norm)
        self.q, self.k, self.v, self.o = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj
        self.gate, self.up, self.down, self.act = mlp.gate_proj, mlp.up_proj, mlp.down_proj, mlp.act_fn
        self.head_dim, self.scale = attn.head_dim, attn.scaling
        self.gqa = attn.num_heads != attn.num_key_value_heads
        self.attend = None if attn.implementation == "sdpa" else attn.attend

    def attention_inputs(self, x: torch.Tensor, cos: torch.Tensor,
                         sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rotated queries (B, h, T, d), rotated keys and values (B, kv, T, d) of ``x`` (B, T, H)."""
        batch, length, _ = x.shape
        h = self.input_norm(x)
        q, k, v = (product(h).view(batch, length, -1, self.head_dim).transpose(1, 2)
                   for product in (self.q, self.k, self.v))
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def __call__(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv: KeyValueBuffer,
                 mask: torch.Tensor | None, attention_inputs: tuple | None = None) -> torch.Tensor:
        """The layer on ``x`` (B, T, H); ``attention_inputs``: ``self.attention_inputs(x, cos, sin)`` when known."""
        batch, length, _ = x.shape
        q, k, v = attention_inputs or self.attention_inputs(x, cos, sin)
        k, v = kv.append(k, v)
        if self.attend is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale, enable_gqa=self.gqa)
        else:
            out = self.attend(q, k, v, mask, False)  # (B, h, T, d)
        x = x + self.o(out.transpose(1, 2).reshape(batch, length, -1))
        h = self.post_norm(x)
        return x + self.down(self.act(self.gate(h)) * self.up(h))


class _LeanModel:
    """The event step and token step of ``model`` on its cache."""

    def __init__(self, model: Any, cache: MidiEventTransformerCache, options: EventDecodingOptions) -> None:
        self.cache = cache
        self.device = model.device
        self.event_embed, self.token_embed = model.net.embed_tokens, model.net_token.embed_tokens
        self.token_input_lookup = options.token_input_lookup
        self.token_inputs: dict[tuple[int, int], tuple] = {}  # (id, row) -> its token row, first layer's q, k, v
        dtype = model.net_token.embed_tokens.weight.dtype  # of the hidden states
        fused = options.fused_rms_norm
        self.event_layers = [_LeanLayer(layer, dtype, fused) for layer in model.net.layers]
        self.token_layers = [_LeanLayer(layer, dtype, fused) for layer in model.net_token.layers]
        self.event_norm = _bound_norm(model.net.norm, dtype, fused)
        self.token_norm = _bound_norm(model.net_token.norm, dtype, fused)
        self.event_rotary = model.net.rotary_emb
        self.token_rotations = [model.net_token.rotary_emb.span(row, 1, dtype)  # (cos, sin) of each token row
                                for row in range(model.config.tokens_per_event)]

    def event_step(self, event: torch.Tensor) -> torch.Tensor:
        """Event transformer on one new event ``event`` (B, K) -> its state (B, 1, H); resets the token level."""
        cache = self.cache
        x = self.event_embed(event).sum(dim=-2, keepdim=True)  # (B, 1, H)
        if cache.has_padding or cache.valid_event_count is None:  # (None: no event yet, as after a 1-token prompt)
            valid = cache.append_event_flags(event.new_ones(event.shape[0], 1, dtype=torch.bool))  # (B, S)
            positions = cache.valid_event_count[:, None] - 1  # (B, 1): rotary position = real events before
            mask = valid[:, None, None, :] if cache.has_padding else None  # (B, 1, 1, S)
            cos, sin = self.event_rotary(positions, x.dtype)
        else:  # every row is at position num_events: no mask, one rotation for all rows
            cos, sin = self.event_rotary.span(cache.num_events, 1, x.dtype)  # (1, d) each
            cache.append_real_events(1)
            mask = None
        for layer, kv in zip(self.event_layers, cache.event_layers, strict=True):
            x = layer(x, cos, sin, kv, mask)
        cache.reset_token_level()
        return self.event_norm(x)

    def token_step(self, rows: torch.Tensor, row: int, attention_inputs: tuple | None = None) -> torch.Tensor:
        """Token transformer on one input row (B, 1, H) at row index ``row`` -> hidden (B, H);
        ``attention_inputs``: the first layer's (rotated q, k, v) of ``rows`` when already known."""
        cos, sin = self.token_rotations[row]
        x = rows
        for layer, kv in zip(self.token_layers, self.cache.token_layers, strict=True):
            x = layer(x, cos, sin, kv, None, attention_inputs)
            attention_inputs = None
        return self.token_norm(x)[:, -1]

    def token_step_on_ids(self, ids: list[int], row: int) -> torch.Tensor:
        """Token transformer on the row of the just chosen token ids (one per batch row) -> hidden (B, H).

        Such a row is the token embedding of its id, so the embedding and the first layer's attention inputs
        (norm, q/k/v product, rotation by the row index) are a function of (id, row) alone: they are computed
        once per pair and generation, and looked up after that. (A parameter id comes at one or a few rows.)
        Without ``token_input_lookup`` they are computed at every call.
        """
        if not self.token_input_lookup:
            return self.token_step(self.token_embed(torch.tensor(ids, device=self.device)[:, None]), row)
        known = self.token_inputs
        if any((i, row) not in known for i in ids):
            cos, sin = self.token_rotations[row]
            rows = self.token_embed(torch.tensor(ids, device=self.device)[:, None])  # (B, 1, H)
            inputs = self.token_layers[0].attention_inputs(rows, cos, sin)
            for b, i in enumerate(ids):
                known[i, row] = rows[b:b + 1], tuple(part[b:b + 1] for part in inputs)
            return self.token_step(rows, row, inputs)
        if len(ids) == 1:
            rows, inputs = known[ids[0], row]
        else:
            entries = [known[i, row] for i in ids]
            rows = torch.cat([entry[0] for entry in entries])  # (B, 1, H)
            inputs = tuple(torch.cat([entry[1][p] for entry in entries]) for p in range(3))
        return self.token_step(rows, row, inputs)


# --------------------------------------------------------------------------------------------- scoring
class _Scorer:
    """Turns a hidden state into processed scores, on the grammar's id range when the processors allow it."""

    def __init__(self, model: Any, processors: LogitsProcessorList, options: EventDecodingOptions) -> None:
        self.lm_head = model.lm_head
        self.span_products: dict[tuple[int, int], Any] = {}  # (lo, hi) -> the lm_head product of those ids
        self.processors = list(processors)
        self.grammar = next((p for p in processors if isinstance(p, MidiGrammarLogitsProcessor)), None)
        self.compact = options.grammar_span_scoring and self.grammar is not None and all(
            p is self.grammar or isinstance(p, (*_SHAPE_AGNOSTIC_WARPERS, SuppressTokensLogitsProcessor))
            or hasattr(p, "compact_call") for p in self.processors)
        vocab = model.config.vocab_size
        suppressed = torch.zeros(vocab, dtype=torch.bool)
        for p in self.processors:
            if isinstance(p, SuppressTokensLogitsProcessor):
                suppressed[p.suppress_tokens.cpu()] = True
        self.suppressed = suppressed.to(model.device)
        self.suppressed_before = [0, *torch.cumsum(suppressed.long(), 0).tolist()]  # count of suppressed ids < i
        if self.compact:  # grammar and suppressed ids as an additive mask per state (0 or -inf); its last row,
            allowed = self.grammar.allowed.to(model.device)  # all 0, for finished rows, whose token becomes pad
            self.grammar_mask = torch.zeros(allowed.shape[0] + 1, vocab, device=model.device)
            self.grammar_mask[:-1].masked_fill_(~allowed | self.suppressed, float("-inf"))

        # temperature -> top-k -> top-p (transformers' order) can be fused into one sampler on the top-k values
        warpers = [p for p in self.processors if isinstance(p, _SHAPE_AGNOSTIC_WARPERS)]
        kinds = [type(p) for p in warpers]
        self.sampler = None
        if options.fused_top_k_top_p and self.compact and kinds in ([TopKLogitsWarper, TopPLogitsWarper],
                                      [TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper]):
            self.sampler = _TopKTopPSampler(warpers[-2], warpers[-1])
            self.processors = [p for p in self.processors if not isinstance(p, (TopKLogitsWarper, TopPLogitsWarper))]

    def full(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Processed scores (B, V) from full logits (B, V)."""
        scores = logits.to(dtype=torch.float32)
        for processor in self.processors:
            scores = processor(input_ids, scores)
        return scores

    def __call__(self, input_ids: torch.Tensor, hidden: torch.Tensor, states: list[int],
                 live: list[bool]) -> tuple[torch.Tensor, int]:
        """Scores (B, hi - lo) float32 and ``lo``, the id of column 0 (0 when the whole vocabulary is scored)."""
        if not self.compact:
            return self.full(input_ids, self.lm_head(hidden)), 0
        grammar = self.grammar
        live_states = {state for state, alive in zip(states, live, strict=True) if alive}
        spans = [grammar.span_of_state[state] for state in live_states]
        lo, hi = min(span[0] for span in spans), max(span[1] for span in spans)
        if type(self.lm_head) is nn.Linear:
            product = self.span_products.get((lo, hi))
            if product is None:  # the rows lo..hi of a row-major weight: a contiguous view
                bias = None if self.lm_head.bias is None else self.lm_head.bias[lo:hi]
                product = self.span_products[lo, hi] = partial(F.linear, weight=self.lm_head.weight[lo:hi], bias=bias)
            scores = product(hidden)  # (B, hi - lo)
        else:  # quantized / adapted heads: full product, then the slice
            scores = self.lm_head(hidden)[:, lo:hi]
        if scores.dtype != torch.float32:
            scores = scores.float()
        # the span is the grammar unless a live row allows only part of it (finished rows: any finite score)
        masked = any(not grammar.state_is_range[state] or grammar.span_of_state[state] != (lo, hi)
                     for state in live_states)
        if masked:
            rows = [state if alive else -1 for state, alive in zip(states, live, strict=True)]
            scores = scores + self.grammar_mask[:, lo:hi][torch.tensor(rows, device=scores.device)]  # (B, hi - lo)
        for processor in self.processors:
            if processor is grammar:
                continue
            if isinstance(processor, SuppressTokensLogitsProcessor):
                if not masked and self.suppressed_before[hi] > self.suppressed_before[lo]:
                    scores = scores.masked_fill(self.suppressed[lo:hi], float("-inf"))
            elif isinstance(processor, _SHAPE_AGNOSTIC_WARPERS):
                scores = processor(input_ids, scores)
            else:
                scores = processor.compact_call(input_ids, scores, lo)
        return scores, lo


class _TopKTopPSampler:
    """Sample as ``TopKLogitsWarper`` then ``TopPLogitsWarper`` then softmax + multinomial, on the top-k values only.

    Top-p keeps a token when the probability mass of the strictly more likely kept tokens is below ``top_p``
    (the same rule as transformers' ascending formulation), and at least ``min_tokens_to_keep`` tokens.
    """

    def __init__(self, top_k: TopKLogitsWarper, top_p: TopPLogitsWarper) -> None:
        self.top_k, self.top_p = top_k.top_k, top_p.top_p
        self.keep = max(top_p.min_tokens_to_keep, 1)

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        values, indices = torch.topk(scores, min(self.top_k, scores.shape[-1]))  # (B, k) descending
        probs = torch.softmax(values, dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # (B, k) mass of the more likely tokens
        drop = mass_before >= self.top_p  # never the first (its mass_before is 0) unless top_p is 0
        if self.keep > 1 or self.top_p <= 0:
            drop[:, :self.keep] = False
        kept = probs.masked_fill(drop, 0.0)
        # torch.multinomial(kept, 1) without its input checks: the same exponential race, so the same draws
        choice = (kept / torch.empty_like(kept).exponential_()).argmax(dim=-1, keepdim=True)  # (B, 1)
        return indices.gather(1, choice).squeeze(1)


def _apply_criteria(criteria: StoppingCriteriaList, sequences: torch.Tensor, length: int, scores: torch.Tensor,
                    live: list[bool]) -> list[bool]:
    if not criteria:
        return live
    done = criteria(sequences[:, :length], scores).tolist()
    return [alive and not stop for alive, stop in zip(live, done, strict=True)]


def _parameter_limit(grammar: MidiGrammarLogitsProcessor | None, event_starts: list[int], live: list[bool],
                     tokens_per_event: int) -> int:
    """Last slot of the current event that may hold a non-pad token in any unfinished row."""
    if grammar is None:
        return tokens_per_event - 1
    count_of = grammar.parameter_count_of  # plain ints: no device read per row
    return max((count_of.get(start, 0) for start, alive in zip(event_starts, live, strict=True) if alive), default=0)


def _hand_out(streamer: Any, values: torch.Tensor) -> None:
    """``streamer.put`` a CPU copy of ``values`` made outside inference mode (an ordinary tensor)."""
    with torch.inference_mode(False):
        streamer.put(values.to("cpu", copy=True))


# --------------------------------------------------------------------------------------------- the loop
@torch.no_grad()
def generate_events(model: Any, input_ids: torch.LongTensor, logits_processor: LogitsProcessorList,
                    stopping_criteria: StoppingCriteriaList, generation_config: GenerationConfig,
                    synced_gpus: bool = False, streamer: Any = None, event_streamer: Any = None,
                    keep_cache: bool = True, decoding_options: EventDecodingOptions | None = None,
                    **model_kwargs: Any) -> torch.LongTensor:
    """Decode event by event: a ``custom_generate`` callable for ``generate`` (greedy search and sampling).

    ``event_streamer``: a streamer transformers did not see (it hands a callable no ``streamer``); it first
    receives the prompt, as ``generate`` does for its own streamer.
    ``keep_cache``: leave the cache holding the tokens it has seen, as ordinary tensors (a cache the caller
    passed); ``False`` frees its buffers at the end (one made for this call).
    ``decoding_options``: which optional mechanisms to use ([`EventDecodingOptions`]; `None`: all).

    Returns:
        `torch.LongTensor` (batch, total length): the prompts followed by the generated tokens.
    """
    if not event_loop_applies(generation_config, synced_gpus):
        raise ValueError(f"the event-level loop decodes greedy search and sampling without dict outputs, not "
                         f"{generation_config.get_generation_mode().value}: pass event_loop=False")
    options = EventDecodingOptions() if decoding_options is None else decoding_options
    if not isinstance(options, EventDecodingOptions):
        raise TypeError(f"decoding_options must be an EventDecodingOptions, not {type(options).__name__}")
    if event_streamer is not None:
        streamer = event_streamer
        streamer.put(input_ids.cpu())
    k = model.config.tokens_per_event
    pad_id = generation_config.pad_token_id
    pad_id = model.config.pad_token_id if pad_id is None else int(pad_id)
    scorer = _Scorer(model, logits_processor, options)
    grammar = scorer.grammar
    # the grammar bounds the slots of an event that can hold a parameter (without it: all of them)
    pad_grammar = grammar if options.skip_forced_pads else None
    batch, prompt_length = input_ids.shape
    max_length = max(generation_config.max_length, prompt_length)
    sequences = input_ids.new_full((batch, max_length), pad_id)  # (B, max_length)
    sequences[:, :prompt_length] = input_ids

    # prefill through the model's forward (prompt of any length, padding, partial last event)
    cache = model_kwargs.get(CACHE_ARGUMENT)
    if cache is None:
        cache, keep_cache = MidiEventTransformerCache(model.config), False
    prefill = model(input_ids=input_ids[:, cache.get_seq_length():], attention_mask=model_kwargs.get("attention_mask"),
                    past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]  # (B, V)
    lean = _LeanModel(model, cache, options)
    if grammar is not None:
        grammar.to(sequences.device)

    # max_length is enforced by the loop itself and EOS by comparing ids; other criteria run at every token
    eos_ids = set()
    other_criteria = StoppingCriteriaList()
    for criterion in stopping_criteria:
        if isinstance(criterion, MaxLengthCriteria) and criterion.max_length >= max_length:
            continue
        if isinstance(criterion, EosTokenCriteria):
            eos_ids.update(int(i) for i in criterion.eos_token_id.flatten().tolist())
            continue
        other_criteria.append(criterion)

    length = prompt_length
    unfinished = torch.ones(batch, dtype=torch.bool, device=sequences.device)
    live = [True] * batch
    event_starts = sequences[:, length - length % k].tolist() if length % k else [None] * batch
    limit = _parameter_limit(pad_grammar, event_starts, live, k) if length % k else k - 1
    hidden = None
    # the whole loop runs under inference_mode (no view / version tracking: ~15% less time per step); what
    # leaves it (the streamer's tensors, the returned ids) is made outside it, an ordinary tensor
    with torch.inference_mode() if options.inference_mode else contextlib.nullcontext():
        while True:
            # score and choose the token at `length`
            current = sequences[:, :length]
            slot = length % k
            if hidden is None:  # first token: logits from the prefill, processed on the whole vocabulary
                scores, lo = scorer.full(current, prefill), 0
            else:
                states = [grammar.state_of(slot, start, not alive) for start, alive in zip(event_starts, live, strict=True)
                          ] if grammar is not None else []
                scores, lo = scorer(current, hidden, states, live)
            if not generation_config.do_sample:
                tokens = scores.argmax(dim=-1)
            elif scorer.sampler is not None:  # top-k / top-p fused, the first token too
                tokens = scorer.sampler(scores)
            else:
                tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)  # (B,)
            if lo:
                tokens = tokens + lo
            if not all(live):
                tokens = tokens.masked_fill(~unfinished, pad_id)
            sequences[:, length] = tokens
            length += 1
            if streamer is not None:
                _hand_out(streamer, tokens)
            chosen = tokens.tolist()
            live = [alive and token not in eos_ids for alive, token in zip(live, chosen, strict=True)]
            live = _apply_criteria(other_criteria, sequences, length, scores, live)
            if slot == 0:  # an event type was just chosen: how many of its slots can be non-pad?
                event_starts = chosen
                limit = _parameter_limit(pad_grammar, event_starts, live, k)
            # forced pads (past every row's parameters) are appended without running the model
            while length % k and length % k > limit and length < max_length and any(live):
                sequences[:, length] = pad_id
                length += 1
                if streamer is not None:
                    _hand_out(streamer, sequences[:, length - 1])
                if pad_id in eos_ids:
                    live = [False] * batch
                live = _apply_criteria(other_criteria, sequences, length, scores, live)
            unfinished = torch.tensor(live, device=sequences.device) if not all(live) else unfinished
            if length >= max_length or not any(live):
                break
            if length % k == 0:  # event complete: event step, then token row 0 from the new state
                hidden = lean.token_step(lean.event_step(sequences[:, length - k:length]), 0)
            else:
                hidden = lean.token_step_on_ids(chosen, length % k)  # the row of the tokens just chosen

    if streamer is not None:
        streamer.end()
    if keep_cache:  # the lean steps keep the KV buffers and event flags up to date, not the current event's ids
        partial_event = cache.partial_event
        if cache.num_events and cache.token_layers:  # tokens seen of the current event: token rows after row 0
            start = k * cache.num_events
            partial_event = sequences[:, start:start + cache.token_layers[0].length - 1]
        cache.finish_decoding(partial_event)
    else:
        cache.release()
    return sequences[:, :length]


__all__ = ["EventDecodingOptions", "event_loop_applies", "generate_events"]
