"""generate(): event-level loop vs per-token loop, every decoding mode, grammar validity, stopping, streaming."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch
from generation_helpers import random_model, tiny_config
from transformers import LogitsProcessor, StoppingCriteria, TopKLogitsWarper
from transformers.generation.streamers import BaseStreamer

from midi_event_transformer.event_decoding import EventDecodingOptions
from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM
from midi_event_transformer.vocabulary import (
    BOS_ID,
    EOS_ID,
    EVENT_PARAMETERS,
    ID_TO_EVENT_TYPE,
    PAD_ID,
    parameter_range,
)

K = 8


@pytest.fixture(scope="module")
def model() -> MidiEventTransformerForCausalLM:
    model = random_model(tiny_config(event_layers=2, token_layers=2))
    with torch.no_grad():  # make EOS unlikely so that sequences are long, and scores less flat
        model.lm_head.weight.mul_(20)
        model.lm_head.weight[EOS_ID] = 0
    return model


def bos_prompt(batch: int = 1) -> torch.Tensor:
    prompt = torch.full((batch, K), PAD_ID)
    prompt[:, 0] = BOS_ID
    return prompt


def assert_grammatical(generated: torch.Tensor) -> int:
    """Every generated row is an event, EOS, or padding after EOS. Returns the number of events checked."""
    assert generated.shape[1] % K == 0
    count = 0
    for row_events in generated.view(generated.shape[0], -1, K).tolist():
        ended = False
        for event in row_events:
            if ended:
                assert event == [PAD_ID] * K
                continue
            if event[0] == EOS_ID:
                assert event[1:] == [PAD_ID] * (K - 1)
                ended = True
                continue
            parameters = EVENT_PARAMETERS[ID_TO_EVENT_TYPE[event[0]]]
            for slot, value in enumerate(event[1:]):
                if slot < len(parameters):
                    assert value in parameter_range(parameters[slot]), (event, slot)
                else:
                    assert value == PAD_ID, event
            count += 1
    return count


@pytest.mark.parametrize("prompt_events", [1, 3])
def test_greedy_event_loop_equals_per_token_loop(model, prompt_events):
    torch.manual_seed(1)
    prompt = bos_prompt()
    if prompt_events > 1:
        prompt = model.generate(prompt, max_new_tokens=(prompt_events - 1) * K, do_sample=True)
    for extra in (0, 3):  # also a prompt ending inside an event
        start = prompt if not extra else model.generate(prompt, max_new_tokens=extra, do_sample=False)
        fast = model.generate(start, max_new_tokens=12 * K, do_sample=False)
        slow = model.generate(start, max_new_tokens=12 * K, do_sample=False, event_loop=False)
        assert torch.equal(fast, slow)
        assert fast.shape[1] == start.shape[1] + 12 * K
        assert torch.equal(fast[:, :start.shape[1]], start)


@pytest.mark.parametrize("batch", [1, 3])
def test_greedy_from_a_prompt_shorter_than_one_event(model, batch):
    prompt = torch.full((batch, 1), BOS_ID)  # no complete event: the first event step starts the event level
    fast = model.generate(prompt, max_new_tokens=6 * K, do_sample=False)
    slow = model.generate(prompt, max_new_tokens=6 * K, do_sample=False, event_loop=False)
    assert torch.equal(fast, slow)
    assert_grammatical(fast[:, K:6 * K])  # the events after the one the prompt started


def test_event_loop_follows_each_levels_attention_implementation(model):
    expected = model.generate(bos_prompt(2), max_new_tokens=10 * K, do_sample=False)
    try:
        model.config.token_config._attn_implementation = "eager"
        fast = model.generate(bos_prompt(2), max_new_tokens=10 * K, do_sample=False)
        slow = model.generate(bos_prompt(2), max_new_tokens=10 * K, do_sample=False, event_loop=False)
    finally:
        model.config.token_config._attn_implementation = None
    assert torch.equal(fast, expected) and torch.equal(slow, expected)


def test_left_padded_batch_equals_each_prompt_alone(model):
    torch.manual_seed(2)
    short = model.generate(bos_prompt(), max_new_tokens=K, do_sample=True)  # 2 events
    long = model.generate(bos_prompt(), max_new_tokens=3 * K, do_sample=True)  # 4 events
    batch = torch.cat([torch.cat([torch.full((1, 2 * K), PAD_ID), short], 1), long])
    mask = torch.ones_like(batch)
    mask[0, :2 * K] = 0
    for event_loop in (True, False):
        together = model.generate(batch, attention_mask=mask, max_new_tokens=6 * K, do_sample=False,
                                  event_loop=event_loop)
        alone_short = model.generate(short, max_new_tokens=6 * K, do_sample=False)
        alone_long = model.generate(long, max_new_tokens=6 * K, do_sample=False)
        assert torch.equal(together[0, 2 * K:], alone_short[0])
        assert torch.equal(together[1], alone_long[0])


@pytest.mark.parametrize("event_loop", [True, False])
def test_sampling_modes_are_grammatical(model, event_loop):
    torch.manual_seed(3)
    out = model.generate(bos_prompt(4), max_new_tokens=30 * K, do_sample=True, temperature=1.7, top_k=50,
                         top_p=0.95, event_loop=event_loop)
    assert out.shape[0] == 4
    assert assert_grammatical(out[:, K:]) > 0


def test_grammar_validity_over_many_samples(model):
    torch.manual_seed(4)
    out = model.generate(bos_prompt(8), max_new_tokens=60 * K, do_sample=True, temperature=2.0,
                         suppress_tokens=[EOS_ID])
    assert assert_grammatical(out[:, K:]) == 8 * 60
    with_eos = model.generate(bos_prompt(8), max_new_tokens=30 * K, do_sample=True, temperature=2.0)
    assert_grammatical(with_eos[:, K:])


@pytest.mark.parametrize("batch", [1, 5])
def test_suppressed_parameter_ids_never_come(model, batch):
    pitches = parameter_range("pitch")
    suppressed = [EOS_ID, *range(pitches.start, pitches.start + len(pitches) - 1)]  # every pitch but the last
    torch.manual_seed(6)
    out = model.generate(bos_prompt(batch), max_new_tokens=40 * K, do_sample=True, temperature=3.0,
                         suppress_tokens=suppressed)
    assert assert_grammatical(out[:, K:]) == batch * 40
    assert not set(out[:, K:].flatten().tolist()) & set(suppressed)
    assert pitches.stop - 1 in out.flatten().tolist()  # the one pitch left is the pitch of every note


def test_sampling_is_reproducible_and_respects_top_k(model):
    torch.manual_seed(5)
    a = model.generate(bos_prompt(2), max_new_tokens=10 * K, do_sample=True, top_k=1)
    greedy = model.generate(bos_prompt(2), max_new_tokens=10 * K, do_sample=False)
    assert torch.equal(a, greedy)  # top_k=1 sampling is greedy
    torch.manual_seed(6)
    b = model.generate(bos_prompt(2), max_new_tokens=10 * K, do_sample=True, temperature=1.3)
    torch.manual_seed(6)
    c = model.generate(bos_prompt(2), max_new_tokens=10 * K, do_sample=True, temperature=1.3)
    assert torch.equal(b, c)


def test_the_first_token_is_sampled_with_top_k_and_top_p_too(model):
    """The fused top-k / top-p sampler also draws the token after the prefill (it used to be drawn from the whole
    distribution): top_k=1 with top_p is greedy from the first token on."""
    greedy = model.generate(bos_prompt(2), max_new_tokens=3 * K, do_sample=False)
    for seed in range(8):
        torch.manual_seed(seed)
        sampled = model.generate(bos_prompt(2), max_new_tokens=3 * K, do_sample=True, top_k=1, top_p=0.9)
        assert torch.equal(sampled, greedy), seed


def test_num_return_sequences(model):
    torch.manual_seed(7)
    out = model.generate(bos_prompt(2), max_new_tokens=5 * K, do_sample=True, num_return_sequences=3)
    assert out.shape == (6, 6 * K)
    assert assert_grammatical(out[:, K:]) > 0
    assert len({tuple(row) for row in out.tolist()}) > 1


def test_beam_search_uses_the_cache(model):
    out = model.generate(bos_prompt(2), max_new_tokens=4 * K, num_beams=3, do_sample=False)
    assert out.shape[0] == 2
    assert_grammatical(out[:, K:])
    sequences = model.generate(bos_prompt(1), max_new_tokens=3 * K, num_beams=3, num_return_sequences=2,
                               do_sample=False)
    assert sequences.shape[0] == 2
    assert_grammatical(sequences[:, K:])


class ForceEosAfter(LogitsProcessor):
    """Force EOS at the start of event ``events[row]`` (flat event index)."""

    def __init__(self, events: list[int]) -> None:
        self.events = events

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] % K == 0:
            for row, event in enumerate(self.events):
                if input_ids.shape[1] // K == event:
                    scores[row] = float("-inf")
                    scores[row, EOS_ID] = 0
        return scores


@pytest.mark.parametrize("event_loop", [True, False])
def test_eos_stops_and_pads(model, event_loop):
    out = model.generate(bos_prompt(2), max_new_tokens=20 * K, do_sample=False, event_loop=event_loop,
                         logits_processor=[ForceEosAfter([3, 5])])
    assert out.shape[1] == 6 * K  # stops after the last EOS, its event completed with pads
    assert out[0, 3 * K] == EOS_ID and (out[0, 3 * K + 1:] == PAD_ID).all()
    assert out[1, 5 * K] == EOS_ID and (out[1, 5 * K + 1:] == PAD_ID).all()
    assert_grammatical(out[:, K:])


class NoNotes(LogitsProcessor):
    def __call__(self, input_ids, scores):
        scores[:, 3] = float("-inf")
        return scores


class NoNotesCompact(NoNotes):
    def compact_call(self, input_ids, scores, offset):
        if offset <= 3 < offset + scores.shape[1]:
            scores[:, 3 - offset] = float("-inf")
        return scores


@pytest.mark.parametrize("processor", [NoNotes(), NoNotesCompact()])
def test_user_logits_processor(model, processor):
    torch.manual_seed(8)
    out = model.generate(bos_prompt(3), max_new_tokens=20 * K, do_sample=True, logits_processor=[processor])
    types = out[:, K::K]
    assert not (types == 3).any()
    assert_grammatical(out[:, K:])


class StopAfterEvents(StoppingCriteria):
    def __init__(self, events: int) -> None:
        self.events = events

    def __call__(self, input_ids, scores, **kwargs):
        done = input_ids.shape[1] >= self.events * K
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool)


@pytest.mark.parametrize("event_loop", [True, False])
def test_stopping_criteria(model, event_loop):
    out = model.generate(bos_prompt(), max_new_tokens=40 * K, do_sample=False, event_loop=event_loop,
                         stopping_criteria=[StopAfterEvents(4)])
    assert out.shape[1] == 4 * K


class Recorder(BaseStreamer):
    def __init__(self) -> None:
        self.chunks, self.ended = [], False

    def put(self, value):
        self.chunks.append(value.clone())

    def end(self):
        self.ended = True


@pytest.mark.parametrize("event_loop", [True, False])
def test_streamer_sees_every_token(model, event_loop):
    streamer = Recorder()
    out = model.generate(bos_prompt(), max_new_tokens=6 * K, do_sample=False, streamer=streamer,
                         event_loop=event_loop)
    assert streamer.ended
    assert torch.equal(streamer.chunks[0].view(1, -1), bos_prompt())
    assert torch.equal(torch.cat([c.view(-1) for c in streamer.chunks[1:]]), out[0, K:])


def test_three_dimensional_prompt_and_bad_prompt(model):
    out = model.generate(bos_prompt().view(1, 1, K), max_new_tokens=2 * K, do_sample=False)
    assert out.shape == (1, 3 * K)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.generate(torch.full((1, K), 99999), max_new_tokens=K)


def test_grammar_can_be_disabled(model):
    out = model.generate(bos_prompt(), max_new_tokens=K, do_sample=False, midi_grammar=False)
    assert out.shape == (1, 2 * K)


def test_top_k_top_p_sampler_draws_as_multinomial():
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    from midi_event_transformer.event_decoding import _TopKTopPSampler

    sampler = _TopKTopPSampler(TopKLogitsWarper(top_k=20), TopPLogitsWarper(top_p=0.9))
    scores = torch.randn(5, 130, generator=torch.Generator().manual_seed(0)) * 2
    values, indices = torch.topk(scores, 20)
    probs = torch.softmax(values, dim=-1)
    kept = probs.masked_fill(probs.cumsum(dim=-1) - probs >= 0.9, 0.0)
    for seed in range(20):
        torch.manual_seed(seed)
        expected = indices.gather(1, torch.multinomial(kept, num_samples=1)).squeeze(1)
        torch.manual_seed(seed)
        assert torch.equal(sampler(scores), expected)


def test_event_loop_hands_out_ordinary_tensors():
    """The model steps run under inference_mode; nothing of it reaches the caller, the streamer or the cache."""
    from midi_event_transformer.cache_midi_event_transformer import MidiEventTransformerCache

    seen = []

    class Recorder(BaseStreamer):
        def put(self, value):
            seen.append(value)

        def end(self):
            pass

    model = random_model()
    cache = MidiEventTransformerCache(model.config)
    out = model.generate(bos_prompt(2), max_new_tokens=8 * 70, do_sample=True, top_k=5, streamer=Recorder(),
                         past_key_values=cache, suppress_tokens=[EOS_ID])  # 70 events: the buffers grow
    assert out.shape[1] == 8 * 71
    assert seen and not any(value.is_inference() for value in seen)
    assert not out.is_inference()
    out[:, -1] = 0  # in-place use outside inference mode works
    with torch.no_grad():  # the cache is usable again: its buffers are ordinary tensors, not inference tensors
        model(bos_prompt(2), past_key_values=cache, use_cache=True)


@pytest.mark.parametrize("variant", ["bfloat16", "int8"])
def test_event_loop_runs_bfloat16_and_int8_models(variant):
    model = random_model()
    model = model.to(torch.bfloat16) if variant == "bfloat16" else model.quantize_dynamic_int8()
    torch.manual_seed(0)
    sampled = model.generate(bos_prompt(2), max_new_tokens=12 * K, do_sample=True, top_k=20, top_p=0.98)
    assert assert_grammatical(sampled[:, K:]) > 0
    greedy = model.generate(bos_prompt(), max_new_tokens=6 * K, do_sample=False)
    per_token = model.generate(bos_prompt(), max_new_tokens=6 * K, do_sample=False, event_loop=False)
    assert torch.equal(greedy, per_token)


def test_each_mechanism_of_the_loop_keeps_the_greedy_output(model):
    """Every mechanism ``EventDecodingOptions`` switches off (``scripts/bench_mechanisms.py`` measures each so) leaves
    greedy output unchanged (they change only how fast the same tokens come), in a batch of 2; so does all off."""
    expected = model.generate(bos_prompt(2), max_new_tokens=10 * K, do_sample=False)
    mechanisms = [field.name for field in dataclasses.fields(EventDecodingOptions)]
    for switches in [{name: False} for name in mechanisms] + [dict.fromkeys(mechanisms, False)]:
        greedy = model.generate(bos_prompt(2), max_new_tokens=10 * K, do_sample=False,
                                decoding_options=EventDecodingOptions(**switches))
        assert torch.equal(greedy, expected), switches
    torch.manual_seed(0)  # sampling through the token steps of pad slots and the plain warpers: still grammatical
    sampled = model.generate(bos_prompt(2), max_new_tokens=10 * K, do_sample=True, top_k=20, top_p=0.9,
                             decoding_options=EventDecodingOptions(skip_forced_pads=False, fused_top_k_top_p=False))
    assert assert_grammatical(sampled[:, K:]) > 0


def test_each_decoding_option_takes_its_mechanism_out(model, monkeypatch):
    """With one option off, the loop does the plain thing instead: a probe per mechanism counts what it saves."""
    counts: Counter[str] = Counter()

    def counter(name: str):
        return lambda *args: counts.update([name])

    hooks = [model.net_token.layers[0].mlp.down_proj.register_forward_hook(counter("token steps")),
             model.lm_head.register_forward_hook(counter("full lm_head products")),
             model.net_token.embed_tokens.register_forward_hook(counter("token embeddings")),
             model.net.norm.register_forward_hook(counter("norm module calls"))]
    top_k = TopKLogitsWarper.__call__
    monkeypatch.setattr(TopKLogitsWarper, "__call__",
                        lambda self, ids, scores: counts.update(["top-k warper calls"]) or top_k(self, ids, scores))

    class InferenceModeProbe(LogitsProcessor):
        def __call__(self, input_ids, scores):
            counts.update([] if torch.is_inference_mode_enabled() else ["scores outside inference mode"])
            return scores

        def compact_call(self, input_ids, scores, offset):
            return self(input_ids, scores)

    def run(**switches) -> Counter[str]:
        counts.clear()
        torch.manual_seed(0)
        # batch 1, EOS banned: 10 row-1 token steps on at most 6 event types, so some (id, row) pairs repeat
        model.generate(bos_prompt(1), max_new_tokens=10 * K, do_sample=True, top_k=20, top_p=0.9,
                       suppress_tokens=[EOS_ID], logits_processor=[InferenceModeProbe()],
                       decoding_options=EventDecodingOptions(**switches))
        return Counter(counts)

    probes = {"skip_forced_pads": "token steps", "grammar_span_scoring": "full lm_head products",
              "fused_top_k_top_p": "top-k warper calls", "token_input_lookup": "token embeddings",
              "fused_rms_norm": "norm module calls", "inference_mode": "scores outside inference mode"}
    assert set(probes) == {field.name for field in dataclasses.fields(EventDecodingOptions)}
    try:
        shipped = run()
        for mechanism, probe in probes.items():
            assert run(**{mechanism: False})[probe] > shipped[probe], (mechanism, probe)
    finally:
        for hook in hooks:
            hook.remove()


def test_decoding_options_are_frozen_and_checked(model):
    options = EventDecodingOptions()
    assert all(getattr(options, field.name) is True for field in dataclasses.fields(options))
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.inference_mode = False
    with pytest.raises(TypeError, match="EventDecodingOptions"):
        model.generate(bos_prompt(), max_new_tokens=K, decoding_options={"inference_mode": False})
    # the per-token loop has none of these mechanisms: it ignores them
    expected = model.generate(bos_prompt(), max_new_tokens=4 * K, do_sample=False, event_loop=False)
    assert torch.equal(model.generate(bos_prompt(), max_new_tokens=4 * K, do_sample=False, event_loop=False,
                                      decoding_options=EventDecodingOptions(inference_mode=False)), expected)
