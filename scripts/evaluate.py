#!/usr/bin/env python
"""Evaluate a model (held-out NLL) and generated MIDI files (objective statistics), printing JSON.

    # per-token / per-event NLL and accuracy on a folder of held-out songs (windows of 513 events, stride 512)
    python scripts/evaluate.py nll --model out/model --data heldout/ [--file-list heldout.txt] [--limit 20]

    # infilling: per-token NLL of held-out spans of 4 bars given the past only / both sides (a FIM-trained model)
    python scripts/evaluate.py infill --model out/model --file-list out/validation_files.txt --span-bars 4

    # instrument controls: does each requested part play, in its range, over how many bars (one piece per seed)
    python scripts/evaluate.py controls --instruments "Violin,Violin,Viola,Cello" --events 512 --seeds 0 1 2

    # statistics of generated files next to a reference folder, with one comparison PNG
    python scripts/evaluate.py stats --generated out/samples --reference ../shared/midi/pop909 --png stats.png

``--model`` takes a saved model folder, a Hub id, or a SkyTNT/midi-model checkpoint folder. ``--output`` also
writes the JSON to a file.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import add_file_arguments, midi_files  # noqa: E402


def _write(report: dict, output: str | None) -> None:
    text = json.dumps(report, indent=2, sort_keys=False)
    print(text)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text + "\n")


def run_nll(args: argparse.Namespace) -> dict:
    import torch
    import transformers

    from midi_event_transformer import MidiEventTransformerForCausalLM, MidiEventTransformerTokenizer
    from midi_event_transformer.evaluation.nll import evaluate_nll

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    model = MidiEventTransformerForCausalLM.from_pretrained(args.model, dtype=dtype).to(args.device)
    try:
        tokenizer = MidiEventTransformerTokenizer.from_pretrained(args.model)
    except (OSError, ValueError):
        tokenizer = MidiEventTransformerTokenizer()
    files = midi_files(args.data, args.file_list, args.limit)
    start = time.perf_counter()
    result = evaluate_nll(model, files, tokenizer, window_events=args.window_events,
                          stride_events=args.stride_events, batch_size=args.batch_size, progress=not args.quiet)
    return {"model": args.model, **result.to_dict(), "seconds": round(time.perf_counter() - start, 2),
            "dtype": args.dtype, "device": args.device,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "python": platform.python_version()}}


def run_infill(args: argparse.Namespace) -> dict:
    import torch

    from midi_event_transformer import MidiEventTransformerForCausalLM, MidiEventTransformerTokenizer
    from midi_event_transformer.evaluation.infill import evaluate_infill

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    model = MidiEventTransformerForCausalLM.from_pretrained(args.model, dtype=dtype)
    if args.adapter:
        from midi_event_transformer.training.lora import load_adapter

        model = load_adapter(model, args.adapter, merge=True)
    model = model.to(args.device)
    try:
        tokenizer = MidiEventTransformerTokenizer.from_pretrained(args.model)
    except (OSError, ValueError):
        tokenizer = MidiEventTransformerTokenizer()
    files = midi_files(args.data, args.file_list, args.limit)
    both_sides = {"auto": None, "yes": True, "no": False}[args.both_sides]
    start = time.perf_counter()
    result = evaluate_infill(model, tokenizer, files, span_bars=args.span_bars, seed=args.seed,
                             spans_per_file=args.spans_per_file, window_events=args.window_events,
                             batch_size=args.batch_size, both_sides=both_sides, progress=not args.quiet)
    return {"model": args.model, "adapter": args.adapter,
            "fill_in_the_middle": bool(getattr(model.config, "fill_in_the_middle", False)), **result.to_dict(),
            "seconds": round(time.perf_counter() - start, 2), "dtype": args.dtype, "device": args.device}


def run_controls(args: argparse.Namespace) -> dict:
    import torch

    from midi_event_transformer.evaluation.instruments import evaluate_instrument_controls

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = evaluate_instrument_controls(args.model, instruments=args.instruments, seeds=args.seeds,
                                          events=args.events, save_dir=args.save_dir)
    return {"model": args.model or "shipped", **result, "seconds": round(time.perf_counter() - start, 2)}


def run_stats(args: argparse.Namespace) -> dict:
    from midi_event_transformer.evaluation.statistics import compare_statistics, draw_statistics_comparison

    sets = {args.generated_name: midi_files(args.generated, None, args.limit)}
    if args.reference:
        sets[args.reference_name] = midi_files(args.reference, None, args.limit)
    report = compare_statistics(sets, grid=args.grid, include_drums=args.include_drums, progress=not args.quiet)
    if args.png:
        draw_statistics_comparison(report, args.png, title=args.title)
        report["png"] = args.png
    if not args.per_file:
        for values in report["sets"].values():
            values.pop("per_file")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    nll = commands.add_parser("nll", help="held-out NLL of a model on MIDI files")
    nll.add_argument("--model", required=True, help="model folder, Hub id or SkyTNT checkpoint folder")
    add_file_arguments(nll)
    nll.add_argument("--window-events", type=int, default=513)
    nll.add_argument("--stride-events", type=int, default=512)
    nll.add_argument("--batch-size", type=int, default=4)
    nll.add_argument("--device", default="cpu")
    nll.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    nll.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    nll.set_defaults(handler=run_nll)

    infill = commands.add_parser("infill", help="NLL of held-out spans given the past only and given both sides")
    infill.add_argument("--model", required=True, help="model folder, Hub id or SkyTNT checkpoint folder")
    infill.add_argument("--adapter", default=None, help="a LoRA adapter folder to load onto --model (merged)")
    add_file_arguments(infill)
    infill.add_argument("--span-bars", type=int, default=4, help="span length in bars (from the time signatures)")
    infill.add_argument("--spans-per-file", type=int, default=1)
    infill.add_argument("--seed", type=int, default=0, help="picks the spans")
    infill.add_argument("--window-events", type=int, default=512, help="rows of the longest window scored")
    infill.add_argument("--both-sides", default="auto", choices=["auto", "yes", "no"],
                        help="score the FIM layout too (auto: when the model was trained for fill in the middle)")
    infill.add_argument("--batch-size", type=int, default=4)
    infill.add_argument("--device", default="cpu")
    infill.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    infill.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    infill.set_defaults(handler=run_infill)

    controls = commands.add_parser("controls", help="generate from instruments= and measure each requested part")
    controls.add_argument("--model", default=None, help="model folder or Hub id (default: the shipped model)")
    controls.add_argument("--instruments", required=True, help='comma-separated, e.g. "Violin,Violin,Viola,Cello"')
    controls.add_argument("--events", type=int, default=512)
    controls.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    controls.add_argument("--save-dir", default=None, help="also write each piece there as <seed>.mid")
    controls.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    controls.set_defaults(handler=run_controls)

    stats = commands.add_parser("stats", help="objective statistics of generated files vs a reference folder")
    stats.add_argument("--generated", nargs="+", required=True, help="generated MIDI files or folders")
    stats.add_argument("--reference", nargs="*", default=[], help="reference MIDI files or folders")
    stats.add_argument("--generated-name", default="generated")
    stats.add_argument("--reference-name", default="reference")
    stats.add_argument("--limit", type=int, default=None, help="use only the first N files of each set")
    stats.add_argument("--grid", type=int, default=16, help="grid steps per beat (polyphony, groove)")
    stats.add_argument("--include-drums", action="store_true")
    stats.add_argument("--png", help="write the comparison picture here")
    stats.add_argument("--title", default=None)
    stats.add_argument("--per-file", action="store_true", help="also print each file's values")
    stats.set_defaults(handler=run_stats)

    for sub in (nll, infill, controls, stats):
        sub.add_argument("--output", help="also write the JSON here")
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = args.handler(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"evaluate: error: {error}", file=sys.stderr)
        return 2
    _write(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
