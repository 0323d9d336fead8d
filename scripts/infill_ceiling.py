"""How much can a model read from outside a span? Per-token NLL of held-out spans under five contexts.

``evaluate_infill`` gives the first two figures; this script adds three controls that bound what the suffix can
give, on the same spans and tokens (the span's event rows, prefix of the same size):

- ``past_only``: the rows before the span (as ``evaluate_infill``);
- ``both_sides``: the FIM layout, the suffix read first (as ``evaluate_infill``);
- ``other_songs_suffix``: the FIM layout with the suffix of another song's span: what the suffix's content gives;
- ``span_as_suffix``: the FIM layout with the span's own rows in place of its suffix: the answer is in the context,
  so this bounds what a suffix could ever give this model (its in-context copying);
- ``span_repeated_before``: the past with the span's rows written twice, the second time scored: the same copying
  from the past;
- ``suffix_copy_oracle``: not a model's figure but what a perfect copier of the real suffix would score: the
  past-only NLL with every token set to 0 in the span rows that the suffix repeats and the past does not
  (:func:`suffix_only_repeats`). A both-sides gain above this one has to come from more than the suffix's repeated
  material (its harmony, the notes right after the span, ...).

    python scripts/infill_ceiling.py --model midi_event_transformer/default_model --file-list held_out.txt

Prints JSON: the figures, their gains over ``past_only``, the spans and tokens, the CPU and the versions.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
import transformers

from midi_event_transformer import MidiEventTransformerForCausalLM, MidiEventTransformerTokenizer
from midi_event_transformer.evaluation.infill import _last_rows_nll, _spans_of, _windows
from midi_event_transformer.evaluation.nll import read_pieces
from midi_event_transformer.vocabulary import FIM_SPAN_ID

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import add_file_arguments, cpu_model, midi_files  # noqa: E402


def _suffix_replaced(layout: np.ndarray, suffix: np.ndarray) -> np.ndarray:
    """The FIM layout with the rows between its two SPAN rows replaced by ``suffix``."""
    opening, closing = np.flatnonzero(layout[:, 0] == FIM_SPAN_ID)[:2]
    return np.concatenate([layout[:opening + 1], suffix, layout[closing:]])


def suffix_only_repeats(rows: np.ndarray, first: int, middle: tuple[int, int], stop: int) -> np.ndarray:
    """``(m,)`` bool: the span rows ``rows[middle[0]:middle[1]]`` that a copier could take from the suffix only.

    A span row counts when it and the row before it appear as two consecutive rows of the suffix
    (``rows[middle[1]:stop]``) and nowhere as two consecutive rows before it (from ``rows[first]``, the prefix and
    the span so far): a pair, not a single row, so that the copier knows where in the suffix to read.
    """
    def pairs(block: np.ndarray) -> set[tuple[bytes, bytes]]:
        return {(a.tobytes(), b.tobytes()) for a, b in zip(block[:-1], block[1:], strict=True)}

    suffix, seen = pairs(rows[middle[1]:stop]), pairs(rows[first:middle[0]])
    repeats = np.zeros(middle[1] - middle[0], dtype=bool)
    for j, i in enumerate(range(*middle)):
        pair = (rows[i - 1].tobytes(), rows[i].tobytes())
        repeats[j] = pair in suffix and pair not in seen
        seen.add(pair)
    return repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    add_file_arguments(parser)
    parser.add_argument("--span-bars", type=int, default=4)
    parser.add_argument("--spans-per-file", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window-events", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    files = midi_files(args.data, args.file_list, args.limit)
    model = MidiEventTransformerForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    tokenizer = MidiEventTransformerTokenizer()
    spans = []
    for index, _, rows in read_pieces(files, tokenizer, {}, min_rows=3):
        spans += _spans_of(rows, args.span_bars, args.window_events, args.spans_per_file,
                           np.random.default_rng([args.seed, index]))
    if len(spans) < 2:
        raise SystemExit("fewer than two spans: give more files")
    names = ["past_only", "both_sides", "other_songs_suffix", "span_as_suffix", "span_repeated_before"]
    sums, tokens, repeated_rows, rows_scored = dict.fromkeys(names + ["suffix_copy_oracle"], 0.0), 0, 0, 0
    for i, span in enumerate(spans):
        past, both = _windows(span)
        m = span.middle[1] - span.middle[0]
        middle = span.rows[span.middle[0]:span.middle[1]]
        other = _windows(spans[(i + len(spans) // 2) % len(spans)])[1]
        opening, closing = np.flatnonzero(other[:, 0] == FIM_SPAN_ID)[:2]
        windows = {"past_only": past, "both_sides": both,
                   "other_songs_suffix": _suffix_replaced(both, other[opening + 1:closing]),
                   "span_as_suffix": _suffix_replaced(both, middle),
                   "span_repeated_before": np.concatenate([past[max(0, len(past) - args.window_events + m):], middle])}
        scores = dict(zip(windows, _last_rows_nll(model, list(windows.values()), [m] * len(windows)), strict=True))
        counts = {int(np.count_nonzero(~np.isnan(nll))) for nll in scores.values()}
        if len(counts) != 1:  # the same span rows in every window
            raise RuntimeError(f"the windows scored different token counts: {sorted(counts)}")
        for name, nll in scores.items():
            sums[name] += float(np.nansum(nll))
        repeats = suffix_only_repeats(span.rows, span.first, span.middle, span.stop)
        sums["suffix_copy_oracle"] += float(np.nansum(scores["past_only"][~repeats]))
        tokens += counts.pop()
        repeated_rows, rows_scored = repeated_rows + int(repeats.sum()), rows_scored + m
    figures = {name: sums[name] / tokens for name in sums}
    print(json.dumps({"model": args.model, "spans": len(spans), "tokens": tokens, "span_bars": args.span_bars,
                      "span_rows": rows_scored, "suffix_only_repeated_rows": repeated_rows,
                      "nll": figures, "gain_over_past_only": {name: figures["past_only"] - value
                                                              for name, value in figures.items()},
                      "cpu": cpu_model(), "threads": torch.get_num_threads(),
                      "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                   "python": platform.python_version()}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
