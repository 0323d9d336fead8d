"""scripts/train.py under ``accelerate launch`` with 2 CPU processes (gloo): different data, identical weights."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from midi_event_transformer.configuration_midi_event_transformer import MidiEventTransformerConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_see_different_data_and_end_in_sync(pop909_files, tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate command is not installed")
    config = tmp_path / "tiny.json"
    MidiEventTransformerConfig(
        event_config={"hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 3, "num_key_value_heads": 1,
                      "intermediate_size": 40},
        token_config={"hidden_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 36},
    ).to_json_file(config)
    out = tmp_path / "run"
    # accelerate's `--cpu` alone starts one process (several only through mpirun); the torchrun launcher with
    # CUDA hidden and ACCELERATE_USE_CPU gives two CPU processes on the gloo backend
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               str(REPO_ROOT / "scripts" / "train.py"),
               "--data", *[str(p) for p in pop909_files[:8]], "--model", str(config), "--output_dir", str(out),
               "--max_events", "16", "--batch_size", "2", "--max_steps", "3", "--learning_rate", "1e-2",
               "--warmup_steps", "1", "--validation_fraction", "0", "--final_eval", "false", "--eval_every", "0",
               "--save_every", "0", "--log_every", "1", "--num_threads", "1", "--record_batches", "true"]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]

    ranks = [json.loads((out / f"batches_rank{rank}.json").read_text()) for rank in (0, 1)]
    for rank, record in enumerate(ranks):
        assert record["rank"] == rank and record["num_processes"] == 2 and record["step"] == 3
        assert record["backend"] == "gloo" and record["distributed_type"].endswith("MULTI_CPU")
        assert len(record["batches"]) == 3
    # 8 songs, 2 per batch, 2 processes: 2 batches per process per epoch, no song seen by both in an epoch
    assert not set(ranks[0]["batches"][:2]) & set(ranks[1]["batches"][:2])
    assert all(a != b for a, b in zip(ranks[0]["batches"], ranks[1]["batches"], strict=True))
    # both processes end with the same weights, and they are the weights the run saved
    assert ranks[0]["weights"] == ranks[1]["weights"]
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        from train import sha1_of_tensors
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    saved = load_file(out / "checkpoints" / "step_000003" / "model.safetensors")
    assert sha1_of_tensors(saved) == ranks[0]["weights"]
    final = load_file(out / "final" / "model.safetensors")
    assert sha1_of_tensors(final) == ranks[0]["weights"]
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(7.0 < loss < 9.0 for loss in losses)  # ~ln(3406) = 8.1 at the start
