"""``generate_midi`` / ``generate_rows`` end to end on a tiny random model (and on the embedded model if present)."""

from __future__ import annotations

import json
from pathlib import Path

import mido
import numpy as np
import pytest
import torch
from generation_helpers import (
    event_types,
    grammar_problems,
    messages,
    midi_bytes,
    multitrack_song,
    programs,
    reloaded,
    save_tiny_model,
    tiny_model,
)

from midi_event_transformer import DEFAULT_MODEL, InvalidMidiError, generate_midi
from midi_event_transformer.generation.api import generate_rows
from midi_event_transformer.generation.loading import load_model_and_tokenizer
from midi_event_transformer.generation.requests import build_generation_prompt
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer
from midi_event_transformer.vocabulary import BOS_ID

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def model_and_tokenizer(model_dir):
    return load_model_and_tokenizer(str(model_dir), device="cpu")


@pytest.fixture()
def song(tmp_path) -> Path:
    """A short two-instrument piece in 3/4 with a tempo change."""
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    midi.tracks.append(mido.MidiTrack([mido.MetaMessage("time_signature", numerator=3, denominator=4),
                                       mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(90))]))
    notes = mido.MidiTrack([mido.Message("program_change", channel=0, program=40)])
    for index, pitch in enumerate([62, 65, 69, 74, 72, 70]):
        notes.append(mido.Message("note_on", channel=0, note=pitch, velocity=90, time=0 if index == 0 else 240))
        notes.append(mido.Message("note_off", channel=0, note=pitch, velocity=0, time=240))
    midi.tracks.append(notes)
    path = tmp_path / "song.mid"
    midi.save(path)
    return path


CONTROLS = dict(instruments=["Acoustic Grand Piano", "violin"], drum_kit="Jazz", bpm=97, time_signature="3/4",
                key="D minor")


def test_files_decode_and_carry_the_requested_controls(model_dir):
    files = generate_midi(str(model_dir), **CONTROLS, events=24, seed=0, num_samples=2, progress=False)
    assert len(files) == 2
    for midi in files:
        midi = reloaded(midi)
        assert programs(midi) >= {(0, 0), (1, 40), (9, 32)}  # piano ch 1, violin ch 2, Jazz kit on ch 10
        # the prompt's signatures come first (a random model adds more later)
        assert [(m.numerator, m.denominator) for m in messages(midi, "time_signature")][0] == (3, 4)
        assert [m.key for m in messages(midi, "key_signature")][0] == "Dm"
        assert round(mido.tempo2bpm(messages(midi, "set_tempo")[0].tempo)) == 97
        assert messages(midi, "note_on")  # the model wrote notes


def test_rows_are_grammatical_and_have_the_asked_length(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompt, _ = build_generation_prompt(**CONTROLS)
    samples = generate_rows(model, tokenizer, **CONTROLS, events=40, seed=1, num_samples=3, progress=False)
    assert len(samples) == 3
    for rows in samples:
        assert rows.shape == (len(prompt) + 40, 8) and rows.dtype == np.int64
        np.testing.assert_array_equal(rows[:len(prompt)], prompt)
        assert grammar_problems(rows) == []
    assert not all(np.array_equal(samples[0], other) for other in samples[1:])  # a batch of different pieces


def test_instruments_are_kept(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    unconstrained = generate_rows(model, tokenizer, events=60, seed=2, num_samples=2, progress=False)
    assert any("patch_change" in event_types(rows[1:]) for rows in unconstrained)  # otherwise the test proves nothing
    prompt, _ = build_generation_prompt(instruments="Violin, Cello", drum_kit="Standard")
    for rows in generate_rows(model, tokenizer, instruments="Violin, Cello", drum_kit="Standard", events=60, seed=2,
                              num_samples=2, progress=False):
        generated = rows[len(prompt):]
        assert "patch_change" not in event_types(generated)
        midi = tokenizer.decode_midi(rows)
        assert {(m.channel, m.program) for m in messages(midi, "program_change")} == {(0, 40), (1, 42), (9, 0)}
        assert {m.channel for m in messages(midi, "note_on") + messages(midi, "control_change")} <= {0, 1, 9}


def test_disable_control_change(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    allowed = generate_midi(model, tokenizer, events=60, seed=3, num_samples=2, progress=False)
    assert sum(len(messages(midi, "control_change")) for midi in allowed) > 0
    forbidden = generate_midi(model, tokenizer, events=60, seed=3, num_samples=2, disable_control_change=True,
                              progress=False)
    assert sum(len(messages(midi, "control_change")) for midi in forbidden) == 0
    assert all(messages(midi, "note_on") for midi in forbidden)


def test_same_seed_same_files_and_caller_random_state_untouched(model_dir, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    state = torch.random.get_rng_state()
    first = generate_midi(model, tokenizer, events=20, seed=11, num_samples=2, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = generate_midi(str(model_dir), events=20, seed=11, num_samples=2, progress=False)  # loaded afresh
    other = generate_midi(model, tokenizer, events=20, seed=12, num_samples=2, progress=False)
    assert [midi_bytes(m) for m in first] == [midi_bytes(m) for m in again]
    assert [midi_bytes(m) for m in first] != [midi_bytes(m) for m in other]
    rows = generate_rows(model, tokenizer, events=20, seed=11, num_samples=2, progress=False)
    assert [midi_bytes(tokenizer.decode_midi(r)) for r in rows] == [midi_bytes(m) for m in first]


def test_prompt_file_is_continued(model_and_tokenizer, song):
    model, tokenizer = model_and_tokenizer
    encoded = tokenizer.encode_midi(song)
    (rows,) = generate_rows(model, tokenizer, prompt=str(song), events=8, seed=0, progress=False)
    np.testing.assert_array_equal(rows[:len(encoded) - 1], encoded[:-1])  # the whole file (< 128 events), no EOS
    assert len(rows) == len(encoded) - 1 + 8
    (short,) = generate_rows(model, tokenizer, prompt=mido.MidiFile(song), prompt_events=4, events=8, seed=0,
                             progress=False)
    np.testing.assert_array_equal(short[:4], encoded[:4])
    assert len(short) == 12 and short[0, 0] == BOS_ID
    midi = generate_midi(model, tokenizer, prompt=song.read_bytes(), events=4, seed=0, progress=False)[0]
    assert [m.note for m in messages(midi, "note_on") if m.velocity][:6] == [62, 65, 69, 74, 72, 70]


def test_progress_bar_counts_events(model_and_tokenizer, capsys):
    model, tokenizer = model_and_tokenizer
    generate_rows(model, tokenizer, events=16, seed=0, progress=True)
    err = capsys.readouterr().err
    assert "16/16" in err and "event/s" in err
    generate_rows(model, tokenizer, events=16, seed=0, progress=False)
    assert capsys.readouterr().err == ""


def test_a_streamer_gets_the_events_beside_the_progress_bar(model_and_tokenizer, capsys):
    from midi_event_transformer.generation.streamers import MidiEventIteratorStreamer

    model, tokenizer = model_and_tokenizer
    streamer = MidiEventIteratorStreamer(skip_prompt=True)
    (rows,) = generate_rows(model, tokenizer, instruments="Violin", events=12, seed=4, streamer=streamer)
    assert "12/12" in capsys.readouterr().err  # the progress bar still counts
    prompt_events = len(rows) - 12
    np.testing.assert_array_equal(np.stack(list(streamer)), rows[prompt_events:])
    with pytest.raises(TypeError, match="streamer must have put"):
        generate_midi(model, tokenizer, events=4, streamer=object(), progress=False)


def test_loaded_model_directory_and_tokenizer_defaults(model_dir, tmp_path):
    model, tokenizer = load_model_and_tokenizer(str(model_dir), device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and not model.training
    assert isinstance(tokenizer, MidiEventTransformerTokenizer) and tokenizer.optimise_midi
    (rows,) = generate_rows(model, tokenizer, events=8, seed=0, progress=False)
    assert grammar_problems(rows) == []
    bare = tmp_path / "weights_only"  # no tokenizer files saved: a default tokenizer is used
    tiny_model().save_pretrained(bare)
    assert isinstance(load_model_and_tokenizer(bare)[1], MidiEventTransformerTokenizer)
    optimised_off = tmp_path / "optimise_off"
    tiny_model().save_pretrained(optimised_off)
    MidiEventTransformerTokenizer(optimise_midi=False).save_pretrained(optimised_off)
    assert load_model_and_tokenizer(optimised_off)[1].optimise_midi is False


def test_reference_checkpoint_directory(shared_dir, tmp_path):
    reference = shared_dir / "reference" / "skytnt_small" / "model"
    model, tokenizer = load_model_and_tokenizer(str(reference))
    assert tokenizer.optimise_midi is True  # read from the reference's config.json
    files = generate_midi(model, tokenizer, events=8, seed=0, progress=False)
    assert len(files) == 1 and reloaded(files[0]).tracks
    copy = tmp_path / "reference_not_optimised"  # the reference's tokenizer settings are followed
    copy.mkdir()
    config = json.loads((reference / "config.json").read_text())
    config["tokenizer"]["optimise_midi"] = False
    (copy / "config.json").write_text(json.dumps(config))
    (copy / "model.safetensors").symlink_to(reference / "model.safetensors")
    assert load_model_and_tokenizer(str(copy))[1].optimise_midi is False


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    (dict(instruments=["Viloin"]), ValueError, "unknown instrument 'Viloin'; did you mean 'Violin'"),
    (dict(drum_kit="Disco"), ValueError, "unknown drum kit 'Disco'"),
    (dict(time_signature="3/5"), ValueError, "denominator must be a power of two"),
    (dict(time_signature="three four"), ValueError, "time signature must look like '3/4'"),
    (dict(key="H minor"), ValueError, "unknown key 'H minor'"),
    (dict(bpm=0), ValueError, "bpm must be in 1..383"),
    (dict(events=0), ValueError, "events must be >= 1"),
    (dict(events=2.5), TypeError, "events must be an int"),
    (dict(temperature=0), ValueError, "temperature must be > 0"),
    (dict(top_p=1.5), ValueError, r"top_p must be in \(0, 1\]"),
    (dict(top_k=-1), ValueError, "top_k must be >= 0"),
    (dict(num_samples=0), ValueError, "num_samples must be >= 1"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    (dict(prompt="song.mid", bpm=120), ValueError, "a prompt cannot be combined with bpm"),
    (dict(prompt_events=16), ValueError, "prompt_events is only used with a prompt"),
    (dict(prompt="song.mid", prompt_events=0), ValueError, "prompt_events must be >= 1"),
    (dict(dtype="int4"), ValueError, "unknown dtype 'int4'"),
    (dict(device="gpu"), ValueError, "unknown device 'gpu'"),
])
def test_bad_arguments_raise_before_loading_the_model(kwargs, error, message, tmp_path):
    with pytest.raises(error, match=message):  # the model does not exist: argument checks come first
        generate_midi(str(tmp_path / "no_such_model"), progress=False, **kwargs)


def test_prompt_that_is_not_midi(model_dir, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a midi file")
    with pytest.raises(InvalidMidiError, match="not a MIDI file"):
        generate_midi(str(model_dir), prompt=str(text), events=4, progress=False)
    with pytest.raises(InvalidMidiError, match="cannot read file"):
        generate_midi(str(model_dir), prompt=str(tmp_path / "missing.mid"), events=4, progress=False)


def test_directories_that_are_not_models(tmp_path, model_dir):
    with pytest.raises(ValueError, match="has no config.json"):
        generate_midi(str(tmp_path), events=4, progress=False)
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file, not a model directory"):
        generate_midi(str(tmp_path / "file.bin"), events=4, progress=False)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="holds a 'bert' model, not a midi-event-transformer model"):
        generate_midi(str(bert), events=4, progress=False)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((model_dir / "config.json").read_text())
    with pytest.raises(ValueError, match="cannot load the model directory"):
        generate_midi(str(no_weights), events=4, progress=False)
    with pytest.raises(ValueError, match="model directory ./nowhere/at/all does not exist"):
        generate_midi("./nowhere/at/all", events=4, progress=False)


def test_wrong_types():
    with pytest.raises(TypeError, match="model must be a MidiEventTransformerForCausalLM"):
        generate_midi(42, progress=False)
    with pytest.raises(TypeError, match="tokenizer must be a MidiEventTransformerTokenizer"):
        generate_midi(tiny_model(), tokenizer="default", progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda(model_dir):
    with pytest.raises(ValueError, match="CUDA is not available"):
        generate_midi(str(model_dir), device="cuda", events=4, progress=False)


@pytest.mark.parametrize("function", [generate_midi, generate_rows])
def test_every_keyword_is_an_option_field(function):
    """generate_midi's explicit keywords (and generate_rows', which shows them) are the fields of the options
    (LoadingOptions, PromptOptions, SamplingOptions), with the fields' defaults; each goes to its field."""
    import inspect

    from midi_event_transformer.generation.requests import option_fields

    parameters = inspect.signature(function).parameters
    assert {name: p.default for name, p in parameters.items()} == {f.name: f.default for f in option_fields()}
    assert all(f.metadata["help"] for f in option_fields())
    assert all(f"        {f.name}: " in generate_midi.__doc__ for f in option_fields())  # help(generate_midi)


def test_generate_rows_rejects_unknown_keywords():
    with pytest.raises(TypeError, match=r"generate_rows\(\) got unexpected keyword argument\(s\) max_new_tokens"):
        generate_rows(tiny_model(), max_new_tokens=8)


def test_each_request_is_checked_once(model_dir, monkeypatch, tmp_path):
    """A generate_midi call checks its prompt and sampling options once each (when they are made)."""
    from midi_event_transformer.generation.requests import PromptOptions, SamplingOptions

    checks = {PromptOptions: 0, SamplingOptions: 0}
    for cls in checks:
        def counted(self, check=cls.check, cls=cls):
            checks[cls] += 1
            check(self)

        monkeypatch.setattr(cls, "check", counted)
    generate_midi(str(model_dir), instruments=["Violin"], events=4, seed=0, progress=False)
    assert checks == {PromptOptions: 1, SamplingOptions: 1}
    song = tmp_path / "song.mid"
    multitrack_song(bars=2).save(song)
    for options in (dict(prompt=str(song), events=4), dict(prompt=str(song), add_track="Cello", events=4),
                    dict(instruments=["Violin"], seconds=1.0, events=8)):
        checks.update({PromptOptions: 0, SamplingOptions: 0})
        generate_rows(str(model_dir), seed=0, progress=False, **options)
        assert checks == {PromptOptions: 1, SamplingOptions: 1}, options


def test_missing_embedded_model_is_a_clear_error(monkeypatch, tmp_path):
    import midi_event_transformer

    monkeypatch.setattr(midi_event_transformer, "DEFAULT_MODEL", str(tmp_path / "default_model"))
    with pytest.raises(ValueError, match="embedded default model is missing"):
        generate_midi(events=4, progress=False)


@pytest.mark.skipif(not (Path(DEFAULT_MODEL) / "config.json").is_file(),
                    reason="the embedded model (midi_event_transformer/default_model/) is not committed yet")
def test_embedded_default_model():
    files = generate_midi(instruments="Acoustic Grand Piano", bpm=100, time_signature="4/4", key="C major",
                          events=24, seed=0, num_samples=2, progress=False)
    again = generate_midi(instruments="Acoustic Grand Piano", bpm=100, time_signature="4/4", key="C major",
                          events=24, seed=0, num_samples=2, progress=False)
    assert [midi_bytes(m) for m in files] == [midi_bytes(m) for m in again]
    for midi in files:
        midi = reloaded(midi)
        assert (0, 0) in programs(midi) and messages(midi, "note_on")
        assert round(mido.tempo2bpm(messages(midi, "set_tempo")[0].tempo)) == 100
    model, tokenizer = load_model_and_tokenizer(None)
    for rows in generate_rows(model, tokenizer, events=24, seed=1, num_samples=2, progress=False):
        assert grammar_problems(rows) == []


@pytest.mark.skipif(not (Path(DEFAULT_MODEL) / "config.json").is_file(),
                    reason="the embedded model (midi_event_transformer/default_model/) is not committed yet")
def test_embedded_model_loads_with_the_auto_classes():
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from midi_event_transformer import MidiEventTransformerForCausalLM

    assert isinstance(AutoModel.from_pretrained(DEFAULT_MODEL), MidiEventTransformerForCausalLM)
    model = MidiEventTransformerForCausalLM.from_pretrained(DEFAULT_MODEL)
    assert isinstance(AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL), MidiEventTransformerForCausalLM)
    assert isinstance(AutoTokenizer.from_pretrained(DEFAULT_MODEL), MidiEventTransformerTokenizer)
    assert model.config.event_config.num_hidden_layers == 4 and model.config.hidden_size == 256
    card = (Path(DEFAULT_MODEL) / "README.md").read_text()
    assert "POP909" in card and "Copyright (c) 2020 Music X Lab" in card  # the data and its licence notice
    assert not list(Path(DEFAULT_MODEL).glob("*.py"))  # the package provides the code


def test_a_small_bf16_model_computes_in_float32_on_cpu_unless_asked(tmp_path):
    from midi_event_transformer.generation.loading import default_compute_dtype, load_model_and_tokenizer

    model = tiny_model().to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    loaded, _ = load_model_and_tokenizer(str(tmp_path), device="cpu")
    assert loaded.dtype == torch.float32
    asked, _ = load_model_and_tokenizer(str(tmp_path), device="cpu", dtype="bfloat16")
    assert asked.dtype == torch.bfloat16
    assert default_compute_dtype(model, torch.device("cuda")) is None  # memory and fast bf16 units there
    assert default_compute_dtype(model.float(), torch.device("cpu")) is None  # already float32
