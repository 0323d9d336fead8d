"""evaluate_infill: the same span tokens scored left to right and in the FIM layout; scripts/evaluate.py infill."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from generation_helpers import load_script, random_model, tiny_config

import midi_event_transformer
from midi_event_transformer.evaluation.infill import _spans_of, _windows, evaluate_infill
from midi_event_transformer.generation.fim import split_fim_rows
from midi_event_transformer.generation.prompts import event_row
from midi_event_transformer.vocabulary import BOS_ID, EOS_ID, FIM_MIDDLE_ID, FIM_SPAN_ID, PAD_ID

REPO_ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def piece(seed: int, n: int = 150) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = np.sort(rng.integers(0, 16 * 80, n))
    rows, beat = [np.array([BOS_ID] + [PAD_ID] * 7)], 0
    for step in steps.tolist():
        rows.append(event_row("note", time1=step // 16 - beat, time2=step % 16, track=0, channel=0,
                              pitch=int(rng.integers(40, 90)), velocity=70, duration=8))
        beat = step // 16
    rows.append(np.array([EOS_ID] + [PAD_ID] * 7))
    return np.stack(rows).astype(np.int64)


@pytest.fixture(scope="module")
def pieces() -> list[np.ndarray]:
    return [piece(i) for i in range(3)]


def nll_of_last_rows(model, window: np.ndarray, m: int) -> tuple[float, int]:
    ids = torch.as_tensor(window).reshape(1, -1)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    begin = (len(window) - m) * 8
    targets = ids[0, begin:]
    nll = F.cross_entropy(logits[begin - 1:-1], targets, reduction="none")
    keep = targets != PAD_ID
    return float(nll[keep].sum()), int(keep.sum())


def test_both_figures_score_the_same_span_tokens(pieces):
    model = random_model(tiny_config()).resize_for_fim()
    result = evaluate_infill(model, None, pieces, span_bars=2, seed=1, window_events=64, batch_size=3)
    assert result.spans == 3 and result.files == 3 and result.nll_both_sides is not None
    assert result.tokens == 8 * result.events  # notes: 8 non-pad tokens a row
    # the figures by hand, span by span
    sums, count = [0.0, 0.0], 0
    for index, rows in enumerate(pieces):
        (span,) = _spans_of(rows, 2, 64, 1, np.random.default_rng([1, index]))
        past, both = _windows(span)
        m = span.middle[1] - span.middle[0]
        assert (span.end_step - span.start_step) == 2 * 64 and len(past) <= 64 and len(both) <= 64
        assert both[:, 0].tolist().count(FIM_SPAN_ID) == 2 and both[-m - 1, 0] == FIM_MIDDLE_ID
        parts = split_fim_rows(both, previous_step=int(span.steps[span.first - 1]) if span.first else 0)
        np.testing.assert_array_equal(parts.prefix, past[:-m])  # the same prefix in both
        np.testing.assert_array_equal(both[-m:], past[-m:])  # the same span rows, ids and all
        assert len(parts.middle) == m and len(parts.suffix) > 0
        for figure, window in enumerate((past, both)):
            total, tokens = nll_of_last_rows(model, window, m)
            sums[figure] += total
        count += tokens
    assert count == result.tokens
    assert result.nll_past_only == pytest.approx(sums[0] / count, rel=1e-5)
    assert result.nll_both_sides == pytest.approx(sums[1] / count, rel=1e-5)
    again = evaluate_infill(model, None, pieces, span_bars=2, seed=1, window_events=64, batch_size=1)
    assert again.nll_past_only == pytest.approx(result.nll_past_only, rel=1e-6)
    other = evaluate_infill(model, None, pieces, span_bars=2, seed=2, window_events=64)
    assert other.tokens != result.tokens or other.nll_past_only != result.nll_past_only


def test_models_not_trained_for_fim(pieces):
    plain = random_model(tiny_config())
    result = midi_event_transformer.evaluate_infill(plain, None, pieces, span_bars=1, seed=0, spans_per_file=3)
    assert result.nll_both_sides is None and result.spans == 9 and result.nll_past_only > 0
    with pytest.raises(ValueError, match="sentinel"):
        evaluate_infill(plain, None, pieces, both_sides=True)
    resized = random_model(tiny_config()).resize_for_fim(fill_in_the_middle=False)  # a left-to-right control
    assert evaluate_infill(resized, None, pieces, span_bars=1).nll_both_sides is None
    assert evaluate_infill(resized, None, pieces, span_bars=1, both_sides=True).nll_both_sides is not None
    with pytest.raises(ValueError, match="no span"):
        evaluate_infill(plain, None, [pieces[0][:3]], span_bars=1)


def test_evaluate_script_infill(pop909_files, tmp_path):
    model_dir = tmp_path / "model"
    random_model(tiny_config()).resize_for_fim().save_pretrained(model_dir)
    listing = tmp_path / "files.txt"
    listing.write_text("".join(f"{path}\n" for path in pop909_files[:2]))
    out = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "evaluate.py"), "infill", "--model",
                          str(model_dir), "--file-list", str(listing), "--span-bars", "4", "--quiet",
                          "--threads", "1", "--output", str(tmp_path / "infill.json")],
                         capture_output=True, text=True, timeout=600,
                         env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report == json.loads((tmp_path / "infill.json").read_text())
    assert report["spans"] == 2 and report["files"] == 2 and report["fill_in_the_middle"] is True
    assert report["nll_both_sides"] > 0 and report["nll_past_only"] > 0 and report["tokens"] > 0


def test_infill_ceiling_script(pop909_files, tmp_path):
    model_dir = tmp_path / "model"
    random_model(tiny_config()).resize_for_fim().save_pretrained(model_dir)
    listing = tmp_path / "files.txt"
    listing.write_text("".join(f"{path}\n" for path in pop909_files[:2]))
    out = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "infill_ceiling.py"), "--model", str(model_dir),
                          "--file-list", str(listing), "--spans-per-file", "1", "--threads", "1"],
                         capture_output=True, text=True, timeout=600,
                         env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["spans"] == 2 and report["tokens"] > 0
    assert set(report["nll"]) == {"past_only", "both_sides", "other_songs_suffix", "span_as_suffix",
                                  "span_repeated_before", "suffix_copy_oracle"}
    assert 0 <= report["suffix_only_repeated_rows"] <= report["span_rows"]
    assert report["nll"]["suffix_copy_oracle"] <= report["nll"]["past_only"]
    # the same figures as evaluate_infill on the same spans
    model = midi_event_transformer.MidiEventTransformerForCausalLM.from_pretrained(model_dir).eval()
    result = evaluate_infill(model, None, pop909_files[:2], span_bars=4, seed=0)
    assert report["nll"]["past_only"] == pytest.approx(result.nll_past_only, rel=1e-4)
    assert report["nll"]["both_sides"] == pytest.approx(result.nll_both_sides, rel=1e-4)
    assert report["tokens"] == result.tokens


def test_suffix_only_repeats():
    ceiling = load_script("infill_ceiling")
    a, b, c, d = (np.full(8, value) for value in (10, 11, 12, 13))
    bos = np.array([1] + [0] * 7)
    # prefix [BOS, a], span [b, c], suffix [a, b, c]: both span rows follow their row before in the suffix only
    rows = np.stack([bos, a, b, c, a, b, c])
    assert ceiling.suffix_only_repeats(rows, 0, (2, 4), 7).tolist() == [True, True]
    # prefix [BOS, a, b], span [a, b, d], suffix [a, b, d]: (b, a) is not in the suffix, (a, b) is in the prefix,
    # (b, d) is new in the suffix
    rows = np.stack([bos, a, b, a, b, d, a, b, d])
    assert ceiling.suffix_only_repeats(rows, 0, (3, 6), 9).tolist() == [False, False, True]
    # the same with the context starting at row 2 (prefix [b]): (a, b) no longer appears before the span
    assert ceiling.suffix_only_repeats(rows, 2, (3, 6), 9).tolist() == [False, True, True]
