"""Pieces longer than the context (``sliding_window``): window after window of ``model.generate``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from generation_helpers import grammar_problems, tiny_model

from midi_event_transformer import DEFAULT_MODEL
from midi_event_transformer.generation.api import generate_rows
from midi_event_transformer.generation.prompts import build_prompt
from midi_event_transformer.generation.sliding_window import (
    WindowedEventReader,
    default_context_events,
    generate_in_windows,
)
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer
from midi_event_transformer.vocabulary import BOS_ID, EOS_ID, PAD_ID, TOKENS_PER_EVENT

torch.set_num_threads(1)
TOKENIZER = MidiEventTransformerTokenizer()
SAMPLING = dict(do_sample=True, top_k=20, top_p=0.94, pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID)


class _CountingModel:
    """Wraps a model and records the prompt length (in events) of each ``generate`` call."""

    def __init__(self, model) -> None:
        self.model, self.prompts = model, []
        self.device, self.config = model.device, model.config

    def generate(self, input_ids, **kwargs):
        self.prompts.append(input_ids.shape[1] // TOKENS_PER_EVENT)
        return self.model.generate(input_ids, **kwargs)


def test_finishes_with_the_asked_events_and_no_call_sees_more_than_the_window():
    model = _CountingModel(tiny_model())
    prompt = build_prompt(instruments=["Violin"], bpm=100)
    torch.manual_seed(0)
    (rows,) = generate_in_windows(model, [prompt], max_events=100, context_events=24, keep_events=16, **SAMPLING)
    assert rows.shape == (len(prompt) + 100, 8) and grammar_problems(rows) == []
    assert np.array_equal(rows[:len(prompt)], prompt)
    assert model.prompts == [3] + [16] * 10  # 21 events, then 8 a call from the last 16 (7 in the last one)
    assert max(model.prompts) + 8 <= 24


def test_one_window_is_one_generate_call_with_the_same_result():
    """A request that fits the window gives exactly what a single ``generate`` call gives."""
    model = tiny_model()
    prompt = build_prompt(instruments=["Piano"])
    torch.manual_seed(3)
    (windowed,) = generate_in_windows(model, [prompt], max_events=30, context_events=64, **SAMPLING)
    torch.manual_seed(3)
    direct = model.generate(torch.as_tensor(prompt).reshape(1, -1), max_new_tokens=30 * 8, **SAMPLING)
    assert np.array_equal(windowed.reshape(-1), direct[0].numpy())


def test_generate_rows_beyond_the_window_and_the_position_embeddings():
    model = tiny_model()
    model.config.event_config.max_position_embeddings = 40  # the model is "meant for" 40 events
    assert default_context_events(model) == 40
    samples = generate_rows(model, TOKENIZER, events=150, seed=0, num_samples=2, progress=False)
    for rows in samples:
        assert rows.shape == (151, 8) and grammar_problems(rows) == []
    again = generate_rows(model, TOKENIZER, events=150, seed=0, num_samples=2, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(samples, again, strict=True))  # seeded


def test_a_prompt_longer_than_the_window_is_cut_but_kept_in_the_output():
    model = _CountingModel(tiny_model())
    prompt = generate_rows(tiny_model(), TOKENIZER, events=60, seed=1, progress=False)[0]
    (rows,) = generate_in_windows(model, [prompt], max_events=10, context_events=32, **SAMPLING)
    assert np.array_equal(rows[:len(prompt)], prompt) and len(rows) == len(prompt) + 10
    assert model.prompts == [16]  # its last 16 events (half the window), then the 10 events in one call


def test_samples_that_end_drop_out_of_the_batch():
    model = tiny_model()
    model.generation_config.suppress_tokens = None  # EOS may come
    prompts = [build_prompt(bpm=90), build_prompt(instruments=["Piano", "Violin"])]  # different lengths
    torch.manual_seed(0)
    outputs = generate_in_windows(model, prompts, max_events=200, context_events=20, **SAMPLING)
    for rows, prompt in zip(outputs, prompts, strict=True):
        assert np.array_equal(rows[:len(prompt)], prompt)
        assert not np.isin(rows[len(prompt):, 0], (EOS_ID, PAD_ID, BOS_ID)).any() and grammar_problems(rows) == []


def test_window_arguments_are_checked():
    model = tiny_model()
    for kwargs, message in [(dict(context_events=8, keep_events=8), r"keep_events \(8\) must be smaller"),
                            (dict(context_events=1), "context_events must be >= 2")]:
        with pytest.raises(ValueError, match=message):
            generate_in_windows(model, [build_prompt()], max_events=4, **kwargs)
    with pytest.raises(ValueError, match="context_events must be >= 2"):
        generate_rows(model, TOKENIZER, events=4, context_events=1, progress=False)


def test_reader_hands_each_event_once_across_windows():
    reader = WindowedEventReader()
    rows = torch.arange(1, 1 + 5 * 8).reshape(1, -1)
    assert reader.new_events(rows[:, :12]) == []  # a plain call: its first whole event is the prompt
    assert reader.new_events(rows[:, :16]) == [(0, 0, [list(range(9, 17))])]
    assert reader.new_events(rows[:, :16]) == []
    reader.start_window([3], prompt_length=16)  # a new call for sample 3 whose prompt has been read
    assert reader.new_events(rows[:, :24]) == [(0, 3, [list(range(17, 25))])]


@pytest.mark.skipif(not (Path(DEFAULT_MODEL) / "config.json").is_file(),
                    reason="the embedded model (midi_event_transformer/default_model/) is not committed yet")
@pytest.mark.slow
def test_embedded_model_writes_3000_events():
    from midi_event_transformer.generation.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(None, device="cpu")
    model.generation_config.suppress_tokens = [EOS_ID]
    (rows,) = generate_rows(model, tokenizer, events=3000, seed=0, progress=False)
    assert len(rows) == 3001 and grammar_problems(rows) == []
