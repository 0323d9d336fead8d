"""MidiEventTransformerForCausalLM: flat forward, loss, padding, attention implementations, save/load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from generation_helpers import tiny_config as shared_tiny_config

from midi_event_transformer.configuration_midi_event_transformer import MidiEventTransformerConfig
from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM

V = 3406


def tiny_config(**kwargs) -> MidiEventTransformerConfig:
    return shared_tiny_config(event_layers=2, token_layers=2, **kwargs)


@pytest.fixture(scope="module")
def model() -> MidiEventTransformerForCausalLM:
    torch.manual_seed(0)
    return MidiEventTransformerForCausalLM(tiny_config()).eval()


def random_events(batch: int, events: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (batch, events, 8), generator=generator)
    lengths = torch.randint(4, 9, (batch, events), generator=generator)
    return ids.masked_fill(torch.arange(8) >= lengths[..., None], 0)  # (B, E, 8) with trailing pads


def test_parameter_names_match_reference_layout(model):
    names = set(model.state_dict())
    assert "lm_head.weight" in names
    for stack in ("net", "net_token"):
        assert f"{stack}.embed_tokens.weight" in names and f"{stack}.norm.weight" in names
        for proj in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            assert f"{stack}.layers.1.{proj}.weight" in names
        assert f"{stack}.layers.0.input_layernorm.weight" in names
        assert f"{stack}.layers.0.post_attention_layernorm.weight" in names
    assert not any("rotary" in name for name in names)


def test_initialisation_as_the_reference():
    """From scratch: linears and embeddings N(0, 0.02) with zero pad rows, lm_head nn.Linear's default
    (uniform within 1/sqrt(hidden)), as the reference's model starts; this trains markedly faster."""
    torch.manual_seed(0)
    config = MidiEventTransformerConfig(event_config={"hidden_size": 64, "intermediate_size": 96},
                                        token_config={"hidden_size": 64, "intermediate_size": 80})
    model = MidiEventTransformerForCausalLM(config)
    bound = 1 / 64 ** 0.5
    head = model.lm_head.weight
    assert head.abs().max() <= bound and head.abs().max() > 0.95 * bound
    assert abs(head.std().item() - bound / 3 ** 0.5) < 0.05 * bound  # uniform, not N(0, 0.02)
    assert abs(model.net.layers[0].mlp.up_proj.weight.std().item() - 0.02) < 0.002
    for stack in (model.net, model.net_token):
        assert abs(stack.embed_tokens.weight[1:].std().item() - 0.02) < 0.002
        assert torch.count_nonzero(stack.embed_tokens.weight[0]) == 0  # pad row


def test_loading_keeps_the_stored_lm_head(model, tmp_path):
    with torch.no_grad():
        model.lm_head.weight.mul_(3.0)
    try:
        model.save_pretrained(tmp_path)
        loaded = MidiEventTransformerForCausalLM.from_pretrained(tmp_path)
        torch.testing.assert_close(loaded.lm_head.weight, model.lm_head.weight, rtol=0, atol=0)
    finally:
        with torch.no_grad():
            model.lm_head.weight.div_(3.0)


def test_flat_and_3d_inputs_agree(model):
    events = random_events(2, 5)
    with torch.no_grad():
        flat = model(events.reshape(2, -1), use_cache=False).logits
        three_d = model(events, use_cache=False).logits
    assert flat.shape == (2, 40, V)
    torch.testing.assert_close(flat, three_d, rtol=0, atol=0)


def test_logits_layout_is_two_level(model):
    """Flat position 8e+7+j is row j of the token sequence [h_e, emb(event e+1 tokens)]; positions 0..6 are zeros."""
    events = random_events(1, 4)
    with torch.no_grad():
        flat = model(events, use_cache=False).logits[0]  # (32, V)
        hidden = model.encode_events(events)[0]  # (4, H)
        for e in range(3):
            rows = torch.cat([hidden[e:e + 1], model.net_token.embed_tokens(events[0, e + 1, :7])])[None]
            direct = model.lm_head(model.decode_tokens(rows))[0]  # (8, V)
            torch.testing.assert_close(flat[8 * e + 7:8 * e + 15], direct, rtol=0, atol=1e-5)
        last_row = model.lm_head(model.decode_tokens(hidden[None, 3:4]))[0, 0]
        torch.testing.assert_close(flat[31], last_row, rtol=0, atol=1e-5)
    assert torch.count_nonzero(flat[:7]) == 0


def two_level_loss(model, events: torch.Tensor) -> torch.Tensor:
    """The reference's training loss written directly: CE of next-event tokens from event states, pad ignored."""
    batch, n, k = events.shape
    hidden = model.encode_events(events[:, :-1])  # (B, E-1, H)
    targets = events[:, 1:]  # (B, E-1, 8)
    rows = torch.cat([hidden.unsqueeze(2), model.net_token.embed_tokens(targets[..., :-1])], dim=2)
    logits = model.lm_head(model.decode_tokens(rows.reshape(-1, k, hidden.shape[-1])))
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=0)


@pytest.mark.parametrize("start_with_bos", [True, False])
def test_flat_loss_equals_two_level_loss(model, start_with_bos):
    events = random_events(3, 6, seed=1)
    if start_with_bos:
        events[:, 0] = 0
        events[:, 0, 0] = 1
    labels = events.reshape(3, -1).masked_fill(events.reshape(3, -1) == 0, -100)
    with torch.no_grad():
        flat = model(events, labels=labels, use_cache=False).loss
        direct = two_level_loss(model, events)
        unmasked = model(events, labels=events.reshape(3, -1), use_cache=False).loss  # pad labels ignored too
    torch.testing.assert_close(flat, direct, rtol=0, atol=1e-5)
    torch.testing.assert_close(unmasked, direct, rtol=0, atol=1e-5)


def test_left_padding_by_whole_events(model):
    events = random_events(1, 4, seed=2).reshape(1, -1)
    padded = torch.cat([torch.zeros(1, 16, dtype=torch.long), events], dim=1)
    mask = torch.cat([torch.zeros(1, 16), torch.ones(1, 32)], dim=1).long()
    with torch.no_grad():
        alone = model(events, use_cache=False)
        batched = model(padded, attention_mask=mask, use_cache=False)
        alone_loss = model(events, labels=events, use_cache=False).loss
        padded_loss = model(padded, attention_mask=mask, labels=padded.masked_fill(mask == 0, -100), use_cache=False).loss
    torch.testing.assert_close(batched.logits[:, 16:], alone.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(padded_loss, alone_loss, rtol=0, atol=1e-5)


def test_attention_mask_only_read_at_event_starts(model):
    """generate() infers mask = ids != pad, which zeroes pads inside events: that must not matter."""
    events = random_events(2, 4, seed=3).reshape(2, -1)
    with torch.no_grad():
        plain = model(events, use_cache=False).logits
        inferred = model(events, attention_mask=(events != 0).long(), use_cache=False).logits
    torch.testing.assert_close(plain, inferred, rtol=0, atol=0)


def test_eager_matches_sdpa():
    torch.manual_seed(0)
    sdpa = MidiEventTransformerForCausalLM(tiny_config()).eval()
    eager = MidiEventTransformerForCausalLM(tiny_config()).eval()
    eager.load_state_dict(sdpa.state_dict())
    eager.set_attn_implementation("eager")
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    events = random_events(2, 5, seed=4).reshape(2, -1)
    padded = torch.cat([torch.zeros(2, 8, dtype=torch.long), events], 1)
    mask = torch.ones_like(padded)
    mask[0, :8] = 0
    with torch.no_grad():
        torch.testing.assert_close(eager(padded, attention_mask=mask).logits, sdpa(padded, attention_mask=mask).logits,
                                   rtol=0, atol=1e-5)


def test_each_level_can_have_its_own_attention_implementation():
    torch.manual_seed(0)
    sdpa = MidiEventTransformerForCausalLM(tiny_config()).eval()
    mixed = MidiEventTransformerForCausalLM(tiny_config(attn_implementation={"token_config": "eager"})).eval()
    mixed.load_state_dict(sdpa.state_dict())
    assert mixed.net.layers[0].self_attn.implementation == "sdpa"
    assert mixed.net_token.layers[0].self_attn.implementation == "eager"
    events = random_events(2, 6, seed=5).reshape(2, -1)
    labels = events.masked_fill(events == 0, -100)
    with torch.no_grad():
        torch.testing.assert_close(mixed(events).logits, sdpa(events).logits, rtol=0, atol=1e-5)
    mixed.train()
    loss = mixed(events, labels=labels).loss
    loss.backward()  # the eager token level trains
    assert mixed.net_token.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    mixed.set_attn_implementation("sdpa")  # a plain string applies to every level
    assert mixed.net_token.layers[0].self_attn.implementation == "sdpa"
    assert "_attn_implementation" not in str(mixed.config.to_dict())  # a runtime choice, not saved


def test_logits_to_keep(model):
    events = random_events(2, 3).reshape(2, -1)
    with torch.no_grad():
        full = model(events, use_cache=False).logits
        last = model(events, use_cache=False, logits_to_keep=1).logits
    assert last.shape == (2, 1, V)
    torch.testing.assert_close(last[:, 0], full[:, -1], rtol=0, atol=1e-6)


def loss_gradients(model: MidiEventTransformerForCausalLM, events: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradients of the flat training loss on ``events`` (B, E, 8) by parameter name."""
    model.zero_grad()
    model(events, labels=events.reshape(events.shape[0], -1)).loss.backward()
    return {name: param.grad.clone() for name, param in model.named_parameters()}


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(0)
    model = MidiEventTransformerForCausalLM(tiny_config()).train()
    events = random_events(2, 4, seed=5)
    plain = loss_gradients(model, events)
    model.gradient_checkpointing_enable()  # the name on every supported release (5.22 adds activation_...)
    for name, grad in loss_gradients(model, events).items():
        torch.testing.assert_close(grad, plain[name], rtol=0, atol=1e-6, msg=name)
    assert torch.count_nonzero(model.net.embed_tokens.weight.grad[0]) == 0  # pad embedding is not trained


def test_compiled_layers_same_loss_gradients_and_cached_steps():
    torch.manual_seed(0)
    model = MidiEventTransformerForCausalLM(tiny_config()).train()
    events = random_events(2, 5, seed=6)
    plain = loss_gradients(model, events)
    assert model.compile_layers(dynamic=False) is model
    for name, grad in loss_gradients(model, events).items():
        torch.testing.assert_close(grad, plain[name], rtol=1e-4, atol=1e-6, msg=name)
    model.eval()
    with torch.no_grad():  # cached calls take the eager layers: cached and uncached logits still agree
        full = model(events.reshape(2, -1), use_cache=False).logits
        first = model(events[:, :3].reshape(2, -1), use_cache=True)
        rest = model(events[:, 3:].reshape(2, -1), past_key_values=first.past_key_values, use_cache=True).logits
    torch.testing.assert_close(torch.cat([first.logits, rest], dim=1), full, rtol=1e-4, atol=1e-4)
    model.compile_layers(disable=True)
    assert all(layer.compiled_forward is None for layer in [*model.net.layers, *model.net_token.layers])


def test_bad_inputs(model):
    with pytest.raises(ValueError, match=r"\(batch, events, 8\)"):
        model(torch.zeros(1, 3, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.full((1, 8), V, dtype=torch.long))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.full((1, 8), -1, dtype=torch.long))
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.zeros(1, 8))
    with pytest.raises(ValueError, match="attention_mask must be"):
        model(torch.ones(1, 16, dtype=torch.long), attention_mask=torch.ones(1, 8))
    with pytest.raises(ValueError, match="inputs_embeds is not supported"):
        model(torch.ones(1, 8, dtype=torch.long), inputs_embeds=torch.zeros(1, 1, 24))
    with pytest.raises(ValueError, match="labels must match"):
        model(torch.ones(1, 16, dtype=torch.long), labels=torch.ones(1, 8, dtype=torch.long))


def test_save_load_round_trip_safetensors(model, tmp_path):
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(name.endswith((".bin", ".pt")) for name in files)
    loaded = MidiEventTransformerForCausalLM.from_pretrained(tmp_path).eval()
    events = random_events(2, 3).reshape(2, -1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(events).logits, model(events).logits, rtol=0, atol=1e-5)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
