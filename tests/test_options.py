"""The request options' one home (``generation.requests``): the CLI, the ``midi-generation`` pipeline and the web
app read their fields (``generate_midi``'s keywords are checked in test_generate_midi.py)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
import transformers
from generation_helpers import tiny_model

from midi_event_transformer.apps.cli import _option_values, build_parser
from midi_event_transformer.generation.hf_pipeline import MidiGenerationPipeline
from midi_event_transformer.generation.requests import (
    OPTION_METADATA,
    LoadingOptions,
    PromptOptions,
    SamplingOptions,
    option_fields,
)
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer

torch.set_num_threads(1)

#: Every flag the generate command had before its flags were read from the option fields (kept as they were).
GENERATE_FLAGS = {
    "--model", "--prompt", "--prompt-events", "--instruments", "--drum-kit", "--bpm", "--time-signature", "--key",
    "--no-control-change", "--max-rest-bars", "--add-track", "--regenerate-track", "--seconds", "--bars", "--context-events",
    "--events", "--temperature", "--top-p", "--top-k", "--seed", "--num-samples", "--device", "--dtype",
    "--infill-bars", "--infill-seconds", "--infill-tracks", "--output-dir", "--piano-roll", "--audio", "--no-progress",
}


def user_facing() -> set[str]:
    """The options a person sets (not the Python objects: tokenizer, streamer)."""
    return {f.name for f in option_fields() if not f.metadata.get("python_only")}


def subcommand(name: str):
    (subparsers,) = [a for a in build_parser()._actions if isinstance(a, type(build_parser()._subparsers._actions[-1]))]
    return subparsers.choices[name]


def test_every_field_has_help_and_known_metadata_keys():
    for option in option_fields():
        assert option.metadata.get("help"), option.name
        assert set(option.metadata) <= set(OPTION_METADATA), option.name


def test_the_generate_command_has_a_flag_for_every_option_and_keeps_its_flag_names():
    parser = subcommand("generate")
    assert user_facing() <= {action.dest for action in parser._actions}
    assert {flag for action in parser._actions for flag in action.option_strings} == GENERATE_FLAGS | {"-h", "--help"}
    args = parser.parse_args(["--no-control-change", "--no-progress", "--instruments", "Violin", "--instruments",
                              "Cello", "--bpm", "90", "--prompt-events", "8", "--dtype", "float16"])
    values = _option_values(args, (PromptOptions, SamplingOptions, LoadingOptions))
    assert set(values) == user_facing()
    assert (values["disable_control_change"], values["progress"], values["instruments"]) == (True, False,
                                                                                             "Violin,Cello")
    assert (values["bpm"], values["prompt_events"], values["dtype"]) == (90.0, 8, "float16")
    defaults = {f.name: f.default for f in option_fields() if f.name in user_facing()}
    assert _option_values(parser.parse_args([]), (PromptOptions, SamplingOptions, LoadingOptions)) == defaults
    app = subcommand("app")
    assert {f.name for f in dataclasses.fields(LoadingOptions) if f.name in user_facing()} <= {
        action.dest for action in app._actions}


def test_the_pipeline_takes_every_prompt_and_sampling_option():
    pipe = MidiGenerationPipeline(tiny_model(), MidiEventTransformerTokenizer(), device="cpu")
    every = {f.name: f.default for cls in (PromptOptions, SamplingOptions) for f in dataclasses.fields(cls)}
    del every["prompt"]  # the pipeline's input
    prompt, sampling, _ = pipe._sanitize_parameters(**every)
    assert set(prompt) | set(sampling) == set(every)
    assert set(prompt) <= {f.name for f in dataclasses.fields(PromptOptions)}
    # the loading options are pipeline()'s own arguments
    assert {f.name for f in dataclasses.fields(LoadingOptions)} <= set(inspect.signature(transformers.pipeline).parameters)


def test_the_app_covers_every_option_but_those_it_names():
    from midi_event_transformer.apps.web_jobs import NOT_ON_THE_PAGE, AppRequest

    request = {f.name for f in dataclasses.fields(AppRequest)}
    assert request | set(NOT_ON_THE_PAGE) == user_facing() and not request & set(NOT_ON_THE_PAGE)
    assert all(reason for reason in NOT_ON_THE_PAGE.values())
    defaults = {f.name: f.default for f in dataclasses.fields(AppRequest)}
    assert (defaults["events"], defaults["seed"]) == (512, 0)  # the app's own, declared by the fields
    assert {name: default for name, default in defaults.items() if name not in ("events", "seed")} == {
        f.name: f.default for f in option_fields() if f.name in request and f.name not in ("events", "seed")}


def test_the_page_has_a_control_for_every_request_field():
    pytest.importorskip("gradio", reason='gradio not installed (pip install -e ".[app]")')
    from midi_event_transformer.apps.web import LENGTH_UNITS, MidiApp
    from midi_event_transformer.apps.web_jobs import AppRequest

    app = MidiApp(tiny_model(), device="cpu")
    try:
        controls = set(app._widgets.options) | set(LENGTH_UNITS)  # the length box sets seconds or bars
        assert controls == {f.name for f in dataclasses.fields(AppRequest)}
    finally:
        app.close()
