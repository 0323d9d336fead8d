"""A fused (chunked) linear + cross-entropy loss: the training loss without materialising the logits.

The token transformer of a ``MidiEventTransformerForCausalLM`` produces one hidden state per flat token; with
batch 4 x 512 events that is 16,384 rows, and the logits over the 3,406-id vocabulary are a 16,384 x 3,406 float
tensor (223 MB) whose log-softmax backward costs as much as a third of a CPU training step. Here the product
``hidden @ weight.T``, the log-softmax and its gradient are computed chunk by chunk in the forward pass, so
only ``(N, H)`` and ``(V, H)`` gradients are kept for the backward:

    >>> loss = fused_linear_cross_entropy(hidden, lm_head.weight, targets)  # == F.cross_entropy(hidden @ W.T, targets)

``targets`` use -100 for ignored positions. Under CPU/CUDA autocast the chunk products run in the autocast
dtype (bf16), the softmax in float32, as ``F.cross_entropy`` on autocast logits would.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross entropy of ``hidden @ weight.T`` against ``targets``; gradients computed in forward."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_size: int,
                compute_dtype: torch.dtype | None) -> torch.Tensor:
        # hidden (N, H), weight (V, H), targets (N,)
        valid = targets != IGNORE_INDEX
        count = int(valid.sum())
        dtype = compute_dtype or hidden.dtype
        accumulate = torch.promote_types(hidden.dtype, torch.float32)  # softmax / sums: float32 at least
        w = weight.to(dtype)
        grad_hidden = torch.zeros_like(hidden) if hidden.requires_grad else None
        grad_weight = torch.zeros(weight.shape, dtype=accumulate, device=weight.device) \
            if weight.requires_grad else None
        total = hidden.new_zeros((), dtype=accumulate)
        scale = 1.0 / max(count, 1)
        for start in range(0, hidden.shape[0], chunk_size):
            stop = min(start + chunk_size, hidden.shape[0])
            rows = valid[start:stop].nonzero().squeeze(1)  # only rows with a target need logits
            if rows.numel() == 0:
                continue
            h = hidden[start:stop].index_select(0, rows).to(dtype)  # (c, H)
            t = targets[start:stop].index_select(0, rows)  # (c,)
            logits = (h @ w.t()).to(accumulate)  # (c, V), a fresh tensor: turned into the softmax in place
            target_logit = logits.gather(1, t[:, None])  # (c, 1)
            peak = logits.amax(dim=-1, keepdim=True)  # (c, 1)
            grad = logits.sub_(peak).exp_()  # exp(logits - peak): one pass serves the loss and the softmax
            norm = grad.sum(dim=-1, keepdim=True)  # (c, 1)
            total += (peak + norm.log() - target_logit).sum()  # logsumexp - target logit
            if grad_hidden is None and grad_weight is None:
                continue
            grad.div_(norm)  # softmax; d(loss)/d(logits) = (softmax - onehot) / count
            grad.scatter_add_(1, t[:, None], grad.new_full((t.numel(), 1), -1.0))
            grad_c = grad.to(dtype)  # the 1 / count scale is applied to the (smaller) products at the end
            if grad_hidden is not None:
                grad_hidden.index_add_(0, rows + start, (grad_c @ w).to(hidden.dtype))
            if grad_weight is not None:
                grad_weight += (grad_c.t() @ h).to(accumulate)
        if grad_hidden is not None:
            grad_hidden.mul_(scale)
        if grad_weight is not None:
            grad_weight.mul_(scale)
        ctx.save_for_backward(grad_hidden if grad_hidden is not None else hidden.new_empty(0),
                              grad_weight if grad_weight is not None else weight.new_empty(0))
        ctx.has = (grad_hidden is not None, grad_weight is not None)
        ctx.weight_dtype = weight.dtype
        return total * scale

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        has_hidden, has_weight = ctx.has
        out_hidden = grad_hidden * grad_output.to(grad_hidden.dtype) if has_hidden else None
        out_weight = (grad_weight * grad_output).to(ctx.weight_dtype) if has_weight else None
        return out_hidden, out_weight, None, None, None


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                               chunk_size: int = 2048) -> torch.Tensor:
    """``F.cross_entropy(hidden @ weight.T, targets, ignore_index=-100)`` (mean over the non-ignored targets),
    computed in chunks of ``chunk_size`` rows without keeping the logits.

    Args:
        hidden (`torch.Tensor` of shape `(..., H)`): the last hidden states (e.g. `(B, L, H)`).
        weight (`torch.Tensor` of shape `(V, H)`): the output projection (``lm_head.weight``; no bias).
        targets (`torch.LongTensor` of shape `(...)`): the id each position must predict, -100 to ignore.
        chunk_size: rows per chunk (memory ~ chunk_size x V floats).

    Returns:
        a scalar tensor (float32; float64 for float64 inputs); 0 when every target is ignored.
    """
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"targets {tuple(targets.shape)} must match hidden's leading dims {tuple(hidden.shape[:-1])}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight must be (vocab, {hidden.shape[-1]}), got {tuple(weight.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    compute_dtype = _autocast_dtype(hidden.device.type)
    with torch.autocast(hidden.device.type, enabled=False):
        return _FusedLinearCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), weight,
                                              targets.reshape(-1), chunk_size, compute_dtype)


def flat_causal_lm_targets(labels: torch.Tensor, pad_token_id: int, tokens_per_event: int,
                           label_offset: int = 0) -> torch.Tensor:
    """The target of each flat position: ``labels`` shifted left by one, pad and -100 -> -100, and the first
    event's own tokens (absolute positions < ``tokens_per_event``; ``label_offset`` is the absolute position of
    ``labels[:, 0]``) ignored: they have no previous event state. Shape (B, L) -> (B, L)."""
    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    targets = targets.masked_fill(targets == pad_token_id, IGNORE_INDEX)
    first_context = max(0, tokens_per_event - 1 - label_offset)
    if first_context:
        targets[:, :first_context] = IGNORE_INDEX
    return targets


def fused_flat_causal_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, pad_token_id: int,
                              tokens_per_event: int, label_offset: int = 0, chunk_size: int = 2048) -> torch.Tensor:
    """``flat_causal_lm_loss(lm_head(hidden), labels, ...)`` of the model, without the logits.

    Args:
        hidden (`torch.Tensor` of shape `(B, L, H)`): the token transformer's output (what ``lm_head`` reads).
        weight (`torch.Tensor` of shape `(V, H)`): ``lm_head.weight``.
        labels (`torch.LongTensor` of shape `(B, L)`): ``input_ids`` with pad (or -100) where nothing is scored.
    """
    targets = flat_causal_lm_targets(labels, pad_token_id, tokens_per_event, label_offset)
    return fused_linear_cross_entropy(hidden, weight, targets, chunk_size=chunk_size)


__all__ = ["IGNORE_INDEX", "flat_causal_lm_targets", "fused_flat_causal_lm_loss", "fused_linear_cross_entropy"]
