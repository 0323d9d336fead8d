"""scripts/train.py end to end: the loss falls, a resumed run reproduces the uninterrupted one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from generation_helpers import load_script

from midi_event_transformer import MidiEventTransformerForCausalLM

REPO_ROOT = Path(__file__).resolve().parents[1]


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def song_files(pop909_files) -> list[str]:
    return [str(p) for p in pop909_files[:8]]


def common_args(files: list[str], output_dir: Path, max_steps: int) -> list[str]:
    return ["--data", *files, "--output_dir", str(output_dir), "--model", "small", "--max_events", "64",
            "--batch_size", "4", "--max_steps", str(max_steps), "--validation_fraction", "0",
            "--num_threads", "2", "--seed", "3"]


def test_small_model_loss_falls(song_files, tmp_path):
    out = tmp_path / "run"
    load_script("train").main(common_args(song_files, out, 100) + [
        "--learning_rate", "1e-3", "--warmup_steps", "10", "--log_every", "10", "--eval_every", "0",
        "--save_every", "0", "--final_eval", "false"])
    losses = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert len(losses) == 10
    assert losses[0] > 5.0  # mean of the first 10 steps, from ~8.1 (ln 3406)
    assert losses[-1] < losses[0] - 2.5, losses  # clearly learning
    model = MidiEventTransformerForCausalLM.from_pretrained(out / "final")
    assert model.config.event_config.num_hidden_layers == 4
    assert (out / "final" / "README.md").is_file() and (out / "training_curve.png").is_file()
    assert (out / "validation_files.txt").read_text() == ""  # --validation_fraction 0: no held-out song


def test_token_level_attention_choice():
    train = load_script("train")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    default = train.ModelArguments()
    assert train.attention_implementations(default, "bf16", cpu) == {"": "sdpa", "token_config": "eager"}
    assert train.attention_implementations(default, "no", cpu) == {"": "sdpa", "token_config": "sdpa"}
    assert train.attention_implementations(default, "bf16", cuda) == {"": "sdpa", "token_config": "sdpa"}
    eager = train.ModelArguments(attn_implementation="eager")
    assert train.attention_implementations(eager, "no", cpu) == {"": "eager", "token_config": "eager"}
    with pytest.raises(ValueError, match="--token_attn_implementation must be sdpa or eager or auto, got 'flash'"):
        train.attention_implementations(train.ModelArguments(token_attn_implementation="flash"), "no", cpu)
    with pytest.raises(ValueError, match="--attn_implementation must be sdpa or eager, got 'xformers'"):
        train.attention_implementations(train.ModelArguments(attn_implementation="xformers"), "no", cpu)


def test_fused_and_materialised_training_losses_agree():
    from generation_helpers import random_model

    from midi_event_transformer.training.data import DataCollatorForMidiEvents

    train = load_script("train")
    model = random_model().train()
    generator = torch.Generator().manual_seed(4)
    windows = [torch.randint(3, 3406, (events, 8), generator=generator).numpy() for events in (6, 4)]
    batch = DataCollatorForMidiEvents()(windows)  # right-padded by whole events
    grads = []
    for fused in (True, False):
        model.zero_grad()
        loss = train.training_loss(model, batch, fused)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        if fused:
            fused_loss = loss.detach()
    torch.testing.assert_close(loss.detach(), fused_loss, rtol=1e-5, atol=1e-5)
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)


def test_resume_reproduces_uninterrupted_run(song_files, tmp_path):
    train = load_script("train")
    args = ["--learning_rate", "5e-4", "--warmup_steps", "2", "--log_every", "1", "--eval_every", "0",
            "--save_every", "3", "--final_eval", "false"]
    full, split = tmp_path / "full", tmp_path / "split"
    train.main(common_args(song_files, full, 8) + args)
    train.main(common_args(song_files, split, 8) + args + ["--stop_at_step", "5"])
    assert not (split / "final").exists()
    train.main(common_args(song_files, split, 8) + args + ["--resume"])
    full_losses = {r["step"]: r["loss"] for r in read_metrics(full) if "loss" in r}
    split_losses = {r["step"]: r["loss"] for r in read_metrics(split) if "loss" in r}
    assert sorted(split_losses) == list(range(1, 9))
    for step in range(1, 9):
        assert split_losses[step] == pytest.approx(full_losses[step], abs=1e-5), step
    a = MidiEventTransformerForCausalLM.from_pretrained(full / "final").state_dict()
    b = MidiEventTransformerForCausalLM.from_pretrained(split / "final").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


KILLED_SAVE = """
import importlib.util, os, signal, sys
from accelerate import Accelerator
spec = importlib.util.spec_from_file_location("train_script", sys.argv[1])
train = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = train
spec.loader.exec_module(train)
real_save, saves = Accelerator.save_state, []

def save_state(self, output_dir=None, **kwargs):  # the second save dies halfway, as a kill -9 would leave it
    saves.append(output_dir)
    if len(saves) == 2:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "model.safetensors"), "wb") as f:
            f.write(b"half a checkpoint")
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(self, output_dir, **kwargs)

Accelerator.save_state = save_state
train.main(sys.argv[2:])
"""


def test_run_killed_during_a_save_resumes_from_the_last_complete_checkpoint(song_files, tmp_path, caplog):
    import subprocess

    train = load_script("train")
    args = ["--learning_rate", "5e-4", "--warmup_steps", "2", "--log_every", "1", "--eval_every", "0",
            "--save_every", "3", "--final_eval", "false"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    train.main(common_args(song_files, full, 8) + args)
    process = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(REPO_ROOT / "scripts" / "train.py"),
                              *common_args(song_files, killed, 8), *args], capture_output=True, text=True)
    assert process.returncode == -9, process.stderr[-2000:]
    checkpoints = sorted(p.name for p in (killed / "checkpoints").iterdir())
    assert checkpoints == ["step_000003", "step_000006.partial"]  # the killed save never looks complete
    assert max(r["step"] for r in read_metrics(killed)) == 6  # the killed run had logged steps 4-6

    with caplog.at_level("INFO", logger="train"):
        train.main(common_args(song_files, killed, 8) + args + ["--resume"])
    assert any("resumed from" in r.getMessage() and "(step 3)" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["step_000006", "step_000008"]
    losses = [(r["step"], r["loss"]) for r in read_metrics(killed) if "loss" in r]
    assert [step for step, _ in losses] == list(range(1, 9))  # steps 4-6 logged once, by the resumed run
    full_losses = {r["step"]: r["loss"] for r in read_metrics(full) if "loss" in r}
    for step, loss in losses:
        assert loss == pytest.approx(full_losses[step], abs=1e-5), step


def test_mixture_of_corpora_weights_windows_and_validates_each(pop909_files, bach_files, tmp_path):
    import shutil

    folders = {"pop": pop909_files[:6], "chorales": bach_files[:6]}
    for corpus, files in folders.items():
        (tmp_path / corpus).mkdir()
        for path in files:
            shutil.copy(path, tmp_path / corpus / Path(path).name)
    out = tmp_path / "run"
    train = load_script("train")
    train.main(["--data", str(tmp_path / "pop"), str(tmp_path / "chorales"), "--mixture_weights", "2", "0.5",
                "--output_dir", str(out), "--model", "small", "--max_events", "64", "--batch_size", "2",
                "--max_steps", "2", "--validation_fraction", "0.3", "--eval_every", "2", "--save_every", "0",
                "--patches_first_rate", "0.5", "--final_eval", "true", "--num_threads", "2"])
    records = read_metrics(out)
    validation = {r["corpus"] for r in records if "val_per_token_nll" in r}
    final = {r["corpus"] for r in records if r.get("final")}
    assert validation == final == {"pop", "chorales"}  # one curve and one final figure per corpus
    seen = json.loads((out / "final" / "training_data.json").read_text())  # what the model knows, beside it
    assert set(seen["sources"]) == {"pop", "chorales"} and seen["sources"]["pop"]["windows_per_file"] == 2.0
    assert {entry["name"] for entry in seen["programs"]} >= {"Acoustic Grand Piano"} and seen["drum_kits"] == []
    args = json.loads((out / "train_args.json").read_text())["data"]
    assert args["mixture_weights"] == [2.0, 0.5] and args["patches_first_rate"] == 0.5
    with pytest.raises(SystemExit, match="one weight per --data entry"):
        train.main(["--data", str(tmp_path / "pop"), "--mixture_weights", "1", "2", "--output_dir", str(out)])
