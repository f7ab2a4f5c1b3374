"""What changes over a run's training steps: the learning rates, the weight of the prior term in the posterior the
chains sample, and the posterior chain's noise scale. (A chain's own step-size and noise schedules, over the steps
of one chain, are :mod:`textebm.sampling.schedules`.)"""
from __future__ import annotations

import math
from typing import Optional


def lr_lambda(kind: str, total: int, warmup: int, gamma: float = 1.0, every: int = 1):
    """Learning-rate factor at a step: linear warm-up, then constant, cosine or linear decay to 0 at ``total``,
    or exponential decay by ``gamma`` every ``every`` steps (the image recipes' per-epoch 0.998)."""
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "exponential":
            return gamma ** ((step - warmup) // every)
        if kind == "constant" or total <= warmup:
            return 1.0
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * t)) if kind == "cosine" else 1.0 - t
    return f


def prior_weight(t, step: int) -> float:
    """The weight w of log p_alpha(z) in the posterior the chains sample at training step ``step`` (``t``: the
    recipe's train section): 0 during autoencoder pretraining, then ``t.anneal`` counted from its end
        linear     w = min(1, w0 + (1 - w0) k / anneal_steps)                       (Bowman et al. 2016)
        cyclical   w = min(1, tau / R), tau = (k mod P) / P, P = remaining steps / anneal_cycles (Fu et al. 2019)
    """
    k = step - t.pretrain_steps
    if k < 0:
        return 0.0
    if t.anneal == "linear":
        return min(1.0, t.anneal_start + (1.0 - t.anneal_start) * k / t.anneal_steps)
    if t.anneal == "cyclical":
        period = max(1.0, (t.steps - t.pretrain_steps) / t.anneal_cycles)
        return min(1.0, ((k % period) / period) / t.anneal_ratio)
    return 1.0


def posterior_noise(recipe, step: int) -> Optional[float]:
    """The posterior chain's noise scale at training step ``step``: ``sampling.posterior_noise`` c0 rising (or
    falling) linearly to ``train.posterior_noise_to`` c1 over ``train.posterior_noise_steps`` steps after
    ``train.pretrain_steps``, in steps of 0.05 (so a captured chain is captured again only a few times); None
    (the recipe's chain as it is) without ``posterior_noise_to``. A sharpened chain (c0 < 1, temperature c0^2)
    moves z by the gradient of log p(x | z) even when the decoder barely reads z, which is what makes the latent
    carry the sentence early on; a wider one later trains on samples nearer the model's own posterior."""
    t, c0 = recipe.train, recipe.sampling.posterior_noise
    if t.posterior_noise_to is None or not recipe.sampling.noise:
        return None
    frac = min(1.0, max(0, step - t.pretrain_steps) / t.posterior_noise_steps)
    return round((c0 + (t.posterior_noise_to - c0) * frac) * 20) / 20
