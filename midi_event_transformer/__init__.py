"""midi-event-transformer: hierarchical MIDI generation (event + token transformers) as a Hugging Face model.

Importing the package registers the config, model and tokenizer with transformers' Auto classes,
so ``AutoModel.from_pretrained(path)`` and ``AutoTokenizer.from_pretrained(path)`` work without
``trust_remote_code``, and the ``"midi-generation"`` task with ``transformers.pipeline``. Heavier submodules are imported lazily on first attribute access.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .errors import InvalidMidiError
from .vocabulary import BOS_ID, EOS_ID, PAD_ID, TOKENS_PER_EVENT, VOCAB_SIZE

__version__ = "0.1.0"

#: Directory of the small model shipped inside the package (load it with ``from_pretrained``).
DEFAULT_MODEL: str = str(Path(__file__).resolve().parent / "default_model")

# public name -> submodule that defines it
_LAZY_EXPORTS: dict[str, str] = {
    "MidiEventTransformerTokenizer": "tokenization_midi_event_transformer",
    "MidiEventTransformerConfig": "configuration_midi_event_transformer",
    "MidiEventTransformerPreTrainedModel": "modeling_midi_event_transformer",
    "MidiEventTransformerForCausalLM": "modeling_midi_event_transformer",
    "MidiEventTransformerCache": "cache_midi_event_transformer",
    "convert_skytnt_checkpoint": "hub.conversion",
    "DataCollatorForMidiEvents": "training.data",
    "load_adapter": "training.lora",
    "launch_app": "apps.web",
    "generate_midi": "generation.api",
    "MidiGenerationPipeline": "generation.hf_pipeline",
    "plan_track_edit": "generation.track_editing",
    "KeptTracksLogitsProcessor": "generation.track_editing",
    "TimeLimit": "generation.musical_time",
    "TimeLimitStoppingCriteria": "generation.musical_time",
    "generate_in_windows": "generation.sliding_window",
    "MidiGrammarLogitsProcessor": "grammar",
    "EventDecodingOptions": "event_decoding",
    "DisableEventTypesLogitsProcessor": "generation.controls",
    "DisablePatchChangeLogitsProcessor": "generation.controls",
    "DisableControlChangeLogitsProcessor": "generation.controls",
    "RestrictChannelsLogitsProcessor": "generation.controls",
    "RestrictInstrumentsLogitsProcessor": "generation.controls",
    "EveryPartPlaysLogitsProcessor": "generation.part_balance",
    "build_prompt": "generation.prompts",
    "prompt_from_midi": "generation.prompts",
    "prompt_logits_processors": "generation.prompts",
    "MidiEventIteratorStreamer": "generation.streamers",
    "MidiFileStreamer": "generation.streamers",
    "write_model_card": "hub.cards",
    "push_to_hub": "hub.publishing",
    "draw_piano_roll": "evaluation.pianoroll",
    "render_audio": "evaluation.audio",
    "evaluate_nll": "evaluation.nll",
    "evaluate_infill": "evaluation.infill",
    "compare_statistics": "evaluation.statistics",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_EXPORTS))


def _register_auto_classes() -> None:
    """Make AutoConfig / AutoModel / AutoModelForCausalLM / AutoTokenizer resolve to our classes."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    from .configuration_midi_event_transformer import MidiEventTransformerConfig
    from .modeling_midi_event_transformer import MidiEventTransformerForCausalLM
    from .tokenization_midi_event_transformer import MidiEventTransformerTokenizer

    model_type = MidiEventTransformerConfig.model_type
    AutoConfig.register(model_type, MidiEventTransformerConfig, exist_ok=True)
    AutoModel.register(MidiEventTransformerConfig, MidiEventTransformerForCausalLM, exist_ok=True)
    AutoModelForCausalLM.register(MidiEventTransformerConfig, MidiEventTransformerForCausalLM, exist_ok=True)
    AutoTokenizer.register(MidiEventTransformerConfig, slow_tokenizer_class=MidiEventTransformerTokenizer,
                           exist_ok=True)


def _register_pipeline() -> None:
    """Make ``transformers.pipeline("midi-generation", ...)`` build a ``MidiGenerationPipeline``."""
    from .generation.hf_pipeline import register_midi_generation_pipeline

    register_midi_generation_pipeline()


_register_auto_classes()
_register_pipeline()

__all__ = [
    "BOS_ID",
    "DEFAULT_MODEL",
    "EOS_ID",
    "PAD_ID",
    "TOKENS_PER_EVENT",
    "VOCAB_SIZE",
    "InvalidMidiError",
    *_LAZY_EXPORTS,
]
