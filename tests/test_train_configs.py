"""The shipped training configs (scripts/configs/*.json) parse into scripts/train.py's argument dataclasses."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from generation_helpers import load_script
from transformers import HfArgumentParser

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO_ROOT / "scripts" / "configs").glob("*.json"))


@pytest.fixture(scope="module")
def parser() -> HfArgumentParser:
    return load_script("train").argument_parser()


def test_configs_are_shipped():
    assert {p.name for p in CONFIGS} >= {"small_pop909.json", "lora_example.json"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_parses(parser, path):
    model, data, train, lora = parser.parse_json_file(path)  # unknown keys raise ValueError
    assert data.data and train.mixed_precision in ("no", "bf16") and train.max_steps > 0
    assert all(Path(p).parts[:2] == ("..", "shared") for p in data.data)  # the corpus beside the repo, not in it
    if path.name == "small_pop909.json":
        assert (model.model, model.init_from, lora.lora) == ("small", None, False)
        assert (train.batch_size, data.max_events) == (4, 512)
    if path.name == "lora_example.json":
        assert lora.lora and model.init_from and lora.lora_rank >= 1


def test_unknown_key_is_rejected(parser, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": ["x"], "learning_rat": 0.1}')
    with pytest.raises(ValueError, match="learning_rat"):
        parser.parse_json_file(bad)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_flags_after_the_json_file_override_it(parser, path):
    train_script = sys.modules["train_script"]
    from_file = parser.parse_json_file(path)
    as_flags = parser.parse_args_into_dataclasses(train_script.json_to_flags(str(path)))
    assert as_flags == from_file  # the same arguments either way
    model, data, train, lora = parser.parse_args_into_dataclasses(
        [*train_script.json_to_flags(str(path)), "--resume", "--max_steps", "7"])
    assert train.resume and train.max_steps == 7 and data.data == from_file[1].data


def test_unreadable_arguments_file(parser, tmp_path):
    train_script = sys.modules["train_script"]
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="must hold a JSON object"):
        train_script.json_to_flags(str(bad))
    with pytest.raises(SystemExit, match="cannot read the arguments file"):
        train_script.json_to_flags(str(tmp_path / "missing.json"))


def test_card_command_is_checked_against_the_run(parser, tmp_path):
    """build_default_model --config: the file must give the run's training arguments (run-control ones aside)."""
    from dataclasses import asdict

    build = load_script("build_default_model")
    config = REPO_ROOT / "scripts" / "configs" / "small_pop909.json"
    model, data, train, lora = parser.parse_json_file(config)
    recorded = {"model": asdict(model), "data": asdict(data), "train": asdict(train), "lora": asdict(lora)}
    recorded["train"].update(output_dir="runs/elsewhere", max_train_minutes=63.0, save_every=7)  # run control
    assert build.config_file_command(config, recorded) == f"python scripts/train.py {config}"
    recorded["train"]["learning_rate"] *= 2
    with pytest.raises(ValueError, match="learning_rate"):
        build.config_file_command(config, recorded)
