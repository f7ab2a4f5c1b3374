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
from typing import Optional, Union

import torch

from .base import LogDensity, Sampler, Samples, check_z
from .runner import run_chain

Bandwidth = Union[float, torch.Tensor]


def median_bandwidth(z: torch.Tensor) -> torch.Tensor:
    """h = med^2 / log(n + 1) with med the median pairwise distance |z_i - z_j|, i < j (Liu & Wang 2016), as a
    0-d tensor on z's device (no host synchronization). h = 1 when all particles coincide (or n = 1)."""
    n = z.shape[0]
    one = torch.ones((), dtype=z.dtype, device=z.device)
    if n < 2:
        return one
    med = torch.pdist(z.detach()).median()
    ok = torch.isfinite(med) & (med > 0)
    return torch.where(ok, med * med / math.log(n + 1.0), one)


def squared_distances(z: torch.Tensor) -> torch.Tensor:
    """(n, n) matrix of |z_i - z_j|^2 via |a|^2 + |b|^2 - 2 a.b (one matrix product), clamped at 0."""
    n2 = z.pow(2).sum(-1)
    return (n2.unsqueeze(1) + n2.unsqueeze(0) - 2.0 * (z @ z.transpose(0, 1))).clamp_min(0.0)


def rbf_kernel(z: torch.Tensor, bandwidth: Optional[Bandwidth] = None):
    """RBF Gram matrix K_ij = exp(-|z_i - z_j|^2 / h) and the bandwidth h used (median heuristic if None)."""
    if bandwidth is None:
        h = median_bandwidth(z)
    else:
        if not torch.is_tensor(bandwidth) and not bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
        h = bandwidth
    return torch.exp(-squared_distances(z) / h), h


def svgd_direction(z: torch.Tensor, score: torch.Tensor, bandwidth: Optional[Bandwidth] = None,
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
        (phi, h): phi of shape (n, d); h a number or a 0-d tensor. Differentiable in ``score`` and ``z`` if they
        carry graphs (the bandwidth is always treated as a constant).
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


@dataclass
class SVGD(Sampler):
    """SVGD as a small object: ``ChainConfig(SVGD(), 500, 0.05).run(log_prob, z0)``.

    z <- z + eps * phi(z) with eps the step size (Liu & Wang 2016, Algorithm 1; :func:`svgd_direction`). The rows
    of z are one interacting particle system, not independent chains. Deterministic: it draws no noise.
    ``bandwidth=None`` uses the median heuristic h = med^2 / log(n + 1) at every step; ``exclude_self`` uses the
    U-statistic direction. ``Samples.stats['bandwidth']`` is the last bandwidth used.
    """

    bandwidth: Optional[float] = None
    exclude_self: bool = False

    name = "svgd"

    def noise_spec(self, z):
        return []

    def init(self, z, target):
        return {"h": torch.full((), float("nan"), dtype=z.dtype, device=z.device)}

    def step(self, z, state, target, step_size, noise, noise_scale):
        lp, grad = target(z)
        phi, h = svgd_direction(z, grad, self.bandwidth, exclude_self=self.exclude_self)
        return z + step_size * phi, {"h": torch.as_tensor(h, dtype=z.dtype, device=z.device)}, lp

    def finish(self, z, state):
        return {"bandwidth": state["h"]}, {}


def svgd(log_prob: LogDensity, z0: torch.Tensor, n_steps: int, step_size, *, bandwidth: Optional[float] = None,
         exclude_self: bool = False, **kwargs) -> Samples:
    """Run ``n_steps`` SVGD updates z <- z + eps * phi(z) with eps = ``step_size`` (the function form of
    :class:`SVGD`; other arguments as in :func:`textebm.sampling.run_chain`)."""
    kwargs.setdefault("name", "svgd")
    return run_chain(SVGD(bandwidth=bandwidth, exclude_self=exclude_self), log_prob, z0, n_steps, step_size,
                     **kwargs)
