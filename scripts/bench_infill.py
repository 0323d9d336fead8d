#!/usr/bin/env python
"""The cost of an infill against a plain continuation that generates as many events, as JSON.

For each song: ``generate_midi(prompt=song, infill_bars=(first, first + bars - 1))`` is timed, then a continuation
of the same prefix (the song up to the span) that generates as many events as the infill wrote (kept ones
included: they go through the model too), with EOS suppressed; the two alternate in one process, ``--rounds``
times. The ratio infill / continuation is the figure (issue: at most 1.5).

    python scripts/bench_infill.py ../shared/midi/pop909/001.mid ../shared/midi/pop909/002.mid --bars 4 --first 9
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from bench_common import cpu_model, versions

from midi_event_transformer import DEFAULT_MODEL
from midi_event_transformer.generation.api import generate_rows
from midi_event_transformer.generation.infilling import plan_infill, span_steps
from midi_event_transformer.generation.loading import load_model_and_tokenizer
from midi_event_transformer.generation.prompts import prompt_from_midi
from midi_event_transformer.vocabulary import EOS_ID


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("songs", nargs="+", help="MIDI files to infill")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--first", type=int, default=9, help="the first bar of the span")
    parser.add_argument("--bars", type=int, default=4, help="bars in the span")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, tokenizer = load_model_and_tokenizer(args.model, None, device="cpu")
    span = (args.first, args.first + args.bars - 1)
    results = []
    for song in args.songs:
        rows = prompt_from_midi(song, None, tokenizer=tokenizer)
        start, end = span_steps(rows, bars=span)
        plan = plan_infill(rows, start, end)
        prefix = plan.prefix_rows
        infill_s, continuation_s = [], []
        generated = None
        for _ in range(args.rounds):
            began = time.perf_counter()
            (piece,) = generate_rows(model, tokenizer, prompt=song, infill_bars=span, seed=args.seed, progress=False)
            infill_s.append(time.perf_counter() - began)
            # the events the loop wrote: the span's rows of the piece (kept and the model's)
            generated = len(piece) - len(prefix) - len(plan.suffix_rows)
            suppress = model.generation_config.suppress_tokens
            model.generation_config.suppress_tokens = [EOS_ID]
            try:
                began = time.perf_counter()
                generate_rows(model, tokenizer, prompt=prefix, prompt_events=len(prefix), events=max(1, generated),
                              seed=args.seed, progress=False)
                continuation_s.append(time.perf_counter() - began)
            finally:
                model.generation_config.suppress_tokens = suppress
        results.append({"song": song, "span_bars": list(span), "span_steps": [start, end], "events": generated,
                        "infill_s": [round(s, 3) for s in infill_s],
                        "continuation_s": [round(s, 3) for s in continuation_s],
                        "ratio": round(statistics.median(infill_s) / statistics.median(continuation_s), 3)})
    print(json.dumps({"model": args.model, "rounds": args.rounds, "songs": results,
                      "median_ratio": round(float(np.median([r["ratio"] for r in results])), 3),
                      "cpu": cpu_model(), "versions": versions()}, indent=2))


if __name__ == "__main__":
    main()
