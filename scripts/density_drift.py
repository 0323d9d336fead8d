"""Does a model keep a piece's density when it writes on its own? Teacher-forced against free-running pace.

For each file, two figures of the same model:

- **teacher-forced**: on the piece's first ``--window`` rows, the model's expected time advance before each event
  (from its ``time1`` and ``time2`` distributions, each given the true tokens before it), in steps (16 a beat),
  against the advance the piece really has. Equal means the model's per-event density is calibrated;
- **free-running**: the piece's first ``--prompt-events`` rows as a prompt, ``--events`` generated with the default
  sampling (or the options of ``--generate-kwargs``), in events per beat, against the piece's own next events.

A model calibrated when teacher-forced but denser when free-running drifts: its own dense passages make it write
denser ones (exposure bias), which no prompt layout removes.

    python scripts/density_drift.py --model midi_event_transformer/default_model --file-list held_out.txt

Prints JSON: per-file figures, their means / medians, the CPU and the versions.
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
from midi_event_transformer.generation.api import generate_rows
from midi_event_transformer.generation.fim import event_steps, is_event_row
from midi_event_transformer.vocabulary import (
    PARAMETER_OFFSETS,
    PARAMETER_SIZES,
    STEPS_PER_BEAT,
    TOKENS_PER_EVENT,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import add_file_arguments, cpu_model, midi_files  # noqa: E402


def events_per_beat(rows: np.ndarray, previous_step: int = 0) -> float:
    """Events of ``rows`` (n, 8) per beat, over the beats from the first event to the last (at least one beat)."""
    steps = event_steps(rows, previous_step)[is_event_row(rows)]
    if len(steps) == 0:
        return 0.0
    return len(steps) / max(1.0, (steps.max() - steps.min()) / STEPS_PER_BEAT)


def teacher_forced_advance(model: MidiEventTransformerForCausalLM, rows: np.ndarray) -> tuple[float, float]:
    """``(expected, true)`` mean time advance before an event, in steps, over the events of ``rows`` (n, 8).

    ``time1`` is a beat delta and ``time2`` the step within the beat, so an event's advance is
    ``16 * time1 + time2 - (the previous event's step within its beat)``; the expected advance takes the model's
    means of ``time1`` and of ``time2`` (given the true ``time1``).
    """
    k = TOKENS_PER_EVENT
    t1, n1 = PARAMETER_OFFSETS["time1"], PARAMETER_SIZES["time1"]
    t2, n2 = PARAMETER_OFFSETS["time2"], PARAMETER_SIZES["time2"]
    ids = torch.as_tensor(rows, dtype=torch.long).view(1, -1)  # (1, E*8)
    with torch.inference_mode():
        logits = model(input_ids=ids, use_cache=False).logits[0].float()  # (E*8, V)
    events = np.flatnonzero(is_event_row(rows))
    events = torch.as_tensor(events[events > 0])
    p1 = logits[events * k, t1:t1 + n1].softmax(-1)  # (n, 128): time1 of row i is flat i*8+1, predicted at i*8
    p2 = logits[events * k + 1, t2:t2 + n2].softmax(-1)  # (n, 16): given the true time1
    expected = p1 @ torch.arange(n1, dtype=torch.float) * STEPS_PER_BEAT + p2 @ torch.arange(n2, dtype=torch.float)
    steps = torch.as_tensor(event_steps(rows))  # (E,) time2 is a position in the beat: subtract the row before's
    before = steps[events - 1]
    expected = expected - (before % STEPS_PER_BEAT)
    true = steps[events] - before
    return float(expected.mean()), float(true.float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    add_file_arguments(parser, limit=8)
    parser.add_argument("--window", type=int, default=512, help="rows scored teacher-forced")
    parser.add_argument("--prompt-events", type=int, default=96)
    parser.add_argument("--events", type=int, default=384, help="events generated after the prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generate-kwargs", type=json.loads, default={}, help='JSON, e.g. \'{"top_p": 1.0}\'')
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.prompt_events < 1 or args.events < 1 or args.window < 2:
        parser.error("--prompt-events and --events must be >= 1, --window >= 2")
    files = midi_files(args.data, args.file_list, args.limit)
    tokenizer = MidiEventTransformerTokenizer()
    model = MidiEventTransformerForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()

    pieces = []
    for path in files:
        rows = tokenizer.encode_midi(path)
        n = args.prompt_events
        if len(rows) < n + args.events:
            continue
        expected, true = teacher_forced_advance(model, rows[:args.window])
        generated = generate_rows(model, tokenizer, prompt=rows[:n], events=args.events, seed=args.seed,
                                  progress=False, **args.generate_kwargs)[0]
        previous = int(event_steps(rows[:n])[-1])
        pieces.append({"file": Path(path).name, "teacher_forced_expected_steps": expected,
                       "teacher_forced_true_steps": true,
                       "free_running_events_per_beat": events_per_beat(generated[n:], previous),
                       "real_events_per_beat": events_per_beat(rows[n:n + args.events], previous)})
    if not pieces:
        parser.error(f"no file has {args.prompt_events + args.events} rows")
    ratios = [p["free_running_events_per_beat"] / max(p["real_events_per_beat"], 1e-9) for p in pieces]
    report = {
        "model": args.model, "files": len(pieces), "prompt_events": args.prompt_events, "events": args.events,
        "generate_kwargs": args.generate_kwargs,
        "teacher_forced_expected_steps": float(np.mean([p["teacher_forced_expected_steps"] for p in pieces])),
        "teacher_forced_true_steps": float(np.mean([p["teacher_forced_true_steps"] for p in pieces])),
        "free_running_over_real_median": float(np.median(ratios)),
        "free_running_denser_share": float(np.mean([r > 1 for r in ratios])),
        "pieces": pieces, "cpu": cpu_model(), "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
