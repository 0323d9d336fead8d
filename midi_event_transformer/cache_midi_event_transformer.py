"""The two-level key/value cache of [`MidiEventTransformerForCausalLM`].

One [`MidiEventTransformerCache`] holds everything the model needs to continue a flat token stream:

* the **event-level** keys/values of every completed event (they persist for the whole sequence),
  with the per-event padding flags and rotary positions;
* the **token-level** keys/values of the token transformer's current row sequence
  ``[h_{e-1}, emb(tok_0), ...]`` (reset each time an event completes);
* the **partial current event**: the tokens of the event being written, not yet summed into an
  event embedding.

Keys and values live in preallocated tensors ``(batch, kv_heads, capacity, head_dim)`` that grow by
doubling, so appending one event or one token copies only the new slice.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache

from .configuration_midi_event_transformer import MidiEventTransformerConfig


class KeyValueBuffer:
    """Keys and values of one attention layer in a preallocated, doubling buffer.

    ``keys`` / ``values`` are ``(batch, kv_heads, capacity, head_dim)``; the first ``length`` positions are valid.
    """

    def __init__(self, min_capacity: int = 16) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.length = 0
        self.min_capacity = min_capacity

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``keys`` / ``values`` ``(B, kv_heads, T, head_dim)`` after the valid ones; return all valid ones."""
        end = self.length + keys.shape[2]
        if self.keys is None or end > self.keys.shape[2]:
            self._grow(keys, end)
        self.keys[:, :, self.length:end] = keys
        self.values[:, :, self.length:end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def _grow(self, like: torch.Tensor, needed: int) -> None:
        old = 0 if self.keys is None else self.keys.shape[2]
        capacity = max(needed, 2 * old, self.min_capacity)
        batch, heads, _, head_dim = like.shape
        keys = like.new_empty(batch, heads, capacity, head_dim)
        values = like.new_empty(batch, heads, capacity, head_dim)
        if self.length:
            keys[:, :, :self.length] = self.keys[:, :, :self.length]
            values[:, :, :self.length] = self.values[:, :, :self.length]
        self.keys, self.values = keys, values

    def select_batch(self, index: torch.Tensor) -> None:
        """Keep / reorder / repeat batch rows: row i becomes old row ``index[i]``."""
        if self.keys is not None:
            self.keys = self.keys.index_select(0, index)
            self.values = self.values.index_select(0, index)

    def reset(self) -> None:
        """Forget the stored positions (the memory is kept for reuse)."""
        self.length = 0

    def release(self) -> None:
        """Forget the stored positions and free the memory."""
        self.keys = self.values = None
        self.length = 0


class MidiEventTransformerCache(Cache):
    """Cache for the event and token transformers of [`MidiEventTransformerForCausalLM`].

    Args:
        config ([`MidiEventTransformerConfig`]): the model's configuration (fixes the number of layers).

    ``get_seq_length()`` is the number of flat tokens seen: ``tokens_per_event * num_events + len(partial event)``.
    """

    def __init__(self, config: MidiEventTransformerConfig) -> None:
        # compare by model_type: remote-code loading may create a second copy of the config class
        if getattr(config, "model_type", None) != MidiEventTransformerConfig.model_type:
            raise TypeError(f"config must be a MidiEventTransformerConfig, got {type(config).__name__}")
        super().__init__(layers=[])
        self.tokens_per_event = config.tokens_per_event
        self.model_signature = _model_signature(config)
        self.event_layers = [KeyValueBuffer(64) for _ in range(config.event_config.num_hidden_layers)]
        self.token_layers = [KeyValueBuffer(config.tokens_per_event) for _ in range(config.token_config.num_hidden_layers)]
        self._reset_state()

    def _reset_state(self) -> None:
        self.num_events = 0
        #: (B, capacity) bool: which cached events are real (False: left padding).
        self.event_valid: torch.Tensor | None = None
        self.has_padding = False
        #: (B,) long: number of real (non-padding) events of each row = rotary position of its next event.
        self.valid_event_count: torch.Tensor | None = None
        #: (B, r) long: tokens of the current, incomplete event (r < tokens_per_event).
        self.partial_event: torch.Tensor | None = None

    # ----------------------------------------------------------------- queries
    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of flat tokens already processed."""
        partial = 0 if self.partial_event is None else self.partial_event.shape[1]
        return self.tokens_per_event * self.num_events + partial

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1  # grows without bound

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_initialized(self) -> bool:
        return self.valid_event_count is not None

    @property
    def batch_size(self) -> int:
        for state in (self.valid_event_count, self.partial_event):
            if state is not None:
                return state.shape[0]
        return -1

    def check_compatible(self, config: MidiEventTransformerConfig) -> None:
        """Raise ``ValueError`` if this cache was built for a model with other shapes."""
        if self.model_signature != _model_signature(config):
            raise ValueError(f"this MidiEventTransformerCache was built for a model with shapes {self.model_signature}, "
                             f"not {_model_signature(config)}; create a new cache for this model")

    # ----------------------------------------------------------------- updates (called by the model)
    def _reserve_event_flags(self, end: int, like: torch.Tensor) -> None:
        """Make room for the flags of events up to ``end``; free slots hold True (a real event)."""
        capacity = 0 if self.event_valid is None else self.event_valid.shape[1]
        if end > capacity:
            grown = like.new_ones(like.shape[0], max(end, 2 * capacity, 64), dtype=torch.bool)
            if self.event_valid is not None:
                grown[:, :self.num_events] = self.event_valid[:, :self.num_events]
            self.event_valid = grown

    def append_event_flags(self, valid: torch.Tensor) -> torch.Tensor:
        """Record ``valid`` (B, n) flags of ``n`` new events; return the flags of all events (B, num_events + n)."""
        end = self.num_events + valid.shape[1]
        self._reserve_event_flags(end, valid)
        self.event_valid[:, self.num_events:end] = valid
        self.has_padding = self.has_padding or not bool(valid.all())
        count = valid.sum(1) if self.valid_event_count is None else self.valid_event_count + valid.sum(1)
        self.valid_event_count = count
        self.num_events = end
        return self.event_valid[:, :end]

    def append_real_events(self, count: int = 1) -> None:
        """Record ``count`` new real events in every row of a cache without padding: the flags ``append_event_flags``
        would write are all True, which is what free flag slots hold already."""
        if self.has_padding or self.valid_event_count is None:
            raise ValueError("append_real_events needs a started cache without padding; use append_event_flags")
        self._reserve_event_flags(self.num_events + count, self.event_valid)
        self.valid_event_count = self.valid_event_count + count
        self.num_events += count

    def reset_token_level(self) -> None:
        for layer in self.token_layers:
            layer.reset()

    # ----------------------------------------------------------------- generate() support
    def reset(self) -> None:
        """Empty the cache (buffers are kept for reuse)."""
        for layer in self.event_layers + self.token_layers:
            layer.reset()
        self._reset_state()

    def release(self) -> None:
        """Empty the cache and free its buffers (the next use allocates new ones)."""
        for layer in self.event_layers + self.token_layers:
            layer.release()
        self._reset_state()

    def finish_decoding(self, partial_event: torch.Tensor | None) -> None:
        """End of the event-level decoding loop: record ``partial_event`` (B, r), the tokens of the current event
        the cache has seen, and replace tensors made under ``torch.inference_mode`` by ordinary copies, so that
        later calls outside it can update them in place."""
        def ordinary(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return tensor.clone() if tensor is not None and tensor.is_inference() else tensor

        for layer in self.event_layers + self.token_layers:
            layer.keys, layer.values = ordinary(layer.keys), ordinary(layer.values)
        self.event_valid, self.valid_event_count = ordinary(self.event_valid), ordinary(self.valid_event_count)
        self.partial_event = None if partial_event is None else partial_event.clone()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only the batch rows ``indices`` (in that order)."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        for layer in self.event_layers + self.token_layers:
            layer.select_batch(indices.to(layer.keys.device) if layer.keys is not None else indices)
        for name in ("event_valid", "valid_event_count", "partial_event"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.index_select(0, indices.to(value.device)))
        if self.event_valid is not None:
            self.has_padding = not bool(self.event_valid[:, :self.num_events].all())

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the batch rows for beam search (row i <- row ``beam_idx[i]``)."""
        self.batch_select_indices(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat each batch row ``repeats`` times in place (for ``num_return_sequences`` / beams)."""
        batch = self.batch_size
        if batch > 0:
            self.batch_select_indices(torch.arange(batch).repeat_interleave(repeats))

    def crop(self, max_length: int) -> None:
        raise NotImplementedError("MidiEventTransformerCache cannot be cropped (assisted decoding is not supported)")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(events={self.num_events}, seq_length={self.get_seq_length()}, "
                f"batch_size={self.batch_size})")


def _model_signature(config: MidiEventTransformerConfig) -> tuple:
    levels = (config.event_config, config.token_config)
    return (config.tokens_per_event, *((c.num_hidden_layers, c.num_key_value_heads, c.head_dim) for c in levels))


__all__ = ["KeyValueBuffer", "MidiEventTransformerCache"]
