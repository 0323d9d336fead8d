#!/usr/bin/env python
"""Long pieces through the sliding window: events/s, peak memory and whether the time per event stays flat.

Each length runs in its own subprocess (clean peak RSS): ``sliding_window.generate_in_windows`` from a one-piano
prompt, EOS banned, sampling as ``generate_midi`` (temperature 1, top_p 0.94, top_k 20), a fixed number of
threads. For each run: events/s, seconds, peak RSS, the mean time per event over the first and the last 10% of the
events and their ratio (the issue asks the last 10% of a 4,000-event run to stay within 1.3x of the first).

    python scripts/bench_long.py                          # the embedded model, 512 / 2000 / 4000 / 8000 events
    python scripts/bench_long.py --model runs/x/final --lengths 4000
    python scripts/bench_long.py --config small           # random weights of a named shape (no trained model)

Prints one JSON document with the CPU model and the versions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/, also when this file is loaded from elsewhere
from bench_common import EventClock, cpu_model, peak_rss_mb, random_model, run_job, versions  # noqa: E402

#: Sampling as ``generate_midi``'s defaults.
SAMPLING = {"temperature": 1.0, "top_p": 0.94, "top_k": 20}


def _load(spec: dict[str, Any]):
    from midi_event_transformer.generation.loading import load_model_and_tokenizer

    if spec["config"]:
        return random_model(spec["config"])
    model, _ = load_model_and_tokenizer(spec["model"], device="cpu", dtype=spec["dtype"])
    return model


def _job(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from midi_event_transformer.generation.prompts import build_prompt
    from midi_event_transformer.generation.sliding_window import default_context_events, generate_in_windows
    from midi_event_transformer.vocabulary import BOS_ID, EOS_ID, PAD_ID

    torch.set_num_threads(spec["threads"])
    model = _load(spec)
    context = spec["context_events"] or default_context_events(model)
    prompt = build_prompt(instruments=["Acoustic Grand Piano"], bpm=120)
    kwargs = dict(do_sample=True, **SAMPLING, suppress_tokens=[EOS_ID], pad_token_id=PAD_ID, bos_token_id=BOS_ID,
                  eos_token_id=EOS_ID)
    generate_in_windows(model, [prompt], max_events=16, context_events=context, **kwargs)  # warm-up
    torch.manual_seed(0)
    clock = EventClock()
    start = time.perf_counter()
    (rows,) = generate_in_windows(model, [prompt], max_events=spec["events"], context_events=context,
                                  streamer=clock, **kwargs)
    seconds = time.perf_counter() - start
    times = [start, *clock.times]
    tenth = max(1, (len(times) - 1) // 10)
    first = (times[tenth] - times[0]) / tenth
    last = (times[-1] - times[-1 - tenth]) / tenth
    return {"events": len(rows) - len(prompt), "context_events": context, "seconds": round(seconds, 2),
            "events_per_s": round((len(rows) - len(prompt)) / seconds, 1),
            "ms_per_event_first_10pct": round(1e3 * first, 3), "ms_per_event_last_10pct": round(1e3 * last, 3),
            "last_over_first": round(last / first, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a model directory or Hub id (default: the embedded model)")
    parser.add_argument("--config", default=None, help="random weights of a named shape instead (small, tv2o-medium)")
    parser.add_argument("--dtype", default=None, help="float32 / bfloat16 (default: the model's)")
    parser.add_argument("--lengths", nargs="+", type=int, default=[512, 2000, 4000, 8000])
    parser.add_argument("--context-events", type=int, default=None, help="the window (default: the training window)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps(_job(json.loads(args.job))))
        return
    runs = []
    for events in args.lengths:
        spec = {"model": args.model, "config": args.config, "dtype": args.dtype, "events": events,
                "context_events": args.context_events, "threads": args.threads}
        entry = {"events_asked": events, **run_job(__file__, spec)}
        print(json.dumps(entry), file=sys.stderr)
        runs.append(entry)
    model = args.config and f"random weights, {args.config}" or args.model or "embedded (DEFAULT_MODEL)"
    print(json.dumps({"settings": {"model": model, "dtype": args.dtype, "threads": args.threads, "eos": "banned",
                                   "sampling": SAMPLING},
                      "versions": {**versions(), "cpu": cpu_model()}, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
