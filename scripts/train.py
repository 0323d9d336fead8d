#!/usr/bin/env python
"""Train (or LoRA fine-tune) a MidiEventTransformer on a folder of MIDI files with Accelerate.

    python scripts/train.py scripts/configs/small_pop909.json            # a JSON file of the arguments
    accelerate launch scripts/train.py --data ../shared/midi/pop909 --output_dir runs/small --max_steps 2000
    python scripts/train.py ... --resume                                  # continue from the last checkpoint

One plain loop: ``accelerator.prepare``, ``accelerator.accumulate``, AdamW (no decay on norms and
biases), linear warmup then linear decay, gradient clipping, optional bf16 autocast, periodic validation
(per-token / per-event NLL in nats, token accuracy), sample .mid files, ``save_state`` checkpoints and an
exact ``--resume`` (same seed: same loss curve). The final model is written with ``save_pretrained``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from midi_event_transformer import MidiEventTransformerConfig, MidiEventTransformerForCausalLM
from midi_event_transformer.evaluation.nll import evaluate_nll
from midi_event_transformer.generation.outputs import save_samples
from midi_event_transformer.midi_reading import find_midi_files
from midi_event_transformer.modeling_midi_event_transformer import flat_causal_lm_loss
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer
from midi_event_transformer.training.data import (
    DataCollatorForMidiEvents,
    MidiWindowDataset,
    split_by_file,
    tokenize_midi_dataset,
)
from midi_event_transformer.training.lora import LORA_TARGET_MODULES, add_lora, write_fim_record
from midi_event_transformer.vocabulary import PAD_ID, TOKENS_PER_EVENT

logger = logging.getLogger("train")


@dataclass
class ModelArguments:
    model: str = field(default="small", metadata={"help": "config name (small, tv2o-medium, tv2o-large) or a config.json"})
    init_from: str | None = field(default=None, metadata={"help": "start from this pretrained model directory"})
    gradient_checkpointing: bool = field(default=False)
    torch_compile: bool = field(default=False, metadata={
        "help": "compile each decoder layer with torch.compile (MidiEventTransformerForCausalLM.compile_layers): "
                "on CPU ~15%% faster steps under bf16 autocast, 0-10%% in fp32; needs a C++ compiler"})
    fim_vocab: bool = field(default=False, metadata={
        "help": "give the model the fill-in-the-middle sentinel ids (model.resize_for_fim) even with --fim_rate 0: a "
                "left-to-right control run of the same resized model (--fim_rate > 0 always resizes)"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa or eager"})
    token_attn_implementation: str = field(default="auto", metadata={
        "help": "the token transformer's attention: sdpa, eager, or auto = eager under bf16 autocast on CPU (its "
                "8-position sequences train ~3x faster in plain matmul attention there), else attn_implementation"})


@dataclass
class DataArguments:
    data: list[str] = field(default_factory=list, metadata={"help": "MIDI folders or files"})
    cache_dir: str | None = field(default=None, metadata={"help": "tokenized-dataset cache (default: <output_dir>/cache)"})
    num_proc: int | None = field(default=None)
    max_files: int | None = field(default=None, metadata={"help": "use only the first N files (quick runs)"})
    max_events: int = field(default=512, metadata={"help": "events per training window"})
    validation_fraction: float = field(default=0.05)
    augment: bool = field(default=True)
    quality_filter: bool = field(default=False)
    fim_rate: float = field(default=0.0, metadata={
        "help": "share of training windows laid out as fill-in-the-middle examples (generation/fim.py); > 0 resizes "
                "the model's vocabulary for the two sentinel ids first and marks it fill_in_the_middle"})
    fim_min_bars: int = field(default=1, metadata={"help": "shortest FIM span, in bars"})
    fim_max_bars: int = field(default=8, metadata={"help": "longest FIM span, in bars"})
    mixture_weights: list[float] = field(default_factory=list, metadata={
        "help": "windows per file per epoch for each --data source, in order (default 1 each; 0.5: half of the "
                "files give a window each epoch; 8: each file gives eight): the weights of a mixture of corpora"})
    patches_first_rate: float = field(default=0.0, metadata={
        "help": "share of the windows that start a song whose time-0 patch changes and signatures are moved ahead "
                "of its first notes, the layout of the instrument controls' prompts (training/data.patches_first)"})


@dataclass
class TrainArguments:
    output_dir: str = field(default="runs/train")
    seed: int = 0
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    max_steps: int = 1000
    max_train_minutes: float | None = field(default=None, metadata={"help": "stop cleanly (with a final save) after this"})
    stop_at_step: int | None = field(default=None, metadata={
        "help": "checkpoint and exit at this step without finishing (continue later with --resume)"})
    max_grad_norm: float = 1.0
    fused_loss: bool = field(default=True, metadata={
        "help": "the model's fused linear + cross-entropy loss (no logits kept); false: the same loss from "
                "materialised logits and F.cross_entropy, as the reference computes it"})
    mixed_precision: str = field(default="no", metadata={"help": "no or bf16"})
    num_threads: int | None = None
    log_every: int = 10
    eval_every: int = 250
    eval_max_songs: int | None = field(default=20, metadata={"help": "songs scored at each periodic validation"})
    save_every: int = 250
    keep_checkpoints: int = 2
    sample_every: int = 0
    sample_events: int = 64
    resume: bool = False
    final_eval: bool = True
    record_batches: bool = field(default=False, metadata={
        "help": "write <output_dir>/batches_rank<i>.json per process: the sha1 of each batch's input_ids and, at "
                "the end, of the weights (to check that processes see different data and stay in sync)"})


@dataclass
class LoraArguments:
    lora: bool = False
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGET_MODULES))


class TrainingProgress:
    """Step / epoch counters saved with every checkpoint (``accelerator.register_for_checkpointing``)."""

    def __init__(self) -> None:
        self.step, self.epoch, self.batch_in_epoch, self.elapsed = 0, 0, 0, 0.0

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def attention_implementations(args: ModelArguments, mixed_precision: str, device: torch.device) -> dict[str, str]:
    """``attn_implementation`` for the model and its token level (see ``--token_attn_implementation``)."""
    token = args.token_attn_implementation
    if token == "auto":
        token = "eager" if mixed_precision == "bf16" and device.type == "cpu" else args.attn_implementation
    for name, value in (("attn_implementation", args.attn_implementation), ("token_attn_implementation", token)):
        if value not in ("sdpa", "eager"):
            raise ValueError(f"--{name} must be sdpa or eager{' or auto' if name.startswith('token') else ''}, "
                             f"got {value!r}")
    return {"": args.attn_implementation, "token_config": token}


def build_model(args: ModelArguments, attn_implementation: dict[str, str] | None = None, fim_rate: float = 0.0,
                ) -> MidiEventTransformerForCausalLM:
    """The model to train: a named shape, a config file or ``--init_from``; resized for the FIM sentinel ids when
    ``fim_rate > 0`` or ``--fim_vocab`` (marked fill_in_the_middle only when ``fim_rate > 0``)."""
    if args.init_from:
        # float32 master weights whatever the checkpoint's dtype (a bf16 checkpoint would otherwise train in bf16,
        # where AdamW's small updates round away; --mixed_precision bf16 is autocast over these)
        model = MidiEventTransformerForCausalLM.from_pretrained(args.init_from, attn_implementation=attn_implementation,
                                                                dtype=torch.float32)
    elif args.model.endswith(".json") or os.path.isdir(args.model):
        config = MidiEventTransformerConfig.from_pretrained(args.model, attn_implementation=attn_implementation)
        model = MidiEventTransformerForCausalLM(config)
    else:
        config = MidiEventTransformerConfig.from_name(args.model, attn_implementation=attn_implementation)
        model = MidiEventTransformerForCausalLM(config)
    if fim_rate > 0 or args.fim_vocab:
        model.resize_for_fim(fill_in_the_middle=fim_rate > 0)
    if args.gradient_checkpointing:  # newer transformers rename gradient_checkpointing_enable
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
    if args.torch_compile:
        model.compile_layers()
    return model


def training_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], fused: bool = True) -> torch.Tensor:
    """The model's own training loss (fused), or the same mean cross entropy from materialised (B, L, V) logits."""
    if fused:
        return model(**batch).loss
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, L, V)
    return flat_causal_lm_loss(logits, batch["labels"], PAD_ID, TOKENS_PER_EVENT)


def optimizer_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on norms and biases (as the reference)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if "norm" in name or name.endswith("bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def json_to_flags(path: str) -> list[str]:
    """The arguments of a JSON file as command-line flags (later flags override them)."""
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"train.py: cannot read the arguments file {path}: {error}") from error
    if not isinstance(values, dict):
        raise SystemExit(f"train.py: {path} must hold a JSON object of arguments")
    flags = []
    for key, value in values.items():
        if value is None:  # the field's default (every optional argument defaults to None)
            continue
        items = value if isinstance(value, list) else [value]
        flags += [f"--{key}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in items)]
    return flags


def linear_schedule(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def last_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest complete checkpoint: ``step_N`` folders only (a save in progress is ``step_N.partial``)."""
    found = sorted((int(m.group(1)), p) for p in checkpoint_dir.glob("step_*") if (m := re.fullmatch(r"step_(\d+)", p.name)))
    return found[-1][1] if found else None


def save_checkpoint(accelerator: Accelerator, checkpoint_dir: Path, step: int, keep: int) -> Path:
    """``save_state`` into ``step_N.partial``, then rename it to ``step_N``: a run killed during a save leaves a
    partial folder that ``--resume`` ignores (and removes), never a half-written ``step_N``."""
    final = checkpoint_dir / f"step_{step:06d}"
    partial = final.with_name(final.name + ".partial")
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # the same step saved again (a resumed run that stops where it resumed)
            shutil.rmtree(final)
        os.replace(partial, final)
        for path in sorted(checkpoint_dir.glob("step_*.partial")):
            shutil.rmtree(path, ignore_errors=True)
        complete = sorted(p for p in checkpoint_dir.glob("step_*") if re.fullmatch(r"step_\d+", p.name))
        for path in complete[:-keep] if keep else []:
            shutil.rmtree(path, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def corpus_names(data: list[str]) -> dict[str, str]:
    """File name (as the dataset names it) -> the name of the ``--data`` entry it came from (its folder's name)."""
    return {str(path): Path(entry).name for entry in reversed(data) for path in find_midi_files([entry])}


def mixture_weights(data: list[str], weights: list[float], corpus_of: dict[str, str], names: list[str],
                    ) -> list[float] | None:
    """Windows per epoch of each training file, from ``--mixture_weights`` (one per ``--data`` entry)."""
    if not weights:
        return None
    if len(weights) != len(data):
        raise SystemExit(f"train.py: --mixture_weights needs one weight per --data entry ({len(data)}), "
                         f"got {len(weights)}")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise SystemExit(f"train.py: --mixture_weights must be finite and >= 0, got {weights}")
    by_corpus = {Path(entry).name: float(w) for entry, w in zip(data, weights, strict=True)}
    return [by_corpus[corpus_of[name]] for name in names]


def merge_nll(a, b):
    """Two held-out results as one (sums of NLL, tokens, events; token accuracy weighted by tokens)."""
    from dataclasses import replace

    tokens, events = a.n_tokens + b.n_tokens, a.n_events + b.n_events
    total = a.total_nll + b.total_nll
    return replace(a, per_token_nll=total / max(1, tokens), per_event_nll=total / max(1, events),
                   token_accuracy=(a.token_accuracy * a.n_tokens + b.token_accuracy * b.n_tokens) / max(1, tokens),
                   n_tokens=tokens, n_events=events, n_windows=a.n_windows + b.n_windows,
                   n_files=a.n_files + b.n_files, total_nll=total, skipped={**a.skipped, **b.skipped})


def record_training_data(directory: Path, train_split, corpus_of: dict[str, str], weights: list[float] | None,
                         ) -> None:
    """``training_data.json`` beside the weights: the programs and drum kits of the training files, with their note
    counts, and the corpora with their files and weights (what the model knows; generation warns on the rest)."""
    from midi_event_transformer.generation.known_instruments import count_instruments, write_training_data

    rows = (ids.reshape(-1, TOKENS_PER_EVENT) for ids in train_split.with_format("numpy")["input_ids"])
    corpora: dict[str, dict] = {}
    for i, name in enumerate(train_split["name"]):
        corpus = corpora.setdefault(corpus_of.get(name, "other"), {"files": 0, "windows_per_file": None})
        corpus["files"] += 1
        corpus["windows_per_file"] = None if weights is None else weights[i]
    write_training_data(directory, count_instruments(rows), sources=corpora)


def sha1_of_tensors(tensors: dict[str, torch.Tensor] | torch.Tensor) -> str:
    """A stable digest of a tensor or a state dict (names, shapes, dtypes and values)."""
    digest = hashlib.sha1()
    items = sorted(tensors.items()) if isinstance(tensors, dict) else [("", tensors)]
    for name, tensor in items:
        tensor = tensor.detach().cpu()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}\n".encode())
        digest.update(tensor.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_metrics(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def draw_training_curve(metrics_path: Path, png_path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (pip install 'midi-event-transformer[plot]'): no training curve")
        return
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val: dict[str | None, list] = {}  # one curve per corpus (runs of one corpus log none)
    for r in records:
        if "val_per_token_nll" in r:
            val.setdefault(r.get("corpus"), []).append((r["step"], r["val_per_token_nll"]))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss (per token)", alpha=0.6)
    for corpus, points in val.items():
        ax.plot(*zip(*points, strict=True), "o-", label=f"validation NLL (per token){f': {corpus}' if corpus else ''}")
    ax.set_xlabel("step")
    ax.set_ylabel("nats")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def validate(model, rows: list, batch_size: int) -> dict:
    was_training = model.training
    model.eval()
    result = evaluate_nll(model, rows, batch_size=batch_size, progress=False)
    model.train(was_training)
    return {"val_per_token_nll": result.per_token_nll, "val_per_event_nll": result.per_event_nll,
            "val_token_accuracy": result.token_accuracy}


@torch.no_grad()
def write_samples(model, tokenizer, directory: Path, step: int, n_events: int, seed: int) -> None:
    was_training = model.training
    model.eval()
    prompt = torch.tensor([[tokenizer.bos_token_id] + [tokenizer.pad_token_id] * 7], device=model.device)
    torch.manual_seed(seed + step)
    out = model.generate(input_ids=prompt, max_new_tokens=8 * n_events, do_sample=True, top_p=0.98, top_k=20)
    save_samples([tokenizer.decode_midi(out[0].cpu())], directory, names=[f"step_{step:06d}.mid"])
    model.train(was_training)


# Arguments that say where and how a run is kept and watched, not what it trains: two runs that differ only in
# these give the same weights (max_train_minutes only while it does not stop the run early; num_threads up to the
# rounding of a different summation order).
RUN_CONTROL_FIELDS = frozenset({"output_dir", "cache_dir", "num_proc", "num_threads", "max_train_minutes",
                                "stop_at_step", "log_every",
                                "eval_every", "eval_max_songs", "save_every", "keep_checkpoints", "sample_every",
                                "sample_events", "resume", "final_eval", "record_batches"})


def argument_parser() -> HfArgumentParser:
    return HfArgumentParser((ModelArguments, DataArguments, TrainArguments, LoraArguments))


def expand_arguments(argv: list[str]) -> list[str]:
    """``[config.json, --flag, value, ...]`` -> the file's arguments as flags, then the given ones (which win)."""
    if argv and argv[0].endswith(".json"):
        return [*json_to_flags(argv[0]), *argv[1:]]
    return list(argv)


def main(argv: list[str] | None = None) -> None:
    argv = expand_arguments(sys.argv[1:] if argv is None else argv)
    parser = argument_parser()
    model_args, data_args, train_args, lora_args = parser.parse_args_into_dataclasses(argv)
    if not data_args.data:
        parser.error("--data is required (MIDI folders or files)")
    if train_args.mixed_precision not in ("no", "bf16"):
        parser.error(f"--mixed_precision must be 'no' or 'bf16', got {train_args.mixed_precision!r}")
    if train_args.num_threads:
        torch.set_num_threads(train_args.num_threads)

    output_dir = Path(train_args.output_dir)
    checkpoint_dir = output_dir / "checkpoints"
    accelerator = Accelerator(gradient_accumulation_steps=train_args.gradient_accumulation_steps,
                              mixed_precision=train_args.mixed_precision,
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    try:
        attention = attention_implementations(model_args, train_args.mixed_precision, accelerator.device)
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    set_seed(train_args.seed)
    output_dir.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        (output_dir / "train_args.json").write_text(json.dumps(
            {"model": asdict(model_args), "data": asdict(data_args), "train": asdict(train_args),
             "lora": asdict(lora_args), "command": " ".join([Path(sys.argv[0]).name, *argv])}, indent=2))

    # ---- data
    tokenizer = (MidiEventTransformerTokenizer.from_pretrained(model_args.init_from) if model_args.init_from
                 else MidiEventTransformerTokenizer())
    sources = data_args.data
    if data_args.max_files:
        sources = find_midi_files(sources)[:data_args.max_files]
    with accelerator.main_process_first():
        dataset = tokenize_midi_dataset(sources, tokenizer, cache_dir=data_args.cache_dir or output_dir / "cache",
                                        num_proc=data_args.num_proc, quality_filter=data_args.quality_filter,
                                        report_path=output_dir / "skipped_files.json")
    splits = split_by_file(dataset, data_args.validation_fraction)
    logger.info("files: %d train, %d validation", len(splits["train"]), len(splits["validation"]))
    corpus_of = corpus_names(data_args.data)
    if accelerator.is_main_process:  # the held-out songs, for scripts/evaluate.py nll --file-list
        (output_dir / "validation_files.txt").write_text(
            "".join(f"{os.path.abspath(name) if os.path.exists(name) else name}\n"
                    for name in splits["validation"]["name"]))
    weights = mixture_weights(data_args.data, data_args.mixture_weights, corpus_of, splits["train"]["name"])
    train_set = MidiWindowDataset(splits["train"], data_args.max_events, tokenizer=tokenizer,
                                  augment=data_args.augment, seed=train_args.seed, fim_rate=data_args.fim_rate,
                                  fim_bars=(data_args.fim_min_bars, data_args.fim_max_bars),
                                  windows_per_file=weights, patches_first_rate=data_args.patches_first_rate)
    logger.info("%d training windows per epoch", len(train_set))
    val_rows: dict[str, list] = {}  # corpus -> (n, 8) rows of its held-out songs
    for name, ids in zip(splits["validation"]["name"], splits["validation"].with_format("numpy")["input_ids"],
                         strict=True):
        val_rows.setdefault(corpus_of.get(name, "other"), []).append(ids.reshape(-1, TOKENS_PER_EVENT))
    logger.info("validation songs per corpus: %s", {corpus: len(rows) for corpus, rows in val_rows.items()})
    loader = DataLoader(train_set, batch_size=train_args.batch_size, shuffle=True, drop_last=True,
                        collate_fn=DataCollatorForMidiEvents())
    if len(loader) == 0:
        raise ValueError(f"{len(train_set)} training files is fewer than one batch of {train_args.batch_size}")

    # ---- model and optimisation
    model = build_model(model_args, attention, data_args.fim_rate)
    if lora_args.lora:
        # a base resized for FIM trains its sentinel rows too (peft trainable_token_indices, training/lora.py)
        model = add_lora(model, r=lora_args.lora_rank, lora_alpha=lora_args.lora_alpha,
                         lora_dropout=lora_args.lora_dropout, target_modules=lora_args.lora_target_modules,
                         fim=data_args.fim_rate > 0 or model_args.fim_vocab)
    model.train()
    optimizer = torch.optim.AdamW(optimizer_groups(model, train_args.weight_decay), lr=train_args.learning_rate,
                                  betas=(0.9, 0.99), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(train_args.warmup_steps,
                                                                             train_args.max_steps))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    progress = TrainingProgress()
    accelerator.register_for_checkpointing(scheduler, progress)

    if train_args.resume:
        checkpoint = last_checkpoint(checkpoint_dir)
        if checkpoint is None:
            logger.warning("--resume: no checkpoint in %s, starting from scratch", checkpoint_dir)
        else:
            for partial in checkpoint_dir.glob("step_*.partial"):  # a save that was killed midway
                logger.warning("--resume: removing the incomplete checkpoint %s", partial)
                if accelerator.is_main_process:
                    shutil.rmtree(partial, ignore_errors=True)
            accelerator.load_state(str(checkpoint))
            logger.info("resumed from %s (step %d)", checkpoint, progress.step)
    metrics_path = output_dir / "metrics.jsonl"
    if accelerator.is_main_process and metrics_path.exists():
        # a fresh run starts a new log; a resumed one keeps the records up to its checkpoint and logs on from there
        keep = [line for line in metrics_path.read_text().splitlines()
                if train_args.resume and line.strip() and json.loads(line)["step"] <= progress.step]
        metrics_path.write_text("".join(line + "\n" for line in keep))

    # ---- the loop
    bar = tqdm(total=train_args.max_steps, initial=progress.step, disable=not accelerator.is_main_process,
               desc="training")
    started, elapsed_before = time.time(), progress.elapsed
    window_loss, window_tokens, window_start = 0.0, 0, time.time()
    batch_hashes: list[str] = []
    stop = progress.step >= train_args.max_steps
    while not stop:
        loader.set_epoch(progress.epoch)
        train_set.set_epoch(progress.epoch)
        batches = accelerator.skip_first_batches(loader, progress.batch_in_epoch) if progress.batch_in_epoch else loader
        for batch in batches:
            if train_args.record_batches:
                batch_hashes.append(sha1_of_tensors(batch["input_ids"]))
            with accelerator.accumulate(model):
                loss = training_loss(model, batch, train_args.fused_loss)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), train_args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            progress.batch_in_epoch += 1
            window_loss += loss.item()
            window_tokens += 1
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            progress.step += 1
            progress.elapsed = elapsed_before + time.time() - started
            bar.update(1)
            step = progress.step
            if step % train_args.log_every == 0 or step == train_args.max_steps:
                loss_mean = accelerator.reduce(torch.tensor(window_loss / window_tokens,
                                                            device=accelerator.device), "mean").item()
                events = train_args.log_every * train_args.batch_size * train_args.gradient_accumulation_steps \
                    * data_args.max_events * accelerator.num_processes
                record = {"step": step, "loss": loss_mean, "lr": scheduler.get_last_lr()[0],
                          "elapsed_s": round(progress.elapsed, 1),
                          "events_per_s": round(events / (time.time() - window_start), 1)}
                bar.set_postfix(loss=f"{loss_mean:.3f}")
                if accelerator.is_main_process:
                    write_metrics(metrics_path, record)
                window_loss, window_tokens, window_start = 0.0, 0, time.time()
            out_of_time = (train_args.max_train_minutes is not None
                           and progress.elapsed > 60 * train_args.max_train_minutes)
            pause = train_args.stop_at_step is not None and step >= train_args.stop_at_step
            stop = step >= train_args.max_steps or out_of_time or pause
            if train_args.eval_every and (step % train_args.eval_every == 0) and val_rows:
                if accelerator.is_main_process:
                    for corpus, rows in val_rows.items():
                        songs = rows[:train_args.eval_max_songs] if train_args.eval_max_songs else rows
                        record = {"step": step, "corpus": corpus,
                                  **validate(accelerator.unwrap_model(model), songs, train_args.batch_size)}
                        logger.info("validation %s", record)
                        write_metrics(metrics_path, record)
            if train_args.sample_every and step % train_args.sample_every == 0 and accelerator.is_main_process:
                write_samples(accelerator.unwrap_model(model), tokenizer, output_dir / "samples", step,
                              train_args.sample_events, train_args.seed)
            if (train_args.save_every and step % train_args.save_every == 0) or stop:
                save_checkpoint(accelerator, checkpoint_dir, step, train_args.keep_checkpoints)
            if stop:
                break
        else:
            progress.epoch += 1
            progress.batch_in_epoch = 0
    bar.close()

    # ---- final save
    accelerator.wait_for_everyone()
    if train_args.record_batches:
        record = {"rank": accelerator.process_index, "num_processes": accelerator.num_processes,
                  "distributed_type": str(accelerator.distributed_type), "backend": accelerator.state.backend,
                  "step": progress.step, "batches": batch_hashes,
                  "weights": sha1_of_tensors(accelerator.unwrap_model(model).state_dict())}
        (output_dir / f"batches_rank{accelerator.process_index}.json").write_text(json.dumps(record, indent=1))
    if not accelerator.is_main_process or progress.step == train_args.stop_at_step != train_args.max_steps:
        return
    final_dir = output_dir / "final"
    model = accelerator.unwrap_model(model)
    if lora_args.lora and (data_args.fim_rate > 0 or model_args.fim_vocab):
        # the sentinel rows are in the adapter (trainable tokens); load_adapter resizes the base from the record
        model.save_pretrained(final_dir, save_embedding_layers=False)
        write_fim_record(final_dir, fill_in_the_middle=data_args.fim_rate > 0)
    else:
        model.save_pretrained(final_dir)
    tokenizer.save_pretrained(final_dir)
    record_training_data(final_dir, splits["train"], corpus_of, weights)
    draw_training_curve(metrics_path, output_dir / "training_curve.png")
    evaluation = None
    if train_args.final_eval and val_rows:
        model.eval()
        for corpus, rows in val_rows.items():
            result = evaluate_nll(model, rows, batch_size=train_args.batch_size, progress=True)
            write_metrics(metrics_path, {"step": progress.step, "final": True, "corpus": corpus, **result.to_dict()})
            logger.info("final validation (%s): %s", corpus, result.to_dict())
            evaluation = result if evaluation is None else merge_nll(evaluation, result)
    from midi_event_transformer.hub.cards import write_model_card

    training = {"steps": progress.step, "wall_time_minutes": round(progress.elapsed / 60, 1),
                "batch": f"{train_args.batch_size} windows x {data_args.max_events} events",
                "learning_rate": train_args.learning_rate, "mixed_precision": train_args.mixed_precision,
                "processes": accelerator.num_processes}
    command = json.loads((output_dir / "train_args.json").read_text())["command"]
    card_fields = {"training": training, "training_command": f"python scripts/{command}"}
    if evaluation is not None:
        card_fields["evaluation"] = evaluation
    try:
        write_model_card(final_dir, adapter=lora_args.lora, **card_fields)
    except (TypeError, ValueError) as err:  # the card is documentation: never lose a trained model over it
        logger.warning("model card not written: %s", err)
    logger.info("saved %s (%d steps, %.1f min)", final_dir, progress.step, progress.elapsed / 60)
    if math.isnan(window_loss):
        raise RuntimeError("training diverged (NaN loss)")


if __name__ == "__main__":
    main()
