"""LoRA fine-tuning helpers on top of ``peft``.

    >>> from midi_event_transformer.training.lora import default_lora_config, add_lora, load_adapter
    >>> model = add_lora(base_model, default_lora_config(r=8, lora_alpha=16))  # a peft.PeftModel
    >>> model.save_pretrained("adapter")  # adapter_config.json + adapter_model.safetensors
    >>> tuned = load_adapter(MidiEventTransformerForCausalLM.from_pretrained("base"), "adapter")

The default targets are the seven projections of every decoder layer of both transformers (event and token
level), as the reference's LoRA training does.

Fill in the middle on a pretrained model (``scripts/train.py --lora true --fim_rate 0.5``): the base gets the two
sentinel ids first (``model.resize_for_fim()``, new rows = the mean of the old), then ``add_lora(...,
fim=True)`` makes exactly the sentinel rows trainable through peft's ``trainable_token_indices`` (peft >= 0.15):
``{"embed_tokens": [3406, 3407], "lm_head": [3406, 3407]}``, i.e. those two rows of the event level's and the token
level's ``embed_tokens`` and of the untied ``lm_head`` (peft's trainable-tokens layer wraps the ``nn.Linear`` head
too). Every other row of the base stays frozen, and the adapter stores only the 3 x 2 rows (not ``modules_to_save``,
which would train and store whole tables). :func:`write_fim_record` writes ``fill_in_the_middle.json`` into the
adapter folder; :func:`load_adapter` reads it and resizes the base the same way before loading the adapter.

    >>> base = MidiEventTransformerForCausalLM.from_pretrained("base").resize_for_fim()
    >>> model = add_lora(base, r=8, lora_alpha=16, fim=True)
    >>> ...  # train on MidiWindowDataset(..., fim_rate=0.5)
    >>> model.save_pretrained("adapter", save_embedding_layers=False)  # the base's tables come from the resize
    >>> write_fim_record("adapter", fill_in_the_middle=True)
    >>> tuned = load_adapter(MidiEventTransformerForCausalLM.from_pretrained("base"), "adapter")  # resized on load
"""

from __future__ import annotations

import json
import os
from typing import Any

from peft import LoraConfig, PeftModel, TaskType, get_peft_model

from ..vocabulary import FIM_MIDDLE_ID, FIM_SPAN_ID, FIM_VOCAB_SIZE

LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: The adapter folder's record that its base must be resized for the FIM sentinels (see :func:`write_fim_record`).
FIM_RECORD_FILE = "fill_in_the_middle.json"
#: peft ``trainable_token_indices`` of a FIM adapter: the sentinel rows of both ``embed_tokens`` (module names end
#: with it) and of ``lm_head``.
FIM_TRAINABLE_TOKENS: dict[str, list[int]] = {"embed_tokens": [FIM_SPAN_ID, FIM_MIDDLE_ID],
                                              "lm_head": [FIM_SPAN_ID, FIM_MIDDLE_ID]}


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


def add_lora(model: Any, config: LoraConfig | None = None, *, fim: bool = False, **kwargs: Any) -> PeftModel:
    """Wrap ``model`` in a ``peft.PeftModel`` whose only trainable weights are the adapter's.

    Args:
        model: the base ``MidiEventTransformerForCausalLM``.
        config: the ``LoraConfig``; None: :func:`default_lora_config` of ``kwargs``.
        fim: also train the sentinel rows (``FIM_TRAINABLE_TOKENS`` through peft's ``trainable_token_indices``) of a
            base already resized with ``model.resize_for_fim()``.

    Raises:
        ValueError: ``fim=True`` on a base without the sentinel ids.
    """
    config = config if config is not None else default_lora_config(**kwargs)
    if fim:
        if model.config.vocab_size < FIM_VOCAB_SIZE:
            raise ValueError(f"fim=True needs a base with the FIM sentinel ids (vocab_size >= {FIM_VOCAB_SIZE}, got "
                             f"{model.config.vocab_size}): call model.resize_for_fim() first")
        config.trainable_token_indices = {name: list(ids) for name, ids in FIM_TRAINABLE_TOKENS.items()}
    return get_peft_model(model, config)


def write_fim_record(adapter_dir: str | os.PathLike, fill_in_the_middle: bool = True) -> None:
    """Record in an adapter folder that its base was resized for the FIM sentinels (``FIM_RECORD_FILE``).

    Args:
        adapter_dir: the folder ``PeftModel.save_pretrained`` wrote.
        fill_in_the_middle: the adapter was trained on FIM examples (False: the base was only resized).
    """
    record = {"fill_in_the_middle": bool(fill_in_the_middle), "vocab_size": FIM_VOCAB_SIZE,
              "sentinel_ids": {"FIM_SPAN_ID": FIM_SPAN_ID, "FIM_MIDDLE_ID": FIM_MIDDLE_ID}}
    with open(os.path.join(adapter_dir, FIM_RECORD_FILE), "w") as file:
        json.dump(record, file, indent=2)


def read_fim_record(adapter_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The adapter folder's FIM record (:func:`write_fim_record`), or None when it has none."""
    path = os.path.join(adapter_dir, FIM_RECORD_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        return json.load(file)


def load_adapter(base_model: Any, adapter_dir: str | os.PathLike, *, merge: bool = False,
                 is_trainable: bool = False) -> Any:
    """Load a saved adapter (``adapter_config.json`` + ``adapter_model.safetensors``) onto ``base_model``.

    An adapter trained with the FIM sentinels (its folder holds ``FIM_RECORD_FILE``) first resizes ``base_model``
    in place, as its training did (``base_model.resize_for_fim()``).

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
    record = read_fim_record(adapter_dir)
    if record is not None:
        base_model.resize_for_fim(fill_in_the_middle=bool(record.get("fill_in_the_middle", True)))
    model = PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=is_trainable)
    return model.merge_and_unload() if merge else model


__all__ = [
    "FIM_RECORD_FILE",
    "FIM_TRAINABLE_TOKENS",
    "LORA_TARGET_MODULES",
    "add_lora",
    "default_lora_config",
    "load_adapter",
    "read_fim_record",
    "write_fim_record",
]
