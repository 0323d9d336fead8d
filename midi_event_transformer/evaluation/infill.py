"""Infilling NLL: how well a model predicts a span of bars given the past only, and given both sides.

For each file, ``spans_per_file`` spans of ``span_bars`` whole bars (``generation.fim.bar_steps``: the bars of the
file's time signatures, 4/4 when none) are drawn by ``seed``, among the spans that hold at least one event, leave
at least one event after them and fit the window. The span's event rows (``m`` rows, the *middle*) are scored twice,
each time by one forward pass over a window of at most ``window_events`` rows:

* **past only**: ``[c prefix rows][m middle rows]``, the piece as tokenized (left to right);
* **both sides** (a model trained for FIM): ``[SPAN][s suffix rows][SPAN][c prefix rows][MIDDLE][m middle rows]``,
  the FIM layout of ``generation/fim.py`` (no END row).

The prefix is the same ``c`` rows in both (the rows right before the span: BOS when the piece starts there), with
``c = min(rows before the span, (window_events - 3 - m) // 2)``; the suffix takes the ``s`` events after the span
that fit the rest of the window. Both figures are the mean ``-log p`` (nats) over the same tokens: the non-pad
tokens of the span's ``m`` event rows, which are the same ids in both windows (the layout keeps the middle's rows
as tokenized), no sentinel row scored.

Example::

    >>> result = evaluate_infill(model, tokenizer, validation_files, span_bars=4, seed=0)
    >>> result.nll_past_only, result.nll_both_sides, result.tokens, result.spans
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..generation.fim import bar_steps, event_steps, fim_rows, is_event_row
from ..midi_reading import find_midi_files
from ..vocabulary import EOS_ID, FIM_VOCAB_SIZE, PAD_ID, TOKENS_PER_EVENT
from .nll import read_pieces

logger = logging.getLogger(__name__)

_STEPS_PER_BEAT = 16
_MAX_TIME1 = 127


@dataclass
class InfillResult:
    """Infilling figures (see the module docstring).

    Attributes:
        nll_past_only: mean ``-log p`` (nats) of the span tokens given the prefix only.
        nll_both_sides: the same tokens given the prefix and the suffix (FIM layout); None for a model not trained
            for fill in the middle (unless asked for with ``both_sides=True``).
        tokens: tokens scored (in each figure).
        spans: spans scored; ``events``: their event rows.
        files: files that gave at least one span.
        span_bars, seed, window_events: the settings.
        mean_prefix_events, mean_suffix_events, mean_span_events: average context and span sizes in rows.
        skipped: ``{file: reason}`` for files without a span (unreadable, too short, ...).
    """

    nll_past_only: float
    nll_both_sides: float | None
    tokens: int
    spans: int
    events: int
    files: int
    span_bars: int
    seed: int
    window_events: int
    mean_prefix_events: float
    mean_suffix_events: float
    mean_span_events: float
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Span:
    rows: np.ndarray  # (n, 8) the piece
    steps: np.ndarray  # (n,) event steps of the piece
    first: int  # first prefix row
    middle: tuple[int, int]  # [start, stop) rows of the span's events
    stop: int  # end of the suffix rows
    start_step: int
    end_step: int


def _spans_of(rows: np.ndarray, span_bars: int, window_events: int, count: int,
              rng: np.random.Generator) -> list[_Span]:
    """Up to ``count`` distinct spans of ``span_bars`` bars of one piece (see the module docstring)."""
    steps = event_steps(rows)
    events = is_event_row(rows)
    events[0] = False  # row 0 (BOS) is context
    if rows[-1, 0] != EOS_ID and not events[-1]:
        return []
    bars = bar_steps(rows, steps=steps)
    index = np.flatnonzero(events)
    event_step = steps[index]
    if np.any(np.diff(event_step) < 0):  # not in time order: a span's events would not be contiguous rows
        return []
    candidates: list[_Span] = []
    for b in range(len(bars) - span_bars):
        start, end = int(bars[b]), int(bars[b + span_bars])
        if end // _STEPS_PER_BEAT - start // _STEPS_PER_BEAT > _MAX_TIME1:
            continue
        lo, hi = np.searchsorted(event_step, start), np.searchsorted(event_step, end)
        m = int(hi - lo)
        if m < 1 or hi >= len(index) or m > (window_events - 3) // 2:  # events in it, after it; room for context
            continue
        c = min(int(index[lo]), (window_events - 3 - m) // 2)  # rows before the span (row 0 included)
        first = int(index[lo]) - c
        s = min(len(index) - int(hi), window_events - 3 - m - c)  # events after the span
        candidates.append(_Span(rows, steps, first, (int(index[lo]), int(index[hi])), int(index[hi]) + s, start, end))
    if not candidates:
        return []
    chosen = rng.choice(len(candidates), size=min(count, len(candidates)), replace=False)
    return [candidates[int(i)] for i in sorted(chosen)]


def _windows(span: _Span) -> tuple[np.ndarray, np.ndarray]:
    """``(past_only, both_sides)`` windows of a span; in each, the span's rows are the last ``m``."""
    rows = span.rows
    past = rows[span.first:span.middle[1]]
    previous = int(span.steps[span.first - 1]) if span.first else 0
    both = fim_rows(rows[span.first:span.stop], span.start_step, span.end_step, previous_step=previous)
    return past, both


def _last_rows_nll(model: Any, windows: Sequence[np.ndarray], last: Sequence[int]) -> list[np.ndarray]:
    """For each window (one batch, right-padded), ``(last[i], 8)`` float64 ``-log p`` of the tokens of its last
    ``last[i]`` rows, NaN at their pad tokens."""
    import torch
    import torch.nn.functional as F

    k = TOKENS_PER_EVENT
    longest = max(len(window) for window in windows)
    batch = torch.full((len(windows), longest, k), PAD_ID, dtype=torch.long)
    for i, window in enumerate(windows):
        batch[i, :len(window)] = torch.as_tensor(window, dtype=torch.long)
    device = next(model.parameters()).device
    flat = batch.view(len(windows), -1).to(device)  # (B, E*8)
    scores = []
    with torch.inference_mode():
        logits = model(input_ids=flat, use_cache=False).logits  # (B, E*8, V)
        for i, window in enumerate(windows):
            begin, end = (len(window) - last[i]) * k, len(window) * k  # flat span of the scored rows
            targets = flat[i, begin:end]  # (m*8,)
            nll = F.cross_entropy(logits[i, begin - 1:end - 1].float(), targets, reduction="none")  # p predicts p+1
            nll = nll.double().masked_fill(targets == PAD_ID, float("nan"))
            scores.append(nll.view(last[i], k).cpu().numpy())
    return scores


def _score_last_rows(model: Any, windows: Sequence[np.ndarray], last: Sequence[int]) -> list[tuple[float, int]]:
    """For each window, the sum of ``-log p`` and the count of the non-pad tokens of its last ``last[i]`` rows."""
    return [(float(np.nansum(nll)), int(np.count_nonzero(~np.isnan(nll))))
            for nll in _last_rows_nll(model, windows, last)]


def evaluate_infill(
    model: Any,
    tokenizer: Any = None,
    files: str | os.PathLike | Iterable[str | os.PathLike | np.ndarray] = (),
    span_bars: int = 4,
    seed: int = 0,
    *,
    spans_per_file: int = 1,
    window_events: int = 512,
    batch_size: int = 4,
    both_sides: bool | None = None,
    progress: bool = False,
) -> InfillResult:
    """Per-token NLL of held-out spans given the past only and given both sides (module docstring).

    Args:
        model: a ``MidiEventTransformerForCausalLM`` (on its device and dtype; set to eval mode while scoring).
        tokenizer: a ``MidiEventTransformerTokenizer`` (default: one with default settings).
        files: a folder, a file, or an iterable of paths and/or tokenized ``(n_events, 8)`` arrays (BOS first).
        span_bars: the span's length in bars.
        seed: picks the spans (file ``i`` draws from ``numpy.random.default_rng([seed, i])``).
        spans_per_file: spans drawn from each file (distinct, fewer when fewer fit).
        window_events: rows of the longest window scored (prefix + span, or the FIM layout).
        batch_size: windows per forward pass.
        both_sides: score the FIM layout too; default: when ``model.config.fill_in_the_middle``.
        progress: show a tqdm bar.

    Returns:
        [`InfillResult`].

    Raises:
        ValueError: no span could be drawn, bad settings, or ``both_sides=True`` on a model without the sentinel ids.
    """
    from tqdm.auto import tqdm

    if span_bars < 1 or spans_per_file < 1 or batch_size < 1:
        raise ValueError(f"span_bars, spans_per_file and batch_size must be >= 1, got {span_bars}, {spans_per_file}, "
                         f"{batch_size}")
    if window_events < 8:
        raise ValueError(f"window_events must be >= 8, got {window_events}")
    config = model.config
    if both_sides is None:
        both_sides = bool(getattr(config, "fill_in_the_middle", False))
    if both_sides and config.vocab_size < FIM_VOCAB_SIZE:
        raise ValueError(f"both_sides=True needs a model with the FIM sentinel ids (vocab_size >= {FIM_VOCAB_SIZE}, "
                         f"got {config.vocab_size})")
    if tokenizer is None:
        from ..tokenization_midi_event_transformer import MidiEventTransformerTokenizer

        tokenizer = MidiEventTransformerTokenizer()
    if isinstance(files, (str, os.PathLike)):
        files = find_midi_files(files)

    spans: list[_Span] = []
    skipped: dict[str, str] = {}
    n_files = 0
    for index, name, rows in read_pieces(files, tokenizer, skipped, min_rows=3):
        found = _spans_of(rows, span_bars, window_events, spans_per_file, np.random.default_rng([seed, index]))
        if not found:
            skipped[name] = f"no span of {span_bars} bars with events on both sides fits"
            continue
        n_files += 1
        spans += found
    if not spans:
        raise ValueError(f"no span to score (skipped: {skipped})")

    jobs = []  # (window, rows scored at its end, figure: 0 past only, 1 both sides)
    for span in spans:
        past, both = _windows(span)
        m = span.middle[1] - span.middle[0]
        jobs += [(past, m, 0)] + ([(both, m, 1)] if both_sides else [])
    jobs.sort(key=lambda job: len(job[0]), reverse=True)  # similar lengths together: less padding
    sums, counts = [0.0, 0.0], [0, 0]
    was_training = model.training
    model.eval()
    try:
        with tqdm(total=len(jobs), desc="infill NLL", unit="window", disable=not progress) as bar:
            for begin in range(0, len(jobs), batch_size):
                chunk = jobs[begin:begin + batch_size]
                scores = _score_last_rows(model, [job[0] for job in chunk], [job[1] for job in chunk])
                for (_, _, figure), (total, count) in zip(chunk, scores, strict=True):
                    sums[figure] += total
                    counts[figure] += count
                bar.update(len(chunk))
    finally:
        model.train(was_training)
    if both_sides and counts[0] != counts[1]:  # the same span rows, the same non-pad tokens
        raise RuntimeError(f"the two layouts scored {counts[0]} and {counts[1]} tokens")
    m_rows = [span.middle[1] - span.middle[0] for span in spans]
    return InfillResult(
        nll_past_only=sums[0] / counts[0], nll_both_sides=sums[1] / counts[1] if both_sides else None,
        tokens=counts[0], spans=len(spans), events=int(sum(m_rows)), files=n_files, span_bars=span_bars, seed=seed,
        window_events=window_events,
        mean_prefix_events=float(np.mean([span.middle[0] - span.first for span in spans])),
        mean_suffix_events=float(np.mean([span.stop - span.middle[1] for span in spans])),
        mean_span_events=float(np.mean(m_rows)), skipped=skipped)


__all__ = ["InfillResult", "evaluate_infill"]
