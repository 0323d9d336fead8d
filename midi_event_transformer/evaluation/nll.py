"""Held-out NLL of a model on MIDI files.

Each song is tokenized (BOS + events + EOS) and cut into windows of ``window_events`` (513) events
taken every ``stride_events`` (512) events; in a window the first event is context only and the others are
predicted, so every event of a song but the first (BOS) is predicted exactly once. Per-token NLL (nats) is
the mean of ``-log p(token)`` over the non-pad tokens of the predicted events; on one window it equals the
reference's two-level training loss (SkyTNT/midi-model ``train.py``: ``x = window[:-1]``, ``y = window[1:]``,
cross entropy ignoring pad). Per-event NLL is the total NLL divided by the number of predicted events, and
accuracy the share of those tokens that are the model's argmax (the reference's ``val/acc``).

Example::

    >>> result = evaluate_nll(model, sorted(Path("heldout").glob("*.mid")))
    >>> result.per_token_nll, result.per_event_nll, result.token_accuracy
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidMidiError
from ..midi_reading import find_midi_files
from ..vocabulary import PAD_ID, TOKENS_PER_EVENT

logger = logging.getLogger(__name__)

WINDOW_EVENTS = 513
STRIDE_EVENTS = 512


@dataclass
class NllResult:
    """Held-out likelihood figures (see the module docstring).

    Attributes:
        per_token_nll: mean ``-log p`` (nats) over the non-pad tokens of the predicted events.
        per_event_nll: total NLL over the number of predicted events.
        token_accuracy: share of those tokens equal to the argmax of the model's distribution.
        n_tokens, n_events, n_windows, n_files: what was scored.
        total_nll: sum of ``-log p`` (nats).
        window_events, stride_events: the windowing.
        skipped: ``{path: reason}`` for files that could not be tokenized or had fewer than 2 events.
    """

    per_token_nll: float
    per_event_nll: float
    token_accuracy: float
    n_tokens: int
    n_events: int
    n_windows: int
    n_files: int
    total_nll: float
    window_events: int = WINDOW_EVENTS
    stride_events: int = STRIDE_EVENTS
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_pieces(files: Iterable[Any], tokenizer: Any, skipped: dict[str, str], min_rows: int = 2
                ) -> Iterator[tuple[int, str, np.ndarray]]:
    """``(index, name, rows)`` of each file (a path, or encoded rows ``(n, 8)``), its rows ``(n, 8)`` int64 as
    ``tokenizer.encode_midi`` gives them; a file that cannot be read, or has fewer than ``min_rows`` rows, is put in
    ``skipped`` (name -> reason) and logged instead."""
    for index, item in enumerate(files):
        name = f"array {index}" if isinstance(item, np.ndarray) else str(item)
        try:
            rows = np.asarray(item if isinstance(item, np.ndarray) else tokenizer.encode_midi(item), dtype=np.int64)
        except InvalidMidiError as error:
            skipped[name] = str(error)
            logger.warning("skipping %s", error)
            continue
        if rows.ndim != 2 or rows.shape[1] != TOKENS_PER_EVENT or len(rows) < min_rows:
            skipped[name] = f"needs at least {min_rows} rows of {TOKENS_PER_EVENT} ids, got shape {rows.shape}"
            logger.warning("skipping %s: %s", name, skipped[name])
            continue
        yield index, name, rows


def sliding_windows(rows: np.ndarray, window_events: int = WINDOW_EVENTS,
                    stride_events: int = STRIDE_EVENTS) -> list[np.ndarray]:
    """Windows ``rows[s : s + window_events]`` for ``s = 0, stride, 2 * stride, ...`` while a window still has an
    event to predict (at least 2 events). With ``stride = window - 1`` each event but the first is predicted once.

    Args:
        rows: ``(n_events, 8)`` ids of one song.

    Returns:
        list of ``(<= window_events, 8)`` arrays (views of ``rows``).
    """
    if window_events < 2:
        raise ValueError(f"window_events must be >= 2 (one context event, one predicted), got {window_events}")
    if not 1 <= stride_events <= window_events - 1:
        raise ValueError(f"stride_events must be within 1..window_events - 1 = {window_events - 1} so that "
                         f"every event is predicted, got {stride_events}")
    return [rows[start:start + window_events] for start in range(0, max(len(rows) - 1, 0), stride_events)]


def window_token_scores(model: Any, windows: Sequence[np.ndarray | Any]) -> tuple[float, int, int]:
    """Score a batch of windows with one forward pass.

    Windows are right-padded with pad events to the longest (harmless: the model is causal and pad targets
    are ignored). In each window, the tokens of events 1.. are predicted (``logits`` at flat position ``p``
    predict the id at ``p + 1``); event 0 is context only.

    Args:
        model: a ``MidiEventTransformerForCausalLM`` (any model whose ``forward(input_ids)`` returns flat logits
            ``(batch, length, vocab)``).
        windows: ``(n_i, 8)`` id arrays, ``n_i >= 2``.

    Returns:
        ``(sum of -log p, number of scored tokens, number of correct argmax predictions)``.
    """
    import torch
    import torch.nn.functional as F

    k = TOKENS_PER_EVENT
    longest = max(len(window) for window in windows)
    batch = torch.full((len(windows), longest, k), PAD_ID, dtype=torch.long)  # (B, E, 8)
    for index, window in enumerate(windows):
        batch[index, :len(window)] = torch.as_tensor(np.asarray(window), dtype=torch.long)
    device = next(model.parameters()).device
    flat = batch.view(len(windows), -1).to(device)  # (B, E*8)
    with torch.inference_mode():
        logits = model(input_ids=flat, use_cache=False).logits  # (B, E*8, V)
        predictions = logits[:, k - 1:-1].float()  # (B, (E-1)*8, V): position p predicts p + 1
        targets = flat[:, k:]  # (B, (E-1)*8): tokens of events 1..
        nll = F.cross_entropy(predictions.transpose(1, 2), targets, ignore_index=PAD_ID, reduction="none")
        scored = targets != PAD_ID
        correct = (predictions.argmax(-1) == targets) & scored
    return float(nll[scored].double().sum()), int(scored.sum()), int(correct.sum())


def evaluate_nll(
    model: Any,
    files: str | os.PathLike | Iterable[str | os.PathLike | np.ndarray],
    tokenizer: Any = None,
    *,
    window_events: int = WINDOW_EVENTS,
    stride_events: int = STRIDE_EVENTS,
    batch_size: int = 4,
    progress: bool = True,
) -> NllResult:
    """Held-out per-token NLL, per-event NLL and token accuracy of ``model`` on MIDI files.

    Args:
        model: a ``MidiEventTransformerForCausalLM`` (put it on its device and dtype first; it is set to eval mode).
        files: a folder, a file, or an iterable of paths and/or already tokenized ``(n_events, 8)`` arrays.
        tokenizer: a ``MidiEventTransformerTokenizer`` (default: one with default settings).
        window_events, stride_events: the windowing (see ``sliding_windows``).
        batch_size: windows per forward pass.
        progress: show a tqdm bar over windows.

    Returns:
        [`NllResult`]. Files that cannot be tokenized are listed in ``skipped`` with the reason (and logged).

    Raises:
        ValueError: no window could be scored.
    """
    from tqdm.auto import tqdm

    if tokenizer is None:
        from ..tokenization_midi_event_transformer import MidiEventTransformerTokenizer

        tokenizer = MidiEventTransformerTokenizer()
    if isinstance(files, (str, os.PathLike)):
        files = find_midi_files(files)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    windows: list[np.ndarray] = []
    skipped: dict[str, str] = {}
    n_files = 0
    for _, _, rows in read_pieces(files, tokenizer, skipped, min_rows=2):
        n_files += 1
        windows += sliding_windows(rows, window_events, stride_events)
    if not windows:
        raise ValueError(f"nothing to score: no file gave a window of 2 or more events (skipped: {skipped})")

    was_training = model.training
    model.eval()
    windows.sort(key=len, reverse=True)  # similar lengths together: less padding
    total_nll, n_tokens, n_correct = 0.0, 0, 0
    try:
        with tqdm(total=len(windows), desc="NLL", unit="window", disable=not progress) as bar:
            for start in range(0, len(windows), batch_size):
                chunk = windows[start:start + batch_size]
                nll, tokens, correct = window_token_scores(model, chunk)
                total_nll, n_tokens, n_correct = total_nll + nll, n_tokens + tokens, n_correct + correct
                bar.update(len(chunk))
                bar.set_postfix(nll=f"{total_nll / max(n_tokens, 1):.4f}")
    finally:
        model.train(was_training)
    n_events = sum(len(window) - 1 for window in windows)
    return NllResult(
        per_token_nll=total_nll / n_tokens, per_event_nll=total_nll / n_events, token_accuracy=n_correct / n_tokens,
        n_tokens=n_tokens, n_events=n_events, n_windows=len(windows), n_files=n_files, total_nll=total_nll,
        window_events=window_events, stride_events=stride_events, skipped=skipped)


__all__ = [
    "STRIDE_EVENTS",
    "WINDOW_EVENTS",
    "NllResult",
    "evaluate_nll",
    "read_pieces",
    "sliding_windows",
    "window_token_scores",
]
