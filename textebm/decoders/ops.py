"""Fused operations shared by the token decoders."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch


class _TokenLogLikelihood(torch.autograd.Function):
    """ll_n = log softmax(W h_n + b)[y_n] for rows n, with a hand-written backward.

    d ll_n / d logits_n = onehot(y_n) - p_n, so
        dL/dh = (g * (onehot - p)) W,   dL/dW = (g * (onehot - p))^T h,   dL/db = sum_n g_n (onehot - p_n).
    The forward keeps p (computed in place over the logits buffer) for the backward; the weight gradients are
    computed only when the weights require them (the samplers freeze the parameters, so sampling z never pays
    for them). Same value as log_softmax + gather,
    with fewer passes over the (rows x vocabulary) buffer. Supports one backward pass (no double backward).
    """

    @staticmethod
    def forward(ctx, h, weight, bias, targets):
        logp = torch.log_softmax(torch.addmm(bias, h, weight.t()), 1)
        ll = logp.gather(1, targets.unsqueeze(1)).squeeze(1)
        probs = logp.exp_()  # in place: the (rows x vocabulary) buffer is reused for p
        ctx.save_for_backward(h, weight, probs, targets)
        return ll

    @staticmethod
    def backward(ctx, g):
        h, weight, probs, targets = ctx.saved_tensors
        grad_logits = probs.mul_(-g.unsqueeze(1))
        grad_logits.scatter_add_(1, targets.unsqueeze(1), g.unsqueeze(1).to(grad_logits.dtype))
        dt = grad_logits.dtype  # under autocast the buffer may be bf16/fp16 while the weights are fp32
        gh = (grad_logits @ weight.to(dt)).to(h.dtype) if ctx.needs_input_grad[0] else None
        gw = (grad_logits.t() @ h.to(dt)).to(weight.dtype) if ctx.needs_input_grad[1] else None
        gb = grad_logits.sum(0).to(weight.dtype) if ctx.needs_input_grad[2] else None
        return gh, gw, gb, None


class TokenSelection(NamedTuple):
    """The real (unmasked) positions of a batch, found once per batch and reused at every Langevin step."""

    rows: torch.Tensor       # flat indices b * T + t of real positions
    sentence: torch.Tensor   # the sentence b of each real position
    targets: torch.Tensor    # the target token at each real position


def select_tokens(targets: torch.Tensor, mask: torch.Tensor) -> TokenSelection:
    """Index the positions where ``mask`` is true in (B, T) ``targets``."""
    rows = mask.reshape(-1).bool().nonzero().squeeze(1)
    return TokenSelection(rows, torch.div(rows, targets.shape[1], rounding_mode="floor"),
                          targets.reshape(-1).index_select(0, rows))


def token_log_likelihood(hidden: torch.Tensor, linear: torch.nn.Linear, targets: torch.Tensor,
                         mask: torch.Tensor, selection: Optional[TokenSelection] = None) -> torch.Tensor:
    """Per-sequence sum of log p(y_t | h_t) over positions where ``mask`` is true; (B, T, H) -> (B,).

    Only real (unmasked) positions reach the output layer, so padding costs nothing. Pass the batch's
    ``selection`` (from :func:`select_tokens`) to skip finding the real positions again.
    """
    B, T, H = hidden.shape
    sel = selection if selection is not None else select_tokens(targets, mask)
    ll = _TokenLogLikelihood.apply(hidden.reshape(B * T, H).index_select(0, sel.rows), linear.weight,
                                   linear.bias, sel.targets)
    return torch.zeros(B, dtype=ll.dtype, device=ll.device).index_add(0, sel.sentence, ll)
