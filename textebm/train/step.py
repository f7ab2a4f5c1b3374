"""One update of Algorithm 1 (Pang et al. 2020), read top to bottom in :func:`train_step`; its losses
(:class:`TrainingLoss`) and the check that the update is sound (:func:`check_finite`)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..data.batching import Batch
from .schedules import posterior_noise, prior_weight


class TrainingDivergedError(FloatingPointError):
    """A training step produced a loss or gradient that is not finite, or a prior energy that runs away; the
    message names what diverged, at which step, and what to change."""


class TrainingLoss(nn.Module):
    """The losses of one update, as a module so that DistributedDataParallel can own its parameters:

        log p_beta(x | z+)                per example, summed over tokens (the decoder minimizes -mean)
        objective(prior, z+, z-)          the prior's learning rule; mle: mean f(z-) - mean f(z+) (eq. 11)
        encoder_loss(x, z+)               the amortized posterior's (:func:`textebm.encoders.encoder_loss`)

    A fixed prior (``prior.fixed``) has no loss; a model without an encoder neither."""

    def __init__(self, model, objective: nn.Module, encoder_loss: str = "chain"):
        super().__init__()
        self.model, self.objective, self.encoder_loss = model, objective, encoder_loss
        # the information term's share on the encoder's codes: its weight and beta, as the objective resolved them
        self.symbol_information = float(getattr(objective, "encoder_information", 0.0))
        self.symbol_balance = float(getattr(objective, "symbol_balance", 1.0))

    def forward(self, x, z_pos, z_neg, generator=None):
        from ..encoders import encoder_loss

        logp = self.model.decoder.log_prob(x, z_pos).float()
        zero = logp.new_zeros(())
        prior_loss, stats = (zero, {}) if self.model.prior.fixed else self.objective(self.model.prior, z_pos, z_neg)
        enc_loss = zero if self.model.encoder is None else encoder_loss(self.model, x, z_pos, self.encoder_loss,
                                                                        generator, self.symbol_information,
                                                                        self.symbol_balance)
        return logp, prior_loss, enc_loss, stats


def train_step(tr, batch) -> dict:
    """One update on ``batch`` (a :class:`~textebm.data.batching.Batch`, or a bare tensor x) of the trainer
    ``tr`` (:class:`~textebm.train.trainer.Trainer`: the model, the chains and their stores, the optimizers):

        z+ ~ p(z | x)      the posterior chain (in eval mode: it targets the model's own posterior)
        z- ~ p_alpha(z)    the prior chain, or the objective's own negatives (none for a fixed prior)
        minimize  -mean log p_beta(x | z+) + objective(prior, z+, z-) + encoder loss, each part with its own Adam,
                  its gradients clipped to train.grad_clip

    The returned numbers are device tensors (read when they are logged); one host read per step checks that the
    update is sound (:func:`check_finite`) before any optimizer steps."""
    t, model, clock = tr.recipe.train, tr.model, tr.clock
    x, index = (batch.x, batch.index) if isinstance(batch, Batch) else (batch, None)
    x = x.to(tr.device, non_blocking=True)
    t0 = clock.mark()
    z_pos = tr.sample_posterior(x, index, prior_weight(t, tr.step), posterior_noise(tr.recipe, tr.step))
    t1 = clock.mark()
    tr.observe_posterior(z_pos)  # a fitted reference and a store of posterior samples follow z+
    z_neg = None if model.prior.fixed else tr.objective.negatives(model.prior, z_pos, tr.sample_prior)
    t2 = clock.mark()
    model.train()
    for opt in tr.optimizers.values():
        opt.zero_grad(set_to_none=True)
    with tr.autocast():
        logp, prior_loss, enc_loss, stats = tr.loss(x, z_pos, z_neg, tr.gen)
    dec_loss = -logp.mean()
    (dec_loss + prior_loss + enc_loss).backward()
    clip = t.grad_clip if t.grad_clip is not None else float("inf")
    norms = {name: nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
             for name, opt in tr.optimizers.items()}
    check_finite(tr, dec_loss, prior_loss, enc_loss, norms, stats)
    for opt in tr.optimizers.values():
        opt.step()
    for sched in tr.scheds:
        sched.step()
    if z_neg is not None:
        stats.update(tr.objective.after_step(model.prior, z_pos, z_neg))
        for _ in range(t.prior_updates - 1):  # more prior updates on the same z+, each with fresh z-
            prior_update(tr, z_pos, clip)
    out = {"dec_nll": dec_loss.detach(), f"dec_nll_{tr.data.unit}": -logp.detach().sum() / tr.data.units(x),
           "prior_loss": prior_loss.detach(), **stats, **{f"grad_norm_{n}": v for n, v in norms.items()},
           "prior_weight": prior_weight(t, tr.step), "time_posterior": clock.between(t0, t1),
           "time_prior": clock.between(t1, t2), "time_step": clock.between(t0, clock.mark()),
           "lr_decoder": tr.scheds[0].get_last_lr()[0]}
    if model.encoder is not None:
        out["encoder_loss"] = enc_loss.detach()
    return out


def prior_update(tr, z_pos: torch.Tensor, clip: float) -> None:
    """One more update of the prior alone on the batch's z+ (``train.prior_updates`` > 1): fresh z- from the prior
    chain, the objective's loss, clipped gradients, the prior's Adam step. The decoder and the encoder do not move,
    so the prior can catch up with a moving aggregate posterior."""
    prior, opt = tr.model.prior, tr.opt_prior
    z_neg = tr.objective.negatives(prior, z_pos, tr.sample_prior)
    opt.zero_grad(set_to_none=True)
    loss, stats = tr.objective(prior, z_pos, z_neg)
    loss.backward()
    norm = nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
    check_finite(tr, loss.new_zeros(()), loss, loss.new_zeros(()), {"prior": norm}, stats)
    opt.step()
    tr.objective.after_step(prior, z_pos, z_neg)


def check_finite(tr, dec_loss, prior_loss, enc_loss, norms: dict, stats: dict) -> None:
    """One host read per step: the losses and gradient norms are finite and, with the prior's maximum-likelihood
    statistics at hand, f(z+) - f(z-) and |f| stay within ``train.max_f_gap`` and ``train.max_abs_f`` (an energy
    that runs away ruins the model long before anything is NaN). Raises :class:`TrainingDivergedError` naming what
    diverged and what to change."""
    t = tr.recipe.train
    values = torch.stack([dec_loss.detach().float(), prior_loss.detach().float(), enc_loss.detach().float(),
                          *[v.float() for v in norms.values()]])
    ok = torch.isfinite(values).all()
    if "f_pos" in stats and "f_neg" in stats:
        gap = stats["f_pos"] - stats["f_neg"]
        top = torch.maximum(stats["f_pos"].abs(), stats["f_neg"].abs())
        if t.max_f_gap is not None:
            ok = ok & (gap.abs() <= t.max_f_gap)
        if t.max_abs_f is not None:
            ok = ok & (top <= t.max_abs_f)
    if bool(ok):
        return
    names = ["the decoder loss", "the prior loss", "the encoder loss", *[f"the {n} gradient" for n in norms]]
    bad = [n for n, v in zip(names, values.tolist()) if not math.isfinite(v)]
    if bad:
        raise TrainingDivergedError(
            f"training diverged at step {tr.step}: {', '.join(bad)} is NaN or infinite; lower the learning rates "
            f"(train.lr_decoder={t.lr_decoder:g}, train.lr_prior={t.lr_prior:g}), clip gradients "
            f"(train.grad_clip) or bound f (prior.f_clamp)")
    g, f_top = float(gap), float(top)
    what = (f"f(z+) - f(z-) = {g:.4g} nats exceeds train.max_f_gap = {t.max_f_gap:g}"
            if t.max_f_gap is not None and abs(g) > t.max_f_gap else
            f"|f| = {f_top:.4g} exceeds train.max_abs_f = {t.max_abs_f:g}")
    raise TrainingDivergedError(
        f"the prior's energy diverged at step {tr.step}: {what}; the prior chain no longer reaches the posterior "
        f"samples. Lower the learning rates (train.lr_prior={t.lr_prior:g}, train.lr_decoder={t.lr_decoder:g}), "
        f"penalize f's gradient (prior.objective_args.grad_penalty, e.g. 0.1), or run the prior chain at the "
        f"posterior chain's temperature (sampling.prior_noise)")
