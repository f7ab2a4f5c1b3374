"""Metropolis-adjusted Langevin algorithm (MALA) over any log-density.

Proposal (Roberts & Tweedie 1996), per chain, with step s:

    z' = z + (s^2 / 2) * grad log pi(z) + s * eps,      eps ~ N(0, I)
    q(z' | z) = N(z'; z + (s^2 / 2) grad log pi(z), s^2 I)

accepted with probability min(1, pi(z') q(z | z') / (pi(z) q(z' | z))), computed in log space:

    log a = log pi(z') - log pi(z) - |z - z' - (s^2/2) grad log pi(z')|^2 / (2 s^2) + |eps|^2 / 2.

The Metropolis-Hastings step makes pi exactly invariant for any s > 0, unlike the unadjusted Langevin
update of :mod:`textebm.sampling.langevin`, whose stationary law is biased by O(s^2). Kumar, Ozair, Goyal,
Courville, Bengio (2019, "Maximum Entropy Generators for Energy-Based Models") use MALA to refine samples.

Optional step-size adaptation (off by default) moves log s by ``adapt_rate * (accept_rate_k - target)``
after step k, a Robbins-Monro rule toward the target acceptance (0.574 is optimal for MALA in high
dimension, Roberts & Rosenthal 1998). While adapting the chain is no longer exactly pi-invariant: use it
for burn-in or short-run sampling, then fix s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from .base import LogDensity, Samples, SamplerDivergedError, check_z, finish_chain, log_prob_and_grad


def mala(
    log_prob: LogDensity,
    z0: torch.Tensor,
    n_steps: int,
    step_size: float,
    *,
    adapt: bool = False,
    target_accept: float = 0.574,
    adapt_rate: float = 0.05,
    trace: bool = False,
    snapshot_every: int = 0,
    z_clamp: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
    name: str = "mala",
) -> Samples:
    """Run ``n_steps`` MALA steps of size s = ``step_size`` on ``log_prob`` from ``z0``.

    Each chain (row of z) accepts or rejects on its own. A proposal whose log-density is NaN or Inf is
    rejected; a start whose log-density is not finite raises :class:`SamplerDivergedError`.

    Args:
        log_prob: callable z -> (batch,) log-density (unnormalized is fine).
        z0: (batch, dim) start. Not modified.
        adapt: adapt s toward ``target_accept`` (see the module docstring); off by default.
        z_clamp: if set, proposals are clamped to [-z_clamp, z_clamp] before the accept test
            (the clamp then is part of the proposal; exactness holds only when it is inactive).
        trace, snapshot_every, generator: as in :func:`textebm.sampling.langevin`.

    Returns:
        :class:`Samples` with ``stats``: ``accept_rate`` (over all chains and steps), ``accept_rate_per_step``
        (list, one value per step), ``accept_rate_per_chain`` (tensor (batch,)), ``step_size`` (final s).
    """
    check_z(z0, "z0")
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
    s = float(step_size)
    z = z0.detach().clone()
    lp, grad = log_prob_and_grad(log_prob, z)
    if not bool(torch.isfinite(lp).all()) or not bool(torch.isfinite(grad).all()):
        raise SamplerDivergedError(name, 0, "the log-density at the start", s)
    tr = [float(lp.mean())] if trace else None
    snaps = [(0, z.clone())] if snapshot_every else None
    per_step = []
    per_chain = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)

    for k in range(n_steps):
        half_s2 = 0.5 * s * s
        eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        prop = z + half_s2 * grad + s * eps
        if z_clamp is not None:
            prop.clamp_(-z_clamp, z_clamp)
        lp_p, grad_p = log_prob_and_grad(log_prob, prop)
        log_q_fwd = -(prop - z - half_s2 * grad).pow(2).sum(-1) / (2.0 * s * s)
        log_q_rev = -(z - prop - half_s2 * grad_p).pow(2).sum(-1) / (2.0 * s * s)
        log_a = lp_p - lp + log_q_rev - log_q_fwd
        ok = torch.isfinite(log_a) & torch.isfinite(grad_p).all(-1)
        log_u = torch.log(torch.rand(z.shape[0], generator=generator, device=z.device, dtype=z.dtype))
        accept = ok & (log_u < torch.where(ok, log_a, torch.zeros_like(log_a)))
        z = torch.where(accept[:, None], prop, z)
        grad = torch.where(accept[:, None], grad_p, grad)
        lp = torch.where(accept, lp_p, lp)
        acc = accept.to(z.dtype)
        per_chain += acc
        rate = float(acc.mean())
        per_step.append(rate)
        if adapt:
            s = float(math.exp(math.log(s) + adapt_rate * (rate - target_accept)))
        if tr is not None:
            tr.append(float(lp.mean()))
        if snaps is not None and (k + 1) % snapshot_every == 0:
            snaps.append((k + 1, z.clone()))
    finish_chain(log_prob, z, n_steps, name, s, None, snaps)
    stats = {
        "accept_rate": float(sum(per_step) / len(per_step)) if per_step else float("nan"),
        "accept_rate_per_step": per_step,
        "accept_rate_per_chain": per_chain / max(n_steps, 1),
        "step_size": s,
    }
    return Samples(z=z.detach(), trace=tr, snapshots=snaps, stats=stats)


@dataclass
class MALA:
    """MALA as a small object: ``MALA(n_steps=100, step_size=0.3).sample(log_prob, z0)``.

    See :func:`mala` for the proposal and the accept rule (Roberts & Tweedie 1996; Kumar et al. 2019).
    """

    n_steps: int = 100
    step_size: float = 0.1
    adapt: bool = False
    target_accept: float = 0.574
    adapt_rate: float = 0.05
    z_clamp: Optional[float] = None

    name = "mala"

    def sample(self, log_prob: LogDensity, z0: torch.Tensor, *, n_steps=None, step_size=None,
               trace=False, snapshot_every=0, generator=None) -> Samples:
        return mala(
            log_prob, z0,
            self.n_steps if n_steps is None else n_steps,
            self.step_size if step_size is None else step_size,
            adapt=self.adapt, target_accept=self.target_accept, adapt_rate=self.adapt_rate,
            trace=trace, snapshot_every=snapshot_every, z_clamp=self.z_clamp, generator=generator,
            name=self.name,
        )
