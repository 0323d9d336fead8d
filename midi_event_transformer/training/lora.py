"""LoRA fine-tuning helpers on top of ``peft``.

    >>> from midi_event_transformer.training.lora import default_lora_config, add_lora, load_adapter
    >>> model = add_lora(base_model, default_lora_config(r=8, lora_alpha=16))  # a peft.PeftModel
    >>> model.save_pretrained("adapter")  # adapter_config.json + adapter_model.safetensors
    >>> tuned = load_adapter(MidiEventTransformerForCausalLM.from_pretrained("base"), "adapter")

The default targets are the seven projections of every decoder layer of both transformers (event and token
level), as the reference's LoRA training does.
"""

from __future__ import annotations

import os
from typing import Any

from peft import LoraConfig, PeftModel, TaskType, get_peft_model

LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def default_lora_config(r: int = 64, lora_alpha: int = 128, lora_dropout: float = 0.0,
                        target_modules: list[str] | tuple[str, ...] | None = None, **kwargs: Any) -> LoraConfig:
    """A ``peft.LoraConfig`` for causal-LM fine-tuning of a ``MidiEventTransformerForCausalLM``.

    Args:
        r, lora_alpha, lora_dropout: LoRA rank, scaling numerator and dropout (reference defaults: 64, 128, 0).
        target_modules: module-name suffixes to adapt; default ``LORA_TARGET_MODULES`` (all projections of
            both transformers).
        kwargs: other ``LoraConfig`` fields.
    """
    if r < 1:
        raise ValueError(f"LoRA rank r must be >= 1, got {r}")
    if not 0.0 <= lora_dropout < 1.0:
        raise ValueError(f"lora_dropout must be in [0, 1), got {lora_dropout}")
    targets = list(target_modules) if target_modules else list(LORA_TARGET_MODULES)
    return LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=targets,
                      task_type=TaskType.CAUSAL_LM, bias="none", **kwargs)


def add_lora(model: Any, config: LoraConfig | None = None, **kwargs: Any) -> PeftModel:
    """Wrap ``model`` in a ``peft.PeftModel`` whose only trainable weights are the adapter's.

    ``kwargs`` go to :func:`default_lora_config` when ``config`` is None.
    """
    return get_peft_model(model, config if config is not None else default_lora_config(**kwargs))


def load_adapter(base_model: Any, adapter_dir: str | os.PathLike, *, merge: bool = False,
                 is_trainable: bool = False) -> Any:
    """Load a saved adapter (``adapter_config.json`` + ``adapter_model.safetensors``) onto ``base_model``.

    Args:
        base_model: the ``MidiEventTransformerForCausalLM`` the adapter was trained on.
        adapter_dir: the folder ``PeftModel.save_pretrained`` wrote.
        merge: fold the adapter into the base weights and return the plain model (``merge_and_unload``).
        is_trainable: keep the adapter trainable (to continue fine-tuning).

    Returns:
        a ``peft.PeftModel`` (or the merged base model class with ``merge=True``).
    """
    if not os.path.isfile(os.path.join(adapter_dir, "adapter_config.json")):
        raise ValueError(f"not a LoRA adapter folder (no adapter_config.json): {adapter_dir}")
    model = PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=is_trainable)
    return model.merge_and_unload() if merge else model


__all__ = ["LORA_TARGET_MODULES", "add_lora", "default_lora_config", "load_adapter"]
