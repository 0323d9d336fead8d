"""int8 wherever a dtype is chosen (``generation.loading``): ``generate_midi(dtype="int8")``, a model passed in left
as it is, the CPU only, and the ``midi-generation`` pipeline with a model quantized beforehand. The CLI's and the
app's int8 options are tested in test_cli_generate.py and test_app_jobs.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from generation_helpers import midi_bytes, save_tiny_model, tiny_model
from transformers import pipeline

from midi_event_transformer import generate_midi
from midi_event_transformer.generation.loading import (
    DTYPE_NAMES,
    INT8,
    is_int8_quantized,
    load_model_and_tokenizer,
    quantized_int8_copy,
    resolve_dtype,
)
from midi_event_transformer.generation.requests import LoadingOptions
from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM

torch.set_num_threads(1)

REQUEST = dict(instruments=["Violin"], events=24, seed=3, progress=False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_model"))


def test_int8_is_a_dtype_name_and_its_help_gives_the_measured_figures():
    assert "int8" in DTYPE_NAMES
    assert resolve_dtype("int8") is INT8 and resolve_dtype(torch.qint8) is INT8 and resolve_dtype(torch.int8) is INT8
    (dtype,) = [f for f in LoadingOptions.__dataclass_fields__.values() if f.name == "dtype"]
    text = dtype.metadata["help"]
    assert "int8" in dtype.metadata["choices"]
    for figure in ("4.1x", "tv2o-medium", "236 against 256 events/s", "+0.006", "CPU only"):
        assert figure in text, figure


def test_generate_midi_int8_equals_a_model_quantized_by_hand(model_dir):
    by_hand, tokenizer = load_model_and_tokenizer(str(model_dir), device="cpu", dtype="float32")
    by_hand.quantize_dynamic_int8()
    expected = generate_midi(by_hand, tokenizer, **REQUEST)
    files = generate_midi(str(model_dir), dtype="int8", **REQUEST)
    assert [midi_bytes(m) for m in files] == [midi_bytes(m) for m in expected]
    assert [midi_bytes(m) for m in generate_midi(str(model_dir), dtype="int8", device="cpu", **REQUEST)] == [
        midi_bytes(m) for m in expected]
    loaded, _ = load_model_and_tokenizer(str(model_dir), dtype="int8")  # what generate_midi ran with
    assert is_int8_quantized(loaded) and loaded.device.type == "cpu"


def test_int8_never_changes_a_model_passed_in(model_dir):
    model = MidiEventTransformerForCausalLM.from_pretrained(str(model_dir)).eval()
    weights = {name: value.clone() for name, value in model.state_dict().items()}
    quantized, _ = load_model_and_tokenizer(model, dtype="int8")
    assert quantized is not model and is_int8_quantized(quantized) and not is_int8_quantized(model)
    assert all(torch.equal(weights[name], value) for name, value in model.state_dict().items())
    files = generate_midi(model, dtype="int8", **REQUEST)  # a copy each time; the model stays float
    assert not is_int8_quantized(model)
    assert [midi_bytes(m) for m in files] == [midi_bytes(m) for m in generate_midi(quantized, **REQUEST)]
    assert load_model_and_tokenizer(quantized, dtype="int8")[0] is quantized  # already int8: used as it is
    assert load_model_and_tokenizer(quantized)[0] is quantized
    with pytest.raises(ValueError, match="quantized to int8: it cannot compute in torch.bfloat16"):
        load_model_and_tokenizer(quantized, dtype="bfloat16")
    copy = quantized_int8_copy(model)
    assert copy is not model and is_int8_quantized(copy) and copy.device.type == "cpu"


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_int8_on_another_device_is_a_one_line_error_on_every_machine(device, model_dir):
    with pytest.raises(ValueError) as error:
        generate_midi(str(model_dir), dtype="int8", device=device, **REQUEST)
    assert str(error.value) == (f"dtype int8 runs on the CPU only (dynamic quantization), not on {device}: use "
                                "device='cpu' or a floating dtype")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_request_for_int8_is_a_one_line_error():
    model = tiny_model().to("cuda")
    for kwargs in (dict(model=model), dict(model=model, device="cuda"), dict(device="cuda:0")):
        with pytest.raises(ValueError, match="^dtype int8 runs on the CPU only") as error:
            load_model_and_tokenizer(dtype="int8", **kwargs)
        assert "\n" not in str(error.value)
    assert is_int8_quantized(load_model_and_tokenizer(model, dtype="int8", device="cpu")[0])  # a CPU copy
    assert model.device.type == "cuda" and not is_int8_quantized(model)


def test_the_pipeline_takes_a_model_quantized_beforehand(model_dir):
    model, tokenizer = load_model_and_tokenizer(str(model_dir), dtype="int8")
    pipe = pipeline("midi-generation", model=model, tokenizer=tokenizer)
    assert pipe.device.type == "cpu" and pipe.model is model
    request = {name: value for name, value in REQUEST.items()}
    outputs = pipe(None, **request)
    expected = generate_midi(str(model_dir), dtype="int8", **REQUEST)
    assert [midi_bytes(o["midi"]) for o in outputs] == [midi_bytes(m) for m in expected]
    with pytest.raises(ValueError, match="pass a model quantized beforehand"):
        pipeline("midi-generation", model=str(model_dir), dtype="int8")
    with pytest.raises(ValueError, match="runs on the CPU only"):
        pipeline("midi-generation", model=model, tokenizer=tokenizer, device="cuda")
