#!/usr/bin/env python
"""Package a finished training run as the model shipped in the package, with its card and figures.

    python scripts/train.py scripts/configs/pop909_base.json     # stage 1: POP909 from scratch (about 70 min)
    python scripts/train.py scripts/configs/default_model.json   # stage 2: the mixture with FIM (about 100 min)
    python scripts/build_default_model.py --config scripts/configs/default_model.json

Reads ``<run>/final`` (what train.py saved, with its ``training_data.json``), ``<run>/metrics.jsonl``,
``<run>/train_args.json`` and ``<run>/training_curve.png``, and writes ``midi_event_transformer/default_model/``:

- the weights as safetensors in ``--dtype`` (bf16 by default: half the size), the config, generation config,
  tokenizer and ``training_data.json`` (the programs and drum kits it saw), without copies of the modeling code;
- the held-out figures measured on those stored weights, per corpus (the run's validation split of each);
- the infilling figures on held-out POP909 spans (past only and both sides);
- the instrument controls measured (a string quartet and voice + piano, 3 seeds) and a piano roll of each;
- statistics of unprompted samples next to held-out POP909 songs (``statistics.png``);
- a model card (README.md) with the data and its licences, the training figures and the command that reproduces
  them.

Prints a JSON report of everything measured. ``--reference-step-s`` is the reference's training step on the same
batch, measured side by side with ``scripts/bench_train.py --reference-dir ...`` on the training machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
from pathlib import Path

import torch
import transformers

from midi_event_transformer import (
    DEFAULT_MODEL,
    MidiEventTransformerForCausalLM,
    MidiEventTransformerTokenizer,
)
from midi_event_transformer.evaluation.infill import evaluate_infill
from midi_event_transformer.evaluation.instruments import evaluate_instrument_controls
from midi_event_transformer.evaluation.nll import evaluate_nll
from midi_event_transformer.evaluation.pianoroll import draw_piano_rolls
from midi_event_transformer.evaluation.statistics import compare_statistics, draw_statistics_comparison
from midi_event_transformer.generation.api import generate_midi
from midi_event_transformer.generation.known_instruments import TRAINING_DATA_FILE
from midi_event_transformer.generation.outputs import save_samples
from midi_event_transformer.hub.cards import write_model_card
from midi_event_transformer.midi_reading import find_midi_files
from midi_event_transformer.training.data import is_validation_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import cpu_model  # noqa: E402

logger = logging.getLogger("build_default_model")

# What the shipped model does not know (its data: POP909 piano, Bach chorales, Lieder, string quartets).
LIMITATIONS = [
    "Its data is piano (POP909, Lieder accompaniments), four-part chorales, voice (Lieder) and string quartets. "
    "Drums and brass are not in it at all; guitar, flute, harp and organ appear in only a handful of songs. "
    "Instruments it never saw are played like the ones it knows (generation warns in one line: the programs and "
    "drum kits it saw are in training_data.json).",
    "It was trained on windows of 512 events; longer pieces continue past what it has seen and may lose structure.",
    "Its voice + piano pieces are denser than the Lieder it learned from (the piano writes 25-30 events a bar, "
    "the Lieder about 16), so 512 events span fewer bars than a real song's.",
]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def save_stored_model(final_dir: Path, output: Path, dtype: torch.dtype) -> None:
    """The run's model in ``dtype`` with its tokenizer, as package data: no remote-code copies, no auto_map."""
    if output.exists():
        shutil.rmtree(output)
    model = MidiEventTransformerForCausalLM.from_pretrained(final_dir, dtype=torch.float32)
    model.to(dtype).save_pretrained(output)
    MidiEventTransformerTokenizer.from_pretrained(final_dir).save_pretrained(output)
    for path in output.glob("*.py"):
        path.unlink()
    for name in ("config.json", "tokenizer_config.json"):
        config = json.loads((output / name).read_text())
        config.pop("auto_map", None)
        (output / name).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def training_figures(run: Path, reference_step_s: float | None, threads: int | None) -> dict:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train_args = json.loads((run / "train_args.json").read_text())
    logged = [r for r in records if "loss" in r and "elapsed_s" in r]
    steps, elapsed = logged[-1]["step"], logged[-1]["elapsed_s"]
    train = train_args["train"]
    figures = {
        "steps": steps,
        "wall_time_minutes": round(elapsed / 60, 1),
        "batch": f"{train['batch_size']} windows x {train_args['data']['max_events']} events",
        "events_seen": steps * train["batch_size"] * train_args["data"]["max_events"],
        "optimizer": f"AdamW, lr {train['learning_rate']:g}, warmup {train['warmup_steps']}, linear decay, "
                     f"weight decay {train['weight_decay']:g}, grad clip {train['max_grad_norm']:g}",
        "precision": "bf16 autocast" if train["mixed_precision"] == "bf16" else "fp32",
        "augmentation": "pitch / velocity / tempo (tokenizer.augment)" if train_args["data"]["augment"] else "none",
        "hardware": f"{cpu_model()}, {threads or train.get('num_threads') or os.cpu_count()} threads, no GPU",
        "step_time_s": round(elapsed / steps, 3),
    }
    if reference_step_s:
        figures["reference_step_time_s"] = (f"{reference_step_s:g} (SkyTNT/midi-model, fp32, same batch, measured "
                                            "side by side with scripts/bench_train.py)")
    return {"figures": figures, "command": f"python scripts/{train_args['command']}",
            "final_fp32": next((r for r in reversed(records) if r.get("final")), None)}


def config_file_command(config: Path, train_args: dict) -> str:
    """``python scripts/train.py CONFIG``, once CONFIG is checked to give the run's training arguments (those in
    train.py's ``RUN_CONTROL_FIELDS`` aside), so the card's command reproduces the shipped weights."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import train  # scripts/train.py: the same parser the run used

    parsed = train.argument_parser().parse_args_into_dataclasses(train.expand_arguments([str(config)]))
    given = {name: value for section in parsed for name, value in vars(section).items()}
    recorded = {name: value for section in ("model", "data", "train", "lora") for name, value in train_args[section].items()}
    differing = sorted(name for name in given.keys() | recorded.keys()
                       if name not in train.RUN_CONTROL_FIELDS and given.get(name) != recorded.get(name))
    if differing:
        raise ValueError(f"{config} does not reproduce the run: " + ", ".join(
            f"{name} = {given.get(name)!r} in the file, {recorded.get(name)!r} in the run" for name in differing))
    return f"python scripts/train.py {config}"


#: The instrument requests the card and README measure (issue 29): a string quartet and voice + piano.
CONTROL_REQUESTS = {"string quartet": ["Violin", "Violin", "Viola", "Cello"],
                    "voice + piano": ["Voice Oohs", "Acoustic Grand Piano"]}
#: Corpus folder name -> (card dataset name, label in tables).
CORPORA = {"pop909": ("pop909", "POP909"), "bach": ("bach", "Bach chorales"),
           "openscore_lieder": ("openscore_lieder", "Lieder (voice + piano)"),
           "openscore_quartets": ("openscore_quartets", "string quartets")}


def held_out_by_corpus(data: list[str], fraction: float) -> dict[str, list[Path]]:
    """The run's validation split of each ``--data`` folder (train.py's by-name split)."""
    return {Path(folder).name: [path for path in find_midi_files([folder]) if is_validation_file(path.name, fraction)]
            for folder in data}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/default_model", help="the train.py output_dir")
    parser.add_argument("--output", default=DEFAULT_MODEL, help="where to write the shipped model")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES), help="storage dtype of the weights")
    parser.add_argument("--samples", type=int, default=20, help="POP909-style pieces generated for the statistics")
    parser.add_argument("--sample-events", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference-step-s", type=float, default=None,
                        help="the reference's training step time on the same batch, measured side by side")
    parser.add_argument("--note", action="append", default=[],
                        help="a line about the run for the card's training table (e.g. how it was resumed)")
    parser.add_argument("--config", type=Path, default=None,
                        help="the train.py arguments file that reproduces the run: the card gives "
                             "`python scripts/train.py CONFIG` (checked against the run) instead of the run's own flags")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    run, output = Path(args.run), Path(args.output)
    if not (run / "final" / "config.json").is_file():
        parser.error(f"{run}/final is not a saved model: finish the training run first")

    train_args = json.loads((run / "train_args.json").read_text())
    training = training_figures(run, args.reference_step_s, args.threads)
    if args.config is not None:
        if training["figures"]["steps"] < train_args["train"]["max_steps"]:
            parser.error(f"the run stopped at step {training['figures']['steps']} of {train_args['train']['max_steps']}: "
                         "its config file alone would not reproduce it")
        try:
            training["command"] = config_file_command(args.config, train_args)
        except (OSError, ValueError, SystemExit) as error:
            parser.error(str(error))
    save_stored_model(run / "final", output, DTYPES[args.dtype])
    if (run / "final" / TRAINING_DATA_FILE).is_file():
        shutil.copy(run / "final" / TRAINING_DATA_FILE, output / TRAINING_DATA_FILE)
    held_out = held_out_by_corpus(train_args["data"]["data"], train_args["data"]["validation_fraction"])
    tokenizer = MidiEventTransformerTokenizer.from_pretrained(output)
    # judged as users load it: from_pretrained's defaults (the stored dtype)
    model = MidiEventTransformerForCausalLM.from_pretrained(output).eval()
    loaded_dtype = str(model.dtype).removeprefix("torch.")
    evaluation, per_corpus = [], {}
    for corpus, files in held_out.items():
        label = CORPORA.get(corpus, (corpus, corpus))[1]
        logger.info("held-out NLL (%s, %d songs, %s)", label, len(files), loaded_dtype)
        result = evaluate_nll(model, files, tokenizer, batch_size=4, progress=True)
        per_corpus[corpus] = result.to_dict()
        evaluation.append({**result.to_dict(), "data": f"{label} held out ({result.n_files} songs)",
                           "note": f"the shipped {args.dtype} weights, loaded with from_pretrained's defaults"})
    pop909 = held_out.get("pop909", [])

    # generation as generate_midi() runs the shipped model on a CPU: computed in float32
    model = MidiEventTransformerForCausalLM.from_pretrained(output, dtype=torch.float32).eval()
    infill = evaluate_infill(model, tokenizer, pop909, span_bars=4, seed=0, spans_per_file=3).to_dict() if pop909 else None
    samples_dir = run / "samples"
    shutil.rmtree(samples_dir, ignore_errors=True)
    controls = {name: evaluate_instrument_controls(model, tokenizer, instruments=request, seeds=(0, 1, 2),
                                                   events=args.sample_events, save_dir=samples_dir / name.replace(" ", "_"))
                for name, request in CONTROL_REQUESTS.items()}
    pictures = [("A string quartet (`instruments=[\"Violin\", \"Violin\", \"Viola\", \"Cello\"]`, 512 events, seed 0)",
                 "string_quartet.png", samples_dir / "string_quartet" / "0.mid"),
                ("Voice and piano (`instruments=[\"Voice Oohs\", \"Acoustic Grand Piano\"]`, 512 events, seed 0)",
                 "voice_piano.png", samples_dir / "voice_+_piano" / "0.mid")]
    for caption, png, midi in pictures:
        draw_piano_rolls([midi], output / png, titles=[caption.split(" (")[0]])
    midis = generate_midi(model, tokenizer, events=args.sample_events, seed=args.seed, num_samples=args.samples)
    sample_paths = save_samples(midis, samples_dir / "unprompted",
                                names=[f"sample_{index}.mid" for index in range(len(midis))])
    statistics = compare_statistics({"default model": sample_paths, "POP909 held out": pop909})
    draw_statistics_comparison(statistics, output / "statistics.png",
                               title=f"{args.samples} unprompted samples of {args.sample_events} events vs held-out POP909")
    shutil.copy(run / "training_curve.png", output / "training_curve.png")

    if training["final_fp32"]:
        evaluation.append({**training["final_fp32"], "data": "all held-out songs", "note": "fp32 weights at the end of training"})
    if args.note:
        training["figures"]["notes"] = "; ".join(args.note)
    training["figures"]["mixture"] = ", ".join(
        f"{CORPORA.get(Path(folder).name, (folder, folder))[1]} x{weight:g}"
        for folder, weight in zip(train_args["data"]["data"], train_args["data"]["mixture_weights"] or
                                  [1] * len(train_args["data"]["data"]), strict=True)) + " windows per file per epoch"
    training["figures"]["fill_in_the_middle"] = f"--fim_rate {train_args['data']['fim_rate']:g}"
    if infill is not None:
        training["figures"]["infill_pop909"] = (
            f"{infill['spans']} held-out spans of 4 bars: NLL {infill['nll_past_only']:.4f} given the past only, "
            f"{infill['nll_both_sides']:.4f} given both sides")
    for name, result in controls.items():
        worst = result["worst"]
        training["figures"][f"controls: {name}"] = (
            f"3 seeds x {args.sample_events} events, max_rest_bars 1 (the default: a part that has rested a bar "
            f"plays the next note): at least {worst['bars']} bars; every part in at least "
            f"{worst['bars_share']:.0%} of the bars; at least {worst['in_range_share']:.0%} of each part's notes "
            "in its range")
    write_model_card(
        output, model_name="midi-event-transformer default model (small: piano, strings, voice)",
        repo_id="midi_event_transformer/default_model",  # in the package: midi_event_transformer.DEFAULT_MODEL
        summary="The small model shipped inside the midi-event-transformer package: what `midi-event-transformer "
                "generate` uses when no `--model` is given. A two-level event transformer (event level 4 x 256, token "
                "level 1 x 256) trained on POP909 piano arrangements, Bach chorales, Lieder (voice + piano) and "
                "string quartets, with fill-in-the-middle: it continues a piece, follows the instrument controls "
                "for piano, strings and voice, and rewrites bars seeing both sides of the span.",
        datasets=[CORPORA.get(Path(folder).name, (None,))[0] for folder in train_args["data"]["data"]
                  if Path(folder).name in CORPORA],
        dtype=args.dtype, training=training["figures"], limitations=LIMITATIONS,
        training_command=training["command"], training_curve="training_curve.png", evaluation=evaluation,
        statistics=statistics,
        figures=[(caption, png) for caption, png, _ in pictures]
        + [("Statistics of unprompted samples next to held-out POP909 songs", "statistics.png")])
    for values in statistics["sets"].values():
        values.pop("per_file")
    report = {"output": str(output), "dtype": args.dtype, "loaded_dtype": loaded_dtype, "held_out": per_corpus,
              "infill_pop909": infill, "controls": controls,
              "training": training["figures"], "final_fp32": training["final_fp32"], "statistics": statistics,
              "files": {p.name: p.stat().st_size for p in sorted(output.iterdir())},
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                           "python": platform.python_version()}}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
