"""Fused operations shared by the token decoders.

GPU contracts kept here (they are tested on the CPU by proxy): nothing reads a device value back to the host, so a
Langevin step over these ops never synchronizes and can be captured in a CUDA graph; no atomic accumulation
(``index_add``, ``scatter_add``) sums into shared outputs, so results do not depend on thread order.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch


class _TokenLogLikelihood(torch.autograd.Function):
    """ll_n = log softmax(W h_n + b)[y_n] for rows n, with a hand-written backward.

    The forward makes one softmax pass over the (rows x vocabulary) logits, in place, and keeps p = softmax for the
    backward. The value is exact for every row, without a host-side branch:

        ll_n = l_{n,y} - lse_n,   lse_n = m_n - log p_{n,m},   m_n = max_v l_{n,v} (at column m)

    from the target's logit and the row maximum, both read before the in-place softmax; p_{n,m} >= 1 / V never
    underflows (log p_{n,y} itself would for a token more than about 87 nats below the rest). Given a
    ``workspace`` dict (one per prepared batch), the logits buffer is reused from call to call: the posterior
    sampler calls this K1 times per batch with the same shapes, and a fresh (rows x vocabulary) buffer per call
    costs page faults that took about a fifth of a PTB posterior call on a 2-core VM. A forward that reuses the
    buffer before the previous call's backward has run makes that backward fail with autograd's in-place
    modification error, never silently. With d ll_n / d logits_n = onehot(y_n) - p_n:
        dL/dh_n = g_n (W[y_n] - p_n W)   (one matrix product, no pass over the buffer),
        dL/dW = (g * (onehot - p))^T h,  dL/db = sum_n g_n (onehot - p_n)   (only when the weights require grad;
    the samplers freeze the parameters, so sampling z never pays for them). Same value and gradients as
    log_softmax + gather. No double backward.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, targets, workspace):
        # out= skips autocast; under torch.compile a buffer kept across calls or overwritten in place is a side
        # effect the traced graph cannot hold, so compiled code takes the out-of-place path (the same numbers)
        compiling = _compiling()
        reuse = workspace is not None and not torch.is_autocast_enabled(h.device.type) and not compiling
        buf = workspace.get("logits") if reuse else None
        if buf is not None and (buf.shape != (h.shape[0], weight.shape[0]) or buf.dtype != h.dtype
                                or buf.device != h.device):
            buf = None
        logits = torch.addmm(bias, h, weight.t(), out=buf)
        if reuse:
            workspace["logits"] = logits
        col = targets.unsqueeze(1)
        logit_y = logits.gather(1, col).squeeze(1).float()
        top, arg = logits.max(1)
        if compiling:
            probs = torch.softmax(logits.float(), 1)
        elif logits.dtype == torch.float32:  # softmax in place: each row is read before it is overwritten
            probs = torch._softmax(logits, 1, False, out=logits)
        else:  # bf16/fp16 logits under autocast: probabilities in float32
            probs = torch.softmax(logits, 1, dtype=torch.float32)
        ll = logit_y - top.float() + probs.gather(1, arg.unsqueeze(1)).squeeze(1).log()
        ctx.dt = logits.dtype  # the matrix products' dtype (bf16/fp16 under autocast)
        del logits
        ctx.save_for_backward(h, weight, probs, targets)
        return ll.to(h.dtype)

    @staticmethod
    def backward(ctx, g):
        h, weight, probs, targets = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        dt = ctx.dt
        g = g.to(probs.dtype)
        gh = gw = gb = None
        if need_w or need_b:
            # g * (onehot - p), in a new buffer so that the graph can be run backward again (retain_graph); each
            # row has one target, so the scatter writes every position at most once (no accumulation order)
            grad_logits = probs * -g.unsqueeze(1)
            col = targets.unsqueeze(1)
            grad_logits.scatter_(1, col, grad_logits.gather(1, col) + g.unsqueeze(1))
            gl = grad_logits.to(dt)
            if need_h:
                gh = (gl @ weight.to(dt)).to(h.dtype)
            if need_w:
                gw = (gl.t() @ h.to(dt)).to(weight.dtype)
            if need_b:
                gb = grad_logits.sum(0).to(weight.dtype)
        elif need_h:  # W[y] - p W in one product, scaled by g
            w = weight.to(dt)
            gh = torch.addmm(w.index_select(0, targets), probs.to(dt), w, alpha=-1).mul_(g.unsqueeze(1).to(dt))
            gh = gh.to(h.dtype)
        return gh, gw, gb, None, None


_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) or (lambda: False)


class TokenSelection(NamedTuple):
    """What the likelihood reuses across the Langevin steps of one batch: which positions reach the output layer,
    found once, and a workspace for the logits buffer.

    ``rows`` None means every position (static shapes for a captured chain; padding is then weighted by 0)."""

    rows: Optional[torch.Tensor]  # flat indices b * T + t of real positions, or None for all positions
    targets: torch.Tensor         # the target token at each selected position
    weight: Optional[torch.Tensor] = None  # (B * T,) mask when every position is selected
    workspace: Optional[dict] = None


def select_tokens(targets: torch.Tensor, mask: torch.Tensor, static: bool = False) -> TokenSelection:
    """Index the positions where ``mask`` is true in (B, T) ``targets`` (one ``nonzero``, a host read on a GPU);
    with ``static`` select every position instead, so shapes depend only on (B, T)."""
    if static:
        return TokenSelection(None, targets.reshape(-1), mask.reshape(-1).to(torch.float32), {})
    rows = mask.reshape(-1).bool().nonzero().squeeze(1)
    return TokenSelection(rows, targets.reshape(-1).index_select(0, rows), None, {})


def word_dropout(inputs: torch.Tensor, p: float, unk_id: int, pad_id: int) -> torch.Tensor:
    """Decoder inputs with each real word after ``<s>`` replaced by ``<unk>`` with probability ``p`` (word dropout,
    Bowman et al. 2016): the decoder must then lean on z for what it cannot see. Padding and ``<s>`` stay."""
    if p <= 0:
        return inputs
    drop = torch.rand(inputs.shape, device=inputs.device) < p
    drop[:, 0] = False
    drop &= inputs != pad_id
    return torch.where(drop, torch.full_like(inputs, unk_id), inputs)


def token_log_likelihood(hidden: torch.Tensor, linear, targets: torch.Tensor, mask: torch.Tensor,
                         selection: Optional[TokenSelection] = None) -> torch.Tensor:
    """Per-sequence sum of log p(y_t | h_t) over positions where ``mask`` is true; (B, T, H) -> (B,).

    Only the selected positions reach the output layer, so padding costs nothing unless the selection is static.
    The per-sequence sums are a (B, T) sum, not an atomic scatter-add: deterministic on every device. Pass the
    batch's ``selection`` (from :func:`select_tokens`) to skip finding the real positions again.
    """
    B, T, H = hidden.shape
    sel = selection if selection is not None else select_tokens(targets, mask)
    flat = hidden.reshape(B * T, H)
    if sel.rows is None:
        ll = _TokenLogLikelihood.apply(flat, linear.weight, linear.bias, sel.targets, sel.workspace)
        return (ll * sel.weight.to(ll.dtype)).view(B, T).sum(1)
    ll = _TokenLogLikelihood.apply(flat.index_select(0, sel.rows), linear.weight, linear.bias, sel.targets,
                                   sel.workspace)
    return torch.zeros(B * T, dtype=ll.dtype, device=ll.device).index_copy(0, sel.rows, ll).view(B, T).sum(1)


class _LSTMRecurrence(torch.autograd.Function):
    """The LSTM recurrence over time, with a hand-written backward.

    gates_t = proj_t + zb + h_{t-1} W_hh^T (gate order i, f, g, o as in ``nn.LSTM``; ``proj`` is the per-step
    input contribution, ``zb`` one per-sequence bias, z's contribution),
    c_t = s(f) c_{t-1} + s(i) tanh(g),  h_t = s(o) tanh(c_t).
    The backward runs backpropagation through time with one (B x 4H) @ (4H x H) product per step. It sums the
    gate gradients over time for ``zb`` as it goes, and builds the (B, T, 4H) gradient of ``proj`` and the
    batched product for W_hh's gradient only when those require grad (not while z is sampled). Autograd
    through a Python loop would record about 15 nodes per step instead. Per-step tensors stay small, so they
    come from the allocator's warm memory rather than fresh pages.
    """

    @staticmethod
    def forward(ctx, proj, zb, h0, c0, w_hh):
        T, H = proj.shape[1], h0.shape[1]
        w_t = w_hh.t()
        acts, cells, tanh_c, hs = [], [c0], [], []
        h, c = h0, c0
        for t in range(T):
            a = torch.addmm(proj[:, t] + zb, h, w_t)
            a[:, :2 * H].sigmoid_()
            a[:, 2 * H:3 * H].tanh_()
            a[:, 3 * H:].sigmoid_()
            c = torch.addcmul(a[:, H:2 * H] * c, a[:, :H], a[:, 2 * H:3 * H])
            tc = torch.tanh(c)
            h = a[:, 3 * H:] * tc
            acts.append(a)
            cells.append(c)
            tanh_c.append(tc)
            hs.append(h)
        ctx.save_for_backward(h0, w_hh)
        ctx.acts, ctx.cells, ctx.tanh_c, ctx.hs = acts, cells, tanh_c, hs
        return torch.stack(hs, 1)

    @staticmethod
    def backward(ctx, dout):
        h0, w_hh = ctx.saved_tensors
        acts, cells, tanh_c, hs = ctx.acts, ctx.cells, ctx.tanh_c, ctx.hs
        need_proj, need_zb, _, _, need_w = ctx.needs_input_grad
        T, H = len(acts), h0.shape[1]
        dh = torch.zeros_like(h0)
        dc = torch.zeros_like(h0)
        dzb = torch.zeros_like(acts[0]) if need_zb else None
        keep = need_proj or need_w  # the per-step gate gradients are only kept for proj's and W_hh's gradients
        dgates = [None] * T
        for t in range(T - 1, -1, -1):
            a, tc = acts[t], tanh_c[t]
            i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
            dh = dh + dout[:, t]
            dc = torch.addcmul(dc, dh, o * (1 - tc * tc))
            # gradients of the activations (s(i), s(f), tanh(g), s(o)), then through the nonlinearities
            d = torch.cat([dc * g, dc * cells[t], dc * i, dh * tc], 1)
            deriv = a - a * a  # s' = s (1 - s) in the sigmoid slots,
            deriv[:, 2 * H:3 * H] = 1 - g * g  # tanh' = 1 - tanh^2 in the g slot
            d.mul_(deriv)
            dc = dc * f
            dh = d @ w_hh
            if need_zb:
                dzb += d
            if keep:
                dgates[t] = d
        dall = torch.stack(dgates, 1) if keep else None
        dw = None
        if need_w:
            h_prev = torch.stack([h0] + hs[:-1], 1).reshape(-1, H)
            dw = dall.reshape(-1, 4 * H).t() @ h_prev
        return dall if need_proj else None, dzb, dh, dc, dw


def lstm_recurrence(proj: torch.Tensor, zb: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor,
                    w_hh: torch.Tensor) -> torch.Tensor:
    """Outputs (B, T, H) of the LSTM recurrence from the per-step input part of the gates ``proj`` (B, T, 4H),
    a per-sequence gate bias ``zb`` (B, 4H), the initial state ``h0``, ``c0`` (B, H) and the recurrent weights
    ``w_hh`` (4H, H): the same function as ``nn.LSTM`` with inputs whose projection is proj_t + zb."""
    dt = proj.dtype  # under autocast proj may be bf16/fp16: the whole recurrence then runs in that dtype
    with torch.autocast(proj.device.type, enabled=False):
        return _LSTMRecurrence.apply(proj, zb.to(dt), h0.to(dt), c0.to(dt), w_hh.to(dt))
