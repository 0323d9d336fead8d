#!/usr/bin/env python
"""Train the reference's own small model on our training split, then score it with our held-out measure.

A side-by-side check of ``scripts/train.py``: the model, MIDI parser, tokenizer (``tokenize`` and ``augment``)
and the random-start windows all come from a checkout of SkyTNT/midi-model (imported from ``--reference-dir``,
nothing of it is copied here); the optimisation follows its ``train.py``: AdamW (betas 0.9 / 0.99, weight decay
0.01 except on biases and norms), lr 2e-4 with 100 warmup steps then linear decay to ``--steps``, gradient
clipping at 1.0, bf16 autocast, batches of 4 windows of 512 events. The held-out songs are those a
``scripts/train.py`` run left out (its ``validation_files.txt``); the training files are the rest of the folder.

    python scripts/reference_training_run.py --reference-dir /tmp/skytnt_ref \\
        --validation-files runs/default_model/validation_files.txt --output-dir runs/reference_small

Writes ``metrics.jsonl`` (mean train loss every 10 steps), ``state_STEP.pt`` checkpoints and, at the end,
``heldout.json``: ``scripts/evaluate.py``'s per-token / per-event NLL and accuracy of the final weights.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-dir", required=True, help="checkout of SkyTNT/midi-model")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "midi" / "pop909"))
    parser.add_argument("--validation-files", required=True, help="held-out songs, one path per line")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--steps", type=int, default=3500)
    parser.add_argument("--save-at", type=int, nargs="*", default=[3473], help="extra steps to save a state at")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(args.reference_dir).resolve()))
    import MIDI  # the reference's own modules
    import midi_model
    from midi_tokenizer import MIDITokenizerV2

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    held_out = [line.strip() for line in Path(args.validation_files).read_text().splitlines() if line.strip()]
    held_out_names = {Path(path).name for path in held_out}
    files = sorted(p for p in Path(args.data).glob("*.mid") if p.name not in held_out_names)
    if not files:
        raise SystemExit(f"no training files in {args.data}")

    tokenizer = MIDITokenizerV2()
    tokenizer.set_optimise_midi(True)
    songs: dict[Path, list] = {}

    def window(path: Path, max_len: int = 512) -> torch.Tensor:
        if path not in songs:
            songs[path] = tokenizer.tokenize(MIDI.midi2score(path.read_bytes()))
        rows = np.asarray(tokenizer.augment(songs[path]), dtype=np.int64)  # (n, 8)
        start = random.randrange(0, max(1, rows.shape[0] - max_len))
        start = random.choice([0, start])  # as the reference: half the windows start at the song's start
        return torch.from_numpy(rows[start:start + max_len])

    config = midi_model.MIDIModelConfig.get_config(n_layer=4, n_head=4, n_embd=256, n_inner=1024)
    model = midi_model.MIDIModel(config).train()
    named = list(model.named_parameters())
    no_decay = [p for n, p in named if "bias" in n or "norm" in n]
    decay = [p for n, p in named if not ("bias" in n or "norm" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=2e-4, betas=(0.9, 0.99), eps=1e-8)
    steps = args.steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: s / 100 if s < 100 else max(0.0, (steps - s) / (steps - 100)))

    order: list[Path] = []
    losses: list[float] = []
    started = time.time()
    with open(output / "metrics.jsonl", "w") as log:
        for step in range(1, steps + 1):
            if len(order) < 4:
                epoch = files[:]
                random.shuffle(epoch)
                order += epoch
            batch = [window(order.pop(0)) for _ in range(4)]
            length = max(len(b) for b in batch)
            batch = torch.stack([F.pad(b, (0, 0, 0, length - len(b)), value=tokenizer.pad_id) for b in batch])
            inputs, following = batch[:, :-1], batch[:, 1:]  # (B, E-1, 8): events 0..E-2 predict 1..E-1
            with torch.autocast("cpu", dtype=torch.bfloat16):
                hidden = model.forward(inputs).reshape(-1, config.n_embd)
                following = following.reshape(-1, following.shape[-1])
                logits = model.forward_token(hidden, following[:, :-1])  # (B*(E-1), 8, V)
                loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), following.reshape(-1),
                                       ignore_index=tokenizer.pad_id)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            if step % 10 == 0:
                log.write(json.dumps({"step": step, "loss": sum(losses) / len(losses),
                                      "elapsed_s": round(time.time() - started, 1)}) + "\n")
                log.flush()
                losses = []
            if step % 500 == 0 or step == steps or step in args.save_at:
                torch.save(model.state_dict(), output / f"state_{step}.pt")

    from midi_event_transformer import MidiEventTransformerConfig, MidiEventTransformerForCausalLM
    from midi_event_transformer.evaluation.nll import evaluate_nll

    ours = MidiEventTransformerForCausalLM(MidiEventTransformerConfig.from_name("small"))
    ours.load_state_dict(model.state_dict())  # the same parameter names
    result = evaluate_nll(ours.eval(), held_out, progress=False)
    report = {"steps": steps, "minutes": round((time.time() - started) / 60, 1), **result.to_dict()}
    (output / "heldout.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
