"""The two-level MIDI event transformer as a Hugging Face causal language model.

A piece is a flat stream of token ids, ``tokens_per_event`` (8) per event. Two Llama-style decoders:

* ``net`` (event transformer) reads one vector per event, the sum of the embeddings of its 8 tokens,
  and returns one hidden state ``h_e`` per event;
* ``net_token`` (token transformer) reads the rows ``[h_{e-1}, emb(tok_0), ..., emb(tok_6)]`` of event
  ``e`` and, through ``lm_head``, predicts ``tok_0 .. tok_7`` of event ``e``.

Flat view (what ``forward`` returns): the logits at flat position ``p`` predict the token at ``p + 1``,
so transformers' usual shifted causal-LM loss applies. Position ``8e + 7`` (last slot of event ``e``)
is row 0 of the next event's token sequence (``h_e`` alone); position ``8e + s`` (``s < 7``) is row
``s + 1`` of event ``e``'s sequence. The first event has no previous event state: its tokens 1..7 are
context only, the logits at flat positions 0..6 are zeros (no prediction) and the loss ignores them,
which makes the flat loss equal to the reference's two-level loss (see ``flat_causal_lm_loss``).
Likewise, under left padding (whole padding events, ``attention_mask`` 0), the logits computed from a
padding event's state are zeros and the labels they would predict are ignored.

Parameter names follow the reference (SkyTNT/midi-model: ``net.*``, ``net_token.*``, ``lm_head.weight``)
so its checkpoints load 1:1.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig, GenerationMixin, LogitsProcessorList, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutputWithPast

from .cache_midi_event_transformer import KeyValueBuffer, MidiEventTransformerCache
from .configuration_midi_event_transformer import MidiEventTransformerConfig, MidiEventTransformerLevelConfig
from .losses import fused_flat_causal_lm_loss
from .vocabulary import FIM_VOCAB_SIZE

#: transformers' name for the cache: in ``generate``'s model keyword arguments (what ``prepare_inputs_for_generation``
#: and a ``custom_generate`` callable receive) and in model outputs. ``cache`` from transformers 5.24 on,
#: ``past_key_values`` before. (Our own ``forward`` takes ``past_key_values`` on every release.)
CACHE_ARGUMENT = ("cache" if "cache" in inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
                  else "past_key_values")


# --------------------------------------------------------------------------------------------- building blocks
class MidiEventTransformerRMSNorm(nn.Module):
    """RMS norm computed in float32 (as Llama), scaled by a learned weight."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        shape = (hidden_states.shape[-1],)
        if hidden_states.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(hidden_states, shape, self.weight, self.variance_epsilon)  # one fused op
        normed = F.rms_norm(hidden_states.float(), shape, None, self.variance_epsilon)
        return self.weight * normed.to(hidden_states.dtype)


class MidiEventTransformerRotaryEmbedding(nn.Module):
    """Default rotary embedding (``inv_freq = theta ** (-2i / head_dim)``) with a lazily grown cos/sin table."""

    def __init__(self, config: MidiEventTransformerLevelConfig) -> None:
        super().__init__()
        self.head_dim, self.rope_theta = config.head_dim, config.rope_theta
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=False)
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None

    def compute_inv_freq(self) -> torch.Tensor:
        """(head_dim / 2,) float32 inverse frequencies."""
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.int64).float() / self.head_dim
        return 1.0 / (self.rope_theta ** exponents)

    @torch.no_grad()
    def _build_table(self, length: int) -> None:
        positions = torch.arange(length, device=self.inv_freq.device, dtype=torch.float32)
        freqs = positions[:, None] * self.inv_freq.float()[None, :]  # (P, head_dim / 2)
        cos, sin = freqs.cos(), freqs.sin()
        # sin with the sign of rotate_half folded in: x * cos + roll(x, d/2) * signed_sin (see apply_rotary)
        self._table = (torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1))  # (P, head_dim) each

    def _ensure(self, needed: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._table is None or self._table[0].shape[0] < needed or self._table[0].device != self.inv_freq.device:
            self._build_table(max(needed, 2 * (0 if self._table is None else self._table[0].shape[0]), 64))
        return self._table

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape ``(*position_ids.shape, head_dim)`` in ``dtype``."""
        cos, sin = self._ensure(int(position_ids.max()) + 1 if position_ids.numel() else 1)
        return cos[position_ids].to(dtype), sin[position_ids].to(dtype)

    def span(self, start: int, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (length, head_dim) of positions ``start .. start + length - 1`` (same values as ``forward``)."""
        cos, sin = self._ensure(start + length)
        return cos[start:start + length].to(dtype), sin[start:start + length].to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (B, heads, T, head_dim) by ``cos`` / ``signed_sin`` (B, T, head_dim) or (T, head_dim).

    Llama's ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = [-x2, x1]`` = ``roll(x, d/2) * [-sin, sin]``
    (the same products, so the same values), in fewer operations.
    """
    if cos.dim() == 3:
        cos, signed_sin = cos.unsqueeze(1), signed_sin.unsqueeze(1)
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * signed_sin


class MidiEventTransformerMLP(nn.Module):
    """SwiGLU feed-forward: ``down(act(gate(x)) * up(x))``."""

    def __init__(self, config: MidiEventTransformerLevelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def build_attention_mask(query_length: int, key_length: int, key_valid: torch.Tensor | None,
                         device: torch.device) -> tuple[torch.Tensor | None, bool]:
    """Causal (+ key padding) mask for queries that are the last ``query_length`` of ``key_length`` positions.

    Returns ``(mask, is_causal)``: a bool mask (B or 1, 1, Q, K) where True = attend, or ``None`` with
    ``is_causal`` telling scaled_dot_product_attention to apply the plain causal mask. A query always
    sees its own position, so rows of fully padded events stay finite.
    """
    if key_valid is None:
        if query_length == 1:
            return None, False
        if query_length == key_length:
            return None, True
    offset = key_length - query_length
    query_pos = torch.arange(offset, key_length, device=device)[:, None]  # (Q, 1)
    key_pos = torch.arange(key_length, device=device)[None, :]  # (1, K)
    mask = (key_pos <= query_pos)[None, None]  # (1, 1, Q, K)
    if key_valid is not None:
        mask = mask & (key_valid[:, None, None, :] | (key_pos == query_pos)[None, None])  # (B, 1, Q, K)
    return mask, False


class MidiEventTransformerAttention(nn.Module):
    """Multi-head (grouped-query) self-attention with rotary positions; sdpa (default) or eager.

    Each level may use its own implementation: ``attn_implementation={"token_config": "eager"}`` (in
    ``from_pretrained`` or ``set_attn_implementation``) sets it on that level's sub-config; a level without one follows
    the model's. Plain matmul ("eager") attention suits the token level's 8-position sequences in bf16 training on
    CPU, where the fused kernel's backward is about 3x slower (``scripts/bench_train.py``).
    """

    def __init__(self, config: MidiEventTransformerLevelConfig, root_config: MidiEventTransformerConfig) -> None:
        super().__init__()
        self.level_config = config  # both read at call time: set_attn_implementation() may change them
        self.root_config = root_config
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim ** -0.5
        self.attention_dropout = config.attention_dropout
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.attention_bias)

    def forward(self, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attention_mask: torch.Tensor | None = None, is_causal: bool = False,
                kv_buffer: KeyValueBuffer | None = None) -> torch.Tensor:
        batch, length, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(batch, length, -1, self.head_dim).transpose(1, 2)  # (B, h, T, d)
        k = self.k_proj(hidden_states).view(batch, length, -1, self.head_dim).transpose(1, 2)  # (B, kv, T, d)
        v = self.v_proj(hidden_states).view(batch, length, -1, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if kv_buffer is not None:
            k, v = kv_buffer.append(k, v)  # (B, kv, S, d)
        out = self.attend(q, k, v, attention_mask, is_causal)  # (B, h, T, d)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))  # (B, T, H)

    @property
    def implementation(self) -> str:
        """This level's attention implementation, else the model's: ``"sdpa"`` or ``"eager"``."""
        return self.level_config._attn_implementation or self.root_config._attn_implementation

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask: torch.Tensor | None,
               is_causal: bool) -> torch.Tensor:
        """softmax(q k^T * scale + mask) v with the configured implementation: (B, h, T, d)."""
        dropout = self.attention_dropout if self.training else 0.0
        if self.implementation == "eager":
            return self._eager(q, k, v, attention_mask, is_causal, dropout)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, is_causal=is_causal,
                                              dropout_p=dropout, scale=self.scaling,
                                              enable_gqa=self.num_heads != self.num_key_value_heads)

    def _eager(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
               is_causal: bool, dropout: float) -> torch.Tensor:
        groups = self.num_heads // self.num_key_value_heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scaling  # (B, h, T, S)
        if is_causal:
            mask, _ = build_attention_mask(q.shape[2], k.shape[2], None, q.device)
            mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril() if mask is None else mask
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        probs = F.dropout(probs, p=dropout, training=self.training)
        return torch.matmul(probs, v)  # (B, h, T, d)


class MidiEventTransformerDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm decoder layer: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: MidiEventTransformerLevelConfig, root_config: MidiEventTransformerConfig) -> None:
        super().__init__()
        self.self_attn = MidiEventTransformerAttention(config, root_config)
        self.mlp = MidiEventTransformerMLP(config)
        self.input_layernorm = MidiEventTransformerRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = MidiEventTransformerRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        #: ``torch.compile``d :meth:`layer_forward`, set by ``MidiEventTransformerForCausalLM.compile_layers``
        self.compiled_forward: Callable[..., torch.Tensor] | None = None

    def forward(self, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attention_mask: torch.Tensor | None = None, is_causal: bool = False,
                kv_buffer: KeyValueBuffer | None = None) -> torch.Tensor:
        if kv_buffer is None and self.compiled_forward is not None:  # cached steps change shape: eager
            return self.compiled_forward(hidden_states, cos, sin, attention_mask, is_causal)
        return self.layer_forward(hidden_states, cos, sin, attention_mask, is_causal, kv_buffer)

    def layer_forward(self, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                      attention_mask: torch.Tensor | None = None, is_causal: bool = False,
                      kv_buffer: KeyValueBuffer | None = None) -> torch.Tensor:
        """The layer's computation (``forward`` without the choice of a compiled version)."""
        hidden_states = hidden_states + self.self_attn(self.input_layernorm(hidden_states), cos, sin,
                                                       attention_mask, is_causal, kv_buffer)
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class MidiEventTransformerStack(nn.Module):
    """One Llama-style level: ``embed_tokens``, ``layers``, final ``norm`` (names as the reference's LlamaModel)."""

    def __init__(self, config: MidiEventTransformerLevelConfig, root_config: MidiEventTransformerConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(root_config.vocab_size, config.hidden_size, root_config.pad_token_id)
        self.layers = nn.ModuleList(MidiEventTransformerDecoderLayer(config, root_config)
                                    for _ in range(config.num_hidden_layers))
        self.norm = MidiEventTransformerRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = MidiEventTransformerRotaryEmbedding(config)

    def forward(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None, is_causal: bool = False,
                kv_buffers: list[KeyValueBuffer] | None = None) -> torch.Tensor:
        """``inputs_embeds`` (B, T, H), ``position_ids`` (B, T) or (T,) -> normed hidden states (B, T, H)."""
        cos, sin = self.rotary_emb(position_ids, inputs_embeds.dtype)
        hidden_states = inputs_embeds
        for i, layer in enumerate(self.layers):
            kv_buffer = None if kv_buffers is None else kv_buffers[i]
            hidden_states = layer(hidden_states, cos, sin, attention_mask=attention_mask, is_causal=is_causal,
                                  kv_buffer=kv_buffer)
        return self.norm(hidden_states)


# --------------------------------------------------------------------------------------------- loss
def flat_causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, pad_token_id: int,
                        tokens_per_event: int, label_offset: int = 0) -> torch.Tensor:
    """Mean cross entropy of ``logits`` (B, L, V) at position p against ``labels`` (B, L) at p + 1.

    Labels equal to -100 or ``pad_token_id`` are ignored (the reference never scores pad), and so are the
    labels of the first event (absolute flat positions < ``tokens_per_event``; ``label_offset`` is the
    absolute position of ``labels[:, 0]``), which has no previous event state to predict it from.
    This is the single place to swap in a chunked / fused cross entropy.
    """
    targets = torch.full_like(labels, -100)
    targets[:, :-1] = labels[:, 1:]  # shift the labels, not the (large) logits
    targets = targets.masked_fill(targets == pad_token_id, -100)
    first_context = max(0, tokens_per_event - 1 - label_offset)  # targets at positions < this are event 0's
    if first_context:
        targets[:, :first_context] = -100
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100)


# --------------------------------------------------------------------------------------------- models
class MidiEventTransformerPreTrainedModel(PreTrainedModel):
    config_class = MidiEventTransformerConfig
    config: MidiEventTransformerConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MidiEventTransformerDecoderLayer"]
    _supports_sdpa = True
    _supports_attention_backend = False
    _tied_weights_keys: dict[str, str] = {}

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        return True  # attention reads config._attn_implementation ("sdpa" or "eager") at every call

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, MidiEventTransformerRotaryEmbedding):  # non-persistent: recomputed after loading
            init.copy_(module.inv_freq, module.compute_inv_freq())
            module._table = None
        elif module is getattr(self, "lm_head", None):
            # As the reference: lm_head keeps nn.Linear's default, uniform within 1/sqrt(hidden) (std 0.036 at
            # 256), not N(0, 0.02). From scratch on POP909 this trains faster: train loss 1.84 vs 2.10 at step 300,
            # held-out NLL 1.254 vs 1.284 after 3500 steps (scripts/configs/small_pop909.json).
            bound = 1.0 / math.sqrt(module.in_features)
            init.uniform_(module.weight, -bound, bound)


class MidiEventTransformerForCausalLM(MidiEventTransformerPreTrainedModel, GenerationMixin):
    """The event transformer ``net``, the token transformer ``net_token`` and ``lm_head``.

    Inputs are flat token streams (see the module docstring); generation is event-aware (grammar and an
    event-level decoding loop are applied by default, see ``grammar.py`` and ``event_decoding.py``).
    """

    def __init__(self, config: MidiEventTransformerConfig) -> None:
        super().__init__(config)
        self.net = MidiEventTransformerStack(config.event_config, config)
        self.net_token = MidiEventTransformerStack(config.token_config, config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.net.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.net.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any):
        """Load our format; with the package installed, also a SkyTNT/midi-model checkpoint directory (converted on
        load, dtype kept)."""
        if __package__ == "midi_event_transformer":  # this file in the installed package, not a remote-code copy
            # conversion is the package's feature: an absolute import (transformers copies relative ones next to the
            # remote code) in a try block (its import check of remote code skips those)
            try:
                from midi_event_transformer.hub.conversion import (
                    is_reference_checkpoint,
                    load_reference_checkpoint,
                )
            except ImportError as error:
                raise ImportError(f"the installed midi_event_transformer is incomplete: {error}") from error
            if is_reference_checkpoint(pretrained_model_name_or_path):
                return load_reference_checkpoint(cls, pretrained_model_name_or_path, *args, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """Save weights (safetensors), config, code and a model card; ``auto_map`` also names ``AutoModel``.

        The card (README.md, from ``hub_cards/``) is written when the folder has none; training and conversion
        overwrite it with what they know. A remote-code copy of this file (no package installed) writes no card.
        """
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map.setdefault("AutoModel", f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}")
        self.config.auto_map = auto_map
        result = super().save_pretrained(save_directory, *args, **kwargs)
        card_path = os.path.join(save_directory, "README.md")
        if kwargs.get("is_main_process", True) and not os.path.exists(card_path):
            try:  # absolute import: transformers does not copy it next to the remote code
                from midi_event_transformer.hub.cards import write_model_card
            except ImportError:
                return result
            write_model_card(save_directory, config=self.config)
        return result

    # ----------------------------------------------------------------- input checks
    def _flat_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Validate ``input_ids`` (B, L) or (B, E, K) and return (B, L)."""
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool or input_ids.is_complex():
            raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        k = self.config.tokens_per_event
        if input_ids.dim() == 3:
            if input_ids.shape[-1] != k:
                raise ValueError(f"3-D input_ids must be (batch, events, {k}), got shape {tuple(input_ids.shape)}")
            input_ids = input_ids.reshape(input_ids.shape[0], -1)
        elif input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, events * {k}) or (batch, events, {k}), "
                             f"got shape {tuple(input_ids.shape)}")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size):
            raise ValueError(f"input_ids hold ids outside the vocabulary [0, {self.config.vocab_size}): "
                             f"min {int(input_ids.min())}, max {int(input_ids.max())}")
        return input_ids.long()

    def _event_flags(self, attention_mask: torch.Tensor | None, total_length: int, first_event: int,
                     num_events: int, batch: int) -> torch.Tensor | None:
        """(B, num_events) bool flags of events ``first_event..`` read at event starts, or None if no padding."""
        if attention_mask is None:
            return None
        if attention_mask.dim() != 2 or attention_mask.shape != (batch, total_length):
            raise ValueError(f"attention_mask must be (batch, {total_length}) = the whole flat sequence seen so far, "
                             f"got shape {tuple(attention_mask.shape)}")
        k = self.config.tokens_per_event
        flags = attention_mask[:, first_event * k:(first_event + num_events) * k:k].bool()  # (B, m)
        return None if bool(flags.all()) else flags

    # ----------------------------------------------------------------- the two levels
    def encode_events(self, events: torch.Tensor, event_valid: torch.Tensor | None = None,
                      cache: MidiEventTransformerCache | None = None) -> torch.Tensor:
        """Event transformer: ``events`` (B, n, K) ids -> hidden states (B, n, H), appending to ``cache``.

        ``event_valid`` (B, n) bool marks real events (False: left padding); None means all real.
        """
        batch, n, _ = events.shape
        x = self.net.embed_tokens(events).sum(dim=-2)  # (B, n, H)
        past = 0 if cache is None else cache.num_events
        valid = event_valid if event_valid is not None else events.new_ones(batch, n, dtype=torch.bool)
        if cache is not None:
            before = cache.valid_event_count
            key_valid = cache.append_event_flags(valid)  # (B, past + n)
            key_valid = key_valid if cache.has_padding else None
        else:
            before, key_valid = None, event_valid
        positions = valid.long().cumsum(1) - 1  # (B, n) rotary positions skip left padding
        if before is not None:
            positions = positions + before[:, None]
        positions = positions.clamp(min=0)
        if key_valid is None and past == 0 and event_valid is None:
            positions = positions[0]  # (n,) shared
        mask, is_causal = build_attention_mask(n, past + n, key_valid, events.device)
        layers = None if cache is None else cache.event_layers
        return self.net(x, positions, mask, is_causal, layers)  # (B, n, H)

    def decode_tokens(self, rows: torch.Tensor, first_row: int = 0,
                      cache: MidiEventTransformerCache | None = None) -> torch.Tensor:
        """Token transformer on input rows (B, T, H) starting at row ``first_row`` of the current token sequence."""
        length = rows.shape[1]
        positions = torch.arange(first_row, first_row + length, device=rows.device)  # (T,)
        mask, is_causal = build_attention_mask(length, first_row + length, None, rows.device)
        layers = None if cache is None else cache.token_layers
        return self.net_token(rows, positions, mask, is_causal, layers)  # (B, T, H)

    def _continued_token_rows(self, tokens: torch.Tensor, first_row: int, done: int,
                              cache: MidiEventTransformerCache | None) -> torch.Tensor:
        """Hidden states (B, c, H) for ``tokens`` (B, c) continuing the token sequence of event ``done - 1``."""
        batch, count = tokens.shape
        if done == 0:  # the first event's slots 0..6 have no previous event: zero hidden -> zero logits
            return torch.zeros(batch, count, self.config.hidden_size, dtype=self.dtype, device=tokens.device)
        hidden = self.decode_tokens(self.net_token.embed_tokens(tokens), first_row, cache)  # (B, c, H)
        if cache.has_padding:  # a padding event's state predicts nothing either
            hidden = hidden * cache.event_valid[:, done - 1, None, None].to(hidden.dtype)
        return hidden

    def _new_token_rows(self, states: torch.Tensor, following: torch.Tensor, flags: torch.Tensor | None,
                        last_rows: int, cache: MidiEventTransformerCache | None) -> list[torch.Tensor]:
        """Hidden states of the sequences ``[h_e, emb(tokens of event e + 1)]`` of the new events.

        ``states`` (B, m, H) are the new events' states, ``following`` (B, >= 0) the tokens after the first new
        event, ``flags`` (B, m) which new events are real, ``last_rows`` how many rows of the last sequence are
        needed. The last sequence runs on ``cache`` (its rows stay there for the next call).
        """
        batch, m, width = states.shape
        k = self.config.tokens_per_event
        missing = max(0, m * k - following.shape[1])  # the last event's successor may be absent
        following = F.pad(following, (0, missing), value=self.config.pad_token_id)[:, :m * k]
        next_tokens = following.view(batch, m, k)[..., :k - 1]  # (B, m, K-1)
        rows = torch.cat([states.unsqueeze(2), self.net_token.embed_tokens(next_tokens)], dim=2)  # (B, m, K, H)
        keep = None if flags is None else flags.to(rows.dtype)[:, :, None, None]  # padding events predict nothing
        parts = []
        if m > 1:  # all but the last: full sequences, no cache needed
            full = self.decode_tokens(rows[:, :-1].reshape(-1, k, width)).view(batch, m - 1, k, width)
            parts.append((full if keep is None else full * keep[:, :-1]).flatten(1, 2))  # (B, (m-1)*K, H)
        if cache is not None:
            cache.reset_token_level()
        last = self.decode_tokens(rows[:, -1, :last_rows], 0, cache)  # (B, last_rows, H)
        parts.append(last if keep is None else last * keep[:, -1])
        return parts

    # ----------------------------------------------------------------- forward
    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                past_key_values: MidiEventTransformerCache | None = None, inputs_embeds: None = None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                logits_to_keep: int | torch.Tensor = 0, **kwargs: Any) -> CausalLMOutputWithPast:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, length)` or `(batch, events, tokens_per_event)`):
                Flat token stream (new tokens only when `past_key_values` holds earlier ones). The last event may
                be incomplete.
            attention_mask (`torch.Tensor` of shape `(batch, past + length)`, *optional*): 1 for real tokens, 0 for
                left padding. Only the value at each event's first token is read (padding is by whole events).
            past_key_values ([`MidiEventTransformerCache`], *optional*): state from earlier calls.
            labels (`torch.LongTensor` of shape `(batch, length)`, *optional*): usually `input_ids` with pad set to
                -100; the loss is the mean cross entropy of logits at p against labels at p + 1.
            use_cache (`bool`, *optional*): return a cache (created when not given). Defaults to `config.use_cache`
                in eval mode, False in training.
            logits_to_keep (`int` or `torch.Tensor`, *optional*): compute logits for only the last `n` positions
                (0: all) or for the given positions.

        Returns:
            [`CausalLMOutputWithPast`] with `logits` (batch, length, vocab) and `loss` when labels are given.
        """
        if inputs_embeds is not None:
            raise ValueError("inputs_embeds is not supported: an event's input is the sum of its token embeddings")
        if input_ids is None:
            raise ValueError("input_ids is required")
        ids = self._flat_input_ids(input_ids)  # (B, n)
        batch, n = ids.shape
        k = self.config.tokens_per_event
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        cache = past_key_values
        if cache is not None and not isinstance(cache, MidiEventTransformerCache):
            raise ValueError(f"past_key_values must be a MidiEventTransformerCache (built for this model), got "
                             f"{type(cache).__name__}")
        if cache is None and use_cache:
            cache = MidiEventTransformerCache(self.config)
        if cache is not None:
            cache.check_compatible(self.config)
            if cache.batch_size not in (-1, batch):
                raise ValueError(f"past_key_values holds {cache.batch_size} rows but input_ids has {batch}")

        past = 0 if cache is None else cache.get_seq_length()
        total = past + n
        done, events_now = past // k, total // k  # complete events before / after this call
        partial = ids.new_zeros(batch, 0) if cache is None or cache.partial_event is None else cache.partial_event
        stream = torch.cat([partial, ids], dim=1)  # (B, total - done*k) from the first incomplete event on

        # 1. event transformer on the events completed by this call
        new_events = events_now - done
        hidden_parts: list[torch.Tensor] = []
        h = flags = None
        if new_events:
            flags = self._event_flags(attention_mask, total, done, new_events, batch)
            events = stream[:, :new_events * k].view(batch, new_events, k)  # (B, m, K)
            h = self.encode_events(events, flags, cache)  # (B, m, H)

        # 2. token rows continuing the current token sequence, then 3. the sequences of the new events
        first_row = past - done * k + 1  # row of the token sequence that flat position `past` belongs to
        continued = min(n, k - first_row)  # positions up to the end of the current event
        if continued > 0:
            hidden_parts.append(self._continued_token_rows(ids[:, :continued], first_row, done, cache))
        if new_events:
            last_rows = total - events_now * k + 1  # rows of the last new sequence that are seen (1..K)
            hidden_parts.extend(self._new_token_rows(h, stream[:, k:], flags, last_rows, cache))
        token_hidden = torch.cat(hidden_parts, dim=1) if len(hidden_parts) > 1 else hidden_parts[0]  # (B, n, H)

        if cache is not None:
            cache.partial_event = stream[:, new_events * k:]  # (B, total % K)
        if isinstance(logits_to_keep, int):
            token_hidden = token_hidden[:, -logits_to_keep:] if logits_to_keep else token_hidden
        else:
            token_hidden = token_hidden[:, logits_to_keep]
        # training with labels: the loss is computed chunk by chunk from the hidden states (losses.py), without
        # the (B, n, V) logits (a third of a CPU step); eval mode, or an adapted lm_head, keeps the logits
        fused_loss = labels is not None and self.training and type(self.lm_head) is nn.Linear
        logits = None if fused_loss else self.lm_head(token_hidden)  # (B, n or kept, V)

        loss = None
        if labels is not None:
            labels = self._flat_input_ids(labels.masked_fill(labels == -100, self.config.pad_token_id))
            if labels.shape != ids.shape or token_hidden.shape[1] != n:
                raise ValueError(f"labels must match input_ids {tuple(ids.shape)} and all logits must be kept, got "
                                 f"{tuple(labels.shape)}")
            if attention_mask is not None and past == 0:  # events after a padding event are context only
                event_valid = attention_mask[:, ::k].bool()  # (B, ceil(n / K))
                prev_valid = F.pad(event_valid[:, :-1], (1, 0), value=False).repeat_interleave(k, dim=1)[:, :n]
                labels = labels.masked_fill(~prev_valid, self.config.pad_token_id)
            if fused_loss:
                loss = fused_flat_causal_lm_loss(token_hidden, self.lm_head.weight, labels, self.config.pad_token_id, k,
                                                 label_offset=past)
            else:
                loss = flat_causal_lm_loss(logits, labels, self.config.pad_token_id, k, label_offset=past)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_ARGUMENT: cache if use_cache else None})

    # ----------------------------------------------------------------- vocabulary
    @torch.no_grad()
    def resize_for_fim(self, fill_in_the_middle: bool = True) -> MidiEventTransformerForCausalLM:
        """Grow the vocabulary to the fill-in-the-middle sentinels (``vocabulary.FIM_VOCAB_SIZE``, 3408 ids), in place.

        Three tables get ``FIM_VOCAB_SIZE - vocab_size`` new rows: the event level's and the token level's
        ``embed_tokens`` (``(V, H)`` -> ``(3408, H)``) and ``lm_head`` (``(V, H)`` -> ``(3408, H)``, untied). Each new row
        is the mean of the table's existing rows (the pad row left out), so the sentinels start as an average token;
        every existing row is kept, so the logits of the old ids on a sequence without sentinels do not change (the
        softmax over them does, by the mass the new ids take). ``config.vocab_size`` becomes 3408.

        Args:
            fill_in_the_middle (`bool`, defaults to `True`): set ``config.fill_in_the_middle`` (the model will be
                trained on FIM examples); False only makes room for the sentinels (e.g. a control run that trains
                the same resized model left to right).

        Returns ``self``. A model that already has the sentinel ids keeps its weights (only the flag is set). Call it
        before building the optimizer, compiling or wrapping the model (LoRA: resize the base first).
        """
        old = self.config.vocab_size
        if old < FIM_VOCAB_SIZE:
            pad = self.config.pad_token_id
            for stack in (self.net, self.net_token):
                stack.embed_tokens = self._grown_embedding(stack.embed_tokens, FIM_VOCAB_SIZE, pad)
            weight = self.lm_head.weight  # (V, H)
            head = nn.Linear(weight.shape[1], FIM_VOCAB_SIZE, bias=False, dtype=weight.dtype, device=weight.device)
            head.weight.copy_(self._grown_rows(weight, FIM_VOCAB_SIZE, pad))
            head.weight.requires_grad_(weight.requires_grad)
            self.lm_head = head
            self.config.vocab_size = FIM_VOCAB_SIZE
        if fill_in_the_middle:
            self.config.fill_in_the_middle = True
        return self

    @staticmethod
    def _grown_rows(weight: torch.Tensor, size: int, skip_row: int | None) -> torch.Tensor:
        """``weight`` (V, H) followed by ``size - V`` copies of the mean of its rows (``skip_row`` left out)."""
        rows = weight.float()
        if skip_row is not None and 0 <= skip_row < len(rows):
            rows = torch.cat([rows[:skip_row], rows[skip_row + 1:]])
        mean = rows.mean(dim=0, keepdim=True).to(weight.dtype)  # (1, H)
        return torch.cat([weight, mean.expand(size - weight.shape[0], -1)])  # (size, H)

    @classmethod
    def _grown_embedding(cls, embedding: nn.Embedding, size: int, pad: int) -> nn.Embedding:
        weight = embedding.weight
        grown = nn.Embedding(size, weight.shape[1], embedding.padding_idx, dtype=weight.dtype, device=weight.device)
        grown.weight.copy_(cls._grown_rows(weight, size, pad))
        grown.weight.requires_grad_(weight.requires_grad)
        return grown

    # ----------------------------------------------------------------- training speed
    def compile_layers(self, **compile_kwargs: Any) -> MidiEventTransformerForCausalLM:
        """Regional compilation: ``torch.compile`` each decoder layer of both levels (training speed).

        The layers of a level share one compiled graph (same shapes), so compiling takes seconds, not minutes;
        the embeddings, the fused loss and the event/token reshaping stay eager. Calls that carry a KV cache
        (cached forward, generation) keep using the eager layers, whose shapes change every step. On this CPU a
        "small" training step gets ~15% faster under bf16 autocast and 0-10% in fp32, where matrix products
        dominate (inductor fuses the norms, rotary, SwiGLU and their backward; ``scripts/bench_train.py``).
        Needs a C++ compiler on CPU.

        Args:
            compile_kwargs: passed to ``torch.compile`` (e.g. ``mode``, ``dynamic``, ``backend``).

        Returns ``self``. Undo with ``compile_layers(disable=True)``.
        """
        disable = compile_kwargs.pop("disable", False)
        for stack in (self.net, self.net_token):
            for layer in stack.layers:
                layer.compiled_forward = None if disable else torch.compile(layer.layer_forward, **compile_kwargs)
        return self

    # ----------------------------------------------------------------- generation
    def quantize_dynamic_int8(self) -> MidiEventTransformerForCausalLM:
        """Int8 dynamic quantization of every Linear layer, in place (CPU inference; weights stored as int8).

        Returns ``self``. Uses ``torch.ao.quantization.quantize_dynamic``; embeddings and norms stay in float.
        """
        import warnings

        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=(DeprecationWarning, FutureWarning, UserWarning))
            return quantize_dynamic(self.eval(), {nn.Linear}, dtype=torch.qint8, inplace=True)

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, generation_config: GenerationConfig | None = None,
                 logits_processor: LogitsProcessorList | None = None, custom_generate: Any = None,
                 midi_grammar: bool = True, event_loop: bool = True, decoding_options: Any = None,
                 **kwargs: Any) -> Any:
        """``GenerationMixin.generate`` with the MIDI grammar and the event-level decoding loop on by default.

        Args:
            inputs / input_ids: flat prompts (batch, events * 8) or (batch, events, 8), left-padded by whole events.
            midi_grammar (`bool`, defaults to `True`): add [`MidiGrammarLogitsProcessor`] (unless one is given).
            event_loop (`bool`, defaults to `True`): decode with ``event_decoding.generate_events`` when the request
                allows (greedy or sampling without dict outputs); `False` forces transformers' per-token loop.
            decoding_options (``event_decoding.EventDecodingOptions``, *optional*): the optional mechanisms of the
                event-level loop to use (default: all); they change its speed, not its tokens. Ignored when
                transformers' per-token loop decodes.
            past_key_values / cache ([`MidiEventTransformerCache`], *optional*): a cache to continue from and to
                fill (either name, on every supported transformers release). After ``generate`` it holds every
                token of the returned sequences except the last one or few (``cache.get_seq_length()`` says how
                many), so a later ``generate`` on the returned ids continues from it.
            Other arguments: as ``GenerationMixin.generate`` (``max_new_tokens`` counts flat tokens).
        """
        from .event_decoding import event_loop_applies, generate_events
        from .grammar import MidiGrammarLogitsProcessor

        prompt = None
        for key in ("inputs", "input_ids"):
            value = inputs if key == "inputs" else kwargs.get(key)
            if isinstance(value, torch.Tensor):
                prompt = self._flat_input_ids(value)
                if key == "inputs":
                    inputs = prompt
                else:
                    kwargs[key] = prompt
        if prompt is not None and kwargs.get("attention_mask") is None:
            # padding is by whole events: an event whose first id is pad is padding (transformers would infer
            # ids != pad, which also flags the pads inside events and warns about right padding)
            k = self.config.tokens_per_event
            event_valid = prompt[:, ::k] != self.config.pad_token_id  # (B, ceil(L / K))
            kwargs["attention_mask"] = event_valid.repeat_interleave(k, dim=1)[:, :prompt.shape[1]].long()
        processors = LogitsProcessorList(logits_processor or [])
        if midi_grammar and not any(isinstance(p, MidiGrammarLogitsProcessor) for p in processors):
            processors.insert(0, MidiGrammarLogitsProcessor(self.config.vocab_size))

        # the request as transformers will read it (to choose the loop), and the cache under the name it uses
        request = copy.deepcopy(generation_config if generation_config is not None else self.generation_config)
        request.update(**kwargs)
        cache = _take_cache_argument(kwargs)
        user_cache = cache is not None
        if cache is None and request.use_cache is not False:
            cache = MidiEventTransformerCache(self.config)
        if cache is not None:
            kwargs[CACHE_ARGUMENT] = cache
        if custom_generate is None and event_loop and event_loop_applies(request, kwargs.get("synced_gpus") or False):
            custom_generate = generate_events
            # transformers passes a callable only the arguments it declares beyond the sampling loop's
            kwargs["event_streamer"] = kwargs.pop("streamer", None)
            kwargs["keep_cache"] = user_cache
            kwargs["decoding_options"] = decoding_options
        output = super().generate(inputs, generation_config=generation_config, logits_processor=processors,
                                  custom_generate=custom_generate, **kwargs)
        return self._complete_last_event(output)

    def _complete_last_event(self, sequences: Any) -> Any:
        """When every row has ended (its last event starts with EOS or pad), pad that event to full length."""
        k, pad = self.config.tokens_per_event, self.config.pad_token_id
        if not isinstance(sequences, torch.Tensor) or sequences.dim() != 2 or sequences.shape[1] % k == 0:
            return sequences
        last_start = sequences[:, sequences.shape[1] - sequences.shape[1] % k]  # (B,)
        if not bool(((last_start == self.config.eos_token_id) | (last_start == pad)).all()):
            return sequences
        return F.pad(sequences, (0, k - sequences.shape[1] % k), value=pad)

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                                      use_cache: bool = True, past_key_values: MidiEventTransformerCache | None = None,
                                      cache: MidiEventTransformerCache | None = None,
                                      **kwargs: Any) -> dict[str, Any]:
        """Feed only the tokens the cache has not seen; pass the whole attention mask.

        transformers hands the cache over as ``cache`` (5.24 on) or ``past_key_values`` (before).
        """
        cache = cache if cache is not None else past_key_values
        if cache is not None:
            input_ids = input_ids[:, cache.get_seq_length():]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "past_key_values": cache,
                "use_cache": use_cache}


def _take_cache_argument(kwargs: dict[str, Any]) -> MidiEventTransformerCache | None:
    """Pop the cache a caller passed to ``generate`` as ``past_key_values`` or ``cache`` (one of them)."""
    given = {name: kwargs.pop(name) for name in ("past_key_values", "cache") if kwargs.get(name) is not None}
    if len(given) > 1:
        raise ValueError("pass the cache once, as past_key_values or as cache, not both")
    cache = next(iter(given.values()), None)
    if cache is not None and not isinstance(cache, MidiEventTransformerCache):
        raise TypeError(f"the cache must be a MidiEventTransformerCache, got {type(cache).__name__}")
    return cache


__all__ = [
    "MidiEventTransformerForCausalLM",
    "MidiEventTransformerPreTrainedModel",
    "flat_causal_lm_loss",
]

MidiEventTransformerForCausalLM.register_for_auto_class("AutoModelForCausalLM")
