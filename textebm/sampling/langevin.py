"""Short-run Langevin dynamics over any log-density.

Update (Pang et al. 2020, eq. 9; Nijkamp et al. 2019 short-run MCMC):

    z_{k+1} = z_k + (s^2 / 2) * grad_z log pi(z_k) + s * eps_k,   eps_k ~ N(0, I),

for k = 0 .. K-1, started at z_0 (by default z_0 ~ N(0, sigma0^2 I)). With ``noise=False`` this is plain
gradient ascent on log pi with step s^2 / 2. Short-run chains are not run to convergence: the K-step
distribution is itself the model's sampler, which is why K and s are part of a recipe.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .base import LogDensity, Samples, SamplerDivergedError, check_z, finish_chain, log_prob_and_grad


def langevin(
    log_prob: LogDensity,
    z0: torch.Tensor,
    n_steps: int,
    step_size: float,
    *,
    noise: bool = True,
    trace: bool = False,
    snapshot_every: int = 0,
    z_clamp: Optional[float] = None,
    check_every: int = 1,
    generator: Optional[torch.Generator] = None,
    name: str = "langevin",
) -> Samples:
    """Run K = ``n_steps`` Langevin steps of size s = ``step_size`` on ``log_prob`` from ``z0``.

    Args:
        log_prob: callable z -> (batch,) log-density (unnormalized is fine).
        z0: (batch, dim) start. Not modified.
        noise: add s * eps each step; False gives deterministic gradient ascent.
        trace: record the batch-mean log-density at every step (K + 1 values; one extra evaluation at the end).
        snapshot_every: keep a copy of z every this many steps (0 = none; the start and the end are included).
        z_clamp: if set, clamp every coordinate of z to [-z_clamp, z_clamp] after each step.
        check_every: test the log-density and z for NaN/Inf every this many steps (0 = only at the end);
            a non-finite value raises :class:`SamplerDivergedError` naming the step.
        generator: torch.Generator for the noise (same generator state -> same chain).

    Returns:
        :class:`Samples` with the final z (detached), and the trace / snapshots if asked for.
        No parameter of the model behind ``log_prob`` accumulates a gradient.
    """
    check_z(z0, "z0")
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    s = float(step_size)
    half_s2 = 0.5 * s * s
    z = z0.detach().clone()
    tr = [] if trace else None
    snaps = [(0, z.clone())] if snapshot_every else None

    for k in range(n_steps):
        lp, grad = log_prob_and_grad(log_prob, z)
        if check_every and k % check_every == 0 and not bool(torch.isfinite(lp).all()):
            raise SamplerDivergedError(name, k, "the log-density", s)
        if tr is not None:
            tr.append(float(lp.mean()))
        z.add_(grad, alpha=half_s2)
        if noise:
            z.add_(torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype), alpha=s)
        if z_clamp is not None:
            z.clamp_(-z_clamp, z_clamp)
        if snaps is not None and (k + 1) % snapshot_every == 0:
            snaps.append((k + 1, z.clone()))
    finish_chain(log_prob, z, n_steps, name, s, tr, snaps)
    return Samples(z=z, trace=tr, snapshots=snaps)


@dataclass
class Langevin:
    """Short-run Langevin as a small object, so a recipe can name it and code can pass it around.

    ``Langevin(n_steps=60, step_size=0.4).sample(log_prob, z0)``; see :func:`langevin` for the update.
    """

    n_steps: int = 60
    step_size: float = 0.4
    noise: bool = True
    z_clamp: Optional[float] = None
    check_every: int = 1

    name = "langevin"

    def sample(self, log_prob: LogDensity, z0: torch.Tensor, *, n_steps=None, step_size=None,
               trace=False, snapshot_every=0, generator=None) -> Samples:
        return langevin(
            log_prob, z0,
            self.n_steps if n_steps is None else n_steps,
            self.step_size if step_size is None else step_size,
            noise=self.noise, trace=trace, snapshot_every=snapshot_every, z_clamp=self.z_clamp,
            check_every=self.check_every, generator=generator, name=self.name,
        )
