"""Stochastic-gradient Hamiltonian Monte Carlo (SGHMC) over any log-density.

Update (Chen, Fox, Guestrin 2014, eq. 15, in the "momentum" form used by Song & Ou 2018, inclusive-NRF,
to revise samples of an auxiliary generator):

    v_{k+1} = (1 - beta) * v_k + delta * grad_z log pi(z_k) + sqrt(2 * beta * delta) * eps_k,   eps_k ~ N(0, I)
    z_{k+1} = z_k + v_{k+1}

with step size delta, friction beta in (0, 1] and v_0 = 0 unless given. With beta = 1 the momentum is
forgotten each step and this is Langevin dynamics with s^2 / 2 = delta (s = sqrt(2 delta)). For small delta
the z-marginal of the stationary law is pi; the discretization bias grows with delta, as for Langevin.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from .base import LogDensity, Samples, SamplerDivergedError, check_z, finish_chain, log_prob_and_grad


def sghmc(
    log_prob: LogDensity,
    z0: torch.Tensor,
    n_steps: int,
    step_size: float,
    friction: float = 0.1,
    *,
    v0: Optional[torch.Tensor] = None,
    noise: bool = True,
    trace: bool = False,
    snapshot_every: int = 0,
    z_clamp: Optional[float] = None,
    check_every: int = 1,
    generator: Optional[torch.Generator] = None,
    name: str = "sghmc",
) -> Samples:
    """Run ``n_steps`` SGHMC steps with step size delta = ``step_size`` and friction beta = ``friction``.

    Args:
        log_prob: callable z -> (batch,) log-density (unnormalized is fine).
        z0: (batch, dim) start. Not modified.
        v0: (batch, dim) start velocity; zeros when None.
        noise: add the sqrt(2 beta delta) * eps term; False gives heavy-ball gradient ascent.
        trace, snapshot_every, z_clamp, check_every, generator: as in :func:`textebm.sampling.langevin`.

    Returns:
        :class:`Samples`; ``stats['velocity']`` holds the final velocity (detached), so a chain can be resumed.
    """
    check_z(z0, "z0")
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    if not 0.0 < friction <= 1.0:
        raise ValueError(f"friction must be in (0, 1], got {friction}")
    delta, beta = float(step_size), float(friction)
    noise_scale = math.sqrt(2.0 * beta * delta)
    z = z0.detach().clone()
    if v0 is None:
        v = torch.zeros_like(z)
    else:
        if v0.shape != z.shape:
            raise ValueError(f"v0 must have the shape of z0 {tuple(z.shape)}; got {tuple(v0.shape)}")
        v = v0.detach().clone().to(z)
    tr = [] if trace else None
    snaps = [(0, z.clone())] if snapshot_every else None

    for k in range(n_steps):
        lp, grad = log_prob_and_grad(log_prob, z)
        if check_every and k % check_every == 0 and not bool(torch.isfinite(lp).all()):
            raise SamplerDivergedError(name, k, "the log-density", delta)
        if tr is not None:
            tr.append(float(lp.mean()))
        v.mul_(1.0 - beta).add_(grad, alpha=delta)
        if noise:
            v.add_(torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype), alpha=noise_scale)
        z.add_(v)
        if z_clamp is not None:
            z.clamp_(-z_clamp, z_clamp)
        if snaps is not None and (k + 1) % snapshot_every == 0:
            snaps.append((k + 1, z.clone()))
    finish_chain(log_prob, z, n_steps, name, delta, tr, snaps)
    return Samples(z=z, trace=tr, snapshots=snaps, stats={"velocity": v})


@dataclass
class SGHMC:
    """SGHMC as a small object: ``SGHMC(n_steps=100, step_size=0.01, friction=0.1).sample(log_prob, z0)``.

    See :func:`sghmc` for the update (Chen et al. 2014; Song & Ou 2018). Each call starts from v = 0.
    """

    n_steps: int = 100
    step_size: float = 0.01
    friction: float = 0.1
    noise: bool = True
    z_clamp: Optional[float] = None
    check_every: int = 1

    name = "sghmc"

    def sample(self, log_prob: LogDensity, z0: torch.Tensor, *, n_steps=None, step_size=None,
               trace=False, snapshot_every=0, generator=None) -> Samples:
        return sghmc(
            log_prob, z0,
            self.n_steps if n_steps is None else n_steps,
            self.step_size if step_size is None else step_size,
            self.friction, noise=self.noise, trace=trace, snapshot_every=snapshot_every,
            z_clamp=self.z_clamp, check_every=self.check_every, generator=generator, name=self.name,
        )
