"""Model cards and publishing: the commit push_to_hub makes, and that it loads from the Hub-side files alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mido
import numpy as np
import pytest
import torch
from generation_helpers import tiny_config
from huggingface_hub import CommitOperationAdd, ModelCard
from transformers.dynamic_module_utils import get_relative_import_files

import midi_event_transformer
from midi_event_transformer.hub.cards import write_model_card
from midi_event_transformer.hub.publishing import (
    IncompleteModelDirectoryError,
    list_upload_files,
    push_to_hub,
)
from midi_event_transformer.modeling_midi_event_transformer import MidiEventTransformerForCausalLM
from midi_event_transformer.tokenization_midi_event_transformer import MidiEventTransformerTokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = Path(midi_event_transformer.__file__).resolve().parent


class RecordingHubApi:
    """Stands in for ``huggingface_hub.HfApi``: records calls, keeps the committed bytes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.files: dict[str, bytes] = {}

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append(("create_commit", {"repo_id": repo_id, **kwargs}))
        for operation in operations:
            assert isinstance(operation, CommitOperationAdd)
            with operation.as_file() as handle:
                self.files[operation.path_in_repo] = handle.read()
        return "commit-info"

    def write_to(self, folder: Path) -> Path:
        for name, data in self.files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("hub") / "tiny-model"
    MidiEventTransformerForCausalLM(tiny_config()).eval().save_pretrained(folder)
    MidiEventTransformerTokenizer().save_pretrained(folder)
    return folder


def small_midi(path: Path) -> Path:
    track = mido.MidiTrack([mido.Message("program_change", program=0, time=0)])
    for index, pitch in enumerate([60, 64, 67, 72, 71, 67]):
        track += [mido.Message("note_on", note=pitch, velocity=80, time=0 if index == 0 else 10),
                  mido.Message("note_off", note=pitch, velocity=0, time=230)]
    midi = mido.MidiFile(ticks_per_beat=480)
    midi.tracks.append(track)
    midi.save(path)
    return path


def expected_code_files() -> set[str]:
    """The modeling / configuration / tokenization modules and everything they import, as transformers sees it."""
    names = {"modeling_midi_event_transformer.py", "configuration_midi_event_transformer.py",
             "tokenization_midi_event_transformer.py"}
    for name in list(names):
        names |= {Path(path).name for path in get_relative_import_files(str(PACKAGE_DIR / name))}
    return names


# ---------------------------------------------------------------------------------------------- templates, cards
@pytest.mark.parametrize("name", ["model_card_template.md", "adapter_card_template.md"])
def test_packaged_templates_equal_canonical_ones(name):
    canonical = REPO_ROOT / "hub_cards" / name
    if not canonical.is_file():
        pytest.skip("not a source checkout (hub_cards/ absent)")
    assert (PACKAGE_DIR / "hub_cards" / name).read_bytes() == canonical.read_bytes(), (
        f"midi_event_transformer/hub_cards/{name} must be a copy of hub_cards/{name}")


def test_model_card_metadata_and_content(model_dir, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        (folder / name).write_bytes((model_dir / name).read_bytes())
    evaluation = {"data": "POP909 held-out", "per_token_nll": 0.98765, "per_event_nll": 7.7, "token_accuracy": 0.71,
                  "n_files": 82}
    path = write_model_card(folder, repo_id="someone/pop909-small", datasets=["pop909"],
                            training={"steps": 3473, "wall_time": "61 min", "hardware": "2-core CPU"},
                            training_command="python scripts/train.py --config small", evaluation=evaluation,
                            statistics={"generated": {"polyphony": 3.25}, "POP909": {"polyphony": 3.5}})
    card = ModelCard.load(path)
    assert card.data.library_name == "transformers" and card.data.license == "apache-2.0"
    assert {"midi", "music-generation", "symbolic-music"} <= set(card.data.tags)
    assert card.data.datasets == ["POP909"] and card.data.metrics
    text = path.read_text()
    assert "# pop909-small" in text and 'from_pretrained("someone/pop909-small", trust_remote_code=True)' in text
    assert "Copyright (c) 2020 Music X Lab" in text and "licence: MIT" in text  # POP909's notice is kept
    assert "0.9877" in text and "7.700" in text and "| polyphony (pitches) | 3.250 | 3.500 |" in text
    assert "python scripts/train.py --config small" in text and "| steps | 3473 |" in text
    assert "| event transformer | 2 layers, hidden 24, 3 heads, MLP 40 |" in text
    assert "midi-event-transformer generate --model someone/pop909-small" in text


def test_model_card_shows_what_the_model_saw_in_training(model_dir, tmp_path):
    from midi_event_transformer.generation.known_instruments import write_training_data

    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((model_dir / name).read_bytes())
    assert "What the model saw in training" not in write_model_card(folder).read_text()  # no file, no table
    counts = {"format": 1, "songs": 909, "events": 3012345, "drum_kits": [],
              "programs": [{"program": 0, "name": "Acoustic Grand Piano", "notes": 1234567},
                           {"program": 33, "name": "Electric Bass (finger)", "notes": 89}]}
    write_training_data(folder, counts, sources=["pop909"])
    text = write_model_card(folder, datasets=["pop909"]).read_text()
    assert "## What the model saw in training\n\n909 songs, 3,012,345 events." in text
    assert ("| instrument | program | notes |\n|---|---|---|\n| Acoustic Grand Piano | 0 | 1,234,567 |\n"
            "| Electric Bass (finger) | 33 | 89 |\n") in text
    assert "No drum kits" in text and text.index("What the model saw") < text.index("## Training procedure")
    write_training_data(folder, {**counts, "drum_kits": [{"program": 32, "name": "Jazz", "notes": 12}]})
    text = write_model_card(folder).read_text()
    assert "| drum kit (channel 10) | program | notes |\n|---|---|---|\n| Jazz | 32 | 12 |\n" in text
    assert "No drum kits" not in text


def test_adapter_card_needs_a_base_model(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16,
                                                              "base_model_name_or_path": "someone/base"}))
    card = ModelCard.load(write_model_card(tmp_path, adapter=True, repo_id="someone/lora"))
    assert card.data.base_model == "someone/base" and "lora" in card.data.tags
    assert 'PeftModel.from_pretrained(base, "someone/lora")' in (tmp_path / "README.md").read_text()
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="base_model"):
        write_model_card(tmp_path, adapter=True)


def test_model_card_rejects_bad_fields(model_dir, tmp_path):
    with pytest.raises(TypeError, match="unknown fields"):
        write_model_card(tmp_path, trainnig={})
    with pytest.raises(ValueError, match="unknown dataset"):
        write_model_card(tmp_path, datasets=["lakh"])
    with pytest.raises(ValueError, match="per_token_nll"):
        write_model_card(tmp_path, evaluation={"nll": 1.0})


# ---------------------------------------------------------------------------------------------- publishing
LOAD_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from transformers import AutoModel, AutoTokenizer
    folder, ids_file, midi_file = sys.argv[1:4]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    ids = torch.as_tensor(np.load(ids_file))
    with torch.no_grad():
        logits = model(input_ids=ids).logits.numpy()
    np.save(ids_file + ".logits.npy", logits)
    print(json.dumps({
        "model_class": type(model).__name__, "model_module": type(model).__module__,
        "tokenizer_class": type(tokenizer).__name__, "midi_ids": tokenizer.encode_midi(midi_file).tolist(),
        "ours_imported": sorted(m for m in sys.modules if m.startswith("midi_event_transformer")),
    }))
""")


def test_push_to_hub_commit_loads_with_remote_code_only(model_dir, tmp_path):
    api = RecordingHubApi()
    assert push_to_hub(model_dir, "someone/tiny", private=True, revision="v1", commit_message="first",
                       card_fields={"datasets": ["pop909"]}, api=api) == "commit-info"
    assert [name for name, _ in api.calls] == ["create_repo", "create_branch", "create_commit"]
    assert api.calls[0][1]["private"] is True and api.calls[0][1]["exist_ok"] is True
    assert api.calls[1][1]["branch"] == "v1"
    assert api.calls[2][1]["revision"] == "v1" and api.calls[2][1]["commit_message"] == "first"

    expected = {"config.json", "model.safetensors", "generation_config.json", "tokenizer_config.json", "README.md",
                *expected_code_files()}
    assert set(api.files) == expected
    config = json.loads(api.files["config.json"])
    assert config["auto_map"]["AutoModel"] == "modeling_midi_event_transformer.MidiEventTransformerForCausalLM"
    assert config["auto_map"]["AutoConfig"] == "configuration_midi_event_transformer.MidiEventTransformerConfig"
    assert json.loads(api.files["tokenizer_config.json"])["auto_map"]["AutoTokenizer"][0] == (
        "tokenization_midi_event_transformer.MidiEventTransformerTokenizer")
    assert b"Music X Lab" in api.files["README.md"] and b"someone/tiny" in api.files["README.md"]
    for name in expected_code_files():
        assert api.files[name] == (PACKAGE_DIR / name).read_bytes()

    hub_copy = api.write_to(tmp_path / "hub_copy")
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 3406, size=(2, 5 * 8))
    np.save(tmp_path / "ids.npy", ids)
    midi_file = small_midi(tmp_path / "small.mid")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "PYTHONPATH"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), TRANSFORMERS_VERBOSITY="error")
    done = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(hub_copy), str(tmp_path / "ids.npy"),
                           str(midi_file)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["ours_imported"] == []  # the Hub-side code alone
    assert loaded["model_class"] == "MidiEventTransformerForCausalLM"
    assert loaded["model_module"].startswith("transformers_modules.")
    assert loaded["tokenizer_class"] == "MidiEventTransformerTokenizer"
    assert loaded["midi_ids"] == MidiEventTransformerTokenizer().encode_midi(midi_file).tolist()
    model = MidiEventTransformerForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        ours = model(input_ids=torch.as_tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.load(str(tmp_path / "ids.npy") + ".logits.npy"), ours, atol=1e-5)


def test_push_adapter(model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = MidiEventTransformerForCausalLM.from_pretrained(model_dir)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(tmp_path / "lora")
    api = RecordingHubApi()
    push_to_hub(tmp_path / "lora", "someone/tiny-lora", adapter=True, card_fields={"base_model": "someone/tiny"},
                api=api)
    assert [name for name, _ in api.calls] == ["create_repo", "create_commit"]
    assert api.calls[1][1]["revision"] is None and api.calls[1][1]["commit_message"] == "Upload adapter"
    assert set(api.files) == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    card = ModelCard(api.files["README.md"].decode())
    assert card.data.base_model == "someone/tiny" and "lora" in card.data.tags


def test_incomplete_directories_are_refused(model_dir, tmp_path):
    api = RecordingHubApi()
    with pytest.raises(IncompleteModelDirectoryError, match="config.json is missing"):
        push_to_hub(tmp_path, "someone/x", api=api)
    folder = tmp_path / "copy"
    folder.mkdir()
    for path in model_dir.iterdir():
        if path.name != "midi_events.py":
            (folder / path.name).write_bytes(path.read_bytes())
    (folder / "optimizer.pt").write_bytes(b"pickle")
    with pytest.raises(IncompleteModelDirectoryError, match="missing"):
        push_to_hub(folder, "someone/x", api=api)
    (folder / "midi_events.py").write_bytes((model_dir / "midi_events.py").read_bytes())
    assert "optimizer.pt" not in list_upload_files(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(IncompleteModelDirectoryError, match="model.safetensors"):
        push_to_hub(folder, "someone/x", api=api)
    with pytest.raises(IncompleteModelDirectoryError, match="adapter_config.json"):
        push_to_hub(model_dir, "someone/x", adapter=True, api=api)
    with pytest.raises(ValueError, match="owner/name"):
        push_to_hub(model_dir, "a/b/c", api=api)
    assert api.calls == []  # nothing was sent


def test_push_script_dry_run(model_dir):
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "push_to_hub.py"), str(model_dir),
                           "--repo-id", "someone/tiny", "--dry-run"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= set(json.loads(done.stdout))
