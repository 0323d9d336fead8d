#!/usr/bin/env python
"""Training-step speed of MidiEventTransformerForCausalLM, and side by side the reference's, as JSON.

One step = forward + loss + backward + gradient clipping + AdamW step on a batch of real POP909 windows
(default 4 x 512 events, "small" config, 2 threads). Variants of ours: fp32 and bf16 autocast, each with the
model's own training loss (``losses.fused_flat_causal_lm_loss``: no logits kept) and, for comparison, with the
loss computed from materialised (B, L, V) logits ("-full-logits"), and with the decoder layers compiled
("-compiled": ``scripts/train.py --torch_compile``; the compile time is the warm-up's "first_step_s").
The variants run interleaved, round after round, so load changes on a shared machine hit them alike; the
figure kept is each variant's median step.

    python scripts/bench_train.py --reference-dir /tmp/skytnt_ref > bench_train.json

``--reference-dir`` is a checkout of SkyTNT/midi-model: its ``midi_model.py`` is imported from there
(nothing of it is in this repository); its step is written here from its training script's recipe
(event transformer on events 0..E-2, token transformer on each next event, mean cross entropy without pad).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/, also when this file is loaded from elsewhere
from bench_common import versions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def load_batches(count: int, batch: int, events: int, seed: int = 0) -> list[torch.Tensor]:
    """``count`` batches (batch, events, 8) of windows of distinct POP909 songs (our tokenizer), random starts."""
    from midi_event_transformer import MidiEventTransformerTokenizer

    folder = SHARED / "midi" / "pop909"
    files = sorted(folder.glob("*.mid"))
    if not files:
        raise SystemExit(f"no POP909 files in {folder}")
    tokenizer = MidiEventTransformerTokenizer()
    rng = np.random.default_rng(seed)
    windows = []
    for path in files:
        rows = tokenizer.encode_midi(path)
        if len(rows) >= events:
            start = int(rng.integers(0, len(rows) - events + 1))
            windows.append(rows[start:start + events])
        if len(windows) == count * batch:
            break
    if len(windows) < count * batch:
        raise SystemExit(f"only {len(windows)} POP909 songs have {events} events; need {count * batch}")
    stacked = torch.from_numpy(np.stack(windows)).long()  # (count*batch, events, 8)
    return list(stacked.split(batch))


def our_model(config_name: str, bf16: bool = False, compiled: bool = False):
    """Ours as ``scripts/train.py`` builds it: under bf16 on CPU, the token level uses plain matmul attention;
    ``compiled`` = ``--torch_compile`` (each decoder layer through ``torch.compile``)."""
    from midi_event_transformer import MidiEventTransformerConfig, MidiEventTransformerForCausalLM

    torch.manual_seed(0)
    attention = {"": "sdpa", "token_config": "eager" if bf16 else "sdpa"}
    config = MidiEventTransformerConfig.from_name(config_name, attn_implementation=attention)
    model = MidiEventTransformerForCausalLM(config).train()
    return model.compile_layers() if compiled else model


def reference_model(reference_dir: str, config_name: str, state_dict: dict):
    sys.path.insert(0, reference_dir)
    import midi_model  # the reference's own module, from the given checkout

    if config_name == "small":
        config = midi_model.MIDIModelConfig.get_config(n_layer=4, n_head=4, n_embd=256, n_inner=1024)
    else:
        config = midi_model.MIDIModelConfig.from_name(config_name)
    model = midi_model.MIDIModel(config)
    model.load_state_dict(state_dict)  # same parameter names: same weights as ours
    return model.train()


def optimizer_for(model: torch.nn.Module) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "norm" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                             lr=2e-4, betas=(0.9, 0.99), eps=1e-8)


def our_loss(model, batch: torch.Tensor, full_logits: bool) -> torch.Tensor:
    """The model's training loss (fused: no (B, L, V) logits kept), or, with ``full_logits``, the same loss
    computed from materialised logits (what the fused loss saves)."""
    from midi_event_transformer.modeling_midi_event_transformer import flat_causal_lm_loss
    from midi_event_transformer.vocabulary import PAD_ID, TOKENS_PER_EVENT

    ids = batch.view(batch.shape[0], -1)  # (B, E*8)
    labels = ids.masked_fill(ids == PAD_ID, -100)
    if not full_logits:
        return model(input_ids=ids, labels=labels).loss
    logits = model(input_ids=ids).logits  # (B, E*8, V)
    return flat_causal_lm_loss(logits, labels, PAD_ID, TOKENS_PER_EVENT)


def reference_loss(model, batch: torch.Tensor) -> torch.Tensor:
    from midi_event_transformer.vocabulary import PAD_ID

    inputs, following = batch[:, :-1], batch[:, 1:]  # events 0..E-2 predict events 1..E-1
    hidden = model.forward(inputs).reshape(-1, model.config.n_embd)  # (B*(E-1), H)
    following = following.reshape(-1, following.shape[-1])  # (B*(E-1), 8)
    logits = model.forward_token(hidden, following[:, :-1])  # (B*(E-1), 8, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), following.reshape(-1), ignore_index=PAD_ID)


def make_step(model, loss_fn: Callable[[torch.Tensor], torch.Tensor], bf16: bool,
              batch: torch.Tensor) -> Callable[..., float]:
    """A training step on ``batch`` (or on the batch passed to it)."""
    optimizer = optimizer_for(model)

    def step(data: torch.Tensor | None = None) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(batch if data is None else data)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--events", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per variant (interleaved)")
    parser.add_argument("--reference-dir", help="checkout of SkyTNT/midi-model to measure side by side")
    parser.add_argument("--curve-steps", type=int, default=0,
                        help="also train fp32 and bf16 (fused loss) for this many steps on distinct batches and "
                             "compare their loss curves")
    parser.add_argument("--variants", nargs="*", default=None,
                        help="subset of: reference-fp32 reference-bf16 ours-fp32 ours-fp32-full-logits ours-bf16 "
                             "ours-bf16-full-logits ours-fp32-compiled ours-bf16-compiled")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TQDM_DISABLE", "1")

    batch = load_batches(1, args.batch, args.events)[0]
    variants: dict[str, Callable[[], float]] = {}
    initial = our_model(args.config).state_dict()
    losses_at_start: dict[str, float] = {}
    wanted = set(args.variants) if args.variants else None

    def add(name: str, build: Callable[[], Callable[[], float]]) -> None:
        if wanted is None or name in wanted:
            variants[name] = build()

    def ours(full_logits: bool, bf16: bool, compiled: bool = False) -> Callable[[], float]:
        model = our_model(args.config, bf16, compiled)
        model.load_state_dict(initial)
        return make_step(model, lambda data: our_loss(model, data, full_logits), bf16, batch)

    if args.reference_dir:
        def reference(bf16: bool) -> Callable[[], float]:
            model = reference_model(os.path.abspath(args.reference_dir), args.config, initial)
            return make_step(model, lambda data: reference_loss(model, data), bf16, batch)

        add("reference-fp32", lambda: reference(False))
        add("reference-bf16", lambda: reference(True))
    add("ours-fp32", lambda: ours(False, False))
    add("ours-fp32-full-logits", lambda: ours(True, False))
    add("ours-bf16", lambda: ours(False, True))
    add("ours-bf16-full-logits", lambda: ours(True, True))
    add("ours-fp32-compiled", lambda: ours(False, False, compiled=True))
    add("ours-bf16-compiled", lambda: ours(False, True, compiled=True))

    times: dict[str, list[float]] = {name: [] for name in variants}
    first_step_s: dict[str, float] = {}
    for name, step in variants.items():  # warm-up (compiles); the first loss is the same weights on the same batch
        start = time.perf_counter()
        losses_at_start[name] = round(step(), 6)
        first_step_s[name] = round(time.perf_counter() - start, 1)
        step()
    for _ in range(args.rounds):
        for name, step in variants.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)

    events = args.batch * args.events
    runs = {name: {"s_per_step": round(statistics.median(t), 3), "min_s": round(min(t), 3),
                   "events_per_s": round(events / statistics.median(t), 1), "first_loss": losses_at_start[name],
                   "first_step_s": first_step_s[name]}
            for name, t in times.items()}
    ratios = {}
    if "reference-fp32" in runs:
        base = runs["reference-fp32"]["s_per_step"]
        best = runs["reference-fp32"]["min_s"]
        ratios = {"median": {name: round(base / run["s_per_step"], 2) for name, run in runs.items()
                             if name != "reference-fp32"},
                  "min (less sensitive to other load on a shared machine)": {
                      name: round(best / run["min_s"], 2) for name, run in runs.items() if name != "reference-fp32"}}
    report = {"settings": {"config": args.config, "batch": args.batch, "events": args.events,
                           "threads": args.threads, "rounds": args.rounds, "optimizer": "AdamW lr 2e-4",
                           "data": "POP909 windows (our tokenizer)"},
              "versions": versions(args.reference_dir), "runs": runs, "speedup_vs_reference_fp32": ratios}
    if args.curve_steps:
        report["loss_curves"] = loss_curves(initial, args)
    print(json.dumps(report, indent=2))


def loss_curves(initial: dict, args: argparse.Namespace) -> dict[str, Any]:
    """fp32 and bf16-autocast training from the same weights on the same distinct batches: both curves."""
    batches = load_batches(args.curve_steps, args.batch, args.events, seed=1)
    curves = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        model = our_model(args.config, bf16)
        model.load_state_dict(initial)
        step = make_step(model, lambda data, m=model: our_loss(m, data, True), bf16, batches[0])
        curves[name] = [round(step(data), 4) for data in batches]
    diffs = [abs(a - b) for a, b in zip(curves["fp32"], curves["bf16"], strict=True)]
    tail = max(1, len(diffs) // 3)
    return {**curves, "max_abs_diff": round(max(diffs), 4), "mean_abs_diff": round(sum(diffs) / len(diffs), 4),
            "last_third_mean": {name: round(sum(c[-tail:]) / tail, 4) for name, c in curves.items()}}


if __name__ == "__main__":
    main()
