r"""Learning rules built on Stein's method: Stein contrastive divergence and kernel Stein discrepancy.

Both need only the score grad_z log p_theta(z), never the normalizer, and no long MCMC run.

Stein contrastive divergence (Liu & Wang 2017, "Learning to Draw Samples with Amortized Stein Variational
Gradient Descent", Sec. 4; Wang & Liu 2016, "Learning to Draw Samples", the Stein CD of Sec. 3)
---------------------------------------------------------------------------------------------------
Contrastive divergence with the K-step MCMC replaced by SVGD steps started *at the data*:

    z-_i = z+_i + eps * phi(z+_i),  phi(z_i) = (1/n) sum_j [k(z_j, z_i) grad log p_theta(z_j) + grad_{z_j} k(z_j, z_i)]
    loss = mean_i f_theta(z-_i) - mean_i f_theta(z+_i),           (z- held fixed in theta)

the CD update theta <- theta + lr * (mean grad f(z+) - mean grad f(z-)). SVGD decreases KL(q || p_theta)
at rate eps * S(q, p_theta)^2 (Liu & Wang 2016, Thm. 3.3), so KL(q || p) - KL(q_[eps phi] || p) ~ eps KSD^2;
Stein CD minimizes this difference with the dependence of q_[eps phi] on theta ignored, as CD ignores the
dependence of its MCMC samples. At the population level phi = 0 exactly when p_theta = q, so the data
distribution is a fixed point. (For the latent prior f and log p differ by the theta-free Gaussian term.)

Kernel Stein discrepancy (Liu, Lee, Jordan 2016, "A Kernelized Stein Discrepancy for Goodness-of-fit Tests",
eq. 14; Chwialkowski et al. 2016)
--------------------------------------------------------------------------------------------
With score s = grad_z log p_theta and the RBF kernel k(x, y) = exp(-|x - y|^2 / h),

    u(x, y) = s(x)^T s(y) k + s(x)^T grad_y k + grad_x k^T s(y) + tr(grad_x grad_y k)
            = k(x, y) [ s(x)^T s(y) + (2/h) (x - y)^T (s(x) - s(y)) + 2d/h - 4 |x - y|^2 / h^2 ],
    KSD^2 = 1 / (n (n - 1)) sum_{i != j} u(z+_i, z+_j)                     (unbiased U-statistic)

KSD^2 >= 0 in expectation with equality iff p_theta = q (for smooth densities and this kernel); it is
minimized in theta by autograd through the score (``create_graph=True``). No sampling at all:
``requires_negatives = False``. The bandwidth h uses the median heuristic of :mod:`textebm.sampling.svgd`
(or a fixed value), on the data and treated as a constant.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..sampling import SVGD, run_chain
from ..sampling.svgd import median_bandwidth, squared_distances
from .base import PriorObjective


class SteinCD(PriorObjective):
    """Stein contrastive divergence: negatives from SVGD steps started at z+ (Liu & Wang 2017).

    loss = mean f(z-) - mean f(z+), z- = SVGD^K(z+) with K = ``n_steps`` (1 in the paper) and step ``step_size``.

    Args:
        step_size: SVGD step eps.
        n_steps: number of SVGD steps from the data.
        bandwidth: RBF bandwidth h; median heuristic h = med^2 / log(n + 1) when None.
        exclude_self: use the U-statistic SVGD direction (drop j = i; default). The published SVGD step keeps
            the j = i term, which pulls each data point toward the mode by O(1/n); the fitted model then
            over-disperses to compensate (about +20% variance at n = 256 on a 2-D Gaussian). Without it the
            true model is a fixed point of the expected update for any batch size.
    """

    name = "stein_cd"

    def __init__(self, step_size: float = 0.1, n_steps: int = 1, bandwidth: Optional[float] = None,
                 exclude_self: bool = True):
        super().__init__()
        if not step_size > 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        if bandwidth is not None and not bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0 or None, got {bandwidth}")
        self.step_size = float(step_size)
        self.n_steps = int(n_steps)
        self.bandwidth = bandwidth
        self.exclude_self = bool(exclude_self)

    def negatives(self, prior, z_pos: torch.Tensor, sample_prior=None) -> torch.Tensor:
        """z- = z+ moved by ``n_steps`` SVGD steps on log p_theta (the configured prior sampler is not used)."""
        chain = SVGD(bandwidth=self.bandwidth, exclude_self=self.exclude_self)
        return run_chain(chain, prior.log_prob_unnormalized, z_pos.detach(), self.n_steps, self.step_size,
                         name="stein_cd svgd").z

    def forward(self, prior, z_pos: torch.Tensor, z_neg: torch.Tensor):
        if z_neg is None:
            raise ValueError("stein_cd needs z_neg from its negatives()")
        f_pos = prior.f(z_pos.detach())
        f_neg = prior.f(z_neg.detach())
        loss = f_neg.mean() - f_pos.mean()
        return loss, {"f_pos": f_pos.detach().mean(), "f_neg": f_neg.detach().mean(),
                      "stein_shift": (z_neg - z_pos).norm(dim=-1).mean()}


def kernel_stein_discrepancy(z: torch.Tensor, score: torch.Tensor, bandwidth: Optional[float] = None):
    """U-statistic estimate of KSD^2 between the sample ``z`` and the density whose score is ``score``.

    Implements the formula in the module docstring (Liu, Lee, Jordan 2016, eq. 14) with the RBF kernel
    exp(-|x - y|^2 / h); differentiable in ``score``. Returns (ksd2, h).
    """
    n, d = z.shape
    if n < 2:
        raise ValueError("the kernel Stein discrepancy needs at least 2 samples")
    x = z.detach()
    h = median_bandwidth(x) if bandwidth is None else float(bandwidth)  # a 0-d tensor or a number
    sq = squared_distances(x)
    K = torch.exp(-sq / h)
    ss = score @ score.transpose(0, 1)
    sx = score @ x.transpose(0, 1)                       # (i, j) -> s_i . x_j
    sx_diag = sx.diagonal()
    # (x_i - x_j) . (s_i - s_j) = s_i.x_i - s_i.x_j - s_j.x_i + s_j.x_j
    cross = sx_diag.unsqueeze(1) - sx - sx.transpose(0, 1) + sx_diag.unsqueeze(0)
    u = K * (ss + (2.0 / h) * cross + 2.0 * d / h - 4.0 * sq / (h * h))
    u = u - torch.diag_embed(u.diagonal())
    return u.sum() / (n * (n - 1)), h


class KSD(PriorObjective):
    """Kernel Stein discrepancy minimization: loss = KSD^2(z+, p_theta) (Liu, Lee, Jordan 2016).

    Needs no negatives (``requires_negatives = False``); the score is differentiated with
    ``create_graph=True`` so the loss is a function of the model parameters.

    Args:
        bandwidth: RBF bandwidth h; median heuristic h = med^2 / log(n + 1) when None.
    """

    name = "ksd"
    requires_negatives = False

    def __init__(self, bandwidth: Optional[float] = None):
        super().__init__()
        if bandwidth is not None and not bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0 or None, got {bandwidth}")
        self.bandwidth = bandwidth

    def negatives(self, prior, z_pos, sample_prior=None):
        return None

    def forward(self, prior, z_pos: torch.Tensor, z_neg=None):
        with torch.enable_grad():
            z = z_pos.detach().requires_grad_(True)
            lp = prior.log_prob_unnormalized(z)
            (score,) = torch.autograd.grad(lp.sum(), z, create_graph=True)
        ksd2, h = kernel_stein_discrepancy(z.detach(), score, self.bandwidth)
        return ksd2, {"ksd2": ksd2.detach(), "ksd_bandwidth": h}
