"""The interface every prior learning rule implements.

The training loop calls, per batch (z_pos: posterior samples of the data, detached):

    z_neg = objective.negatives(prior, z_pos, sample_prior)   # sample_prior(n, z0=None) -> (n, d)
    loss, stats = objective(prior, z_pos, z_neg)              # scalar to minimize
    loss.backward(); prior_optimizer.step()                   # optimizes prior + objective parameters
    stats |= objective.after_step(prior, z_pos, z_neg)        # e.g. an amortized sampler's own update

An objective is an ``nn.Module``: auxiliary networks it owns (a ratio network, an amortized sampler) are
its submodules and are saved with the run.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

SamplePrior = Callable[..., torch.Tensor]


class PriorObjective(nn.Module):
    name = "base"
    #: False for rules that need no prior samples (e.g. kernel Stein discrepancy).
    requires_negatives = True

    def negatives(self, prior, z_pos: torch.Tensor, sample_prior: SamplePrior) -> Optional[torch.Tensor]:
        """Negative samples for this rule; by default the configured prior sampler started at p0."""
        return sample_prior(z_pos.shape[0]) if self.requires_negatives else None

    def forward(self, prior, z_pos: torch.Tensor, z_neg: Optional[torch.Tensor]):
        raise NotImplementedError

    def after_step(self, prior, z_pos: torch.Tensor, z_neg: Optional[torch.Tensor]) -> dict:
        return {}
