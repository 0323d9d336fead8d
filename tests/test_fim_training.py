"""Fill-in-the-middle training: the vocabulary resize, FIM windows in MidiWindowDataset, train.py --fim_rate."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from generation_helpers import load_script, random_model, tiny_config

from midi_event_transformer.configuration_midi_event_transformer import MidiEventTransformerConfig
from midi_event_transformer.generation.fim import event_steps, is_event_row, join_fim_rows, split_fim_rows
from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM
from midi_event_transformer.training.data import DataCollatorForMidiEvents, MidiWindowDataset
from midi_event_transformer.vocabulary import (
    BOS_ID,
    EOS_ID,
    FIM_MIDDLE_ID,
    FIM_SPAN_ID,
    FIM_VOCAB_SIZE,
    PAD_ID,
    VOCAB_SIZE,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def random_ids(batch: int, events: int, seed: int = 0, vocab: int = VOCAB_SIZE) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, events, 8), generator=generator)
    return ids.reshape(batch, -1)


def test_config_flag_is_validated_and_optional():
    assert MidiEventTransformerConfig().fill_in_the_middle is False
    with pytest.raises(ValueError, match="needs vocab_size >= 3408"):
        MidiEventTransformerConfig(fill_in_the_middle=True)
    with pytest.raises(ValueError, match="must be a bool"):
        MidiEventTransformerConfig(vocab_size=FIM_VOCAB_SIZE, fill_in_the_middle="yes")
    config = MidiEventTransformerConfig(vocab_size=FIM_VOCAB_SIZE, fill_in_the_middle=True)
    assert MidiEventTransformerConfig.from_dict(config.to_dict()).fill_in_the_middle is True
    old = config.to_dict()
    del old["fill_in_the_middle"]  # a config saved before the field existed
    assert MidiEventTransformerConfig.from_dict(old).fill_in_the_middle is False


def test_resize_keeps_the_old_logits(tmp_path):
    model = random_model(tiny_config())
    ids = random_ids(2, 5)
    with torch.no_grad():
        before = model(input_ids=ids).logits
    assert model.resize_for_fim() is model
    assert model.config.vocab_size == FIM_VOCAB_SIZE and model.config.fill_in_the_middle
    for table in (model.net.embed_tokens.weight, model.net_token.embed_tokens.weight, model.lm_head.weight):
        assert table.shape == (FIM_VOCAB_SIZE, 24) and table.requires_grad
        mean = torch.cat([table[:PAD_ID], table[PAD_ID + 1:VOCAB_SIZE]]).mean(0)
        torch.testing.assert_close(table[FIM_SPAN_ID], mean)
        torch.testing.assert_close(table[FIM_MIDDLE_ID], mean)
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert after.shape[-1] == FIM_VOCAB_SIZE
    torch.testing.assert_close(after[..., :VOCAB_SIZE], before, rtol=0, atol=1e-6)
    # sentinel rows are accepted as input now, and the model saves and reloads with them
    fim = torch.cat([ids[:, :8], torch.tensor([[FIM_SPAN_ID] + [PAD_ID] * 7] * 2), ids[:, 8:]], dim=1)
    model.save_pretrained(tmp_path)
    reloaded = MidiEventTransformerForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.fill_in_the_middle and reloaded.config.vocab_size == FIM_VOCAB_SIZE
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=fim).logits, model(input_ids=fim).logits)
    weight = model.lm_head.weight.clone()
    model.resize_for_fim()  # already resized: nothing changes
    assert torch.equal(model.lm_head.weight, weight)
    control = random_model(tiny_config()).resize_for_fim(fill_in_the_middle=False)
    assert control.config.vocab_size == FIM_VOCAB_SIZE and not control.config.fill_in_the_middle


def test_resized_model_generates_no_sentinel():
    model = random_model(tiny_config()).resize_for_fim()
    prompt = torch.tensor([[BOS_ID] + [PAD_ID] * 7])
    with torch.no_grad():
        model.lm_head.weight[FIM_SPAN_ID:] += 100.0  # the sentinels would win without the grammar
        out = model.generate(input_ids=prompt, max_new_tokens=64, do_sample=False)
    assert int(out.max()) < VOCAB_SIZE


def song(seed: int, n: int = 300) -> np.ndarray:
    """BOS, n notes at random rising steps, EOS (as the tokenizer writes them)."""
    from midi_event_transformer.generation.prompts import event_row

    rng = np.random.default_rng(seed)
    steps = np.sort(rng.integers(0, 16 * 200, n))
    rows, beat = [np.array([BOS_ID] + [PAD_ID] * 7)], 0
    for i, step in enumerate(steps.tolist()):
        rows.append(event_row("note", time1=step // 16 - beat, time2=step % 16, track=0, channel=0,
                              pitch=30 + i % 90, velocity=70, duration=8))
        beat = step // 16
    rows.append(np.array([EOS_ID] + [PAD_ID] * 7))
    return np.stack(rows).astype(np.int64)


@pytest.fixture(scope="module")
def songs() -> datasets.Dataset:
    pieces = [song(i, n) for i, n in enumerate([300, 120, 40, 300])]
    return datasets.Dataset.from_dict({"name": [f"s{i}" for i in range(len(pieces))],
                                       "input_ids": [p.reshape(-1).astype(np.int16) for p in pieces],
                                       "num_events": [len(p) for p in pieces]})


def test_fim_windows(songs):
    plain = MidiWindowDataset(songs, 128, seed=3)
    fim = MidiWindowDataset(songs, 128, seed=3, fim_rate=1.0)
    half = MidiWindowDataset(songs, 128, seed=3, fim_rate=0.5)
    seen = {"fim": 0, "plain": 0}
    for epoch in range(6):
        for dataset in (plain, fim, half):
            dataset.set_epoch(epoch)
        for index in range(len(songs)):
            window, example = plain[index].numpy(), fim[index].numpy()
            assert len(example) <= 128
            again = half[index].numpy()
            assert np.array_equal(again, example) or np.array_equal(again, window)  # the same draws at any rate
            seen["fim" if (again[:, 0] == FIM_SPAN_ID).any() else "plain"] += 1
            assert (example[:, 0] == FIM_SPAN_ID).sum() == 2 and (example[:, 0] == FIM_MIDDLE_ID).sum() == 1
            parts = split_fim_rows(example)
            assert parts.ended or len(parts.suffix) == 0
            span_bars = (parts.end_step - parts.start_step) / 64  # no time signature: 4/4
            assert span_bars == int(span_bars) and 1 <= span_bars <= 8
            joined = join_fim_rows(example)  # the window's first rows, each event at its step (no EOS)
            np.testing.assert_array_equal(joined, window[:len(joined)])
            if len(window) + 4 <= 128:  # nothing dropped: the whole window but its EOS
                assert len(joined) == len(window) - (window[-1, 0] == EOS_ID)
            assert np.array_equal(fim[index].numpy(), example)  # a function of (seed, epoch, index)
    assert seen["fim"] > 4 and seen["plain"] > 4
    batch = DataCollatorForMidiEvents()([fim[0], fim[1]])
    assert batch["input_ids"].max() >= FIM_SPAN_ID
    with pytest.raises(ValueError, match="fim_rate"):
        MidiWindowDataset(songs, 128, fim_rate=1.5)


def test_fim_window_bars_come_from_the_whole_song(songs):
    """A window cut inside a song: the span is on the song's bar lines (4/4: multiples of 64 steps)."""
    dataset = MidiWindowDataset(songs, 64, seed=0, fim_rate=1.0)
    rows = songs.with_format("numpy")[0]["input_ids"].astype(np.int64).reshape(-1, 8)
    steps = event_steps(rows)
    checked = 0
    for epoch in range(10):
        dataset.set_epoch(epoch)
        example = dataset[0].numpy()
        spans = np.flatnonzero(example[:, 0] == FIM_SPAN_ID)
        if len(spans) == 0 or example[spans[1] + 1, 0] == BOS_ID:
            continue
        row0 = example[spans[1] + 1]  # the window's first row starts the prefix
        first = next(i for i in range(1, len(rows)) if np.array_equal(rows[i], row0))
        parts = split_fim_rows(example, previous_step=int(steps[first - 1]))
        assert parts.start_step % 64 == 0 and parts.end_step % 64 == 0
        events = is_event_row(parts.middle)
        assert set(parts.middle_steps[events].tolist()) <= set(steps[first:first + 64].tolist())
        checked += 1
    assert checked


def test_train_script_fim_rate(pop909_files, tmp_path):
    base = tmp_path / "base"
    random_model(tiny_config()).save_pretrained(base)
    out = tmp_path / "run"
    load_script("train").main([
        "--data", *[str(p) for p in pop909_files[:4]], "--init_from", str(base), "--output_dir", str(out),
        "--max_events", "48", "--batch_size", "2", "--max_steps", "3", "--warmup_steps", "1", "--log_every", "1",
        "--eval_every", "0", "--save_every", "0", "--validation_fraction", "0", "--final_eval", "false",
        "--num_threads", "1", "--fim_rate", "0.5"])
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["vocab_size"] == FIM_VOCAB_SIZE and config["fill_in_the_middle"] is True
    saved = MidiEventTransformerForCausalLM.from_pretrained(out / "final")
    assert saved.lm_head.weight.shape[0] == FIM_VOCAB_SIZE and saved.dtype == torch.float32
