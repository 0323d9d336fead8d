"""Model cards (README.md) for saved models and LoRA adapters, rendered with huggingface_hub's ``ModelCard``.

The Jinja templates live in ``hub_cards/`` at the repository root (canonical) and are shipped in the package as
``midi_event_transformer/hub_cards/`` (an identical copy, checked by ``tests/test_hub.py``).

Example::

    >>> write_model_card("out/model", repo_id="me/pop909-small", datasets=["pop909"],
    ...                  training={"steps": 3000, "wall time": "58 min", "hardware": "2-core CPU"},
    ...                  training_command="python scripts/train.py ...",
    ...                  evaluation=nll_result)          # an evaluation.NllResult or its dict
    PosixPath('out/model/README.md')
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "hub_cards"
MODEL_TEMPLATE = "model_card_template.md"
ADAPTER_TEMPLATE = "adapter_card_template.md"

TAGS = ["midi", "music-generation", "symbolic-music", "midi-event-transformer"]
METRICS = ["negative_log_likelihood", "accuracy"]

POP909_LICENSE = """MIT License

Copyright (c) 2020 Music X Lab

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE."""

#: Datasets that ``datasets=["pop909"]`` etc. expand to (name, link, licence, notice kept with the weights).
KNOWN_DATASETS: dict[str, dict[str, str]] = {
    "pop909": {
        "name": "POP909",
        "url": "https://github.com/music-x-lab/POP909-Dataset",
        "license": "MIT",
        "description": "909 Chinese pop songs arranged for piano (melody, bridge and piano accompaniment tracks); "
                       "Wang et al., ISMIR 2020.",
        "notice": POP909_LICENSE,
    },
    "bach": {
        "name": "Bach chorales (music21 corpus)",
        "url": "https://github.com/cuthbertLab/music21",
        "license": "compositions public domain; encodings under the music21 corpus terms",
        "description": "Four-part chorales by J. S. Bach, written to MIDI with music21.",
    },
    "openscore_lieder": {
        "name": "OpenScore Lieder",
        "url": "https://github.com/OpenScore/Lieder",
        "license": "CC0-1.0",
        "description": "Art songs for voice and piano (MusicXML scores) rendered to MIDI with music21, each part's "
                       "General MIDI program set by its name (voice 53 Voice Oohs, piano 0).",
    },
    "openscore_quartets": {
        "name": "OpenScore String Quartets",
        "url": "https://github.com/OpenScore/StringQuartets",
        "license": "CC0-1.0",
        "description": "String quartets (MusicXML scores, all movements) rendered to MIDI with partitura, one "
                       "channel a part (violin 40, viola 41, cello 42).",
    },
}

DEFAULT_LIMITATIONS = [
    "It writes MIDI events, not audio: how it sounds depends on the synthesizer and soundfont.",
    "It continues the style of its training data; other instruments, genres and metres are out of distribution "
    "and come out less coherent.",
    "Samples vary with the seed and sampling settings; long pieces can drift, repeat, or lose structure beyond "
    "the training window.",
    "Held-out NLL measures fit to songs like the training data, not musical quality; listen before you use.",
    "Like any generative model it can reproduce fragments of its training data: check material before "
    "publishing it as original.",
]

_FIELDS = {
    "model_name", "repo_id", "summary", "license", "datasets", "training", "training_command", "training_curve",
    "evaluation", "statistics", "limitations", "converted_from", "source_license_note", "dtype", "base_model",
    "tags", "library_name", "code_url", "window_events", "stride_events", "figures",
}


def template_path(adapter: bool = False) -> Path:
    """The packaged template for a base model or a LoRA adapter."""
    path = TEMPLATE_DIR / (ADAPTER_TEMPLATE if adapter else MODEL_TEMPLATE)
    if not path.is_file():
        raise FileNotFoundError(f"model card template {path} is missing from the installed package")
    return path


def safetensors_summary(path: str | os.PathLike) -> tuple[int, list[str]]:
    """``(number of parameters, sorted dtypes)`` of a safetensors file, read from its header only."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    count, dtypes = 0, set()
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        size = 1
        for dim in entry["shape"]:
            size *= dim
        count += size
        dtypes.add(entry["dtype"])
    return count, sorted(dtypes)


def _format_count(count: int) -> str:
    return f"{count / 1e6:.1f}M" if count >= 1e5 else f"{count:,}"


def _config_dict(config: Any, directory: Path) -> dict[str, Any]:
    if config is None:
        path = directory / "config.json"
        return json.loads(path.read_text()) if path.is_file() else {}
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return config.to_dict()
    raise TypeError(f"config must be a MidiEventTransformerConfig, a dict or None, got {type(config).__name__}")


def _architecture(config: dict[str, Any], directory: Path) -> list[tuple[str, str]]:
    rows = []
    for key, label in (("event_config", "event transformer"), ("token_config", "token transformer")):
        level = config.get(key) or {}
        if level:
            layers = level.get("num_hidden_layers")
            rows.append((label, f"{layers} layer{'' if layers == 1 else 's'}, hidden {level.get('hidden_size')}, "
                                f"{level.get('num_attention_heads')} heads, MLP {level.get('intermediate_size')}"))
    if config.get("event_config"):
        rows.append(("context", f"{config['event_config'].get('max_position_embeddings')} events"))
    weights = directory / "model.safetensors"
    if weights.is_file():
        count, dtypes = safetensors_summary(weights)
        rows.append(("parameters", f"{_format_count(count)} ({', '.join(dtypes)} storage)"))
    return rows


def _datasets(datasets: Sequence[str | Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    expanded = []
    for dataset in datasets or []:
        if isinstance(dataset, str):
            if dataset.lower() not in KNOWN_DATASETS:
                raise ValueError(f"unknown dataset {dataset!r}: pass one of {sorted(KNOWN_DATASETS)} or a dict with "
                                 "name, url, license, description, notice")
            expanded.append(dict(KNOWN_DATASETS[dataset.lower()]))
        elif isinstance(dataset, Mapping):
            if "name" not in dataset:
                raise ValueError(f"a dataset dict needs a 'name', got keys {sorted(dataset)}")
            expanded.append(dict(dataset))
        else:
            raise TypeError(f"datasets must hold names or dicts, got {type(dataset).__name__}")
    return expanded


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _evaluation_rows(evaluation: Any) -> list[dict[str, str]]:
    """Rows for the NLL table from an ``NllResult``, a dict of one, or a list of them (with optional ``data`` and
    ``note`` keys)."""
    if evaluation is None:
        return []
    items = evaluation if isinstance(evaluation, (list, tuple)) else [evaluation]
    rows = []
    for item in items:
        values = item.to_dict() if hasattr(item, "to_dict") else dict(item)
        if "per_token_nll" not in values:
            raise ValueError(f"an evaluation entry needs per_token_nll, got keys {sorted(values)}")
        rows.append({
            "data": values.get("data", "held-out"), "note": values.get("note", ""),
            "per_token_nll": _number(values.get("per_token_nll")),
            "per_event_nll": _number(values.get("per_event_nll"), 3),
            "token_accuracy": _number(values.get("token_accuracy")),
            "n_files": _number(values.get("n_files")),
        })
    return rows


def _statistics_rows(statistics: Any) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """``(set names, [(label, [mean per set])])`` from ``evaluation.compare_statistics``' report, or from a plain
    ``{set: {statistic: mean}}`` dict."""
    if not statistics:
        return [], []
    from ..evaluation.statistics import STATISTIC_LABELS, STATISTICS

    if "sets" in statistics:
        means = {name: {key: value["mean"] for key, value in report["summary"].items()}
                 for name, report in statistics["sets"].items()}
    else:
        means = {name: dict(values) for name, values in statistics.items()}
    names = list(means)
    rows = [(STATISTIC_LABELS[key], [_number(means[name].get(key), 3) for name in names])
            for key in STATISTICS if any(key in means[name] for name in names)]
    return names, rows


def _training_rows(training: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    if training is None:
        return []
    if not isinstance(training, Mapping):
        raise TypeError(f"training must be a dict of figures, got {type(training).__name__}")
    return [(str(key).replace("_", " "), _number(value, 4)) for key, value in training.items()]


def _training_data(directory: Path) -> dict[str, Any] | None:
    """The tables of ``training_data.json`` in the folder (``generation.known_instruments``), or None without it."""
    from ..generation.known_instruments import TRAINING_DATA_FILE, read_training_data

    data = read_training_data(directory)
    if data is None:
        return None
    return {
        "file": TRAINING_DATA_FILE,
        "songs": f"{data['songs']:,}" if isinstance(data.get("songs"), int) else None,
        "events": f"{data['events']:,}" if isinstance(data.get("events"), int) else None,
        "programs": [(entry.get("name") or str(entry["program"]), entry["program"], f"{entry['notes']:,}")
                     for entry in data["programs"]],
        "drum_kits": [(entry.get("name") or str(entry["program"]), entry["program"], f"{entry['notes']:,}")
                      for entry in data["drum_kits"]],
    }


def _adapter_settings(directory: Path) -> tuple[list[tuple[str, str]], str | None]:
    path = directory / "adapter_config.json"
    if not path.is_file():
        return [], None
    config = json.loads(path.read_text())
    rows = [(key.replace("_", " "), str(config[key]))
            for key in ("peft_type", "r", "lora_alpha", "lora_dropout", "target_modules") if key in config]
    return rows, config.get("base_model_name_or_path")


def write_model_card(save_directory: str | os.PathLike, *, config: Any = None, adapter: bool = False,
                     **fields: Any) -> Path:
    """Render the model card of a saved model (or LoRA adapter) to ``save_directory/README.md`` (overwritten).

    Args:
        save_directory: the saved model or adapter folder (its ``config.json`` / ``adapter_config.json`` and
            ``model.safetensors`` header are read for the architecture and parameter count; its
            ``training_data.json``, when there is one, for the table "What the model saw in training").
        config: the model's config (object or dict); default: read ``config.json``.
        adapter: use the adapter template (``base_model`` is required, or read from ``adapter_config.json``).
        **fields: what the card says, all optional:
            ``model_name`` (title; default the folder name), ``repo_id`` (used in the loading snippets; default
            ``model_name``), ``summary``, ``license`` (Hub licence id of the weights; default ``"apache-2.0"``),
            ``datasets`` (names among ``KNOWN_DATASETS`` such as ``"pop909"``, or dicts with ``name``, ``url``,
            ``license``, ``description``, ``notice``), ``training`` (dict of figures: steps, wall time, hardware,
            batch, ...), ``training_command``, ``training_curve`` (an image file in the folder), ``evaluation``
            (an ``NllResult``, its dict, or a list of them with ``data`` and ``note`` keys), ``statistics``
            (``compare_statistics``' report or ``{set: {statistic: mean}}``), ``limitations`` (extra items),
            ``converted_from`` (the reference checkpoint's Hub id), ``source_license_note``, ``dtype``,
            ``base_model``, ``tags`` (extra), ``library_name`` (default ``"transformers"``: the repository loads
            with transformers' Auto classes and ``trust_remote_code``), ``code_url``, ``window_events`` and
            ``stride_events`` (the NLL windowing shown; default 513 / 512), ``figures`` (``[(caption, image file in
            the folder), ...]`` shown under the evaluation).

    Returns:
        `Path` of the written README.md.

    Raises:
        TypeError: an unknown field name or a field of the wrong type.
        ValueError: an unknown dataset name, an evaluation entry without ``per_token_nll``, an adapter card
            without a base model, a ``training_data.json`` that is not valid.
    """
    from huggingface_hub import ModelCard, ModelCardData

    unknown = sorted(set(fields) - _FIELDS)
    if unknown:
        raise TypeError(f"write_model_card got unknown fields {unknown}; known: {sorted(_FIELDS)}")
    directory = Path(save_directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")

    repo_id = fields.get("repo_id")
    model_name = fields.get("model_name") or (repo_id.split("/")[-1] if repo_id else directory.resolve().name)
    repo_id = repo_id or model_name
    datasets = _datasets(fields.get("datasets"))
    license_id = fields.get("license") or "apache-2.0"
    tags = [*TAGS, *[t for t in fields.get("tags") or [] if t not in TAGS]]
    adapter_settings, adapter_base = _adapter_settings(directory) if adapter else ([], None)
    base_model = fields.get("base_model") or adapter_base
    if adapter and not base_model:
        raise ValueError("an adapter card needs base_model (or base_model_name_or_path in adapter_config.json)")
    if adapter:
        tags = [*tags, "lora", "peft"]
    if fields.get("converted_from") and not base_model:
        base_model = fields["converted_from"]

    card_data = ModelCardData(
        library_name=fields.get("library_name") or "transformers",
        license=license_id,
        tags=tags,
        datasets=[d.get("hub_id") or d["name"] for d in datasets] or None,
        metrics=METRICS,
        base_model=base_model,
        model_name=model_name,
    )
    config_dict = {} if adapter else _config_dict(config, directory)
    statistics_sets, statistics = _statistics_rows(fields.get("statistics"))
    tokenizer_config = directory / "tokenizer_config.json"
    optimise_midi = json.loads(tokenizer_config.read_text()).get("optimise_midi") if tokenizer_config.is_file() else None
    limitations = [*DEFAULT_LIMITATIONS, *(fields.get("limitations") or [])]
    figures = [(str(caption), str(file)) for caption, file in fields.get("figures") or []]
    values = dict(
        model_name=model_name, repo_id=repo_id, summary=fields.get("summary"),
        architecture=_architecture(config_dict, directory), optimise_midi=optimise_midi,
        datasets=datasets, training_data=_training_data(directory), training=_training_rows(fields.get("training")),
        training_command=fields.get("training_command"), training_curve=fields.get("training_curve"),
        evaluation=_evaluation_rows(fields.get("evaluation")), statistics=statistics,
        statistics_sets=statistics_sets, figures=figures, limitations=limitations,
        converted_from=fields.get("converted_from"), source_license_note=fields.get("source_license_note"),
        dtype=fields.get("dtype"), base_model=base_model, adapter_settings=adapter_settings,
        code_url=fields.get("code_url"), license_text=license_id,
        window_events=fields.get("window_events", 513), stride_events=fields.get("stride_events", 512),
    )
    card = ModelCard.from_template(card_data, template_path=str(template_path(adapter)), **values)
    path = directory / "README.md"
    path.write_text(str(card).rstrip() + "\n", encoding="utf-8")
    return path


__all__ = ["KNOWN_DATASETS", "safetensors_summary", "template_path", "write_model_card"]
