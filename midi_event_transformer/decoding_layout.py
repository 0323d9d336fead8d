"""Weight layouts and products for decoding on CPU, where a step multiplies 1-8 rows by every weight.

At that size a product is bound by how fast the weight streams from memory, and that depends on the kernel,
the weight's layout and the call. Measured here (2-core AMD EPYC, torch 2.13, MKL and oneDNN 3.12; see
[`product_kind`]):

- large weights (>= 2**20 elements, tv2o-medium's layers) stream fastest through oneDNN's linear, whose time
  grows little with the rows (1024 x 4096, cold, 1 / 2 / 4 rows: 0.77 / 0.97 / 0.92 ms; MKL: 0.94 / 1.04 /
  1.52 ms), except 2 rows of square weights, where MKL's ``weight @ x^T`` is faster still; with 3-8 rows,
  oneDNN's own blocked copy of the weight streams as fast as one row ([`blocked_linear`]);
- smaller weights (the "small" config) pay oneDNN's fixed cost per call: 2-4 rows go fastest as MKL's
  ``weight @ x^T`` on a row-major weight. One row goes as ``F.linear`` (on an ``(in, out)``-contiguous,
  "column-major", weight when it widens, ``out > in``) while the weights stay in cache between steps; when
  they stream from memory (a decoder stack whose Linear weights exceed ``CACHE_RESIDENT_BYTES``, like the
  small config's event transformer), one row goes as ``weight @ x^T`` with a zero second row: MKL runs
  ``F.linear``'s one row as a matrix-vector product on one core, and two rows as a product on both
  (768 x 256, cold: 54 -> 40 us; in the decoding loop, small, batch 1: 6-11% less time an event);
- projections reading the same input (q/k/v, gate/up) are stored back to back in one buffer, so the decoding
  loop runs each group as one product ([`packed_weight`]): fewer calls, longer streams.

[`apply_cpu_decoding_layout`] arranges a model's Linear weights this way; [`decoding_linear`] picks the kernel.
Parameters keep their names, shapes and values (they become views of the shared buffers), so the model's own
forward, training and saving are unaffected, and a packed product gives the same numbers as the separate ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache, partial

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

ONEDNN_MIN_WEIGHT = 1 << 20  # elements: below this oneDNN's fixed cost per call outweighs its faster streaming
ONEDNN_MAX_ROWS = 8
TRANSPOSED_ROWS = (2, 4)  # row counts for which MKL's weight @ x^T beats F.linear
CACHE_RESIDENT_BYTES = 8 << 20  # Linear weights of a decoder stack above this stream from memory at every step


@cache
def onednn_linear_available() -> bool:
    """Whether oneDNN's fp32 linear (``torch.ops.mkldnn._linear_pointwise``, a private PyTorch op, hence the
    check) runs here and agrees with ``F.linear``; checked once. Without it decoding uses MKL products only."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        generator = torch.Generator().manual_seed(0)
        x, weight, bias = torch.randn(3, 64, generator=generator), torch.randn(40, 64, generator=generator), \
            torch.randn(40, generator=generator)
        got = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
        return bool(torch.allclose(got, F.linear(x, weight, bias), rtol=1e-4, atol=1e-4))
    except (AttributeError, RuntimeError) as error:  # a torch built without oneDNN, or without this op
        logger.info("oneDNN linear unavailable (%s); decoding uses MKL products only", error)
        return False


def streams_from_memory(stack: nn.Module) -> bool:
    """Whether the Linear weights of ``stack`` (a decoder stack) are too large to stay in cache from one decoding
    step to the next (more than ``CACHE_RESIDENT_BYTES``), so that every step reads them from memory."""
    return sum(module.weight.numel() * module.weight.element_size() for module in stack.modules()
               if isinstance(module, nn.Linear)) > CACHE_RESIDENT_BYTES


def product_kind(out_features: int, in_features: int, rows: int, streamed: bool = False) -> str:
    """The fastest CPU fp32 product for ``rows`` rows times an ``(out_features, in_features)`` weight:
    ``"onednn"`` (row-major weight), ``"transposed"`` (``weight @ x^T``, row-major weight) or ``"linear"``.
    ``streamed``: the weight is read from memory, not from cache ([`streams_from_memory`])."""
    if (out_features * in_features >= ONEDNN_MIN_WEIGHT and rows <= ONEDNN_MAX_ROWS and rows != 2
            and onednn_linear_available()):
        return "onednn"
    if TRANSPOSED_ROWS[0] <= rows <= TRANSPOSED_ROWS[1] or (rows == 1 and streamed):
        return "transposed"
    return "linear"


def _transposed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # Both sides row-major. A transposed-view x as the right-hand operand makes MKL read the weight at half the
    # bandwidth (tv2o-medium down_proj: 2.7 -> 1.3 ms); a transposed-view result has a strided head dimension,
    # which sends attention to sdpa's math path and later elementwise ops to strided loops (small, batch 4: -11%).
    rows = x.reshape(-1, x.shape[-1]).contiguous()  # (n, in)
    out = torch.mm(weight, rows.t()).t().contiguous()  # (out, n) product -> (n, out)
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], out.shape[-1])


def _padded_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   zero_row: torch.Tensor | None = None) -> torch.Tensor:
    # One row as weight @ x^T with a zero second row: MKL runs one row as a matrix-vector product on one core,
    # two rows as a product on both. The result is column 0 of the (out, 2) product, a view with stride 2 (the
    # decoding loop's elementwise ops and cache writes read it as it is; a copy costs more than it saves there).
    row = x.reshape(1, x.shape[-1])
    padded = torch.cat((row, zero_row if zero_row is not None else torch.zeros_like(row)))  # (2, in)
    out = torch.mm(weight, padded.t())[:, 0]  # (out,)
    if bias is not None:
        out = out + bias
    return out.view(*x.shape[:-1], out.shape[-1])


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # weight: a plain row-major tensor or oneDNN's blocked copy of one (blocked_linear)
    rows = x.reshape(-1, x.shape[-1]).contiguous()  # (n, in)
    out = torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")  # (n, out)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def _kernel(weight: torch.Tensor, rows: int, streamed: bool = False) -> Callable:
    """The function computing ``F.linear(x, weight, bias)`` fastest for ``rows`` rows (see [`product_kind`])."""
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or weight.stride(-1) != 1:
        return F.linear
    kind = product_kind(weight.shape[0], weight.shape[1], rows, streamed)
    if kind == "onednn" and weight.is_contiguous():
        return _onednn_linear
    if kind == "transposed":
        return _padded_linear if rows == 1 else _transposed_linear
    return F.linear


def decoding_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for an ``x`` (..., in) of a few rows, through the kernel [`product_kind`]
    picks when the call is on CPU in float32 with a row-major weight (else ``F.linear``).
    Same values as ``F.linear`` up to float rounding.
    """
    if x.dtype != torch.float32:
        return F.linear(x, weight, bias)
    return _kernel(weight, x.numel() // x.shape[-1])(x, weight, bias)


def bound_linear(weight: torch.Tensor, bias: torch.Tensor | None, rows: int, streamed: bool = False) -> Callable:
    """``x -> decoding_linear(x, weight, bias)`` for inputs of ``rows`` rows in the weight's dtype, with the
    kernel chosen once (a decoding loop calls it thousands of times); ``streamed`` as in [`product_kind`]."""
    kernel = _kernel(weight, rows, streamed)
    if kernel is _padded_linear:  # the zero row that pads one row to two, made once
        return partial(kernel, weight=weight, bias=bias, zero_row=weight.new_zeros(1, weight.shape[1]))
    return partial(kernel, weight=weight, bias=bias)


def blocked_linear(weight: torch.Tensor, bias: torch.Tensor | None, rows: int) -> Callable | None:
    """``x -> F.linear(x, weight, bias)`` on a copy of ``weight`` in oneDNN's blocked layout for ``rows`` rows;
    ``None`` unless there are 3-8 rows, the weight is large (``ONEDNN_MIN_WEIGHT``), row-major, float32, on CPU,
    and oneDNN runs here.

    With 3-8 rows oneDNN reads its own blocked layout as fast as one row reads a plain weight (tv2o-medium,
    4 rows, cold: 1024 x 1024 0.23 -> 0.16 ms, 1024 x 4096 0.90 -> 0.56 ms; in the decoding loop, batch 4:
    106 -> 70 ms a step), but the copy costs memory (as much as the weight) and time (about 7 ms per 16 MB
    here, the time of 8-13 products), so the decoding loop makes these copies only for the products a
    generation runs often enough, and drops them at its end.
    """
    if (not 3 <= rows <= ONEDNN_MAX_ROWS or weight.numel() < ONEDNN_MIN_WEIGHT or not weight.is_contiguous()
            or weight.device.type != "cpu" or weight.dtype != torch.float32 or not onednn_linear_available()):
        return None
    blocked = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows)
    return partial(_onednn_linear, weight=blocked, bias=None if bias is None else bias.detach())


def packed_weight(linears: list[nn.Module]) -> torch.Tensor | None:
    """The ``(sum of out, in)`` weight of ``linears`` as one tensor, when their weights lie back to back in one
    buffer (as [`apply_cpu_decoding_layout`] stores them), row-major or column-major; else ``None``.

    Rows ``[o_0 + ... + o_{i-1}, o_0 + ... + o_i)`` of the result are ``linears[i].weight``.
    """
    if len(linears) < 2 or any(type(linear) is not nn.Linear for linear in linears):
        return None
    weights = [linear.weight for linear in linears]
    first = weights[0]
    total, inputs = sum(w.shape[0] for w in weights), first.shape[1]
    if first.stride() == (inputs, 1):
        strides, offset_per_row = (inputs, 1), inputs
    elif first.stride() == (1, total):
        strides, offset_per_row = (1, total), 1
    else:
        return None
    offset = first.storage_offset()
    for weight in weights:
        if (weight.shape[1] != inputs or weight.stride() != strides or weight.dtype != first.dtype
                or weight.device != first.device or weight.storage_offset() != offset
                or weight.untyped_storage().data_ptr() != first.untyped_storage().data_ptr()):
            return None
        offset += weight.shape[0] * offset_per_row
    return first.detach().as_strided((total, inputs), strides, first.storage_offset())


def packed_bias(linears: list[nn.Module]) -> torch.Tensor | None:
    """The biases of ``linears`` concatenated (``None`` when they have none)."""
    if all(linear.bias is None for linear in linears):
        return None
    return torch.cat([linear.bias.detach() if linear.bias is not None
                      else linear.weight.new_zeros(linear.out_features) for linear in linears])


def _store(linears: list[nn.Module], column_major: bool) -> None:
    """Store the weights of ``linears`` back to back in one buffer (one weight alone: in its own), in a layout."""
    current = packed_weight(linears) if len(linears) > 1 else linears[0].weight
    if current is not None and current.stride() == ((1, current.shape[0]) if column_major else (current.shape[1], 1)):
        return  # already so
    buffer = torch.cat([linear.weight.detach() for linear in linears])  # (sum of out, in)
    if column_major:
        buffer = buffer.t().contiguous().t()
    start = 0
    for linear in linears:
        linear.weight.data = buffer[start:start + linear.out_features]
        start += linear.out_features


def _sibling_groups(model: nn.Module) -> list[list[nn.Module]]:
    """Plain Linear layers reading the same input: each attention's q/k/v, each MLP's gate/up."""
    groups = []
    for module in model.modules():
        if all(hasattr(module, name) for name in ("q_proj", "k_proj", "v_proj")):
            siblings = [module.q_proj, module.k_proj, module.v_proj]
        elif all(hasattr(module, name) for name in ("gate_proj", "up_proj")):
            siblings = [module.gate_proj, module.up_proj]
        else:
            continue
        if all(type(s) is nn.Linear for s in siblings) and len(
                {(s.in_features, s.weight.dtype, s.weight.device) for s in siblings}) == 1:
            groups.append(siblings)
    return groups


@torch.no_grad()
def apply_cpu_decoding_layout(model: nn.Module, rows_per_step: int = 1) -> None:
    """Arrange the Linear weights of ``model`` for CPU decoding of ``rows_per_step`` rows a step (in place).

    Sibling projections reading the same input (``q_proj``/``k_proj``/``v_proj``, ``gate_proj``/``up_proj``)
    are packed into one buffer; a product (or packed group) is column-major when one row goes through
    ``F.linear`` and it widens (``out > in``), row-major otherwise. Whether a decoder stack (a module with a
    ``layers`` list) streams from memory is [`streams_from_memory`]. Idempotent: weights already so laid out are
    left untouched. [`separate_packed_weights`] undoes the packing (the model's ``state_dict`` calls it).
    """
    groups = _sibling_groups(model)
    grouped = {id(linear) for linears in groups for linear in linears}
    groups += [[module] for module in model.modules() if type(module) is nn.Linear and id(module) not in grouped]
    streamed = {id(module) for stack in model.modules() if isinstance(getattr(stack, "layers", None), nn.ModuleList)
                and streams_from_memory(stack) for module in stack.modules()}
    for linears in groups:
        out_features, in_features = sum(linear.out_features for linear in linears), linears[0].in_features
        kind = product_kind(out_features, in_features, rows_per_step, id(linears[0]) in streamed)
        column_major = rows_per_step == 1 and out_features > in_features and kind == "linear"
        _store(linears, column_major)
    model._cpu_decoding_packed = True


@torch.no_grad()
def separate_packed_weights(model: nn.Module) -> None:
    """Give each packed weight its own storage again (in place; values unchanged), so that no two parameters
    share memory: safetensors, transformers and accelerate refuse or deduplicate such tensors when saving."""
    if not getattr(model, "_cpu_decoding_packed", False):
        return
    for module in model.modules():  # every weight, also those an adapter (LoRA) wrapped after the packing
        weight = getattr(module, "weight", None)
        if (isinstance(weight, nn.Parameter)
                and weight.untyped_storage().nbytes() > weight.numel() * weight.element_size()):
            weight.data = weight.data.clone(memory_format=torch.contiguous_format)
    model._cpu_decoding_packed = False


__all__ = ["apply_cpu_decoding_layout", "blocked_linear", "bound_linear", "decoding_linear", "onednn_linear_available",
           "packed_bias", "packed_weight", "product_kind", "separate_packed_weights", "streams_from_memory"]
