"""Short-run Langevin dynamics over any log-density.

Update (Pang et al. 2020, eq. 9; Nijkamp et al. 2019 short-run MCMC):

    z_{k+1} = z_k + (s_k^2 / 2) * grad_z log pi(z_k) + c_k s_k * eps_k,   eps_k ~ N(0, I),

for k = 0 .. K-1, started at z_0 (by default z_0 ~ N(0, sigma0^2 I)). s_k is the step size and c_k the noise scale
at step k (constant by default, c = 1; both may follow a schedule, see :mod:`.schedules`). With c = 0 (or
``noise=False``) this is plain gradient ascent on log pi with step s^2 / 2; 0 < c < 1 is Langevin at temperature
c^2 (the posterior sharpened toward its modes). Short-run chains are not run to convergence: the K-step
distribution is itself the model's sampler, which is why K, s and c are part of a recipe.

``coordinate_scale`` (a (dim,) tensor m) gives every coordinate its own step, s_j = m_j s: the blocked moves of a
joint chain whose blocks need different step sizes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .base import LogDensity, Sampler, Samples, coordinate_scale
from .runner import run_chain


@dataclass
class Langevin(Sampler):
    """Short-run Langevin dynamics (Pang et al. 2020, eq. 9; Nijkamp et al. 2019)::

        z_{k+1} = z_k + (s_k^2 / 2) m^2 * grad_z log pi(z_k) + c_k s_k m * eps_k,    eps_k ~ N(0, I)

    with s_k the step size and c_k the noise scale of the chain (:class:`~textebm.sampling.chain.ChainConfig`)
    and m the per-coordinate scale (1 by default): ``ChainConfig(Langevin(), 60, 0.4).run(log_prob, z0)``.

    Args:
        noise: add the noise term; False gives deterministic gradient ascent.
        coordinate_scale: optional (dim,) per-coordinate multiplier m of the step size.
    """

    noise: bool = True
    coordinate_scale: Optional[torch.Tensor] = None

    name = "langevin"

    def noise_spec(self, z):
        return [("normal", tuple(z.shape))] if self.noise else []

    def step(self, z, state, target, step_size, noise, noise_scale):
        """z + (s^2 / 2) m^2 grad log pi(z) + c s m eps; returns (z', state, log pi(z))."""
        lp, grad = target(z)
        m = coordinate_scale(self.coordinate_scale, z)
        z = torch.add(z, grad * (m * m) if torch.is_tensor(m) else grad, alpha=0.5 * step_size * step_size)
        if self.noise and noise_scale:
            eps = noise[0] * m if torch.is_tensor(m) else noise[0]
            z.add_(eps, alpha=noise_scale * step_size)
        return z, state, lp


def langevin(log_prob: LogDensity, z0: torch.Tensor, n_steps: int, step_size, *, noise: bool = True,
             noise_scale=1.0, trace: bool = False, snapshot_every: int = 0, z_clamp: Optional[float] = None,
             check_every: int = 0, generator: Optional[torch.Generator] = None, name: str = "langevin",
             **kwargs) -> Samples:
    """Run K = ``n_steps`` Langevin steps of size s = ``step_size`` (a number or a schedule) on ``log_prob`` from
    ``z0``; the function form of :class:`Langevin` (arguments as in :func:`textebm.sampling.run_chain`)."""
    return run_chain(Langevin(noise=noise), log_prob, z0, n_steps, step_size, noise_scale=noise_scale, trace=trace,
                     snapshot_every=snapshot_every, z_clamp=z_clamp, check_every=check_every, generator=generator,
                     name=name, **kwargs)
