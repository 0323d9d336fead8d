#!/usr/bin/env python
"""A/B of each mechanism of the event-level decoding loop, in one process, in back-to-back pairs.

For every (config, batch, dtype) the loop runs as shipped ("all") and with one mechanism switched off at a time
(``model.generate(..., decoding_options=EventDecodingOptions(<mechanism>=False))``: the loop then does the plain
operation it stands for); ``event_loop=False`` (transformers' per-token loop) is measured beside them. Each variant runs in
back-to-back pairs with "all" (order alternating), so the machine's drift, which moves a 1-second run by tens
of percent here, cancels in each pair's ratio: ``gain`` = median over the pairs of events/s of "all" / events/s
without the mechanism (> 1: the mechanism pays), with its quartiles. Random
weights, EOS banned, the reference app's sampling (``bench_common.SAMPLING``, as ``bench_generate.py``). Greedy output of every variant
is checked against "all" on a short run (``greedy_equal``). Prints one JSON document; a table to stderr.

    python scripts/bench_mechanisms.py --configs small tv2o-medium --batches 1 4 > mechanisms.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import SAMPLING, cpu_model, random_model, versions  # noqa: E402

from midi_event_transformer.event_decoding import EventDecodingOptions  # noqa: E402
from midi_event_transformer.vocabulary import BOS_ID, EOS_ID  # noqa: E402
from midi_event_transformer.vocabulary import TOKENS_PER_EVENT as K  # noqa: E402

#: What the loop does with each mechanism switched off (each is a field of ``EventDecodingOptions``).
MECHANISMS = {
    "skip_forced_pads": "run the token step for the pad slots after an event's parameters too",
    "grammar_span_scoring": "score the whole vocabulary (full lm_head, processors on (B, V))",
    "fused_top_k_top_p": "transformers' top-k and top-p warpers, then softmax + multinomial",
    "token_input_lookup": "compute the embedding and first-layer q/k/v of each token row anew",
    "fused_rms_norm": "the norm module's own forward instead of torch.rms_norm",
    "inference_mode": "torch.no_grad instead of torch.inference_mode around the loop",
}
assert MECHANISMS.keys() == {field.name for field in dataclasses.fields(EventDecodingOptions)}


def _prompt(batch: int) -> torch.Tensor:
    prompt = torch.zeros(batch, K, dtype=torch.long)
    prompt[:, 0] = BOS_ID
    return prompt


def _run(model, variant: str, batch: int, events: int, greedy: bool = False) -> tuple[float, torch.Tensor]:
    kwargs: dict[str, Any] = {"suppress_tokens": [EOS_ID]}
    kwargs.update({"do_sample": False} if greedy else {"do_sample": True, **SAMPLING})
    if variant == "per_token_loop":
        kwargs["event_loop"] = False
    elif variant != "all":
        kwargs["decoding_options"] = EventDecodingOptions(**{variant: False})
    torch.manual_seed(0)
    start = time.perf_counter()
    out = model.generate(_prompt(batch), max_new_tokens=events * K, **kwargs)
    seconds = time.perf_counter() - start
    return batch * ((out.shape[1] - K) // K) / seconds, out


def measure(config: str, batch: int, dtype: str, events: int, pairs: int, variants: list[str]) -> dict[str, Any]:
    """Each variant against "all" in ``pairs`` back-to-back pairs (order alternating): the machine's drift
    between pairs cancels in each pair's ratio; the median ratio is the gain."""
    model = random_model(config, dtype)
    greedy_reference = _run(model, "all", batch, 16, greedy=True)[1]
    greedy_equal = {v: bool(torch.equal(_run(model, v, batch, 16, greedy=True)[1], greedy_reference))
                    for v in variants}
    for variant in variants:  # warm-up: first-call costs (allocations, lazily built tables) out of the pairs
        _run(model, variant, batch, 16)
    ratios: dict[str, list[float]] = {}
    speeds: dict[str, list[float]] = {"all": []}
    for variant in variants[1:]:
        ratios[variant], speeds[variant] = [], []
        for index in range(pairs):
            order = ("all", variant) if index % 2 == 0 else (variant, "all")
            pair = {name: _run(model, name, batch, events)[0] for name in order}
            ratios[variant].append(pair["all"] / pair[variant])
            speeds["all"].append(pair["all"])
            speeds[variant].append(pair[variant])

    def quartiles(values: list[float]) -> list[float]:
        return [round(q, 3) for q in statistics.quantiles(values, n=4)] if len(values) > 1 else values

    return {"config": config, "batch": batch, "dtype": dtype, "events": events, "pairs": pairs,
            "events_per_s": {v: round(statistics.median(s), 1) for v, s in speeds.items()},
            "gain": {v: round(statistics.median(r), 3) for v, r in ratios.items()},
            "gain_quartiles": {v: quartiles(r) for v, r in ratios.items()},
            "greedy_equal": greedy_equal}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["small", "tv2o-medium"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--dtypes", nargs="+", choices=("fp32", "bf16"), default=["fp32"])
    parser.add_argument("--events", type=json.loads, default={"small": 128, "tv2o-medium": 12},
                        help='events per run, by config (JSON), e.g. \'{"small": 256}\'')
    parser.add_argument("--pairs", type=int, default=10, help="back-to-back (all, without) pairs per mechanism")
    parser.add_argument("--mechanisms", nargs="+", choices=list(MECHANISMS), default=list(MECHANISMS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = ["all", *args.mechanisms, "per_token_loop"]
    results = []
    for config in args.configs:
        for dtype in args.dtypes:
            for batch in args.batches:
                entry = measure(config, batch, dtype, args.events.get(config, 64), args.pairs, variants)
                results.append(entry)
                print(json.dumps(entry), file=sys.stderr, flush=True)
    machine = {"cpu_model": cpu_model(), "threads": args.threads, "versions": versions()}
    print(json.dumps({"machine": machine, "mechanisms": MECHANISMS, "results": results}, indent=1))
    print(f"CPU: {machine['cpu_model']} ({args.threads} threads); gain = all / without (> 1: it pays)",
          file=sys.stderr)
    header = f"{'run':<24}" + "".join(f"{v[:14]:>16}" for v in variants[1:])
    print(header, file=sys.stderr)
    for entry in results:
        name = f"{entry['config']}/b{entry['batch']}/{entry['dtype']}"
        print(f"{name:<24}" + "".join(f"{entry['gain'][v]:>16}" for v in variants[1:]), file=sys.stderr)


if __name__ == "__main__":
    main()
