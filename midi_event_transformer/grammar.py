"""The MIDI event grammar as a Hugging Face ``LogitsProcessor``.

Every event row is ``[event type, parameters..., pad...]``. While generating the flat stream, the slot of
the next token is ``input_ids.shape[1] % tokens_per_event`` (prompts are left-padded by whole events):

* slot 0 allows the event types and EOS;
* slot ``s >= 1`` allows the id range of parameter ``s - 1`` of the current event's type;
* slots past the event's parameters allow only pad;
* once a row has produced EOS (at slot 0) it only gets pad.

So every generated row decodes to an event. The processor is applied by default by
``MidiEventTransformerForCausalLM.generate`` and by the event-level decoding loop.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from .vocabulary import (
    EOS_ID,
    EVENT_PARAMETERS,
    EVENT_TYPE_IDS,
    PAD_ID,
    TOKENS_PER_EVENT,
    VOCAB_SIZE,
    slot_id_ranges,
)


class MidiGrammarLogitsProcessor(LogitsProcessor):
    """Mask (to ``-inf``) every id the MIDI event grammar forbids at the next position.

    Args:
        vocab_size (`int`, defaults to 3406): width of the scores.

    Call: ``processor(input_ids, scores)`` with ``input_ids`` (batch, length) flat ids so far and ``scores``
    (batch, vocab) the next-token scores; returns the masked scores (a new tensor).
    """

    def __init__(self, vocab_size: int = VOCAB_SIZE) -> None:
        if vocab_size < VOCAB_SIZE:
            raise ValueError(f"vocab_size must be >= {VOCAB_SIZE} (the MIDI vocabulary), got {vocab_size}")
        self.vocab_size = vocab_size
        event_types = list(EVENT_TYPE_IDS)
        slots = TOKENS_PER_EVENT - 1
        # states: 0 = event start; 1 + t * slots + (s - 1) = slot s of event type t; last = pad only
        self.pad_only_state = 1 + len(event_types) * slots
        allowed = torch.zeros(self.pad_only_state + 1, vocab_size, dtype=torch.bool)
        allowed[0, list(EVENT_TYPE_IDS.values()) + [EOS_ID]] = True
        for t, name in enumerate(event_types):
            for s, ids in enumerate(slot_id_ranges(name)):
                allowed[1 + t * slots + s, ids.start:ids.stop] = True
        allowed[self.pad_only_state, PAD_ID] = True
        self.allowed = allowed  # (states, V)
        ids = torch.arange(vocab_size)
        self.state_lo = torch.where(allowed, ids, vocab_size).min(dim=1).values  # (states,) first allowed id
        self.state_hi = torch.where(allowed, ids, -1).max(dim=1).values + 1  # (states,) last allowed id + 1
        type_index = torch.full((vocab_size,), -1, dtype=torch.long)
        for t, name in enumerate(event_types):
            type_index[EVENT_TYPE_IDS[name]] = t
        self.type_index = type_index  # (V,) event-type index of an id, -1 for others
        # plain Python for decoding loops that track states without tensors (no device reads per token)
        self.type_index_of: dict[int, int] = {EVENT_TYPE_IDS[name]: t for t, name in enumerate(event_types)}
        #: number of parameters (slots after the type id that are not pad) of each event type id
        self.parameter_count_of: dict[int, int] = {EVENT_TYPE_IDS[name]: len(EVENT_PARAMETERS[name])
                                                   for name in event_types}
        self.span_of_state: list[tuple[int, int]] = list(zip(self.state_lo.tolist(), self.state_hi.tolist(), strict=True))
        self.state_is_range: list[bool] = [int(row.sum()) == hi - lo for row, (lo, hi)
                                           in zip(allowed, self.span_of_state, strict=True)]

    def to(self, device: torch.device | str) -> MidiGrammarLogitsProcessor:
        """Move the grammar's tables to ``device`` (a no-op when they are there already); returns ``self``.

        ``__call__`` does it by itself for its ``input_ids``' device; a decoding loop calls it once beforehand.
        """
        device = torch.device(device)
        if self.allowed.device != device:
            self.allowed = self.allowed.to(device)
            self.type_index = self.type_index.to(device)
            self.state_lo, self.state_hi = self.state_lo.to(device), self.state_hi.to(device)
        return self

    def states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B,) grammar state of the next position (row index into ``self.allowed``)."""
        self.to(input_ids.device)
        length = input_ids.shape[1]
        slot = length % TOKENS_PER_EVENT
        finished = (input_ids[:, :length - slot:TOKENS_PER_EVENT] == EOS_ID).any(dim=1)  # (B,) EOS seen
        event_start = input_ids[:, length - slot] if slot else None
        return self.state_at(slot, event_start, finished)

    def state_at(self, slot: int, event_start: torch.Tensor | None, finished: torch.Tensor) -> torch.Tensor:
        """(B,) state for ``slot`` of an event whose first id is ``event_start`` (B,); ``finished`` (B,) rows: pad."""
        if slot == 0:
            state = torch.zeros_like(finished, dtype=torch.long)
        else:
            event_type = self.type_index[event_start]  # (B,)
            state = torch.where(event_type >= 0, 1 + event_type * (TOKENS_PER_EVENT - 1) + (slot - 1),
                                self.pad_only_state)
        return state.masked_fill(finished, self.pad_only_state)

    def state_of(self, slot: int, event_start: int | None, finished: bool) -> int:
        """Plain-Python :meth:`state_at` for one row."""
        if finished:
            return self.pad_only_state
        if slot == 0:
            return 0
        event_type = self.type_index_of.get(event_start, -1)
        return 1 + event_type * (TOKENS_PER_EVENT - 1) + (slot - 1) if event_type >= 0 else self.pad_only_state

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[-1] != self.vocab_size:
            raise ValueError(f"scores have {scores.shape[-1]} columns, the grammar was built for {self.vocab_size}")
        allowed = self.allowed[self.states(input_ids)]  # (B, V)
        return scores.masked_fill(~allowed, float("-inf"))


__all__ = ["MidiGrammarLogitsProcessor"]
