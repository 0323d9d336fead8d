#!/usr/bin/env python
"""Generation speed of MidiEventTransformerForCausalLM (and, side by side, of the reference's generate).

Random weights, EOS banned, sampling as the reference app (temperature 1, top_p 0.98, top_k 20), fp32 by
default, a fixed number of threads. Every measurement runs in its own subprocess (clean peak RSS). Prints one
JSON document: per run events/s, seconds, peak RSS; for bf16 / int8 variants the max logit difference vs fp32;
the time per event at the start and at the end of a long run; ratios vs the reference; versions.

    python scripts/bench_generate.py --reference-dir /tmp/skytnt_ref > bench.json

``--reference-dir`` is a checkout of SkyTNT/midi-model (its midi_model.py is imported from there; nothing of
it is copied into this repository). Without it only our model is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

EOS_ID, BOS_ID, K = 2, 1, 8
SAMPLING = {"temperature": 1.0, "top_p": 0.98, "top_k": 20}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _our_model(config_name: str, variant: str):
    import torch

    from midi_event_transformer.configuration_midi_event_transformer import MidiEventTransformerConfig
    from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM

    torch.manual_seed(0)
    model = MidiEventTransformerForCausalLM(MidiEventTransformerConfig.from_name(config_name)).eval()
    if variant == "bf16":
        model = model.to(torch.bfloat16)
    elif variant == "int8":
        model = model.quantize_dynamic_int8()
    return model


class _EventClock:
    """Streamer recording the time each event is finished (every 8 generated tokens)."""

    def __init__(self) -> None:
        self.tokens, self.times, self.prompt_seen = 0, [], False

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.tokens += 1
        if self.tokens % K == 0:
            self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def run_ours(config_name: str, batch: int, events: int, variant: str, per_event_windows: bool) -> dict[str, Any]:
    import torch

    model = _our_model(config_name, variant)
    prompt = torch.zeros(batch, K, dtype=torch.long)
    prompt[:, 0] = BOS_ID
    kwargs = {"do_sample": True, "suppress_tokens": [EOS_ID], **SAMPLING}
    model.generate(prompt, max_new_tokens=8 * K, **kwargs)  # warm-up
    clock = _EventClock()
    start = time.perf_counter()
    out = model.generate(prompt, max_new_tokens=events * K, streamer=clock, **kwargs)
    seconds = time.perf_counter() - start
    generated = (out.shape[1] - K) // K
    result = {"events": generated, "seconds": round(seconds, 3), "events_per_s": round(batch * generated / seconds, 1)}
    if per_event_windows and len(clock.times) >= 256:
        times = [start, *clock.times]
        first = (times[128] - times[0]) / 128
        last = (times[-1] - times[-129]) / 128
        result.update(ms_per_event_first_128=round(1e3 * first, 3), ms_per_event_last_128=round(1e3 * last, 3))
    if variant != "fp32":
        result["max_abs_logit_diff_vs_fp32"] = _logit_difference(config_name, model)
    return result


def _logit_difference(config_name: str, model) -> float:
    import torch

    reference = _our_model(config_name, "fp32")
    ids = torch.randint(3, 3406, (1, 64 * K), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = reference(ids, use_cache=False).logits.float()
        got = model(ids, use_cache=False).logits.float()
    return round(float((want - got).abs().max()), 5)


def run_reference(reference_dir: str, config_name: str, batch: int, events: int) -> dict[str, Any]:

    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.path.insert(0, reference_dir)
    import midi_model  # the reference's own module, from the given checkout

    if config_name == "small":
        config = midi_model.MIDIModelConfig.get_config(n_layer=4, n_head=4, n_embd=256, n_inner=1024)
    else:
        config = midi_model.MIDIModelConfig.from_name(config_name)
    model = midi_model.MIDIModel(config).eval()
    model.load_state_dict(_our_model(config_name, "fp32").state_dict())  # same names, same random weights
    forward_token = model.forward_token

    def forward_token_without_eos(*args, **kwargs):
        logits = forward_token(*args, **kwargs)
        logits[..., EOS_ID] = float("-inf")
        return logits

    model.forward_token = forward_token_without_eos
    sampling = {"temp": SAMPLING["temperature"], "top_p": SAMPLING["top_p"], "top_k": SAMPLING["top_k"]}
    model.generate(batch_size=batch, max_len=9, **sampling)  # warm-up
    start = time.perf_counter()
    out = model.generate(batch_size=batch, max_len=events + 1, **sampling)
    seconds = time.perf_counter() - start
    generated = out.shape[1] - 1
    return {"events": generated, "seconds": round(seconds, 3), "events_per_s": round(batch * generated / seconds, 1)}


def _job(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    if spec["impl"] == "reference":
        result = run_reference(spec["reference_dir"], spec["config"], spec["batch"], spec["events"])
    else:
        result = run_ours(spec["config"], spec["batch"], spec["events"], spec["variant"], spec.get("windows", False))
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return result


def _versions() -> dict[str, Any]:
    import numpy
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": numpy.__version__, "platform": platform.platform(), "processor": platform.processor(),
            "cpu_count": os.cpu_count()}


def _median_entry(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median events/s of one job's rounds, with every round's events/s beside it."""
    good = sorted((e for e in entries if "events_per_s" in e), key=lambda e: e["events_per_s"])
    if not good:
        return entries[-1]
    entry = dict(good[(len(good) - 1) // 2])
    if len(entries) > 1:
        entry["events_per_s_rounds"] = [e.get("events_per_s") for e in entries]
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-dir", help="checkout of SkyTNT/midi-model to measure side by side")
    parser.add_argument("--configs", nargs="+", default=["small", "tv2o-medium"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--variants", nargs="+", default=["fp32", "bf16", "int8"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--events", type=json.loads, default={"small": 512, "tv2o-medium": 128, "tv2o-large": 64},
                        help='JSON dict config -> events per run, e.g. \'{"small": 512}\'')
    parser.add_argument("--variant-events", type=json.loads, default={"small": 256, "tv2o-medium": 32},
                        help="events per run for the bf16 / int8 variants (JSON dict config -> events)")
    parser.add_argument("--long-events", type=int, default=1024, help="events of the position check run (small)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every job this many times, round after round (ours and the reference alternate, so "
                             "load changes on a shared machine hit both); the median events/s is kept")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps(_job(json.loads(args.job))))
        return

    jobs = []
    for config in args.configs:
        for batch in args.batches:
            for variant in args.variants:
                job = {"impl": "ours", "config": config, "batch": batch, "variant": variant}
                if variant != "fp32" and config in args.variant_events:
                    job["events"] = args.variant_events[config]
                jobs.append(job)
            if args.reference_dir:
                jobs.append({"impl": "reference", "config": config, "batch": batch, "variant": "fp32",
                             "reference_dir": os.path.abspath(args.reference_dir)})
    if args.long_events:
        jobs.append({"impl": "ours", "config": "small", "batch": 1, "variant": "fp32", "events": args.long_events,
                     "windows": True, "name": "position_check"})
    jobs = [{"threads": args.threads, "events": args.events.get(spec["config"], 128), **spec} for spec in jobs]
    measured: list[list[dict[str, Any]]] = [[] for _ in jobs]
    for _ in range(args.rounds):
        for spec, entries in zip(jobs, measured, strict=True):
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--job", json.dumps(spec)],
                                  capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
            entry = {k: v for k, v in spec.items() if k != "reference_dir"}
            if done.returncode:
                entry["error"] = (done.stderr.strip().splitlines()[-1] if done.stderr.strip()
                                  else f"exit {done.returncode}")
            else:
                entry.update(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(entry), file=sys.stderr)
            entries.append(entry)
    results = [_median_entry(entries) for entries in measured]

    ratios = {}
    for entry in results:
        if entry["impl"] != "ours" or "events_per_s" not in entry or entry.get("name"):
            continue
        ref = next((r for r in results if r["impl"] == "reference" and r["config"] == entry["config"]
                    and r["batch"] == entry["batch"] and "events_per_s" in r), None)
        if ref:
            key = f"{entry['config']}/batch{entry['batch']}/{entry['variant']}"
            ratios[key] = round(entry["events_per_s"] / ref["events_per_s"], 2)
    print(json.dumps({"settings": {"threads": args.threads, "rounds": args.rounds, "sampling": SAMPLING, "eos": "banned",
                                   "weights": "random (seed 0)"},
                      "versions": _versions(), "runs": results, "speedup_vs_reference": ratios}, indent=2))


if __name__ == "__main__":
    main()
