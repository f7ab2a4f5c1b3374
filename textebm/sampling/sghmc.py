"""Stochastic-gradient Hamiltonian Monte Carlo (SGHMC) over any log-density.

Update (Chen, Fox, Guestrin 2014, eq. 15, in the "momentum" form used by Song & Ou 2018, inclusive-NRF,
to revise samples of an auxiliary generator):

    v_{k+1} = (1 - beta) * v_k + delta_k * grad_z log pi(z_k) + c_k sqrt(2 * beta * delta_k) * eps_k,   eps_k ~ N(0, I)
    z_{k+1} = z_k + v_{k+1}

with step size delta (a schedule like any chain's), friction beta in (0, 1], noise scale c (1 by default) and
v_0 = 0 unless given. With beta = 1 the momentum is forgotten each step and this is Langevin dynamics with
s^2 / 2 = delta (s = sqrt(2 delta)). For small delta the z-marginal of the stationary law is pi; the
discretization bias grows with delta, as for Langevin. ``coordinate_scale`` m gives coordinate j the step
delta m_j^2 (the Langevin step s m_j).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from .base import LogDensity, Sampler, Samples, coordinate_scale
from .runner import run_chain


@dataclass
class SGHMC(Sampler):
    """SGHMC as a small object: ``ChainConfig(SGHMC(friction=0.1), 100, 0.01).run(log_prob, z0)``.

    See the module docstring for the update (Chen et al. 2014; Song & Ou 2018). ``v0`` (a (batch, dim) tensor)
    starts the velocity, zeros otherwise; ``Samples.stats['velocity']`` is the final one, so a chain can go on.
    """

    friction: float = 0.1
    noise: bool = True
    coordinate_scale: Optional[torch.Tensor] = None
    v0: Optional[torch.Tensor] = None

    name = "sghmc"

    def __post_init__(self):
        if not 0.0 < self.friction <= 1.0:
            raise ValueError(f"friction must be in (0, 1], got {self.friction}")

    def noise_spec(self, z):
        return [("normal", tuple(z.shape))] if self.noise else []

    def init(self, z, target):
        if self.v0 is None:
            return {"v": torch.zeros_like(z)}
        if self.v0.shape != z.shape:
            raise ValueError(f"v0 must have the shape of z0 {tuple(z.shape)}; got {tuple(self.v0.shape)}")
        return {"v": self.v0.detach().to(z).clone()}

    def step(self, z, state, target, step_size, noise, noise_scale):
        lp, grad = target(z)
        m = coordinate_scale(self.coordinate_scale, z)
        m2 = m * m if torch.is_tensor(m) else 1.0
        v = state["v"] * (1.0 - self.friction) + grad * m2 * step_size
        if self.noise and noise_scale:
            v = v + noise[0] * m * (noise_scale * math.sqrt(2.0 * self.friction * step_size))
        return z + v, {"v": v}, lp

    def finish(self, z, state):
        return {}, {"velocity": state["v"].detach()}


def sghmc(log_prob: LogDensity, z0: torch.Tensor, n_steps: int, step_size, friction: float = 0.1, *,
          v0: Optional[torch.Tensor] = None, noise: bool = True, **kwargs) -> Samples:
    """Run ``n_steps`` SGHMC steps with step size delta = ``step_size`` and friction beta = ``friction`` (the
    function form of :class:`SGHMC`; other arguments as in :func:`textebm.sampling.run_chain`)."""
    kwargs.setdefault("name", "sghmc")
    return run_chain(SGHMC(friction=friction, noise=noise, v0=v0), log_prob, z0, n_steps, step_size, **kwargs)
