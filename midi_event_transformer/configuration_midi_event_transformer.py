"""Configuration of the two-level MIDI event transformer.

The model has two Llama-style decoders:

* the **event transformer** (``event_config``) reads one vector per event (the sum of the embeddings
  of its 8 tokens) and produces one hidden state per event;
* the **token transformer** (``token_config``) starts from an event's hidden state and writes the
  next event's tokens one by one.

Both levels share the vocabulary (``vocab_size``) and must have the same hidden size, because the
event hidden state is fed to the token transformer as its first input row.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from transformers import GenerationConfig, PreTrainedConfig

from .vocabulary import BOS_ID, EOS_ID, FIM_VOCAB_SIZE, PAD_ID, TOKENS_PER_EVENT, VOCAB_SIZE


class MidiEventTransformerLevelConfig(PreTrainedConfig):
    r"""
    Shapes of one level (event or token transformer) of [`MidiEventTransformerForCausalLM`].

    Args:
        hidden_size (`int`, defaults to 1024): width of the residual stream.
        num_hidden_layers (`int`, defaults to 12): number of decoder layers.
        num_attention_heads (`int`, defaults to 16): query heads.
        num_key_value_heads (`int`, *optional*): key/value heads (grouped-query attention);
            defaults to `num_attention_heads`.
        head_dim (`int`, *optional*): per-head width; defaults to `hidden_size // num_attention_heads`.
        intermediate_size (`int`, defaults to 4096): width of the SwiGLU MLP.
        hidden_act (`str`, defaults to `"silu"`): MLP activation.
        rope_theta (`float`, defaults to 10000.0): base of the rotary position embedding.
        max_position_embeddings (`int`, defaults to 4096): longest sequence (events for the event
            level, tokens for the token level) the model is meant for.
        rms_norm_eps (`float`, defaults to 1e-6): epsilon of the RMS norms.
        attention_dropout (`float`, defaults to 0.0): dropout on attention probabilities (training only).
        attention_bias (`bool`, defaults to `False`): bias in the q/k/v/o projections.
        mlp_bias (`bool`, defaults to `False`): bias in the gate/up/down projections.
    """

    model_type = "midi_event_transformer_level"

    hidden_size: int = 1024
    num_hidden_layers: int = 12
    num_attention_heads: int = 16
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    intermediate_size: int = 4096
    hidden_act: str = "silu"
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    attention_bias: bool = False
    mlp_bias: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        _reject_unknown_keys(type(self).__name__, kwargs)
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                     "intermediate_size", "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads != 0:
                raise ValueError(f"hidden_size ({self.hidden_size}) is not divisible by num_attention_heads "
                                 f"({self.num_attention_heads}); set head_dim explicitly or change the shapes")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.head_dim < 2 or self.head_dim % 2 != 0:
            raise ValueError(f"head_dim must be a positive even integer (rotary embedding), got {self.head_dim}")
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                             f"num_key_value_heads ({self.num_key_value_heads})")
        if self.hidden_act not in ("silu", "gelu", "gelu_new", "relu"):
            raise ValueError(f"hidden_act must be one of silu, gelu, gelu_new, relu, got {self.hidden_act!r}")
        if not self.rope_theta > 0:
            raise ValueError(f"rope_theta must be > 0, got {self.rope_theta}")
        if not self.rms_norm_eps > 0:
            raise ValueError(f"rms_norm_eps must be > 0, got {self.rms_norm_eps}")
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"attention_dropout must be in [0, 1), got {self.attention_dropout}")
        super().__post_init__()


#: Named shapes: event level, token level (the reference's "tv2o-*" configs and our "small").
_NAMED_SHAPES: dict[str, tuple[dict[str, int], dict[str, int]]] = {
    "small": (
        {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024},
        {"hidden_size": 256, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 256},
    ),
    "tv2o-medium": (
        {"hidden_size": 1024, "num_hidden_layers": 12, "num_attention_heads": 16, "intermediate_size": 4096},
        {"hidden_size": 1024, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 1024},
    ),
    "tv2o-large": (
        {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
        {"hidden_size": 1024, "num_hidden_layers": 6, "num_attention_heads": 4, "intermediate_size": 1024},
    ),
}

# Public keyword arguments of loading (``from_pretrained(attn_implementation=...)``, remote code's ``auto_map``) that
# reach a config's ``__post_init__`` without being fields of ``PreTrainedConfig``.
_LOADING_KEYS = frozenset({"auto_map", "attn_implementation", "experts_implementation"})


@functools.cache
def _framework_keys() -> frozenset[str]:
    """Keys transformers itself knows: ``PreTrainedConfig``'s fields, serialized keys and attributes, and the
    generation parameters that older configs carry (read from the public classes, so they follow the release)."""
    base = PreTrainedConfig()
    names = {field.name for field in dataclasses.fields(PreTrainedConfig)} if dataclasses.is_dataclass(
        PreTrainedConfig) else set()
    names |= set(base.to_dict()) | set(GenerationConfig().to_dict()) | _LOADING_KEYS
    return frozenset(names)


def _reject_unknown_keys(class_name: str, kwargs: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming keys that are neither ours nor transformers' (private ``_`` names are its own)."""
    known = _framework_keys()
    unknown = sorted(k for k in kwargs
                     if not k.startswith("_") and k not in known and not hasattr(PreTrainedConfig, k))
    if unknown:
        raise ValueError(f"{class_name} got unknown keys {unknown}; check the spelling or the config's origin "
                         "(reference checkpoints are converted with convert_skytnt_checkpoint)")


class MidiEventTransformerConfig(PreTrainedConfig):
    r"""
    Configuration of [`MidiEventTransformerForCausalLM`].

    Args:
        vocab_size (`int`, defaults to 3406): number of token ids (the MIDITokenizerV2 layout).
        tokens_per_event (`int`, defaults to 8): ids per event row (event type, parameters, pads); must be 8
            (``vocabulary.TOKENS_PER_EVENT``), the row width the grammar, tokenizer and data pipeline use.
        event_config (`MidiEventTransformerLevelConfig` or `dict`): the event transformer's shapes.
        token_config (`MidiEventTransformerLevelConfig` or `dict`): the token transformer's shapes;
            `hidden_size` must equal the event transformer's.
        initializer_range (`float`, defaults to 0.02): std of the normal init of Linear/Embedding weights.
        use_cache (`bool`, defaults to `True`): return a [`MidiEventTransformerCache`] from forward.
        pad_token_id / bos_token_id / eos_token_id (`int`): special ids (0, 1, 2).
        tie_word_embeddings (`bool`, defaults to `False`): the reference does not tie `lm_head`.
        fill_in_the_middle (`bool`, defaults to `False`): the model was trained on fill-in-the-middle examples
            (`generation/fim.py`: the sentinel ids `FIM_SPAN_ID` 3406 and `FIM_MIDDLE_ID` 3407 after the reference's
            ids), so it can write a span given what comes before and after it. True needs `vocab_size >= 3408`
            (`MidiEventTransformerForCausalLM.resize_for_fim` does both). Configs saved without it load as False.

    Example:

    ```python
    >>> config = MidiEventTransformerConfig.from_name("small")
    >>> config.event_config.num_hidden_layers, config.token_config.num_hidden_layers
    (4, 1)
    ```
    """

    model_type = "midi_event_transformer"
    sub_configs_defaults = {
        "event_config": MidiEventTransformerLevelConfig,
        "token_config": MidiEventTransformerLevelConfig,
    }

    vocab_size: int = VOCAB_SIZE
    tokens_per_event: int = TOKENS_PER_EVENT
    event_config: MidiEventTransformerLevelConfig | dict | None = None
    token_config: MidiEventTransformerLevelConfig | dict | None = None
    initializer_range: float = 0.02
    use_cache: bool = True
    pad_token_id: int | None = PAD_ID
    bos_token_id: int | None = BOS_ID
    eos_token_id: int | None = EOS_ID
    tie_word_embeddings: bool = False
    fill_in_the_middle: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        _reject_unknown_keys(type(self).__name__, kwargs)
        if self.token_config is None:
            self.token_config = {"num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 1024}
        super().__post_init__(**kwargs)
        if isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int) or self.vocab_size < 3:
            raise ValueError(f"vocab_size must be an integer >= 3, got {self.vocab_size!r}")
        if not isinstance(self.tokens_per_event, int) or self.tokens_per_event != TOKENS_PER_EVENT:
            raise ValueError(f"tokens_per_event must be {TOKENS_PER_EVENT}, the width of the vocabulary's event rows "
                             "(the MIDI grammar, the tokenizer, the data pipeline and the sliding window all assume "
                             f"it), got {self.tokens_per_event!r}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ValueError(f"{name} must be an id in [0, {self.vocab_size}), got {value!r}")
        if self.event_config.hidden_size != self.token_config.hidden_size:
            raise ValueError(f"event_config.hidden_size ({self.event_config.hidden_size}) must equal "
                             f"token_config.hidden_size ({self.token_config.hidden_size}): the event hidden state "
                             "is the token transformer's first input")
        if not isinstance(self.fill_in_the_middle, bool):
            raise ValueError(f"fill_in_the_middle must be a bool, got {self.fill_in_the_middle!r}")
        if self.fill_in_the_middle and self.vocab_size < FIM_VOCAB_SIZE:
            raise ValueError(f"fill_in_the_middle=True needs vocab_size >= {FIM_VOCAB_SIZE} (the two FIM sentinel ids "
                             f"after the reference's {VOCAB_SIZE}), got {self.vocab_size}")
        if self.tie_word_embeddings:
            raise ValueError("tie_word_embeddings=True is not supported: lm_head has no single embedding to tie to")

    @property
    def hidden_size(self) -> int:
        """Width shared by both levels."""
        return self.event_config.hidden_size

    @property
    def num_hidden_layers(self) -> int:
        """Layers of the event transformer (what generic tooling reads)."""
        return self.event_config.num_hidden_layers

    @classmethod
    def from_name(cls, name: str, **kwargs: Any) -> MidiEventTransformerConfig:
        """Build a named configuration: ``"small"``, ``"tv2o-medium"`` or ``"tv2o-large"``.

        ``kwargs`` override top-level fields (e.g. ``vocab_size``).
        """
        if name not in _NAMED_SHAPES:
            raise ValueError(f"unknown config name {name!r}; choose one of {sorted(_NAMED_SHAPES)}")
        event_shape, token_shape = _NAMED_SHAPES[name]
        return cls(event_config=dict(event_shape), token_config=dict(token_shape), **kwargs)


__all__ = ["MidiEventTransformerConfig", "MidiEventTransformerLevelConfig"]

MidiEventTransformerConfig.register_for_auto_class()
