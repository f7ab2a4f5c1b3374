"""Stein variational gradient descent (SVGD) over any log-density.

Liu & Wang (2016), "Stein Variational Gradient Descent", Algorithm 1. For particles z_1..z_n:

    phi(z_i) = (1/n) sum_j [ k(z_j, z_i) grad log pi(z_j) + grad_{z_j} k(z_j, z_i) ]
    z_i <- z_i + eps * phi(z_i)

with the RBF kernel k(a, b) = exp(-|a - b|^2 / h). The first term drives particles up the log-density
(kernel-smoothed), the second repels them from each other; the fixed point represents pi.
For the RBF kernel grad_{z_j} k(z_j, z_i) = (2 / h) (z_i - z_j) k(z_j, z_i), so

    phi = (1/n) [ K @ S + (2/h) (diag(K 1) Z - K @ Z) ]         (K symmetric, S = scores, Z = particles)

computed with matrix products, no loop over particles.

Bandwidth: the median heuristic of Liu & Wang's reference code, h = med^2 / log(n + 1), where med^2 is
the median of the squared pairwise distances |z_i - z_j|^2 (i < j). Then sum_j k(z_i, z_j) is about
1 + n * (n + 1)^(-1) ~ 2 for a typical particle: its own term balanced against the rest.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from .base import LogDensity, Samples, SamplerDivergedError, check_z, finish_chain, log_prob_and_grad


def median_bandwidth(z: torch.Tensor) -> float:
    """h = med^2 / log(n + 1) with med the median pairwise distance |z_i - z_j|, i < j (Liu & Wang 2016).

    Falls back to h = 1 when all particles coincide (or n = 1).
    """
    n = z.shape[0]
    if n < 2:
        return 1.0
    med = float(torch.pdist(z.detach()).median())
    if not med > 0 or not math.isfinite(med):
        return 1.0
    return med * med / math.log(n + 1.0)


def squared_distances(z: torch.Tensor) -> torch.Tensor:
    """(n, n) matrix of |z_i - z_j|^2 via |a|^2 + |b|^2 - 2 a.b (one matrix product), clamped at 0."""
    n2 = z.pow(2).sum(-1)
    return (n2.unsqueeze(1) + n2.unsqueeze(0) - 2.0 * (z @ z.transpose(0, 1))).clamp_min(0.0)


def rbf_kernel(z: torch.Tensor, bandwidth: Optional[float] = None):
    """RBF Gram matrix K_ij = exp(-|z_i - z_j|^2 / h) and the bandwidth h used (median heuristic if None)."""
    h = median_bandwidth(z) if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise ValueError(f"bandwidth must be > 0, got {h}")
    return torch.exp(-squared_distances(z) / h), h


def svgd_direction(z: torch.Tensor, score: torch.Tensor, bandwidth: Optional[float] = None,
                   exclude_self: bool = False):
    """The SVGD direction phi(z_i) for every particle, and the bandwidth used.

    phi(z_i) = (1/n) sum_j [ k(z_j, z_i) score_j + grad_{z_j} k(z_j, z_i) ]   (Liu & Wang 2016, eq. 8)

    With ``exclude_self=True`` the j = i term is dropped and the sum divided by n - 1 (a U-statistic):
    then, for z_j ~ pi independent of z_i, E[phi(z_i) | z_i] = 0 exactly by Stein's identity, whereas the
    j = i term k(z_i, z_i) score_i / n pulls every particle toward the mode, an O(1/n) contraction.

    Args:
        z: (n, d) particles.
        score: (n, d) grad_z log pi at the particles.
        bandwidth: RBF bandwidth h in k = exp(-|a - b|^2 / h); median heuristic when None.
        exclude_self: drop the j = i term (see above); False is SVGD as published.

    Returns:
        (phi, h): phi of shape (n, d). Differentiable in ``score`` and ``z`` if they carry graphs
        (the bandwidth is always treated as a constant).
    """
    check_z(z, "z")
    if score.shape != z.shape:
        raise ValueError(f"score must have the shape of z {tuple(z.shape)}; got {tuple(score.shape)}")
    n = z.shape[0]
    K, h = rbf_kernel(z, bandwidth)
    if exclude_self:
        if n < 2:
            raise ValueError("exclude_self needs at least 2 particles")
        K = K - torch.diag_embed(K.diagonal())
    drive = K @ score
    repulse = (2.0 / h) * (z * K.sum(1, keepdim=True) - K @ z)
    return (drive + repulse) / (n - 1 if exclude_self else n), h


def svgd(
    log_prob: LogDensity,
    z0: torch.Tensor,
    n_steps: int,
    step_size: float,
    *,
    bandwidth: Optional[float] = None,
    trace: bool = False,
    snapshot_every: int = 0,
    z_clamp: Optional[float] = None,
    check_every: int = 1,
    generator: Optional[torch.Generator] = None,
    name: str = "svgd",
) -> Samples:
    """Run ``n_steps`` SVGD updates z <- z + eps * phi(z) with eps = ``step_size`` (Liu & Wang 2016).

    The particles are the rows of ``z0`` and interact, so a batch is one particle system (not independent
    chains). Deterministic: ``generator`` is accepted for interface compatibility and unused.

    Returns:
        :class:`Samples`; ``stats['bandwidth']`` holds the last bandwidth used.
    """
    check_z(z0, "z0")
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    eps = float(step_size)
    z = z0.detach().clone()
    tr = [] if trace else None
    snaps = [(0, z.clone())] if snapshot_every else None
    h = float("nan")
    for k in range(n_steps):
        lp, grad = log_prob_and_grad(log_prob, z)
        if check_every and k % check_every == 0 and not bool(torch.isfinite(lp).all()):
            raise SamplerDivergedError(name, k, "the log-density", eps)
        if tr is not None:
            tr.append(float(lp.mean()))
        phi, h = svgd_direction(z, grad, bandwidth)
        z.add_(phi, alpha=eps)
        if z_clamp is not None:
            z.clamp_(-z_clamp, z_clamp)
        if snaps is not None and (k + 1) % snapshot_every == 0:
            snaps.append((k + 1, z.clone()))
    finish_chain(log_prob, z, n_steps, name, eps, tr, snaps)
    return Samples(z=z, trace=tr, snapshots=snaps, stats={"bandwidth": h})


@dataclass
class SVGD:
    """SVGD as a small object: ``SVGD(n_steps=500, step_size=0.05).sample(log_prob, z0)``.

    See :func:`svgd` and :func:`svgd_direction` (Liu & Wang 2016). ``bandwidth=None`` uses the median
    heuristic h = med^2 / log(n + 1) at every step.
    """

    n_steps: int = 100
    step_size: float = 0.05
    bandwidth: Optional[float] = None
    z_clamp: Optional[float] = None
    check_every: int = 1

    name = "svgd"

    def sample(self, log_prob: LogDensity, z0: torch.Tensor, *, n_steps=None, step_size=None,
               trace=False, snapshot_every=0, generator=None) -> Samples:
        return svgd(
            log_prob, z0,
            self.n_steps if n_steps is None else n_steps,
            self.step_size if step_size is None else step_size,
            bandwidth=self.bandwidth, trace=trace, snapshot_every=snapshot_every, z_clamp=self.z_clamp,
            check_every=self.check_every, generator=generator, name=self.name,
        )
