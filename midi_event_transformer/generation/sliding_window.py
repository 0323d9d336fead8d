"""Pieces longer than the model's context: ``model.generate`` called window after window.

:func:`generate_in_windows` decodes each sample's events with repeated ``model.generate`` calls on the public
hooks only (prompt, attention mask, logits processors, stopping criteria, streamer):

1. each call continues from the sample's last events (its *context*), left-padded by whole events when the
   samples' contexts differ in length, and runs until the longest context holds ``context_events`` events;
2. then every context is cut back to its last ``keep_events`` events (default half the window, so the model
   always sees between ``keep_events`` and ``context_events`` events, as in its training windows, which start
   anywhere in a song) and the next call prefills that window and goes on. Each cut costs one prefill of
   ``keep_events`` events, shared by the ``context_events - keep_events`` events generated after it: keeping
   half the window makes that share small next to an event step, keeping more makes it grow;
3. a sample stops at EOS, or when a stopping criterion stops its row (its next tokens are pad), or when
   ``max_events`` events have been generated.

A call's cost per event depends only on the window, so the time per event stays flat however long the piece.

Processors and criteria that read the generated events (they keep per-sample state across calls, like the
track editor or the musical-time limit) implement :class:`WindowAware`; :class:`WindowedEventReader` gives
them, at each call, the events completed since their last look, with the sample each batch row belongs to.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from transformers.generation.streamers import BaseStreamer

from ..midi_writing import row_to_event
from ..vocabulary import BOS_ID, EOS_ID, PAD_ID, TOKENS_PER_EVENT
from .prompts import left_pad_prompts

logger = logging.getLogger(__name__)

#: Share of the window kept when the context is cut back (the rest is generated before the next cut).
KEEP_FRACTION = 0.5
#: Default window: the training window of the embedded model (``max_events`` of ``scripts/train.py``).
DEFAULT_CONTEXT_EVENTS = 512


@runtime_checkable
class WindowAware(Protocol):
    """A logits processor or stopping criterion told which sample each batch row is, at each ``generate`` call."""

    def start_window(self, samples: Sequence[int], prompt_length: int) -> None:
        """A call starts: batch row ``i`` continues sample ``samples[i]``; the prompt is ``prompt_length`` ids,
        all of them already seen (events of the previous calls, or the first prompt)."""


class WindowedEventReader:
    """Per batch row, the events completed since the last look, across the calls of a sliding window.

    Without :meth:`start_window` (a plain ``model.generate`` call), row ``i`` is sample ``i`` and the prompt is
    what the first look sees (up to its last whole event).
    """

    def __init__(self) -> None:
        self.samples: list[int] | None = None
        self.positions: list[int] = []

    def start_window(self, samples: Sequence[int], prompt_length: int) -> None:
        self.samples = list(samples)
        self.positions = [prompt_length] * len(self.samples)

    def new_events(self, input_ids: torch.Tensor) -> list[tuple[int, int, list[list[int]]]]:
        """``(row, sample, events)`` for each row with events completed since the last look; ``events`` are lists
        of 8 ids. ``input_ids``: (batch, length) flat ids so far."""
        batch, length = input_ids.shape
        complete = length - length % TOKENS_PER_EVENT
        if self.samples is None or len(self.samples) != batch:
            self.start_window(range(batch), complete)
        found = []
        if any(position < complete for position in self.positions):
            for row, position in enumerate(self.positions):
                if position < complete:
                    ids = input_ids[row, position:complete].tolist()
                    events = [ids[i:i + TOKENS_PER_EVENT] for i in range(0, len(ids), TOKENS_PER_EVENT)]
                    found.append((row, self.samples[row], events))
                    self.positions[row] = complete
        return found


class _ContinuedStreamer(BaseStreamer):
    """Hands one streamer the tokens of several ``generate`` calls as if they were one: the first call's prompt,
    then every generated token; each later call's prompt (a window of already streamed events) is skipped."""

    def __init__(self, streamer: Any) -> None:
        self.streamer = streamer
        self.calls = 0
        self.expect_prompt = False

    def next_call(self) -> None:
        self.calls += 1
        self.expect_prompt = True

    def put(self, value: Any) -> None:
        if self.expect_prompt:
            self.expect_prompt = False
            if self.calls > 1:
                return
        self.streamer.put(value)

    def end(self) -> None:  # the driver ends the wrapped streamer once, after the last call
        pass


def default_context_events(model: Any) -> int:
    """The window :func:`generate_in_windows` uses by default: ``DEFAULT_CONTEXT_EVENTS`` (the training window),
    or less when the model's event positions end sooner."""
    return min(DEFAULT_CONTEXT_EVENTS, model.config.event_config.max_position_embeddings)


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_window(context_events: Any, keep_events: Any) -> None:
    _check_count("context_events", context_events, 2)
    _check_count("keep_events", keep_events, 1)
    if keep_events >= context_events:
        raise ValueError(f"keep_events ({keep_events}) must be smaller than context_events ({context_events})")


def _generated_part(ids: np.ndarray) -> tuple[np.ndarray, bool]:
    """The whole generated events of one row (before EOS, pad or an unfinished event) and whether it ended."""
    if len(ids) % TOKENS_PER_EVENT:
        ids = np.concatenate([ids, np.full(TOKENS_PER_EVENT - len(ids) % TOKENS_PER_EVENT, PAD_ID, dtype=ids.dtype)])
    rows = ids.reshape(-1, TOKENS_PER_EVENT).astype(np.int64)
    for index, row in enumerate(rows):
        if row[0] in (EOS_ID, PAD_ID, BOS_ID) or row_to_event(row) is None:  # ended, stopped, or cut mid-event
            return rows[:index], True
    return rows, False


def generate_in_windows(model: Any, prompts: Sequence[np.ndarray], *, max_events: int, context_events: int,
                        keep_events: int | None = None, logits_processor: Sequence = (),
                        stopping_criteria: Sequence = (), streamer: Any = None,
                        **generate_kwargs: Any) -> list[np.ndarray]:
    """Generate up to ``max_events`` events after each prompt, ``model.generate`` call after call (see module doc).

    Args:
        model: a ``MidiEventTransformerForCausalLM``.
        prompts: one ``(n_i, 8)`` int64 array per sample (whole events; BOS first for a new piece).
        max_events: events to generate per sample at most.
        context_events: the window: no call sees more events than this.
        keep_events: events kept when a context is cut back (default ``int(context_events * KEEP_FRACTION)``).
        logits_processor, stopping_criteria: passed to every call; those that are :class:`WindowAware` are told
            which sample each row is before each call.
        streamer: sees the first prompt, then every generated token, then one ``end()``.
        generate_kwargs: the other ``model.generate`` arguments (sampling settings, special ids).

    Returns:
        one ``(n_i + generated_i, 8)`` array per sample: its whole prompt, then its generated events, without the
        EOS row or the padding of a row a criterion stopped.
    """
    from transformers import LogitsProcessorList, StoppingCriteriaList

    if keep_events is None:
        keep_events = max(1, int(context_events * KEEP_FRACTION))
    _check_window(context_events, keep_events)
    if isinstance(max_events, bool) or not isinstance(max_events, (int, np.integer)) or max_events < 0:
        raise ValueError(f"max_events must be an int >= 0, got {max_events!r}")
    outputs = [[np.asarray(p, dtype=np.int64)] for p in prompts]
    contexts = [np.asarray(p, dtype=np.int64) for p in prompts]
    hooks = [hook for hook in (*logits_processor, *stopping_criteria) if isinstance(hook, WindowAware)]
    continued = None if streamer is None else _ContinuedStreamer(streamer)
    live = list(range(len(prompts)))
    remaining = int(max_events)
    calls = 0
    while live and remaining > 0:
        for sample in live:  # cut back the contexts that reached the window (or started longer than it)
            if len(contexts[sample]) >= context_events:
                contexts[sample] = contexts[sample][-keep_events:]
        steps = min(remaining, context_events - max(len(contexts[sample]) for sample in live))
        input_ids, attention_mask = (torch.as_tensor(a, device=model.device)
                                     for a in left_pad_prompts([contexts[s] for s in live]))
        for hook in hooks:
            hook.start_window(live, input_ids.shape[1])
        if continued is not None:
            continued.next_call()
        sequences = model.generate(
            input_ids, attention_mask=attention_mask, max_new_tokens=steps * TOKENS_PER_EVENT,
            logits_processor=LogitsProcessorList(logits_processor),
            stopping_criteria=StoppingCriteriaList(stopping_criteria), streamer=continued, **generate_kwargs)
        calls += 1
        generated = sequences[:, input_ids.shape[1]:].cpu().numpy()
        still_live = []
        for row, sample in enumerate(live):
            new, ended = _generated_part(generated[row])
            outputs[sample].append(new)
            contexts[sample] = np.concatenate([contexts[sample], new])
            if not ended and len(new) == steps:
                still_live.append(sample)
        live = still_live
        remaining -= steps
    if streamer is not None:
        streamer.end()
    logger.debug("generated in %d window call(s)", calls)
    return [np.concatenate(parts) for parts in outputs]


__all__ = [
    "DEFAULT_CONTEXT_EVENTS",
    "KEEP_FRACTION",
    "WindowAware",
    "WindowedEventReader",
    "default_context_events",
    "generate_in_windows",
]
