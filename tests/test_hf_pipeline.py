"""``transformers.pipeline("midi-generation")`` (``generation.hf_pipeline``), on a tiny saved model."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from generation_helpers import midi_bytes, multitrack_song, notes_by_track, save_tiny_model
from transformers import pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from midi_event_transformer import DEFAULT_MODEL, generate_midi
from midi_event_transformer.generation.hf_pipeline import MidiGenerationPipeline
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def pipe(model_dir):
    return pipeline("midi-generation", model=str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("songs")
    paths = []
    for bars in (2, 3):
        song = multitrack_song(bars=bars)
        del song.tracks[3]  # no drums
        paths.append(folder / f"song{bars}.mid")
        song.save(paths[-1])
    return paths


def test_registered_by_the_package_import(pipe):
    assert "midi-generation" in PIPELINE_REGISTRY.get_supported_tasks()
    assert isinstance(pipe, MidiGenerationPipeline)
    assert isinstance(pipe.tokenizer, MidiEventTransformerTokenizer)


def test_same_files_as_generate_midi(pipe, model_dir, songs):
    for options in (dict(instruments=["Acoustic Grand Piano", "Violin"], bpm=96, events=24),
                    dict(prompt=songs[0], events=16, seconds=4),
                    dict(prompt=songs[0], add_track="Violin", events=20)):
        prompt = options.pop("prompt", None)
        out = pipe(prompt, seed=7, num_samples=2, progress=False, **options)
        expected = generate_midi(str(model_dir), prompt=prompt, seed=7, num_samples=2, progress=False, **options)
        assert [midi_bytes(o["midi"]) for o in out] == [midi_bytes(e) for e in expected]
        assert all(o["events"] > 0 for o in out)


def test_a_list_of_prompts_gives_a_list_per_prompt_also_batched(pipe, songs):
    tokenizer = MidiEventTransformerTokenizer()
    one_by_one = pipe([str(p) for p in songs], add_track="Cello", events=12, seed=1, progress=False)
    batched = pipe([str(p) for p in songs], add_track="Cello", events=12, seed=1, progress=False, batch_size=2)
    for results in (one_by_one, batched):
        assert [len(samples) for samples in results] == [1, 1]
        for song, (sample,) in zip(songs, results, strict=True):
            kept = notes_by_track(tokenizer.decode_midi(tokenizer.encode_midi(str(song))))
            notes = notes_by_track(sample["midi"])
            assert {track: notes[track] for track in kept} == kept and 3 in notes  # each prompt its own plan
    first = pipe(str(songs[0]), add_track="Cello", events=12, seed=1, progress=False)
    assert midi_bytes(one_by_one[0][0]["midi"]) == midi_bytes(first[0]["midi"])


def test_call_defaults_and_unknown_keywords(model_dir):
    pipe = pipeline("midi-generation", model=str(model_dir), device="cpu", events=8, progress=False)
    (sample,) = pipe(None, seed=0)
    assert sample["events"] == 8
    with pytest.raises(TypeError, match="unknown keyword argument.*max_new_tokens"):
        pipe(None, max_new_tokens=8)
    with pytest.raises(ValueError, match="add_track needs a prompt"):
        pipe(None, add_track="Violin")


def test_saved_folder_with_remote_code_in_a_fresh_process(tmp_path):
    save_tiny_model(tmp_path / "model")
    script = textwrap.dedent(f"""
        import midi_event_transformer
        from transformers import pipeline
        pipe = pipeline("midi-generation", model={str(tmp_path / 'model')!r}, trust_remote_code=True, device="cpu")
        (sample,) = pipe(None, instruments=["Violin"], events=6, seed=0, progress=False)
        print(type(pipe).__name__, sample["events"], len(sample["midi"].tracks))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    name, events, tracks = done.stdout.split()[-3:]
    assert name == "MidiGenerationPipeline" and events == "7" and int(tracks) >= 2


@pytest.mark.skipif(not (Path(DEFAULT_MODEL) / "config.json").is_file(),
                    reason="the embedded model (midi_event_transformer/default_model/) is not committed yet")
def test_embedded_model_is_the_default():
    pipe = pipeline("midi-generation", device="cpu")
    (sample,) = pipe(None, instruments=["Acoustic Grand Piano"], events=16, seed=0, progress=False)
    (expected,) = generate_midi(instruments=["Acoustic Grand Piano"], events=16, seed=0, progress=False, device="cpu")
    assert midi_bytes(sample["midi"]) == midi_bytes(expected)


def test_a_reference_checkpoint_gets_the_tokenizer_generate_midi_pairs_it_with(shared_dir, tmp_path):
    """The pipeline and generate_midi pair a SkyTNT/midi-model checkpoint folder with the same tokenizer: the
    settings of its config.json (loading.load_tokenizer), whatever they are."""
    import json

    from midi_event_transformer.generation.loading import load_model_and_tokenizer
    from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM

    reference = shared_dir / "reference" / "skytnt_small" / "model"
    if not (reference / "config.json").is_file():
        pytest.skip(f"no reference checkpoint at {reference}")
    copy = tmp_path / "reference_not_optimised"
    copy.mkdir()
    config = json.loads((reference / "config.json").read_text())
    config["tokenizer"]["optimise_midi"] = False
    (copy / "config.json").write_text(json.dumps(config))
    (copy / "model.safetensors").symlink_to(reference / "model.safetensors")
    settings = []
    for folder in (reference, copy):
        pipe = pipeline("midi-generation", model=MidiEventTransformerForCausalLM.from_pretrained(folder),
                        device="cpu")
        _, tokenizer = load_model_and_tokenizer(str(folder), device="cpu")
        settings.append({name: (getattr(pipe.tokenizer, name), getattr(tokenizer, name))
                         for name in ("optimise_midi", "cc_eps", "tempo_eps")})
    assert [{name: pair[0] for name, pair in s.items()} for s in settings] == [
        {name: pair[1] for name, pair in s.items()} for s in settings]
    assert [s["optimise_midi"][0] for s in settings] == [True, False]
