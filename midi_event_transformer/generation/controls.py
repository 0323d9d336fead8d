"""Generation controls as Hugging Face ``LogitsProcessor``s: what the model may write.

Each control masks (to ``-inf``) the ids it forbids at the next position of the flat token stream, and leaves
the other scores untouched, so it composes with the MIDI grammar ([`MidiGrammarLogitsProcessor`]) and the
sampling warpers::

    model.generate(input_ids, logits_processor=[DisableControlChangeLogitsProcessor(),
                                                RestrictChannelsLogitsProcessor([0, 1, 9])], do_sample=True)

Call: ``processor(input_ids, scores)`` with ``input_ids`` (batch, length) the flat ids so far and ``scores``
(batch, vocab) the next-token scores. The next token's slot in its event is ``length % 8`` (prompts are
left-padded by whole events) and, for slots after the first, the event's type is
``input_ids[:, length - length % 8]``. ``compact_call(input_ids, scores, offset)`` does the same on a column
window ``scores[:, j]`` = id ``offset + j`` (the event-level decoding loop scores only the ids the grammar
allows).

* [`DisableEventTypesLogitsProcessor`] -- forbid event types at slot 0 (e.g. ``set_tempo``);
  [`DisablePatchChangeLogitsProcessor`] and [`DisableControlChangeLogitsProcessor`] are its two usual cases;
* [`RestrictChannelsLogitsProcessor`] -- notes, patch changes and control changes only on allowed channels;
* [`RestrictInstrumentsLogitsProcessor`] -- patch changes only to allowed programs (the drum channel's kit
  separately).

``part_balance.EveryPartPlaysLogitsProcessor`` is the one control that follows the music rather than masking a
fixed set: a requested part that has rested too long takes the next note.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import LogitsProcessor

from ..vocabulary import (
    DRUM_CHANNEL,
    EVENT_PARAMETERS,
    EVENT_TYPE_IDS,
    PARAMETER_OFFSETS,
    PARAMETER_SIZES,
    TOKENS_PER_EVENT,
    VOCAB_SIZE,
)


def _int_set(values: Iterable[int], what: str, size: int) -> list[int]:
    """Sorted distinct ints of ``values``, each in ``[0, size)``; TypeError / ValueError otherwise."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{what}s must be an iterable of ints, not {type(values).__name__}")
    items = list(values)
    for value in items:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{what} must be an int, got {value!r} ({type(value).__name__})")
        if not 0 <= value < size:
            raise ValueError(f"{what} {value} is outside 0..{size - 1}")
    if not items:
        raise ValueError(f"at least one {what} must be allowed (got an empty list)")
    return sorted(set(items))


class _ParameterMaskLogitsProcessor(LogitsProcessor):
    """Forbid some ids of one parameter wherever that parameter is the next token.

    Subclasses set ``self.parameter`` and ``self.forbidden`` ((V,) bool) and may override ``_row_forbidden``.
    """

    parameter: str

    def __init__(self, parameter: str, forbidden_values: Iterable[int]) -> None:
        self.parameter = parameter
        forbidden = torch.zeros(VOCAB_SIZE, dtype=torch.bool)
        forbidden[[PARAMETER_OFFSETS[parameter] + v for v in forbidden_values]] = True
        self.forbidden = forbidden  # (V,)
        # slot (1..7) -> event type ids whose parameter at that slot is `parameter`
        slots: dict[int, list[int]] = {}
        for name, parameters in EVENT_PARAMETERS.items():
            if parameter in parameters:
                slots.setdefault(1 + parameters.index(parameter), []).append(EVENT_TYPE_IDS[name])
        self.event_types_at_slot = {slot: torch.tensor(ids) for slot, ids in slots.items()}

    def _applies(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """(B,) bool: rows whose next token is ``self.parameter``, or None when no row's is."""
        length = input_ids.shape[1]
        slot = length % TOKENS_PER_EVENT
        event_types = self.event_types_at_slot.get(slot)
        if event_types is None:
            return None
        applies = torch.isin(input_ids[:, length - slot], event_types.to(input_ids.device))  # (B,)
        return applies if bool(applies.any()) else None

    def _row_forbidden(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """(B, V) bool: ids forbidden for each row's next token, or None when nothing is forbidden."""
        applies = self._applies(input_ids)
        if applies is None:
            return None
        return applies[:, None] & self.forbidden.to(input_ids.device)[None, :]

    def _apply(self, input_ids: torch.Tensor, scores: torch.Tensor, offset: int) -> torch.Tensor:
        if scores.dim() != 2 or scores.shape[0] != input_ids.shape[0]:
            raise ValueError(f"scores must be (batch, vocab) with batch {input_ids.shape[0]}, got {tuple(scores.shape)}")
        forbidden = self._row_forbidden(input_ids)
        if forbidden is None:
            return scores
        window = forbidden[:, offset:offset + scores.shape[1]]  # (B, W) ids offset .. offset + W - 1
        if window.shape[1] < scores.shape[1]:  # columns past the MIDI vocabulary are never forbidden here
            window = torch.nn.functional.pad(window, (0, scores.shape[1] - window.shape[1]))
        return scores.masked_fill(window, float("-inf"))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[-1] < VOCAB_SIZE:
            raise ValueError(f"scores have {scores.shape[-1]} columns, the MIDI vocabulary needs {VOCAB_SIZE}")
        return self._apply(input_ids, scores, 0)

    def compact_call(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, offset: int) -> torch.FloatTensor:
        """As ``__call__`` on a window of columns: ``scores[:, j]`` is the score of id ``offset + j``."""
        return self._apply(input_ids, scores, offset)


class DisableEventTypesLogitsProcessor(_ParameterMaskLogitsProcessor):
    r"""Forbid event types: at the first slot of every event, their type ids get ``-inf``.

    Args:
        event_types (iterable of `str`): names from ``vocabulary.EVENT_TYPES`` (``"patch_change"``,
            ``"control_change"``, ``"set_tempo"``, ...). ``"note"`` is allowed here too (the model then writes only
            other events or EOS).

    Raises:
        TypeError: not an iterable of strings. ValueError: unknown or no event type.
    """

    def __init__(self, event_types: Iterable[str]) -> None:
        if isinstance(event_types, str) or not isinstance(event_types, Iterable):
            raise TypeError(f"event_types must be an iterable of event names, not {type(event_types).__name__}")
        names = list(event_types)
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"event type must be a str, got {name!r}")
            if name not in EVENT_TYPE_IDS:
                raise ValueError(f"unknown event type {name!r}; choose from {sorted(EVENT_TYPE_IDS)}")
        if not names:
            raise ValueError("event_types is empty: name at least one event type to disable")
        self.event_types = tuple(dict.fromkeys(names))
        forbidden = torch.zeros(VOCAB_SIZE, dtype=torch.bool)
        forbidden[[EVENT_TYPE_IDS[name] for name in self.event_types]] = True
        self.forbidden = forbidden  # (V,)

    def _row_forbidden(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        if input_ids.shape[1] % TOKENS_PER_EVENT:
            return None
        return self.forbidden.to(input_ids.device)[None, :].expand(input_ids.shape[0], -1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(event_types={list(self.event_types)!r})"


class DisablePatchChangeLogitsProcessor(DisableEventTypesLogitsProcessor):
    """Forbid ``patch_change`` events (the instruments stay those of the prompt)."""

    def __init__(self) -> None:
        super().__init__(["patch_change"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class DisableControlChangeLogitsProcessor(DisableEventTypesLogitsProcessor):
    """Forbid ``control_change`` events (sustain pedal, volume, modulation, ...)."""

    def __init__(self) -> None:
        super().__init__(["control_change"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RestrictChannelsLogitsProcessor(_ParameterMaskLogitsProcessor):
    r"""Allow only some MIDI channels in notes, patch changes and control changes (the events with a channel).

    Args:
        allowed_channels (iterable of `int`): 0-based channels 0..15 (9 is the General MIDI drum channel).

    Raises:
        TypeError: a channel that is not an int. ValueError: a channel outside 0..15, or none at all.
    """

    def __init__(self, allowed_channels: Iterable[int]) -> None:
        self.allowed_channels = tuple(_int_set(allowed_channels, "channel", PARAMETER_SIZES["channel"]))
        super().__init__("channel", [c for c in range(PARAMETER_SIZES["channel"]) if c not in self.allowed_channels])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(allowed_channels={list(self.allowed_channels)!r})"


class RestrictInstrumentsLogitsProcessor(_ParameterMaskLogitsProcessor):
    r"""Allow patch changes only to some programs (General MIDI instruments).

    Args:
        allowed_patches (iterable of `int`): 0-based programs 0..127 allowed on the melodic channels.
        allowed_drum_kits (iterable of `int`, *optional*): programs allowed for patch changes on the drum
            channel (9), where programs select drum kits. `None` (default) leaves the drum channel free.

    Raises:
        TypeError: a program that is not an int. ValueError: a program outside 0..127, or an empty list.
    """

    def __init__(self, allowed_patches: Iterable[int], allowed_drum_kits: Iterable[int] | None = None) -> None:
        size = PARAMETER_SIZES["patch"]
        self.allowed_patches = tuple(_int_set(allowed_patches, "patch", size))
        self.allowed_drum_kits = None if allowed_drum_kits is None else tuple(
            _int_set(allowed_drum_kits, "drum kit patch", size))
        super().__init__("patch", [p for p in range(size) if p not in self.allowed_patches])
        drums = torch.zeros(VOCAB_SIZE, dtype=torch.bool)
        if self.allowed_drum_kits is not None:
            drums[[PARAMETER_OFFSETS["patch"] + p for p in range(size) if p not in self.allowed_drum_kits]] = True
        self.forbidden_drums = drums  # (V,)
        (self.patch_slot,) = self.event_types_at_slot  # patch only appears in patch_change
        self.channel_slot = 1 + EVENT_PARAMETERS["patch_change"].index("channel")

    def _row_forbidden(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        applies = self._applies(input_ids)
        if applies is None:
            return None
        start = input_ids.shape[1] - self.patch_slot
        on_drums = input_ids[:, start + self.channel_slot] == PARAMETER_OFFSETS["channel"] + DRUM_CHANNEL  # (B,)
        device = input_ids.device
        forbidden = torch.where(on_drums[:, None], self.forbidden_drums.to(device)[None, :],
                                self.forbidden.to(device)[None, :])  # (B, V)
        return applies[:, None] & forbidden

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(allowed_patches={list(self.allowed_patches)!r}, "
                f"allowed_drum_kits={None if self.allowed_drum_kits is None else list(self.allowed_drum_kits)!r})")


__all__ = [
    "DisableControlChangeLogitsProcessor",
    "DisableEventTypesLogitsProcessor",
    "DisablePatchChangeLogitsProcessor",
    "RestrictChannelsLogitsProcessor",
    "RestrictInstrumentsLogitsProcessor",
]
