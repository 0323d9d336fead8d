"""Loading the model and tokenizer a generation request runs with: :func:`load_model_and_tokenizer`.

A loaded model, a local directory (ours, or a SkyTNT/midi-model checkpoint converted on load), a Hub id, or None
for the model shipped in the package (``DEFAULT_MODEL``); the device and the compute dtype
(:func:`default_compute_dtype`: a small model on a CPU computes in float32), or ``"int8"``: dynamic int8
quantization of the Linear layers (CPU only), applied to a fresh load or to a copy of a model passed in
(:func:`quantized_int8_copy`), never to the caller's model.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import error_line

logger = logging.getLogger(__name__)

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "int8": torch.qint8, "qint8": torch.qint8,
}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # "owner/name" or "name"
#: ``dtype`` names accepted by :func:`generate_midi`, ``--dtype`` and the web app's dtype choice.
DTYPE_NAMES: tuple[str, ...] = ("float32", "bfloat16", "float16", "int8")
#: What ``dtype="int8"`` resolves to: the Linear layers' weights in int8 (``model.quantize_dynamic_int8()``).
INT8 = torch.qint8

#: On a CPU, a model whose weights take fewer bytes than this in float32 computes in float32 unless a dtype is asked
#: for: its decoding steps are bound by per-operation overhead rather than by reading the weights, so a bf16 copy
#: saves no time there and CPUs without bf16 units run it slower. Larger models keep their stored dtype (bf16 halves
#: the bytes a memory-bound step reads). A property of the model, not of the processor.
SMALL_MODEL_FP32_BYTES = 256 * 2**20


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device``; None picks CUDA when available, else the CPU.

    Raises:
        TypeError: not a string or ``torch.device``. ValueError: not a device name, or CUDA requested without one.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string like 'cpu' or 'cuda:0' or a torch.device, not {type(device).__name__}")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r} (use e.g. 'cpu', 'cuda', 'cuda:1', 'mps')") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available on this machine")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``dtype`` as a ``torch.dtype``: ``"float32"``, ``"bfloat16"``/``"bf16"``, ``"float16"``/``"fp16"``, or
    ``"int8"`` (``torch.int8``, ``torch.qint8``), which gives :data:`INT8` (``torch.qint8``: dynamic int8
    quantization; a floating dtype otherwise).

    Raises:
        TypeError: not a string or ``torch.dtype``. ValueError: an unknown name, or a dtype that is neither
            floating nor ``torch.qint8``.
    """
    if dtype == torch.int8:  # as transformers turns "int8" into a torch.dtype
        return INT8
    if dtype is None or isinstance(dtype, torch.dtype):
        if isinstance(dtype, torch.dtype) and not dtype.is_floating_point and dtype != INT8:
            raise ValueError(f"dtype must be a floating point type or torch.qint8 (int8), got {dtype}")
        return dtype
    if not isinstance(dtype, str):
        raise TypeError(f"dtype must be a string like 'bfloat16' or a torch.dtype, not {type(dtype).__name__}")
    key = dtype.lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_NAMES)}")
    return _DTYPES[key]


def is_int8_quantized(model: Any) -> bool:
    """Whether ``model`` holds dynamically quantized int8 Linear layers (``model.quantize_dynamic_int8()``)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    return any(isinstance(module, DynamicQuantizedLinear) for module in model.modules())


def check_int8_device(device: torch.device | str) -> None:
    """Raise a one-line ValueError when ``device`` is not the CPU, where int8 runs."""
    if torch.device(device).type != "cpu":
        raise ValueError(f"dtype int8 runs on the CPU only (dynamic quantization), not on {device}: use "
                         "device='cpu' or a floating dtype")


def quantized_int8_copy(model: Any) -> Any:
    """A copy of ``model`` on the CPU, in float32, with its Linear layers quantized to int8
    (``model.quantize_dynamic_int8()``); ``model`` itself is left as it is. A model already quantized is returned
    as it is."""
    if is_int8_quantized(model):
        return model
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float32).quantize_dynamic_int8()


def is_small_model(model: Any) -> bool:
    """Whether ``model`` takes less than ``SMALL_MODEL_FP32_BYTES`` in float32: its operations are small enough that
    a CPU runs them faster in float32 and on one thread than the overheads of bf16 or of waking a thread team."""
    return 4 * sum(parameter.numel() for parameter in model.parameters()) < SMALL_MODEL_FP32_BYTES


def default_compute_dtype(model: Any, device: torch.device) -> torch.dtype | None:
    """The dtype a model loaded without an asked dtype computes in on ``device``: float32 for a small model on a CPU
    (see :func:`is_small_model`), else None (its stored dtype)."""
    if device.type != "cpu" or not model.dtype.is_floating_point or model.dtype == torch.float32:
        return None
    return torch.float32 if is_small_model(model) else None


def _model_directory_problem(directory: Path) -> str | None:
    """Why ``directory`` cannot be one of our (or a reference) model directories, or None if it looks fine."""
    from ..configuration_midi_event_transformer import MidiEventTransformerConfig
    from ..hub.conversion import REFERENCE_MODEL_TYPE

    if not directory.is_dir():
        return "is a file, not a model directory"
    config_path = directory / "config.json"
    if not config_path.is_file():
        return "is not a model directory (it has no config.json)"
    try:
        with open(config_path, encoding="utf-8") as file:
            model_type = json.load(file).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        return f"has an unreadable config.json ({error})"
    if model_type not in (MidiEventTransformerConfig.model_type, REFERENCE_MODEL_TYPE):
        return (f"holds a {model_type!r} model, not a midi-event-transformer model (model_type "
                f"{MidiEventTransformerConfig.model_type!r}) or a SkyTNT/midi-model checkpoint")
    return None


def _load_model(source: str | os.PathLike | None) -> tuple[Any, str | None]:
    """The model of a directory / Hub id / None (the embedded model), and where its tokenizer may be."""
    from .. import DEFAULT_MODEL
    from ..modeling_midi_event_transformer import MidiEventTransformerForCausalLM

    if source is None:
        if not (Path(DEFAULT_MODEL) / "config.json").is_file():
            raise ValueError(f"the embedded default model is missing from this installation ({DEFAULT_MODEL}); "
                             "pass a model directory or Hub id instead")
        source = DEFAULT_MODEL
    name = os.fspath(source)
    path = Path(name)
    if path.exists():
        problem = _model_directory_problem(path)
        if problem is not None:
            raise ValueError(f"{name} {problem}")
    elif not _HUB_ID.fullmatch(name):
        raise ValueError(f"model directory {name} does not exist")
    try:
        model = MidiEventTransformerForCausalLM.from_pretrained(name)
    except (OSError, ValueError, KeyError) as error:
        where = "directory" if path.exists() else "Hub id (no such local directory)"
        raise ValueError(f"cannot load the model {where} {name}: {error_line(error)}") from error
    return model.eval(), name


def load_tokenizer(location: str | os.PathLike | None) -> Any:
    """The tokenizer of the model at ``location`` (a directory or Hub id; None: a default one): the one saved there,
    else for a SkyTNT/midi-model checkpoint the settings of its ``config.json`` (``optimise_midi``), else a
    tokenizer with default settings. What :func:`load_model_and_tokenizer` and the ``midi-generation`` pipeline
    pair a model with."""
    location = None if location is None else os.fspath(location)
    from ..hub.conversion import is_reference_checkpoint, reference_config_to_ours
    from ..tokenization_midi_event_transformer import MidiEventTransformerTokenizer

    if location is not None and Path(location).is_dir():
        if (Path(location) / "tokenizer_config.json").is_file():
            return MidiEventTransformerTokenizer.from_pretrained(location)
        if is_reference_checkpoint(location):  # the tokenizer settings are in the reference's config.json
            with open(Path(location) / "config.json", encoding="utf-8") as file:
                _, optimise_midi = reference_config_to_ours(json.load(file))
            return MidiEventTransformerTokenizer(optimise_midi=optimise_midi)
    elif location is not None:  # a Hub id: its tokenizer if it has one
        try:
            return MidiEventTransformerTokenizer.from_pretrained(location)
        except (OSError, ValueError) as error:
            logger.info("no tokenizer with %s (%s); using the default tokenizer", location, error_line(error))
    return MidiEventTransformerTokenizer()


def load_model_and_tokenizer(model: Any = None, tokenizer: Any = None, *, device: str | torch.device | None = None,
                             dtype: str | torch.dtype | None = None) -> tuple[Any, Any]:
    """The model and tokenizer :func:`generate_midi` works with.

    Args:
        model: a loaded ``MidiEventTransformerForCausalLM``, a local directory (saved with ``save_pretrained`` or a
            SkyTNT/midi-model checkpoint, converted on load), a Hugging Face Hub id, or None for the model shipped
            in the package (``midi_event_transformer.DEFAULT_MODEL``).
        tokenizer: a ``MidiEventTransformerTokenizer``; None loads the one saved with the model (default settings
            if there is none).
        device: where to run; None keeps a loaded model where it is and puts a model loaded here on CUDA when
            available, else on the CPU. A loaded model is moved in place (but for int8: see ``dtype``).
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` or a ``torch.dtype``; None keeps the model's, except
            that a small model loaded here for a CPU computes in float32 (:func:`default_compute_dtype`).
            ``"int8"`` (or ``torch.qint8``): the Linear layers quantized to int8, on the CPU only (None: the CPU);
            a model loaded here is quantized, a loaded model is copied first (:func:`quantized_int8_copy`).

    Returns:
        ``(model, tokenizer)``, the model in eval mode when it was loaded here.

    Raises:
        ValueError: a directory that is not a model, a missing embedded model, an unloadable Hub id, a bad
            device / dtype, int8 on a device that is not the CPU (one line), a floating dtype for an int8 model.
            TypeError: ``model`` of another type.
    """
    from ..modeling_midi_event_transformer import MidiEventTransformerForCausalLM
    from ..tokenization_midi_event_transformer import MidiEventTransformerTokenizer

    if tokenizer is not None and not isinstance(tokenizer, MidiEventTransformerTokenizer):
        raise TypeError(f"tokenizer must be a MidiEventTransformerTokenizer, not {type(tokenizer).__name__}")
    torch_dtype = resolve_dtype(dtype)
    int8 = torch_dtype == INT8
    if int8 and device is not None:  # before the device's availability: the same answer on every machine
        try:
            check_int8_device(device)
        except RuntimeError as error:  # not a device name
            raise ValueError(f"unknown device {device!r} (use e.g. 'cpu', 'cuda', 'cuda:1', 'mps')") from error
    if isinstance(model, MidiEventTransformerForCausalLM):
        location = getattr(model, "name_or_path", None) or None
        target = model.device if device is None else resolve_device(device)
        if int8 or is_int8_quantized(model):
            check_int8_device(target)
        if int8:  # a quantized copy: the caller's model is left as it is
            model, torch_dtype = quantized_int8_copy(model), None
        elif is_int8_quantized(model):
            if torch_dtype is not None and torch_dtype != torch.float32:
                raise ValueError(f"the model is quantized to int8: it cannot compute in {torch_dtype} (load it "
                                 "again for a floating dtype)")
            torch_dtype = None
    elif model is None or isinstance(model, (str, os.PathLike)):
        target = torch.device("cpu") if int8 else resolve_device(device)
        model, location = _load_model(model)
        if int8:  # a fresh load: quantized in place
            model = model.to(dtype=torch.float32).quantize_dynamic_int8()
            torch_dtype = None
        elif torch_dtype is None:
            torch_dtype = default_compute_dtype(model, target)
    else:
        raise TypeError("model must be a MidiEventTransformerForCausalLM, a directory, a Hub id or None, not "
                        f"{type(model).__name__}")
    if model.device != target or (torch_dtype is not None and model.dtype != torch_dtype):
        model.to(device=target, dtype=torch_dtype)
    if tokenizer is None:
        tokenizer = load_tokenizer(location)
    return model, tokenizer


__all__ = [
    "DTYPE_NAMES",
    "INT8",
    "SMALL_MODEL_FP32_BYTES",
    "check_int8_device",
    "default_compute_dtype",
    "is_small_model",
    "is_int8_quantized",
    "load_model_and_tokenizer",
    "load_tokenizer",
    "quantized_int8_copy",
    "resolve_device",
    "resolve_dtype",
]
