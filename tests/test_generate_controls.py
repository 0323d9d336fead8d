"""Controls, prompts and streamers through model.generate() with a tiny random model (both decoding loops)."""

from __future__ import annotations

import io
import threading

import mido
import numpy as np
import pytest
import torch
from generation_helpers import random_model, tiny_config

from midi_event_transformer.generation.controls import (
    DisableControlChangeLogitsProcessor,
    DisablePatchChangeLogitsProcessor,
    RestrictChannelsLogitsProcessor,
    RestrictInstrumentsLogitsProcessor,
)
from midi_event_transformer.generation.prompts import build_prompt, prompt_logits_processors
from midi_event_transformer.generation.streamers import MidiEventIteratorStreamer, MidiFileStreamer
from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer
from midi_event_transformer.vocabulary import EOS_ID, EVENT_TYPE_IDS, PARAMETER_OFFSETS

K = 8
N_EVENTS = 24
PATCH_CHANGE, CONTROL_CHANGE = EVENT_TYPE_IDS["patch_change"], EVENT_TYPE_IDS["control_change"]
CHANNEL_EVENTS = (EVENT_TYPE_IDS["note"], PATCH_CHANGE, CONTROL_CHANGE)


@pytest.fixture(scope="module")
def model() -> MidiEventTransformerForCausalLM:
    model = random_model(tiny_config(event_layers=1, token_layers=1))
    with torch.no_grad():  # patch and control changes likely, so that forbidding them is a real test
        for event_type in (PATCH_CHANGE, CONTROL_CHANGE):
            model.lm_head.weight[event_type] = model.lm_head.weight[event_type].sign() * 0.5
    return model


def generate(model, prompt: np.ndarray, processors, batch: int = 8, event_loop: bool = True, seed: int = 0,
             **kwargs) -> torch.Tensor:
    torch.manual_seed(seed)
    input_ids = torch.tensor(prompt).reshape(1, -1).repeat(batch, 1)
    out = model.generate(input_ids, logits_processor=processors, do_sample=True, max_new_tokens=N_EVENTS * K,
                         event_loop=event_loop, suppress_tokens=[EOS_ID], **kwargs)
    return out[:, input_ids.shape[1]:].reshape(out.shape[0], -1, K)  # (B, E, 8) generated rows


def generated_events(rows: torch.Tensor) -> list[list[int]]:
    return [row for sample in rows.tolist() for row in sample if row[0] != EOS_ID and any(row)]


@pytest.mark.parametrize("event_loop", [True, False])
def test_disable_patch_and_control_change(model, event_loop):
    prompt = build_prompt()
    free = generated_events(generate(model, prompt, [], event_loop=event_loop))
    assert {PATCH_CHANGE, CONTROL_CHANGE} <= {row[0] for row in free}  # they do appear without the controls
    controlled = generated_events(generate(model, prompt, [DisablePatchChangeLogitsProcessor(),
                                                           DisableControlChangeLogitsProcessor()],
                                           event_loop=event_loop))
    assert len(controlled) == 8 * N_EVENTS  # EOS is suppressed
    assert not {PATCH_CHANGE, CONTROL_CHANGE} & {row[0] for row in controlled}


@pytest.mark.parametrize("event_loop", [True, False])
def test_restrict_channels_and_instruments(model, event_loop):
    channels, patches, kits = [0, 3, 9], [0, 40], [32]
    processors = [RestrictChannelsLogitsProcessor(channels),
                  RestrictInstrumentsLogitsProcessor(patches, allowed_drum_kits=kits)]
    events = generated_events(generate(model, build_prompt(), processors, event_loop=event_loop, seed=1))
    with_channel = [row for row in events if row[0] in CHANNEL_EVENTS]
    patch_changes = [row for row in events if row[0] == PATCH_CHANGE]
    assert len(with_channel) > 50 and len(patch_changes) > 5
    assert {row[4] - PARAMETER_OFFSETS["channel"] for row in with_channel} <= set(channels)
    for row in patch_changes:
        allowed = kits if row[4] - PARAMETER_OFFSETS["channel"] == 9 else patches
        assert row[5] - PARAMETER_OFFSETS["patch"] in allowed


def test_prompt_and_its_controls_decode_to_the_request(model, tmp_path):
    tokenizer = MidiEventTransformerTokenizer()
    request = dict(instruments=["Violin", "Cello"], drum_kit="Jazz")
    prompt = build_prompt(**request, bpm=96, time_signature="3/4", key_signature="D minor")
    processors = prompt_logits_processors(**request, allow_control_change=False)
    out = generate(model, prompt, processors, batch=4, seed=2)
    for sample in out:
        rows = np.concatenate([prompt, sample.numpy()])
        buffer = io.BytesIO()
        tokenizer.decode_midi(rows).save(file=buffer)
        messages = [m for t in mido.MidiFile(file=io.BytesIO(buffer.getvalue())).tracks for m in t]
        assert round(mido.tempo2bpm(next(m.tempo for m in messages if m.type == "set_tempo"))) == 96
        first_signature = next(m for m in messages if m.type == "time_signature")
        assert (first_signature.numerator, first_signature.denominator) == (3, 4)
        assert next(m.key for m in messages if m.type == "key_signature") == "Dm"
        assert sorted((m.channel, m.program) for m in messages if m.type == "program_change") == [
            (0, 40), (1, 42), (9, 32)]
        assert not [m for m in messages if m.type == "control_change"]
        assert {m.channel for m in messages if m.type == "note_on"} <= {0, 1, 9}


@pytest.mark.parametrize("event_loop", [True, False])
def test_streamers_yield_exactly_the_generated_events(model, tmp_path, event_loop):
    prompt = build_prompt(instruments=["Piano"], bpm=120)
    iterator = MidiEventIteratorStreamer(skip_prompt=True, timeout=60)
    result = {}

    def run() -> None:
        result["rows"] = generate(model, prompt, [], batch=1, event_loop=event_loop, seed=3, streamer=iterator)

    thread = threading.Thread(target=run)
    thread.start()
    streamed = [row.tolist() for row in iterator]
    thread.join()
    assert streamed == generated_events(result["rows"]) and len(streamed) == N_EVENTS

    path = tmp_path / "live.mid"
    file_streamer = MidiFileStreamer(path, save_every=5)
    rows = generate(model, prompt, [], batch=1, event_loop=event_loop, seed=3, streamer=file_streamer)
    assert torch.equal(rows, result["rows"])
    expected = io.BytesIO()
    MidiEventTransformerTokenizer().decode_midi(np.concatenate([prompt, rows[0].numpy()])).save(file=expected)
    assert path.read_bytes() == expected.getvalue()


def test_streamer_refuses_batches(model):
    with pytest.raises(ValueError, match="only supports batch size 1"):
        generate(model, build_prompt(), [], batch=2, streamer=MidiEventIteratorStreamer())


def test_controls_with_beam_search(model):
    input_ids = torch.tensor(build_prompt()).reshape(1, -1)
    out = model.generate(input_ids, logits_processor=[DisablePatchChangeLogitsProcessor(),
                                                      RestrictChannelsLogitsProcessor([2])],
                         num_beams=3, num_return_sequences=2, max_new_tokens=10 * K, suppress_tokens=[EOS_ID])
    events = generated_events(out[:, K:].reshape(2, -1, K))
    assert len(events) == 20 and PATCH_CHANGE not in {row[0] for row in events}
    assert {row[4] for row in events if row[0] in CHANNEL_EVENTS} == {PARAMETER_OFFSETS["channel"] + 2}
