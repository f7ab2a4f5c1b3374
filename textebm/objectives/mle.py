"""Maximum likelihood with short-run MCMC negatives (Pang et al. 2020, Algorithm 1, eq. 11)."""
from __future__ import annotations

import torch

from .base import PriorObjective


class ShortRunMLE(PriorObjective):
    """Ascend E_{p(z|x)}[f(z)] - E_{p_alpha(z)}[f(z)], the gradient of the marginal log-likelihood in alpha.

    loss = mean f(z-) - mean f(z+), with z+ from posterior Langevin and z- from prior Langevin (both
    detached). Its gradient is minus the estimate of d log p(x) / d alpha (Pang et al. 2020, eq. 11).
    Like every rule's, its statistics are 0-d tensors, so a training step never waits for the device.
    """

    name = "mle"

    def forward(self, prior, z_pos: torch.Tensor, z_neg: torch.Tensor):
        f_pos = prior.f(z_pos.detach())
        f_neg = prior.f(z_neg.detach())
        loss = f_neg.mean() - f_pos.mean()
        fp, fn = f_pos.detach().mean(), f_neg.detach().mean()
        return loss, {"f_pos": fp, "f_neg": fn, "f_gap": fp - fn}  # device tensors: read when logged
