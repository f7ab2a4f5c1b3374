"""Fused operations shared by the token decoders."""
from __future__ import annotations

import torch


class _TokenLogLikelihood(torch.autograd.Function):
    """ll_n = log softmax(W h_n + b)[y_n] for rows n, with a hand-written backward.

    d ll_n / d logits_n = onehot(y_n) - p_n, so
        dL/dh = (g * (onehot - p)) W,   dL/dW = (g * (onehot - p))^T h,   dL/db = sum_n g_n (onehot - p_n).
    The forward keeps p (computed in place over the logits buffer) for the backward; each gradient is computed
    only when asked for, so sampling z never pays for weight gradients. Same value as log_softmax + gather,
    with fewer passes over the (rows x vocabulary) buffer. Supports one backward pass (no double backward).
    """

    @staticmethod
    def forward(ctx, h, weight, bias, targets):
        logits = torch.addmm(bias, h, weight.t())
        lse = torch.logsumexp(logits, 1, keepdim=True)
        ll = logits.gather(1, targets.unsqueeze(1)).sub_(lse).squeeze(1)
        probs = logits.sub_(lse).exp_()
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


def token_log_likelihood(hidden: torch.Tensor, linear: torch.nn.Linear, targets: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence sum of log p(y_t | h_t) over positions where ``mask`` is true; (B, T, H) -> (B,).

    Only real (unmasked) positions reach the output layer, so padding costs nothing.
    """
    B, T, H = hidden.shape
    keep = mask.reshape(-1).bool()
    idx = keep.nonzero().squeeze(1)
    rows = hidden.reshape(B * T, H).index_select(0, idx)
    ll = _TokenLogLikelihood.apply(rows, linear.weight, linear.bias, targets.reshape(-1).index_select(0, idx))
    out = torch.zeros(B * T, dtype=ll.dtype, device=ll.device).index_copy(0, idx, ll)
    return out.view(B, T).sum(1)
