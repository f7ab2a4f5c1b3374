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
for burn-in or short-run sampling, then fix s. The adapted scale is a device tensor (no host synchronization);
a step-size schedule gives the base s_k that it multiplies. A noise scale other than 1 would change the
proposal without the acceptance test knowing, so MALA refuses it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .base import LogDensity, Sampler, Samples
from .runner import run_chain


@dataclass
class MALA(Sampler):
    """MALA as a small object: ``ChainConfig(MALA(), 100, 0.1).run(log_prob, z0)`` (see the module docstring for
    the update).

    Each chain (row of z) accepts or rejects on its own. A proposal whose log-density or gradient is NaN or Inf is
    rejected; a start whose log-density is not finite is a divergence at step 0. With ``proposal_clamp``
    proposals are clamped before the accept test (the clamp is then part of the proposal; exactness holds only
    when it is inactive). ``Samples.stats``: ``accept_rate`` (over all chains and steps), ``accept_rate_per_step``
    (list), ``accept_rate_per_chain`` (tensor (batch,)), ``step_size`` (the last step's s, adapted).
    """

    adapt: bool = False
    target_accept: float = 0.574
    adapt_rate: float = 0.05
    proposal_clamp: Optional[float] = None

    name = "mala"

    def __post_init__(self):
        if not 0.0 < self.target_accept < 1.0:
            raise ValueError(f"target_accept must be in (0, 1), got {self.target_accept}")

    def noise_spec(self, z):
        return [("normal", tuple(z.shape)), ("uniform", (z.shape[0],))]

    def init(self, z, target):
        lp, grad = target(z)
        zero = torch.zeros((), dtype=z.dtype, device=z.device)
        return {"lp": lp, "grad": grad, "log_scale": zero, "accepted": torch.zeros_like(lp), "rates": [],
                "base": None}  # the step size of the last step taken

    def step(self, z, state, target, step_size, noise, noise_scale):
        if noise_scale != 1.0:
            raise ValueError("MALA's accept test assumes the proposal noise it draws; use noise_scale 1")
        eps, u = noise
        lp, grad = state["lp"], state["grad"]
        s = step_size * torch.exp(state["log_scale"])
        half_s2 = 0.5 * s * s
        prop = z + half_s2 * grad + s * eps
        if self.proposal_clamp is not None:
            prop = prop.clamp(-self.proposal_clamp, self.proposal_clamp)
        lp_p, grad_p = target(prop)
        log_q_fwd = -(prop - z - half_s2 * grad).pow(2).sum(-1) / (2.0 * s * s)
        log_q_rev = -(z - prop - half_s2 * grad_p).pow(2).sum(-1) / (2.0 * s * s)
        log_a = lp_p - lp + log_q_rev - log_q_fwd
        ok = torch.isfinite(log_a) & torch.isfinite(grad_p).all(-1)
        accept = ok & (torch.log(u) < torch.where(ok, log_a, torch.zeros_like(log_a)))
        acc = accept.to(lp.dtype)
        rate = acc.mean()
        new = {"lp": torch.where(accept, lp_p, lp), "grad": torch.where(accept[:, None], grad_p, grad),
               "accepted": state["accepted"] + acc, "rates": state["rates"] + [rate], "base": float(step_size),
               "log_scale": state["log_scale"] + self.adapt_rate * (rate - self.target_accept) if self.adapt
               else state["log_scale"]}
        return torch.where(accept[:, None], prop, z), new, lp

    def finish(self, z, state):
        """The adapted step size is the last step's base s times the learned scale (s itself without adapt)."""
        rates = state["rates"]
        read = {"accept_rate": torch.stack(rates).mean() if rates else torch.tensor(float("nan"))}
        keep = {"accept_rate_per_chain": state["accepted"] / max(1, len(rates))}
        if rates:
            read["accept_rate_per_step"] = torch.stack(rates)
        if self.adapt and state["base"] is not None:
            read["step_size"] = state["base"] * torch.exp(state["log_scale"])
        else:
            keep["step_size"] = state["base"]
        return read, keep


def mala(log_prob: LogDensity, z0: torch.Tensor, n_steps: int, step_size, *, adapt: bool = False,
         target_accept: float = 0.574, adapt_rate: float = 0.05, proposal_clamp: Optional[float] = None,
         **kwargs) -> Samples:
    """Run ``n_steps`` MALA steps of size s = ``step_size`` on ``log_prob`` from ``z0`` (the function form of
    :class:`MALA`; other arguments as in :func:`textebm.sampling.run_chain`)."""
    kwargs.setdefault("name", "mala")
    return run_chain(MALA(adapt=adapt, target_accept=target_accept, adapt_rate=adapt_rate,
                          proposal_clamp=proposal_clamp),
                     log_prob, z0, n_steps, step_size, **kwargs)
