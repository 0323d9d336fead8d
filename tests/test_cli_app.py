"""``midi-event-transformer app``: its arguments, its errors, and the message without gradio (the serving itself is
tested in a browser by test_app_browser.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from generation_helpers import save_tiny_model

from midi_event_transformer import DEFAULT_MODEL
from midi_event_transformer.apps.cli import main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture()
def gradio():
    try:
        import gradio
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("gradio must be installed under CI=true (pip install -e '.[dev]')")
        pytest.skip('gradio not installed (pip install -e ".[app]")')
    return gradio


def test_app_serves_the_model_on_the_given_host_and_port(gradio, model_dir, monkeypatch, capsys):
    from midi_event_transformer.apps.web import MidiApp

    served = []
    monkeypatch.setattr(MidiApp, "launch", lambda self, host, port: served.append((self, host, port)))
    assert main(["app", "--model", str(model_dir), "--port", "7999", "--device", "cpu"]) == 0
    ((app, host, port),) = served
    assert (host, port) == ("127.0.0.1", 7999)  # this machine only, by default
    assert app.models.get()[0].name_or_path == str(model_dir)  # loaded before serving
    assert not app.output_dir.exists()  # removed when the server stops
    assert isinstance(app.blocks, gradio.Blocks)


def test_app_dtype_int8_serves_a_quantized_model_and_the_page_offers_it(gradio, model_dir, monkeypatch, capsys):
    from midi_event_transformer.apps.web import MidiApp
    from midi_event_transformer.generation.loading import is_int8_quantized

    served = []
    monkeypatch.setattr(MidiApp, "launch", lambda self, host, port: served.append(self))
    assert main(["app", "--model", str(model_dir), "--dtype", "int8"]) == 0
    (app,) = served
    assert is_int8_quantized(app.models.get()[0])
    dtype = app._widgets.options["dtype"]
    assert dtype.value == "int8" and [choice[1] for choice in dtype.choices] == [
        "auto", "float32", "bfloat16", "float16", "int8"]
    assert "4.1x" in dtype.info and "236 against 256 events/s" in dtype.info
    assert main(["app", "--model", str(model_dir), "--dtype", "int8", "--device", "cuda"]) == 2
    assert capsys.readouterr().err == ("midi-event-transformer: error: dtype int8 runs on the CPU only (dynamic "
                                       "quantization), not on cuda: use device='cpu' or a floating dtype\n")


def test_app_errors_are_one_line(gradio, model_dir, tmp_path, capsys):
    assert main(["app", "--model", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err == f"midi-event-transformer: error: model directory {tmp_path / 'missing'} does not exist\n"
    assert main(["app", "--model", str(model_dir), "--port", "70000"]) == 2
    assert "--port must be in 1..65535, got 70000" in capsys.readouterr().err


def test_app_without_gradio_says_what_to_install(model_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    assert main(["app", "--model", str(model_dir)]) == 2
    assert capsys.readouterr().err == ('midi-event-transformer: error: the web app needs gradio: pip install '
                                       '"midi-event-transformer[app]" (or pip install gradio)\n')


@pytest.mark.skipif(not (Path(DEFAULT_MODEL) / "config.json").is_file(),
                    reason="the embedded model (midi_event_transformer/default_model/) is not committed yet")
def test_app_uses_the_embedded_model_by_default(gradio, monkeypatch):
    from midi_event_transformer.apps.web import MidiApp

    served = []
    monkeypatch.setattr(MidiApp, "launch", lambda self, host, port: served.append(self.models.get()[0]))
    assert main(["app", "--device", "cpu"]) == 0
    assert Path(served[0].name_or_path) == Path(DEFAULT_MODEL)
