#!/usr/bin/env python
"""Generation speed of MidiEventTransformerForCausalLM and, side by side, of the reference's generate.

Random weights, EOS banned, sampling as the reference app (temperature 1, top_p 0.98, top_k 20), a fixed number of
threads. Both implementations run in each weight dtype: fp32, bf16 (``model.to(torch.bfloat16)``) and int8
(``torch.ao.quantization.quantize_dynamic`` of every Linear layer); the reference gets the same random weights.
Every measurement runs in its own subprocess (clean peak RSS). Prints one JSON document: the CPU model and the
versions of everything involved; the machine's read bandwidth; per run events/s, seconds, peak RSS, the weight
bytes read per event step and the run's share of the memory bound (see ``BOUND_DEFINITION``); for bf16 / int8 our
max logit difference vs fp32; the time per event at the start and at the end of a long run; ratios vs the
reference in the same dtype. A summary table goes to stderr.

    python scripts/bench_generate.py --reference-dir /tmp/skytnt_ref > bench.json

``--reference-dir`` is a checkout of SkyTNT/midi-model (its midi_model.py is imported from there; nothing of
it is copied into this repository). Without it only our model is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/, also when this file is loaded from elsewhere
from bench_common import (  # noqa: E402
    SAMPLING,
    VARIANTS,
    EventClock,
    cpu_model,
    in_variant,
    peak_rss_mb,
    random_model,
    run_job,
    versions,
)

from midi_event_transformer.vocabulary import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE  # noqa: E402
from midi_event_transformer.vocabulary import TOKENS_PER_EVENT as K  # noqa: E402

BOUND_DEFINITION = (
    "weight_bytes_per_event_step = bytes of every Linear weight of the event level (read once per event step) "
    "+ token_steps_per_event * (bytes of every Linear weight of the token level + bytes of the full lm_head); "
    "token_steps_per_event is counted in the run's output: per event position, the most non-pad ids of any batch "
    "row (1 + that event's parameters: both implementations skip the forced pads after them). The full lm_head "
    "per token step is exact for the reference and an upper estimate for ours, which reads only the rows of the "
    "grammar's id range. Embedding rows, norms and the KV cache are not counted. "
    "bound_events_per_s = batch * read_bandwidth / weight_bytes_per_event_step (every batch row gets one event "
    "from the same weight reads); share_of_bound = events_per_s / bound_events_per_s (1.0 = at the bound). "
    "read_bandwidth: bytes read per second by dst.copy_(src) of a large float32 tensor (the copy also writes as "
    "many bytes), best of a few repetitions, at the benchmark's thread count; a pure read stream, as a "
    "matrix-vector product's weight reads, may run faster, so a share above 1.0 is possible.")


def _linear_weight_bytes(module) -> int:
    """Bytes of the weights of every Linear layer in ``module`` (float or dynamically quantized int8)."""
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as QuantizedLinear

    total = 0
    for sub in module.modules():
        if isinstance(sub, torch.nn.Linear):
            weight = sub.weight
        elif isinstance(sub, QuantizedLinear):
            weight = sub.weight()
        else:
            continue
        total += weight.numel() * weight.element_size()
    return total


def _weight_reads(model, events) -> dict[str, Any]:
    """Weight bytes read per event step (see ``BOUND_DEFINITION``); ``events``: generated rows (B, E, K)."""
    import torch

    events = torch.as_tensor(events)
    token_steps = (events != PAD_ID).sum(dim=-1).amax(dim=0).float().mean().item() if events.shape[1] else float(K)
    event_level, token_level = _linear_weight_bytes(model.net), _linear_weight_bytes(model.net_token)
    lm_head = _linear_weight_bytes(model.lm_head)
    return {"event_level_bytes": event_level, "token_level_bytes": token_level, "lm_head_bytes": lm_head,
            "token_steps_per_event": round(token_steps, 3),
            "weight_bytes_per_event_step": round(event_level + token_steps * (token_level + lm_head))}


def run_ours(config_name: str, batch: int, events: int, variant: str, per_event_windows: bool) -> dict[str, Any]:
    import torch

    model = random_model(config_name, variant)
    prompt = torch.zeros(batch, K, dtype=torch.long)
    prompt[:, 0] = BOS_ID
    kwargs = {"do_sample": True, "suppress_tokens": [EOS_ID], **SAMPLING}
    model.generate(prompt, max_new_tokens=8 * K, **kwargs)  # warm-up
    clock = EventClock()
    start = time.perf_counter()
    out = model.generate(prompt, max_new_tokens=events * K, streamer=clock, **kwargs)
    seconds = time.perf_counter() - start
    generated = (out.shape[1] - K) // K
    result = {"events": generated, "seconds": round(seconds, 3), "events_per_s": round(batch * generated / seconds, 1)}
    result.update(_weight_reads(model, out[:, K:K * (1 + generated)].reshape(batch, generated, K)))
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

    reference = random_model(config_name, "fp32")
    ids = torch.randint(3, VOCAB_SIZE, (1, 64 * K), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = reference(ids, use_cache=False).logits.float()
        got = model(ids, use_cache=False).logits.float()
    return round(float((want - got).abs().max()), 5)


def run_reference(reference_dir: str, config_name: str, batch: int, events: int, variant: str) -> dict[str, Any]:
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.path.insert(0, reference_dir)
    import midi_model  # the reference's own module, from the given checkout

    if config_name == "small":
        config = midi_model.MIDIModelConfig.get_config(n_layer=4, n_head=4, n_embd=256, n_inner=1024)
    else:
        config = midi_model.MIDIModelConfig.from_name(config_name)
    model = midi_model.MIDIModel(config).eval()
    model.load_state_dict(random_model(config_name, "fp32").state_dict())  # same names, same random weights
    model = in_variant(model, variant)
    forward_token = model.forward_token

    def forward_token_without_eos(*args, **kwargs):
        logits = forward_token(*args, **kwargs)
        logits[..., EOS_ID] = float("-inf")
        return logits

    model.forward_token = forward_token_without_eos
    sampling = {"temp": SAMPLING["temperature"], "top_p": SAMPLING["top_p"], "top_k": SAMPLING["top_k"]}
    model.generate(batch_size=batch, max_len=9, **sampling)  # warm-up
    start = time.perf_counter()
    out = model.generate(batch_size=batch, max_len=events + 1, **sampling)  # (B, 1 + events, K) numpy
    seconds = time.perf_counter() - start
    generated = out.shape[1] - 1
    result = {"events": generated, "seconds": round(seconds, 3), "events_per_s": round(batch * generated / seconds, 1)}
    result.update(_weight_reads(model, out[:, 1:]))
    return result


def measure_read_bandwidth(megabytes: int, repeats: int = 5) -> dict[str, Any]:
    """Bytes read per second by ``dst.copy_(src)`` of a ``megabytes`` MiB float32 tensor (best of ``repeats``);
    beside it, informational, the same bytes read by ``src.sum()``."""
    import torch

    src = torch.ones(megabytes * 2**20 // 4)  # written once: every page is mapped before timing
    dst = torch.empty_like(src)
    dst.copy_(src)

    def best(work) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
        return min(times)

    nbytes = src.numel() * src.element_size()
    copy_s, sum_s = best(lambda: dst.copy_(src)), best(src.sum)
    return {"read_bandwidth_gb_per_s": round(nbytes / copy_s / 1e9, 2), "copy_bytes_read": nbytes,
            "copy_best_s": round(copy_s, 5), "repeats": repeats,
            "sum_read_gb_per_s": round(nbytes / sum_s / 1e9, 2)}


def _job(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    if spec["impl"] == "bandwidth":
        return measure_read_bandwidth(spec["megabytes"])
    if spec["impl"] == "reference":
        result = run_reference(spec["reference_dir"], spec["config"], spec["batch"], spec["events"], spec["variant"])
    else:
        result = run_ours(spec["config"], spec["batch"], spec["events"], spec["variant"], spec.get("windows", False))
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def _median_entry(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median events/s of one job's rounds, with every round's events/s beside it."""
    good = sorted((e for e in entries if "events_per_s" in e), key=lambda e: e["events_per_s"])
    if not good:
        return entries[-1]
    entry = dict(good[(len(good) - 1) // 2])
    if len(entries) > 1:
        entry["events_per_s_rounds"] = [e.get("events_per_s") for e in entries]
    return entry


def _run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` measured in a subprocess of this script: the spec (less the reference path) and its results."""
    return {**{k: v for k, v in spec.items() if k != "reference_dir"}, **run_job(__file__, spec)}


def _add_bound(entry: dict[str, Any], bandwidth_gb_per_s: float | None) -> None:
    if not bandwidth_gb_per_s or not entry.get("weight_bytes_per_event_step") or "events_per_s" not in entry:
        return
    bound = entry["batch"] * bandwidth_gb_per_s * 1e9 / entry["weight_bytes_per_event_step"]
    entry["bound_events_per_s"] = round(bound, 1)
    entry["share_of_bound"] = round(entry["events_per_s"] / bound, 3)


def _summary(machine: dict[str, Any], results: list[dict[str, Any]], ratios: dict[str, float]) -> str:
    lines = [f"CPU: {machine['cpu_model']} ({machine['threads']} threads), read bandwidth "
             f"{machine.get('read_bandwidth_gb_per_s', 'not measured')} GB/s",
             f"{'run':<36} {'impl':<10} {'events/s':>9} {'bound':>9} {'share':>6} {'vs ref':>7}"]
    for entry in results:
        key = f"{entry['config']}/batch{entry['batch']}/{entry['variant']}"
        name = key + (f" ({entry['name']})" if entry.get("name") else "")
        if "events_per_s" not in entry:
            lines.append(f"{name:<36} {entry['impl']:<10} error: {entry.get('error')}")
            continue
        ratio = ratios.get(key, "") if entry["impl"] == "ours" and not entry.get("name") else ""
        lines.append(f"{name:<36} {entry['impl']:<10} {entry['events_per_s']:>9} "
                     f"{entry.get('bound_events_per_s', ''):>9} {entry.get('share_of_bound', ''):>6} {ratio:>7}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-dir", help="checkout of SkyTNT/midi-model to measure side by side")
    parser.add_argument("--configs", nargs="+", default=["small", "tv2o-medium"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="weight dtypes, each measured for both implementations")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--events", type=json.loads, default={"small": 512, "tv2o-medium": 128, "tv2o-large": 64},
                        help='JSON dict config -> events per run, e.g. \'{"small": 512}\'')
    parser.add_argument("--variant-events", type=json.loads, default={"small": 256, "tv2o-medium": 32},
                        help="events per run for the bf16 / int8 variants (JSON dict config -> events)")
    parser.add_argument("--long-events", type=int, default=1024, help="events of the position check run (small)")
    parser.add_argument("--bandwidth-mb", type=int, default=512,
                        help="MiB of the tensor copied to measure the read bandwidth (0: skip, no bound shares)")
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
                events = {"events": args.variant_events[config]} if (variant != "fp32"
                                                                     and config in args.variant_events) else {}
                jobs.append({"impl": "ours", "config": config, "batch": batch, "variant": variant, **events})
                if args.reference_dir:
                    jobs.append({"impl": "reference", "config": config, "batch": batch, "variant": variant, **events,
                                 "reference_dir": os.path.abspath(args.reference_dir)})
    if args.long_events:
        jobs.append({"impl": "ours", "config": "small", "batch": 1, "variant": "fp32", "events": args.long_events,
                     "windows": True, "name": "position_check"})
    jobs = [{"threads": args.threads, "events": args.events.get(spec["config"], 128), **spec} for spec in jobs]

    machine = {"cpu_model": cpu_model(), "threads": args.threads}
    if args.bandwidth_mb:
        bandwidth = _run_job({"impl": "bandwidth", "threads": args.threads, "megabytes": args.bandwidth_mb})
        bandwidth.pop("impl")
        machine.update(bandwidth)
        print(json.dumps(bandwidth), file=sys.stderr)
    measured: list[list[dict[str, Any]]] = [[] for _ in jobs]
    for _ in range(args.rounds):
        for spec, entries in zip(jobs, measured, strict=True):
            entry = _run_job(spec)
            _add_bound(entry, machine.get("read_bandwidth_gb_per_s"))
            print(json.dumps(entry), file=sys.stderr)
            entries.append(entry)
    results = [_median_entry(entries) for entries in measured]

    ratios = {}
    for entry in results:
        if entry["impl"] != "ours" or "events_per_s" not in entry or entry.get("name"):
            continue
        ref = next((r for r in results if r["impl"] == "reference" and r["config"] == entry["config"]
                    and r["batch"] == entry["batch"] and r["variant"] == entry["variant"]
                    and "events_per_s" in r), None)
        if ref:
            key = f"{entry['config']}/batch{entry['batch']}/{entry['variant']}"
            ratios[key] = round(entry["events_per_s"] / ref["events_per_s"], 2)
    print(_summary(machine, results, ratios), file=sys.stderr)
    print(json.dumps({"settings": {"threads": args.threads, "rounds": args.rounds, "sampling": SAMPLING, "eos": "banned",
                                   "weights": "random (seed 0), the same for both implementations"},
                      "machine": machine, "versions": versions(args.reference_dir),
                      "bound_definition": BOUND_DEFINITION, "runs": results,
                      "speedup_vs_reference": ratios, "speedup_definition": "ours / reference, same config, batch "
                                                                            "and weight dtype"}, indent=2))


if __name__ == "__main__":
    main()
