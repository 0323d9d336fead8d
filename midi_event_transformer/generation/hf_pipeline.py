"""``transformers.pipeline("midi-generation")``: MIDI files from a model, with ``generate_midi``'s keywords.

Importing ``midi_event_transformer`` registers the task in transformers' pipeline registry
(``transformers.pipelines.PIPELINE_REGISTRY.register_pipeline``), so no remote pipeline code is needed; the model
may be the embedded one (the task's default), a saved folder, a Hub id (``trust_remote_code=True`` loads its
code) or a loaded model::

    >>> import midi_event_transformer
    >>> from transformers import pipeline
    >>> pipe = pipeline("midi-generation", model=midi_event_transformer.DEFAULT_MODEL)
    >>> pipe("song.mid", events=256, seed=0)[0]["midi"].save("continued.mid")
    >>> pipe(None, instruments=["Acoustic Grand Piano", "Violin"], seconds=30, num_samples=2)
    >>> pipe(["a.mid", "b.mid"], add_track="Violin", batch_size=2)   # one list of samples per prompt

The input is a prompt (a MIDI path, bytes, file object, ``mido.MidiFile`` or encoded rows) or None for a new
piece; the keywords are the fields of ``requests.PromptOptions`` and ``SamplingOptions``, as ``generate_midi``
takes them (``events``, ``seconds``, ``instruments``, ``seed``, ``num_samples``, ``streamer``, ...); the model,
tokenizer, device and dtype are ``pipeline()``'s own arguments. Each input gives a list of
``{"midi": mido.MidiFile, "events": n}``, one per sample, ``n`` the events of the piece after BOS (prompt
included). For the same input, keywords and seed, the files equal ``generate_midi``'s. A list of inputs with
``batch_size=k`` samples k prompts in one batch (seeded once for the batch, so its files differ from one prompt
at a time).

int8 (``generate_midi(dtype="int8")``, see ``requests.LoadingOptions.dtype``): ``pipeline()`` hands ``dtype`` to
``from_pretrained`` before the pipeline sees it, so pass a model quantized beforehand (on the CPU, where int8
runs; its files then equal ``generate_midi(dtype="int8")``'s)::

    >>> from midi_event_transformer.generation.loading import load_model_and_tokenizer
    >>> model, tokenizer = load_model_and_tokenizer(midi_event_transformer.DEFAULT_MODEL, dtype="int8")
    >>> pipe = pipeline("midi-generation", model=model, tokenizer=tokenizer, device="cpu")

(``quantized_int8_copy(model)`` quantizes a copy of a model already loaded.) ``pipeline(..., dtype="int8")``
raises a ValueError that says so.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from transformers import AutoModelForCausalLM, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .loading import (
    INT8,
    check_int8_device,
    default_compute_dtype,
    is_int8_quantized,
    load_tokenizer,
    resolve_dtype,
)
from .requests import (
    GeneratedPiece,
    PreparedPrompt,
    PromptOptions,
    SamplingOptions,
    check_request,
    generate_prepared,
    prepare_prompt,
)

#: The task name under which the pipeline is registered.
MIDI_GENERATION_TASK = "midi-generation"
#: The :class:`PromptOptions` field that is the pipeline's input rather than a keyword.
_INPUT = "prompt"


def _keywords(options: type) -> list[str]:
    """The call keywords an options dataclass gives the pipeline: each of its fields, but the input."""
    return [f.name for f in fields(options) if f.name != _INPUT]


@dataclass
class _PromptPieces:
    """The samples of one prompt (kept whole when transformers splits a batch's outputs prompt by prompt)."""

    pieces: list[GeneratedPiece]


class MidiGenerationPipeline(Pipeline):
    """Generate MIDI files: ``pipe(prompt_or_None, **generate_midi_keywords)`` (see the module docstring).

    Args:
        model: a ``MidiEventTransformerForCausalLM`` (``pipeline()`` loads it from a folder or Hub id).
        tokenizer: a ``MidiEventTransformerTokenizer``; None: the one ``generate_midi`` pairs the model with
            (``loading.load_tokenizer`` of its ``name_or_path``: the saved one, a reference checkpoint's settings,
            else a default one).
        Other arguments: as ``transformers.Pipeline`` (``device``, ``batch_size``); keywords of ``generate_midi``
        given here become the defaults of every call.
    """

    _load_tokenizer = None  # load the model's tokenizer when it has one (a reference checkpoint has none)
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False

    def __init__(self, model: Any, tokenizer: Any = None, **kwargs: Any) -> None:
        asked = kwargs.get("dtype", kwargs.get("torch_dtype"))
        int8 = is_int8_quantized(model)
        if asked != "auto" and resolve_dtype(asked) == INT8 and not int8:
            raise ValueError("pipeline(dtype='int8') cannot quantize: transformers loads the model before the "
                             "pipeline sees the dtype; pass a model quantized beforehand: model, tokenizer = "
                             "load_model_and_tokenizer(MODEL, dtype='int8'); pipeline('midi-generation', model=model, "
                             "tokenizer=tokenizer, device='cpu')")
        if int8:  # int8 runs on the CPU only: there by default (not transformers' accelerator), an error elsewhere
            device = kwargs.get("device")
            kwargs["device"] = device = "cpu" if device is None or device == -1 else device
            check_int8_device(f"cuda:{device}" if isinstance(device, int) else device)
        if tokenizer is None:
            tokenizer = load_tokenizer(getattr(model, "name_or_path", None) or None)
        super().__init__(model, tokenizer, **kwargs)
        if asked in (None, "auto") and not int8:  # as generate_midi loads a model
            compute_dtype = default_compute_dtype(self.model, self.model.device)
            if compute_dtype is not None:
                self.model.to(compute_dtype)

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict, dict, dict]:
        prompt_keywords, sampling_keywords = _keywords(PromptOptions), _keywords(SamplingOptions)
        unknown = sorted(set(kwargs) - set(prompt_keywords) - set(sampling_keywords))
        if unknown:
            raise TypeError(f"unknown keyword argument(s) {', '.join(unknown)} for the midi-generation pipeline "
                            f"(it takes generate_midi's: {', '.join(prompt_keywords + sampling_keywords)})")
        prompt = {name: kwargs[name] for name in prompt_keywords if name in kwargs}
        sampling = {name: kwargs[name] for name in sampling_keywords if name in kwargs}
        return prompt, sampling, {}

    def __call__(self, inputs: Any = None, **kwargs: Any) -> list:
        """One prompt (or None) -> a list of ``{"midi", "events"}`` per sample; a list of them -> a list of lists."""
        return super().__call__(inputs, **kwargs)

    def preprocess(self, inputs: Any, **prompt_options: Any) -> dict[str, PreparedPrompt]:
        return {"prepared": prepare_prompt(self.tokenizer, PromptOptions(prompt=inputs, **prompt_options))}

    def _forward(self, model_inputs: dict[str, Any], **sampling_options: Any) -> dict[str, list[_PromptPieces]]:
        prepared = model_inputs["prepared"]
        prompts = prepared if isinstance(prepared, list) else [prepared]  # a list when transformers batched them
        sampling = SamplingOptions(**sampling_options)
        check_request(prompts[0].options, sampling)
        pieces = generate_prepared(self.model, prompts, sampling)
        per_prompt = sampling.num_samples
        return {"pieces": [_PromptPieces(pieces[i:i + per_prompt]) for i in range(0, len(pieces), per_prompt)]}

    def postprocess(self, model_outputs: dict[str, Any]) -> list[dict[str, Any]]:
        result = model_outputs["pieces"]
        result = result[0] if isinstance(result, list) else result  # a single call keeps its batch of one
        return [{"midi": piece.to_midi(self.tokenizer), "events": piece.events} for piece in result.pieces]


def register_midi_generation_pipeline() -> None:
    """Register ``"midi-generation"`` (:class:`MidiGenerationPipeline`, the embedded model as its default) with
    transformers' pipeline registry; nothing happens when it is already registered."""
    from .. import DEFAULT_MODEL

    if MIDI_GENERATION_TASK in PIPELINE_REGISTRY.get_supported_tasks():
        _, task, _ = PIPELINE_REGISTRY.check_task(MIDI_GENERATION_TASK)
        if task["impl"] is MidiGenerationPipeline:
            return
    PIPELINE_REGISTRY.register_pipeline(MIDI_GENERATION_TASK, pipeline_class=MidiGenerationPipeline,
                                        pt_model=AutoModelForCausalLM, default={"model": (DEFAULT_MODEL, None)})


__all__ = ["MIDI_GENERATION_TASK", "MidiGenerationPipeline", "register_midi_generation_pipeline"]
