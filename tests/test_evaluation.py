"""Evaluation: objective statistics on hand-made MIDI files with known answers, and held-out NLL."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from generation_helpers import random_model

from midi_event_transformer.evaluation.nll import evaluate_nll, sliding_windows, window_token_scores
from midi_event_transformer.evaluation.statistics import (
    compare_statistics,
    draw_statistics_comparison,
    midi_statistics,
)
from midi_event_transformer.generation.note_list import read_notes
from midi_event_transformer.midi_reading import find_midi_files
from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM
from midi_event_transformer.vocabulary import PAD_ID

REPO_ROOT = Path(__file__).resolve().parents[1]
TPB = 480


def write_midi(path: Path, notes: list[tuple[float, float, int]], channel: int = 0,
               time_signature: tuple[int, int] | None = None) -> Path:
    """One-track file from (start_beat, end_beat, pitch) notes."""
    events = []
    for start, end, pitch in notes:
        events.append((round(start * TPB), 1, mido.Message("note_on", channel=channel, note=pitch, velocity=80)))
        events.append((round(end * TPB), 0, mido.Message("note_off", channel=channel, note=pitch, velocity=0)))
    events.sort(key=lambda item: (item[0], item[1]))
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000, time=0)])
    if time_signature:
        track.append(mido.MetaMessage("time_signature", numerator=time_signature[0], denominator=time_signature[1]))
    now = 0
    for tick, _, message in events:
        track.append(message.copy(time=tick - now))
        now = tick
    midi = mido.MidiFile(ticks_per_beat=TPB)
    midi.tracks.append(track)
    midi.save(path)
    return path


# ---------------------------------------------------------------------------------------------- statistics
def test_scale_of_c_major(tmp_path):
    scale = [60, 62, 64, 65, 67, 69, 71, 72]
    stats = midi_statistics(write_midi(tmp_path / "scale.mid", [(i, i + 1, p) for i, p in enumerate(scale)]))
    assert stats["pitch_class_entropy"] == pytest.approx(2.75)  # C twice, six others once
    assert stats["scale_consistency"] == 1.0
    assert stats["pitch_range"] == 12
    assert stats["polyphony"] == 1.0
    assert stats["note_density"] == 1.0
    assert stats["empty_beat_rate"] == 0.0
    assert stats["groove_consistency"] == 1.0  # two 4/4 bars with onsets on every beat
    assert stats["n_notes"] == 8 and stats["length_beats"] == 8


def test_chromatic_notes(tmp_path):
    stats = midi_statistics(write_midi(tmp_path / "chromatic.mid", [(i, i + 1, 60 + i) for i in range(12)]))
    assert stats["pitch_class_entropy"] == pytest.approx(math.log2(12))
    assert stats["scale_consistency"] == pytest.approx(7 / 12)
    assert stats["pitch_range"] == 11


def test_chord_silence_and_groove(tmp_path):
    # bar 1: C-E-G chord on beat 0 for 2 beats, rest; bar 2: one note on beat 1 (0-based) for 1 beat
    path = write_midi(tmp_path / "chord.mid", [(0, 2, 60), (0, 2, 64), (0, 2, 67), (5, 6, 72)])
    stats = midi_statistics(path)
    assert stats["polyphony"] == pytest.approx((3 * 32 + 16) / 48)
    assert stats["empty_beat_rate"] == pytest.approx(3 / 6)  # beats 2, 3, 4 of 0..5 are silent
    assert stats["note_density"] == pytest.approx(4 / 6)
    assert stats["groove_consistency"] == pytest.approx(1 - 2 / 64)  # onsets at step 0 vs step 16
    assert stats["pitch_range"] == 12


def test_time_signature_sets_bar_length(tmp_path):
    notes = [(3 * bar, 3 * bar + 1, 60) for bar in range(3)]
    assert midi_statistics(write_midi(tmp_path / "waltz.mid", notes, time_signature=(3, 4)))["groove_consistency"] == 1.0
    assert midi_statistics(write_midi(tmp_path / "four.mid", notes))["groove_consistency"] < 1.0


def test_drums_are_excluded_unless_asked(tmp_path):
    path = write_midi(tmp_path / "drums.mid", [(0, 1, 36), (1, 2, 38)], channel=9)
    assert math.isnan(midi_statistics(path)["pitch_class_entropy"])
    assert midi_statistics(path)["n_notes"] == 0
    assert midi_statistics(path, include_drums=True)["pitch_range"] == 2


def test_empty_file_gives_nan_not_errors(tmp_path):
    stats = midi_statistics(write_midi(tmp_path / "empty.mid", []))
    assert stats["n_notes"] == 0 and all(math.isnan(stats[key]) for key in ("polyphony", "groove_consistency"))


def test_read_notes_pairs_overlapping_notes_fifo_and_closes_open_ones(tmp_path):
    track = mido.MidiTrack([
        mido.Message("note_on", note=60, velocity=90, time=0), mido.Message("note_on", note=60, velocity=50, time=10),
        mido.Message("note_off", note=60, time=10), mido.Message("note_on", note=60, velocity=0, time=10),
        mido.Message("note_on", note=62, velocity=70, time=0), mido.MetaMessage("end_of_track", time=100)])
    midi = mido.MidiFile(ticks_per_beat=96)
    midi.tracks.append(track)
    notes = read_notes(midi).notes
    assert [(n.start, n.end, n.pitch, n.velocity) for n in notes] == [(0, 20, 60, 90), (10, 30, 60, 50),
                                                                      (30, 130, 62, 70)]


def test_compare_statistics_and_png(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_midi(tmp_path / "a" / "x.mid", [(i, i + 1, 60 + 2 * i) for i in range(8)])
    write_midi(tmp_path / "b" / "y.mid", [(0, 4, 60), (0, 4, 64)])
    (tmp_path / "b" / "broken.mid").write_bytes(b"not a midi file")
    report = compare_statistics({"gen": [a], "ref": tmp_path / "b"})
    assert report["sets"]["gen"]["summary"]["pitch_range"]["mean"] == 14
    assert report["sets"]["ref"]["n_files"] == 1 and list(report["sets"]["ref"]["skipped"]) == [
        str(tmp_path / "b" / "broken.mid")]
    json.dumps(report)  # serialisable
    png = draw_statistics_comparison(report, tmp_path / "cmp.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_find_midi_files_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such MIDI file or folder"):
        find_midi_files(tmp_path / "missing")
    with pytest.raises(ValueError, match="no MIDI files"):
        find_midi_files(tmp_path)


# ---------------------------------------------------------------------------------------------- NLL
def test_sliding_windows_predict_every_event_once():
    rows = np.arange(1100 * 8).reshape(1100, 8)
    windows = sliding_windows(rows)
    assert [len(w) for w in windows] == [513, 513, 76]
    assert [int(w[0, 0]) // 8 for w in windows] == [0, 512, 1024]
    assert sum(len(w) - 1 for w in windows) == 1099
    assert [len(w) for w in sliding_windows(rows[:513])] == [513]
    assert [len(w) for w in sliding_windows(rows[:514])] == [513, 2]
    assert sliding_windows(rows[:1]) == []
    with pytest.raises(ValueError, match="stride_events"):
        sliding_windows(rows, 513, 513)


@pytest.fixture(scope="module")
def tiny_model() -> MidiEventTransformerForCausalLM:
    return random_model()


def random_rows(events: int, seed: int) -> np.ndarray:
    generator = np.random.default_rng(seed)
    rows = generator.integers(3, 3406, size=(events, 8))
    lengths = generator.integers(1, 9, size=events)
    rows[np.arange(8)[None, :] >= lengths[:, None]] = PAD_ID
    return rows


def two_level_nll(model, window: np.ndarray) -> tuple[float, int]:
    """The reference's computation: event states of x = window[:-1], token decoder on [h, emb(y[:, :-1])]."""
    ids = torch.as_tensor(window)[None]  # (1, E, 8)
    x, y = ids[:, :-1], ids[:, 1:]
    with torch.no_grad():
        hidden = model.encode_events(x)[0]  # (E-1, H)
        rows = torch.cat([hidden[:, None], model.net_token.embed_tokens(y[0, :, :-1])], dim=1)  # (E-1, 8, H)
        logits = model.lm_head(model.decode_tokens(rows))  # (E-1, 8, V)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=PAD_ID, reduction="sum")
    return float(nll), int((y != PAD_ID).sum())


def test_nll_equals_two_level_computation_and_forward_loss(tiny_model):
    window = random_rows(40, seed=1)
    result = evaluate_nll(tiny_model, [window], progress=False)
    expected_sum, expected_tokens = two_level_nll(tiny_model, window)
    assert result.n_tokens == expected_tokens == int((window[1:] != PAD_ID).sum())
    assert result.per_token_nll == pytest.approx(expected_sum / expected_tokens, rel=1e-5)
    assert result.per_event_nll == pytest.approx(expected_sum / 39, rel=1e-5)
    flat = torch.as_tensor(window).reshape(1, -1)
    with torch.no_grad():
        loss = tiny_model(input_ids=flat, labels=flat.masked_fill(flat == PAD_ID, -100)).loss
    assert result.per_token_nll == pytest.approx(float(loss), rel=1e-5)
    assert 0 <= result.token_accuracy <= 1


def test_nll_over_windows_of_several_songs_is_token_weighted(tiny_model):
    songs = [random_rows(30, seed=2), random_rows(11, seed=3), random_rows(1, seed=4)]
    result = evaluate_nll(tiny_model, songs, window_events=9, stride_events=8, batch_size=3, progress=False)
    total, tokens = 0.0, 0
    for song in songs[:2]:
        for window in sliding_windows(song, 9, 8):
            nll, count = two_level_nll(tiny_model, window)
            total, tokens = total + nll, tokens + count
    assert result.n_windows == 4 + 2 and result.n_files == 2 and list(result.skipped) == ["array 2"]
    assert result.n_tokens == tokens and result.n_events == 29 + 10
    assert result.per_token_nll == pytest.approx(total / tokens, rel=1e-5)
    one_by_one = evaluate_nll(tiny_model, songs[:2], window_events=9, stride_events=8, batch_size=1, progress=False)
    assert one_by_one.total_nll == pytest.approx(result.total_nll, rel=1e-5)


def test_window_scores_count_correct_argmax(tiny_model):
    window = random_rows(6, seed=5)
    flat = torch.as_tensor(window).reshape(1, -1)
    with torch.no_grad():
        logits = tiny_model(input_ids=flat).logits[0, 7:-1]
    targets = flat[0, 8:]
    mask = targets != PAD_ID
    expected = int(((logits.argmax(-1) == targets) & mask).sum())
    assert window_token_scores(tiny_model, [window])[2] == expected


def test_nll_on_midi_files_and_evaluate_script(tiny_model, tmp_path):
    songs = tmp_path / "songs"
    songs.mkdir()
    write_midi(songs / "a.mid", [(i / 2, i / 2 + 0.5, 60 + i % 12) for i in range(40)])
    write_midi(songs / "b.mid", [(0, 1, 64), (1, 2, 67)])
    (songs / "bad.mid").write_bytes(b"MThd garbage")
    result = evaluate_nll(tiny_model, songs, progress=False)
    assert result.n_files == 2 and list(result.skipped) == [str(songs / "bad.mid")]
    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "evaluate.py"), "nll", "--model", str(model_dir), "--data",
         str(songs), "--quiet", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["per_token_nll"] == pytest.approx(result.per_token_nll, rel=1e-5)
    assert report["n_tokens"] == result.n_tokens
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "evaluate.py"), "stats", "--generated", str(songs / "a.mid"),
         "--reference", str(songs), "--png", str(tmp_path / "s.png"), "--quiet"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)["sets"]) == {"generated", "reference"}
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_nll_equals_the_reference_loss_on_its_own_window(shared_dir):
    """The reference's two-level loss on BOS + 64 events of POP909 song 001 (expected.npz) is our per-token NLL."""
    reference = shared_dir / "reference" / "skytnt_small"
    expected = np.load(reference / "expected.npz")
    model = MidiEventTransformerForCausalLM.from_pretrained(reference / "model").eval()
    result = evaluate_nll(model, [expected["input_ids"].reshape(-1, 8)], progress=False)
    assert result.n_windows == 1 and result.n_events == 64
    assert result.per_token_nll == pytest.approx(float(expected["loss"]), abs=1e-5)
