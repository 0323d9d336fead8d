"""scripts/density_drift.py: teacher-forced and free-running density of a model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from generation_helpers import load_script, random_model, tiny_config

from midi_event_transformer.generation.prompts import event_row
from midi_event_transformer.vocabulary import BOS_ID, EOS_ID, PAD_ID

REPO_ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)

density_drift = load_script("density_drift")


def quarter_beat_notes(n: int) -> np.ndarray:
    """BOS, ``n`` notes a quarter of a beat apart (the first at step 0), EOS."""
    rows = [np.array([BOS_ID] + [PAD_ID] * 7)]
    for i in range(n):
        rows.append(event_row("note", time1=1 if i and i % 4 == 0 else 0, time2=(4 * i) % 16, track=0, channel=0,
                              pitch=60, velocity=70, duration=4))
    rows.append(np.array([EOS_ID] + [PAD_ID] * 7))
    return np.stack(rows).astype(np.int64)


def test_events_per_beat():
    assert density_drift.events_per_beat(quarter_beat_notes(9)) == pytest.approx(9 / 2)  # 9 events over 2 beats
    assert density_drift.events_per_beat(quarter_beat_notes(1)) == 1.0  # at least one beat
    assert density_drift.events_per_beat(quarter_beat_notes(0)) == 0.0


def test_teacher_forced_advance_of_a_uniform_model():
    model = random_model(tiny_config()).eval()
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit 0: time1 and time2 uniform
    rows = quarter_beat_notes(9)
    expected, true = density_drift.teacher_forced_advance(model, rows)
    # means of 0..127 beats and 0..15 steps, less the previous rows' steps in their beats (BOS: 0)
    assert expected == pytest.approx(63.5 * 16 + 7.5 - np.mean([0] + [(4 * i) % 16 for i in range(8)]))
    assert true == pytest.approx(32 / 9)  # 9 events over 32 steps, the first at step 0 (BOS at 0 before it)


def test_density_drift_script(pop909_files, tmp_path):
    model_dir = tmp_path / "model"
    random_model(tiny_config()).save_pretrained(model_dir)
    listing = tmp_path / "files.txt"
    listing.write_text("".join(f"{path}\n" for path in pop909_files[:2]))
    out = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "density_drift.py"), "--model", str(model_dir),
                          "--file-list", str(listing), "--prompt-events", "16", "--events", "24", "--window", "64",
                          "--threads", "1"],
                         capture_output=True, text=True, timeout=600,
                         env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["files"] == 2 and len(report["pieces"]) == 2
    for piece in report["pieces"]:
        assert piece["real_events_per_beat"] > 0 and piece["free_running_events_per_beat"] >= 0
        assert piece["teacher_forced_true_steps"] >= 0 and piece["teacher_forced_expected_steps"] > 0
