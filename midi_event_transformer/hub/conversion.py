"""Conversion of SkyTNT/midi-model checkpoints (``model_type: "midi_model"``) to our format.

A reference checkpoint directory holds ``config.json`` (``tokenizer`` dict, ``net_config`` and
``net_token_config`` Llama configs) and ``model.safetensors`` with keys ``net.*``, ``net_token.*`` and
``lm_head.weight``. Our parameter names are the same, so conversion is: translate the config, check
every weight (names and shapes), and write the weights unchanged (same dtype).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from ..configuration_midi_event_transformer import MidiEventTransformerConfig
from ..vocabulary import BOS_ID, EOS_ID, PAD_ID, TOKENS_PER_EVENT, VOCAB_SIZE, tokenizer_dict

logger = logging.getLogger(__name__)

REFERENCE_MODEL_TYPE = "midi_model"
_WEIGHTS_NAME = "model.safetensors"
# Llama config keys we translate; others in the reference's Llama configs are bookkeeping we can ignore.
_LLAMA_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
               "intermediate_size", "hidden_act", "rope_theta", "max_position_embeddings", "rms_norm_eps",
               "attention_dropout", "attention_bias", "mlp_bias")
_IGNORED_LLAMA_KEYS = {"model_type", "vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "use_cache",
                       "_attn_implementation_autoset", "architectures", "torch_dtype", "dtype",
                       "transformers_version", "initializer_range", "pretraining_tp", "tie_word_embeddings",
                       "rope_scaling", "rope_parameters", "_name_or_path"}


def _read_config(src_dir: Path) -> dict[str, Any]:
    path = src_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{src_dir} has no config.json; is it a SkyTNT/midi-model checkpoint directory?")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def is_reference_checkpoint(path: Any) -> bool:
    """True if ``path`` is a local directory whose config.json has ``model_type: "midi_model"``."""
    try:
        directory = Path(os.fspath(path))
    except TypeError:
        return False
    config_path = directory / "config.json"
    if not config_path.is_file():
        return False
    try:
        with open(config_path, encoding="utf-8") as f:
            return json.load(f).get("model_type") == REFERENCE_MODEL_TYPE
    except (OSError, ValueError):
        return False


def _level_config(llama: dict[str, Any], name: str) -> dict[str, Any]:
    if not isinstance(llama, dict):
        raise ValueError(f"reference config: {name} must be a Llama config dict, got {type(llama).__name__}")
    if llama.get("model_type", "llama") != "llama":
        raise ValueError(f"reference config: {name}.model_type is {llama.get('model_type')!r}, expected 'llama'")
    rope = llama.get("rope_scaling") or llama.get("rope_parameters")
    if rope and rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ValueError(f"reference config: {name} uses rope scaling {rope}; only default rotary embeddings are supported")
    unknown = sorted(set(llama) - set(_LLAMA_KEYS) - _IGNORED_LLAMA_KEYS)
    if unknown:
        logger.warning("reference config: ignoring %s keys %s", name, unknown)
    level = {key: llama[key] for key in _LLAMA_KEYS if llama.get(key) is not None}
    if rope and "rope_theta" in rope:
        level.setdefault("rope_theta", rope["rope_theta"])
    if llama.get("vocab_size", VOCAB_SIZE) != VOCAB_SIZE:
        raise ValueError(f"reference config: {name}.vocab_size is {llama['vocab_size']}, expected {VOCAB_SIZE}")
    return level


def reference_config_to_ours(reference: dict[str, Any]) -> tuple[MidiEventTransformerConfig, bool]:
    """Translate a reference ``config.json`` dict; returns our config and the tokenizer's ``optimise_midi``."""
    if reference.get("model_type") != REFERENCE_MODEL_TYPE:
        raise ValueError(f"not a SkyTNT/midi-model config: model_type is {reference.get('model_type')!r}, "
                         f"expected {REFERENCE_MODEL_TYPE!r}")
    for key in ("tokenizer", "net_config", "net_token_config"):
        if key not in reference:
            raise ValueError(f"reference config has no {key!r}")
    tokenizer = reference["tokenizer"]
    if not isinstance(tokenizer, dict) or tokenizer.get("version") != "v2":
        version = tokenizer.get("version") if isinstance(tokenizer, dict) else tokenizer
        raise ValueError(f"reference tokenizer version {version!r} is not supported; only MIDITokenizerV2 ('v2')")
    optimise_midi = bool(tokenizer.get("optimise_midi", True))
    expected = tokenizer_dict(optimise_midi)
    for key in ("vocab_size", "events", "event_parameters", "max_token_seq", "pad_id", "bos_id", "eos_id"):
        if key in tokenizer and tokenizer[key] != expected[key]:
            raise ValueError(f"reference tokenizer {key} is {tokenizer[key]!r}, which differs from the v2 layout "
                             f"{expected[key]!r}")
    config = MidiEventTransformerConfig(
        vocab_size=VOCAB_SIZE, tokens_per_event=TOKENS_PER_EVENT, pad_token_id=PAD_ID, bos_token_id=BOS_ID,
        eos_token_id=EOS_ID, event_config=_level_config(reference["net_config"], "net_config"),
        token_config=_level_config(reference["net_token_config"], "net_token_config"))
    return config, optimise_midi


def _check_weights(state: dict[str, Any], config: MidiEventTransformerConfig) -> None:
    """Raise ValueError for missing, unexpected or mis-shaped weights."""
    import torch

    from ..modeling_midi_event_transformer import MidiEventTransformerForCausalLM

    with torch.device("meta"):
        expected = {name: tuple(p.shape) for name, p in MidiEventTransformerForCausalLM(config).state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{name}: {tuple(state[name].shape)} != {shape}" for name, shape in expected.items()
             if name in state and tuple(state[name].shape) != shape]
    problems = []
    if missing:
        problems.append(f"missing weights {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if unexpected:
        problems.append(f"unexpected weights {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    if wrong:
        problems.append(f"mismatched shapes {wrong[:10]}{' ...' if len(wrong) > 10 else ''}")
    if problems:
        raise ValueError("reference checkpoint does not match its config: " + "; ".join(problems))


def convert_skytnt_checkpoint(src_dir: str | os.PathLike, dst_dir: str | os.PathLike, *,
                              source_repo_id: str | None = None) -> Path:
    """Convert a SkyTNT/midi-model checkpoint directory into our format.

    Writes ``config.json`` (with ``auto_map``), ``model.safetensors`` (same tensors and dtype), the modeling
    code, ``generation_config.json``, a model card (README.md) and, when the tokenizer module is available, the tokenizer files.

    Args:
        src_dir: directory with the reference's ``config.json`` and ``model.safetensors``.
        dst_dir: output directory (created).
        source_repo_id: the Hub id the checkpoint came from (e.g. ``"skytnt/midi-model-tv2o-medium"``), named
            in the model card as its base model.

    Returns:
        ``dst_dir`` as a Path.

    Raises:
        ValueError: the config is not a reference v2 config, or weights are missing / unexpected / mis-shaped.
        FileNotFoundError: config.json or model.safetensors is absent.
    """
    import torch
    from safetensors.torch import load_file

    from ..modeling_midi_event_transformer import MidiEventTransformerForCausalLM

    src, dst = Path(src_dir), Path(dst_dir)
    config, optimise_midi = reference_config_to_ours(_read_config(src))
    weights_path = src / _WEIGHTS_NAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"{src} has no {_WEIGHTS_NAME} (only safetensors reference checkpoints are supported)")
    state = {name: tensor for name, tensor in load_file(str(weights_path)).items()
             if not name.endswith("rotary_emb.inv_freq")}
    _check_weights(state, config)
    dtypes = {tensor.dtype for tensor in state.values()}
    if len(dtypes) != 1:
        raise ValueError(f"reference weights mix dtypes {sorted(map(str, dtypes))}")
    dtype = dtypes.pop()
    config.dtype = dtype
    with torch.device("meta"):
        model = MidiEventTransformerForCausalLM(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.generation_config = default_generation_config(config)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    _save_tokenizer(dst, optimise_midi)
    from midi_event_transformer.hub.cards import write_model_card  # absolute: not copied beside remote code

    write_model_card(dst, config=config, converted_from=source_repo_id, dtype=str(dtype).removeprefix("torch."),
                     summary=f"A SkyTNT/midi-model checkpoint ({source_repo_id or src.name}) converted to "
                             "midi-event-transformer's format (same weights and dtype).")
    return dst


def default_generation_config(config: MidiEventTransformerConfig):
    """Sampling defaults of the reference app (temperature 1, top_p 0.98, top_k 20)."""
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=True, temperature=1.0, top_p=0.98, top_k=20, max_new_tokens=512 * TOKENS_PER_EVENT,
                            pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id,
                            eos_token_id=config.eos_token_id)


def _save_tokenizer(dst: Path, optimise_midi: bool) -> None:
    try:
        from ..tokenization_midi_event_transformer import MidiEventTransformerTokenizer
    except ImportError:  # pragma: no cover - only while the package is being assembled
        logger.warning("tokenizer module unavailable: %s written without tokenizer files", dst)
        return
    MidiEventTransformerTokenizer(optimise_midi=optimise_midi).save_pretrained(dst)


def convert_skytnt_lora(src_dir: str | os.PathLike, dst_dir: str | os.PathLike) -> Path:
    """Rewrite a reference LoRA adapter (saved by its training script) for ``peft.PeftModel.from_pretrained``.

    The reference saves adapter weights without peft's ``base_model.model.`` prefix (transformers'
    ``model.load_adapter(src_dir)`` reads that layout directly); this writes the prefixed layout, same tensors.
    """
    from safetensors.torch import load_file, save_file

    src, dst = Path(src_dir), Path(dst_dir)
    config_path, weights_path = src / "adapter_config.json", src / "adapter_model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{src} has no {path.name}; is it a LoRA adapter directory?")
    with open(config_path, encoding="utf-8") as f:
        adapter_config = json.load(f)
    if adapter_config.get("peft_type") != "LORA":
        raise ValueError(f"{src} is a {adapter_config.get('peft_type')!r} adapter, expected 'LORA'")
    prefix = "base_model.model."
    state = {name if name.startswith(prefix) else prefix + name: tensor
             for name, tensor in load_file(str(weights_path)).items()}
    dst.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dst / "adapter_model.safetensors"), metadata={"format": "pt"})
    with open(dst / "adapter_config.json", "w", encoding="utf-8") as f:
        json.dump(adapter_config, f, indent=2)
    return dst


def load_reference_checkpoint(cls: type, src_dir: str | os.PathLike, *args: Any, **kwargs: Any):
    """``cls.from_pretrained`` for a reference directory: convert to a temporary folder, then load it. The model's
    ``name_or_path`` is the reference directory (where its tokenizer settings are), not the temporary folder."""
    with tempfile.TemporaryDirectory(prefix="midi_event_transformer_") as tmp:
        convert_skytnt_checkpoint(src_dir, tmp)
        model = cls.from_pretrained(tmp, *args, **kwargs)
    model.name_or_path = model.config._name_or_path = os.fspath(src_dir)
    return model


__all__ = [
    "convert_skytnt_checkpoint",
    "convert_skytnt_lora",
    "default_generation_config",
    "is_reference_checkpoint",
    "load_reference_checkpoint",
    "reference_config_to_ours",
]
