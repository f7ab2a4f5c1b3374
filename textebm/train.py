"""One training loop for every decoder: Algorithm 1 of Pang et al. (2020).

Per batch x:
    z+ ~ p(z | x)       the posterior chain (K1 steps, the recipe's sampler and schedules), from p0 or, with warm
                        starts, from each example's last z+
    z- ~ p_alpha(z)     the prior chain (K0 steps, or the objective's own negatives; none for a Gaussian prior)
    decoder:  minimize  -mean_x log p_beta(x | z+)           (sum over tokens per sentence, mean over the batch)
    prior:    minimize  objective(prior, z+, z-)              (default: mean f(z-) - mean f(z+))
with separate Adam optimizers. Chains run with the model in eval mode (no dropout), so they target the model's
own posterior; the update then runs in train mode. The data module (:mod:`textebm.data.modules`) hides whether x
is text or images; run directories and checkpoints are :mod:`textebm.runs`; several processes under ``torchrun``
are :mod:`textebm.distributed`.

Against posterior collapse the recipe can anneal the prior term of the posterior, w log p_alpha(z) + log p(x|z)
(``train.anneal``), start with autoencoder steps (w = 0) and then re-initialize the decoder
(``train.pretrain_steps``, Li et al. 2019), warm-start each example's chain (``sampling.posterior_warm_start``,
alternating back-propagation, Han et al. 2017), drop input words (``model.word_dropout``, Bowman et al. 2016) and
schedule the posterior chain's step size and noise (``sampling.posterior_*``).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from torch import nn

from .config import ConfigError, Recipe, dump_recipe, to_dict
from .data.batching import Batch
from .data.modules import build_data
from .distributed import Distributed
from .metrics_log import MetricsLogger, first_record_with
from .model import LatentEBMModel, build_model
from .objectives import build_objective
from .objectives.data_ebm import loss_parameters, setup_objective
from .files import FileFormatError, load_state, progress
from .runs import CheckpointError, clear_dir, drop_aside, holds_anything, list_checkpoints, load_latest_checkpoint, \
    restore_aside, rng_state, save_checkpoint, set_aside, set_rng_state, TrainSession, write_run_file  # noqa: F401
from .sampling import ChainGraphs, CodeReplay, ExampleChains, PersistentChains, SamplerDivergedError
from .sampling.schedules import first_value

VALID_SEED = 12345  # validation chains start from the same noise at every evaluation: numbers stay comparable
#: with sampling.on_nan: skip, this many diverged batches in a row stop the run
MAX_SKIPS_IN_A_ROW = 20


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; anything else is a ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for but CUDA is not available; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: there are only {torch.cuda.device_count()} CUDA device(s)")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def use_deterministic_kernels() -> None:
    """Deterministic algorithms everywhere (cuBLAS workspaces, cuDNN without autotuning), so that the same seed
    gives the same run on a GPU too; ops without a deterministic kernel then raise instead of varying."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


class Elapsed:
    """Seconds between two recorded CUDA events, read only when the value is asked for (``item()``, ``float()``,
    or a metrics record): timing a step on a GPU then costs no host synchronization until it is logged."""

    ndim = 0

    def __init__(self, start, end):
        self.start, self.end = start, end

    def item(self) -> float:
        self.end.synchronize()
        return self.start.elapsed_time(self.end) / 1000.0

    __float__ = item


class StepClock:
    """Time marks on the device's own clock: CUDA events on a GPU (the host clock would time the launches, not
    the work), the host clock elsewhere. ``between(a, b)`` is seconds (an :class:`Elapsed` on a GPU)."""

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def between(self, a, b):
        return Elapsed(a, b) if self.cuda else b - a


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


def posterior_noise(recipe, step: int) -> Optional[float]:
    """The posterior chain's noise scale at training step ``step``: ``sampling.posterior_noise`` c0 rising (or
    falling) linearly to ``train.posterior_noise_to`` c1 over ``train.posterior_noise_steps`` steps after
    ``train.pretrain_steps``, in steps of 0.05 (so a captured chain is captured again only a few times); None
    (the recipe's chain as it is) without ``posterior_noise_to``. A sharpened chain (c0 < 1, temperature c0^2)
    moves z by the gradient of log p(x | z) even when the decoder barely reads z, which is what makes the latent
    carry the sentence early on; ending at c1 = 1 trains on samples of the model's own posterior (maximum
    likelihood) once it does."""
    t, c0 = recipe.train, recipe.sampling.posterior_noise
    if t.posterior_noise_to is None or not recipe.sampling.noise:
        return None
    frac = min(1.0, max(0, step - t.pretrain_steps) / t.posterior_noise_steps)
    return round((c0 + (t.posterior_noise_to - c0) * frac) * 20) / 20


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


class TrainingDivergedError(FloatingPointError):
    """A training step produced a loss or gradient that is not finite, or a prior energy that runs away; the
    message names what diverged, at which step, and what to change."""


class TrainingLoss(nn.Module):
    """The losses of one update, as a module so that DistributedDataParallel can own its parameters:
    log p_beta(x | z+) per example (the decoder minimizes its negative mean), the prior objective's loss (none for
    a fixed prior; for ``mle`` mean f(z-) - mean f(z+)) and the encoder's loss (none without an encoder)."""

    def __init__(self, model: LatentEBMModel, objective: nn.Module, encoder_loss: str = "chain"):
        super().__init__()
        self.model, self.objective, self.encoder_loss = model, objective, encoder_loss

    def forward(self, x, z_pos, z_neg, generator=None):
        from .encoders import encoder_loss

        logp = self.model.decoder.log_prob(x, z_pos).float()
        zero = logp.new_zeros(())
        prior_loss, stats = (zero, {}) if self.model.prior.fixed else self.objective(self.model.prior, z_pos, z_neg)
        enc_loss = zero if self.model.encoder is None else encoder_loss(self.model, x, z_pos, self.encoder_loss,
                                                                        generator)
        return logp, prior_loss, enc_loss, stats


class Trainer:
    """Sets up data, model, objective, optimizers and chain stores from a recipe, then runs Algorithm 1."""

    def __init__(self, recipe: Recipe, run_dir, device: Optional[str] = None, resume: bool = False,
                 progress: bool = True, overwrite: bool = False):
        r, t = recipe, recipe.train
        self.recipe, self.run_dir = recipe, Path(run_dir)
        self.dist = Distributed()
        self.progress = progress and self.dist.is_main
        self.device = self.dist.setup(resolve_device(device or t.device))
        self.clock = StepClock(self.device)
        if t.deterministic:
            use_deterministic_kernels()
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        seed_everything(r.seed)
        self.step, self.nan_skips, self.step_scale, self.stop_signal = 0, 0, 1.0, None
        self.replaced: Optional[Path] = None  # with overwrite: the old contents, kept until the first checkpoint
        self._fit_judges, self._tmp = None, None  # prior-fit judges (built at the first validation), scratch dir

        ckpt, path = None, None
        if resume:
            path, ckpt = load_latest_checkpoint(self.run_dir)
            log(f"resuming from {path} (step {ckpt['step']})")
        elif holds_anything(self.run_dir) and not overwrite:
            raise FileExistsError(f"{self.run_dir} is not empty; resume the run there, choose another directory, "
                                  f"or pass overwrite=True (--overwrite) to replace it")
        # nothing is written before the data and the model are set up: a run that fails to start touches nothing
        self.data = build_data(r, self.dist.rank, self.dist.world_size, self.run_dir if ckpt is not None else None)
        self._setup_model()
        if ckpt is not None:
            self._restore(ckpt, path)
            if self.step > t.steps:  # before anything is written: recipe.yaml keeps the run's own steps
                raise ConfigError(f"train.steps={t.steps} is below the {self.step} steps {self.run_dir} has done; "
                                  f"resume with train.steps >= {self.step}")
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if ckpt is None and overwrite and holds_anything(self.run_dir):
                self.replaced = set_aside(self.run_dir)
            try:
                if ckpt is None:
                    self.data.save(self.run_dir)
                write_run_file(self.run_dir, "recipe.yaml", dump_recipe(r))  # on resume: with the resumable overrides
            except BaseException:
                self.put_back()
                raise
        self.dist.barrier()

    # -- setup --
    def _setup_model(self) -> None:
        r, t, s = self.recipe, self.recipe.train, self.recipe.sampling
        self.model: LatentEBMModel = build_model(r, self.data.tokenizer).to(self.device)
        try:
            self.objective = build_objective(r.prior.objective, r.prior.amortizer, **r.prior.objective_args)
        except TypeError as e:
            raise ValueError(f"prior.objective_args: {e}") from None
        self.prior_chain, self.posterior_chain = self.model.prior_chain, self.model.posterior_chain
        setup_objective(self.objective, self.model.latent_dim, self.device)
        self.objective.to(self.device)
        # an amortized sampler trains its generator with its own optimizer (in after_step), averaged across ranks
        self.amortizers = [m for m in self.objective.modules() if hasattr(m, "optimizer_state_dict")]
        for m in self.amortizers:
            m.average_gradients = self.dist.average
        self.dist.broadcast(self.amortizers)
        if s.compile != "none":
            self.model.compile_sampling(s.compile)
        self.posterior_store = ExampleChains(self.data.n_train, self.model.latent_dim) \
            if s.posterior_warm_start else None
        if s.prior_persistent:
            self.prior_store = PersistentChains(n_chains=s.prior_persistent, reinit=s.prior_reinit,
                                                sigma0=r.prior.sigma0)
        elif s.prior_start == "posterior":  # prior chains from recent posterior samples (and the reference)
            self.prior_store = CodeReplay(s.prior_replay, fraction=s.prior_start_fraction)
        else:
            self.prior_store = None
        self.opt_dec = torch.optim.Adam(self.model.decoder.parameters(), lr=t.lr_decoder,
                                        betas=tuple(t.betas_decoder), weight_decay=t.weight_decay)
        prior_params = list(self.model.prior.parameters()) + loss_parameters(self.objective)
        self.opt_prior = torch.optim.Adam(prior_params, lr=t.lr_prior, betas=tuple(t.betas_prior)) \
            if prior_params else None
        enc = self.model.encoder
        self.opt_enc = torch.optim.Adam(enc.parameters(), lr=t.lr_encoder if t.lr_encoder is not None
                                        else t.lr_decoder, betas=tuple(t.betas_decoder)) if enc is not None else None
        lam = lr_lambda(t.lr_schedule, t.steps, t.warmup_steps, t.lr_gamma, t.lr_decay_every)
        self.scheds = [torch.optim.lr_scheduler.LambdaLR(o, lam) for o in (self.opt_dec, self.opt_prior)
                       if o is not None]
        if self.opt_enc is not None:
            self.scheds.append(torch.optim.lr_scheduler.LambdaLR(self.opt_enc, lam))
        self.loss = self.dist.wrap(TrainingLoss(self.model, self.objective, t.encoder_loss), self.device,
                                   find_unused_parameters=bool(self.amortizers))
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(r.seed + 1_000_003 * self.dist.rank)  # each rank draws its own noise
        capture = s.capture == "cuda_graph" or (s.capture == "auto" and self.device.type == "cuda")
        self.graphs = ChainGraphs() if capture else None  # chains as CUDA graphs (eager where not possible)

    # -- checkpoint --
    def state_dict(self) -> dict:
        return {
            "step": self.step, "recipe": to_dict(self.recipe), "model": self.model.state_dict(),
            "objective": self.objective.state_dict(), "opt_dec": self.opt_dec.state_dict(),
            "opt_prior": self.opt_prior.state_dict() if self.opt_prior else None,
            "scheds": [sc.state_dict() for sc in self.scheds], "batcher": self.data.state_dict(),
            "sampler_gen": self.gen.get_state(), "rng": rng_state(), "step_scale": self.step_scale,
            "nan_skips": self.nan_skips, "amortizer_optimizers": [m.optimizer_state_dict() for m in self.amortizers],
            "posterior_chains": self.posterior_store.state_dict() if self.posterior_store else None,
            "prior_chains": self.prior_store.state_dict() if self.prior_store else None,
        }

    def _restore(self, ck: dict, path) -> None:
        """The run's state from a checkpoint read from ``path``; a part that does not fit is a CheckpointError
        naming the file (the checkpoint loads safely, but its contents may still be anything)."""
        try:
            self._restore_parts(ck, f"the checkpoint {path}")
        except FileFormatError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError, OverflowError) as e:
            what = f"no {e}" if isinstance(e, KeyError) else " ".join(str(e).split())[:200]
            raise CheckpointError(f"{path} cannot be resumed: {type(e).__name__}: {what}") from None

    def _restore_parts(self, ck: dict, where: str) -> None:
        self.step = int(ck["step"])
        load_state(self.model, ck["model"], where)
        load_state(self.objective, ck["objective"], f"{where} (prior objective)")
        self.opt_dec.load_state_dict(ck["opt_dec"])
        if self.opt_prior is not None:
            self.opt_prior.load_state_dict(ck["opt_prior"])
        for sc, st in zip(self.scheds, ck.get("scheds") or [ck.get("sched_dec"), ck.get("sched_prior")]):
            sc.load_state_dict(st)
        self.data.load_state_dict(ck["batcher"])
        self.gen.set_state(ck["sampler_gen"])
        set_rng_state(ck["rng"])
        self.step_scale = float(ck.get("step_scale", 1.0))
        self.nan_skips = int(ck.get("nan_skips", 0))
        for m, st in zip(self.amortizers, ck.get("amortizer_optimizers", [])):
            m.load_optimizer_state_dict(st)
        for store, key in ((self.posterior_store, "posterior_chains"), (self.prior_store, "prior_chains")):
            if store is not None and ck.get(key) is not None:
                store.load_state_dict(ck[key])
                store.to(self.device)

    def save_checkpoint(self) -> Path:
        if getattr(self, "_saved", (None,))[0] == self.step:  # the last step is also a multiple of save_every
            return self._saved[1]
        path = save_checkpoint(self.state_dict(), self.run_dir, self.recipe.train.keep_checkpoints)
        self._saved = (self.step, path)
        if self.replaced is not None and (self.step >= 1 or self.step >= self.recipe.train.steps):
            drop_aside(self.replaced)  # trained and saved: what --overwrite replaces goes now
            self.replaced = None
        return path

    def put_back(self) -> None:
        """A run started with overwrite failed before its first checkpoint: the old contents come back."""
        if self.replaced is not None:
            restore_aside(self.run_dir, self.replaced)
            self.replaced = None

    # -- chains --
    def autocast(self):
        """Mixed precision for the decoder's matrix work (train.amp); z and the Langevin updates stay fp32."""
        amp = self.recipe.train.amp
        if amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)

    def sample_prior(self, n: int, z0: Optional[torch.Tensor] = None) -> torch.Tensor:
        """z- ~ p_alpha by the prior chain (from ``z0``, p0, or the persistent buffer), its step sizes scaled by
        the divergence back-off (1 until a NaN skip)."""
        prior = self.model.prior
        z0 = prior.sample_reference(n, generator=self.gen) if z0 is None else z0
        return prior.sample(n, self.prior_chain.scaled(self.step_scale), z0=z0, generator=self.gen,
                            graphs=self.graphs, warm_start=self.prior_store)

    def sample_posterior(self, x: torch.Tensor, index: Optional[torch.Tensor] = None, weight: float = 1.0,
                         noise: Optional[float] = None):
        """z+ ~ p(z | x) by the posterior chain (its noise scale ``noise`` when given), in eval mode, from p0, the
        encoder or each example's stored chain."""
        model = self.model
        z0 = model.posterior_start(x, self.posterior_chain, generator=self.gen)
        store = dict(warm_start=self.posterior_store, index=index) if self.posterior_store is not None else {}
        if self.graphs is not None:  # a few padded lengths, so a few graphs (padding is masked: same density)
            x = self.data.bucket(x, self.recipe.sampling.capture_bucket)
        was = model.training
        model.eval()
        try:
            with self.autocast():
                chain = self.posterior_chain.scaled(self.step_scale).replace(noise_scale=noise)
                z = model.sample_posterior(x, chain, z0=z0,
                                           generator=self.gen, prior_weight=weight, graphs=self.graphs, **store)
        finally:
            model.train(was)
        if self.posterior_store is not None and self.dist.enabled:
            self.posterior_store.store(*self.dist.gather_rows(index.to(z.device), z))
        return z

    # -- one step of Algorithm 1 --
    def train_step(self, batch) -> dict:
        """One update on ``batch`` (a :class:`~textebm.data.batching.Batch`, or a bare tensor x when no chain is
        stored per example). The returned numbers are device tensors (read when they are logged); one read per
        step checks that the losses are finite."""
        t, model = self.recipe.train, self.model
        x, index = (batch.x, batch.index) if isinstance(batch, Batch) else (batch, None)
        x = x.to(self.device, non_blocking=True)
        clock = self.clock
        t0 = clock.mark()
        z_pos = self.sample_posterior(x, index, prior_weight(t, self.step), posterior_noise(self.recipe, self.step))
        t1 = clock.mark()
        model.prior.update_reference(z_pos)  # a fitted reference follows the posterior samples (else no-op)
        if isinstance(self.prior_store, CodeReplay):
            self.prior_store.add(z_pos)
        z_neg = None if model.prior.fixed else self.objective.negatives(model.prior, z_pos, self.sample_prior)
        t2 = clock.mark()
        model.train()
        opts = [o for o in (self.opt_dec, self.opt_prior, self.opt_enc) if o is not None]
        for o in opts:
            o.zero_grad(set_to_none=True)
        with self.autocast():
            logp, prior_loss, enc_loss, pstats = self.loss(x, z_pos, z_neg, self.gen)
        dec_loss = -logp.mean()
        (dec_loss + prior_loss + enc_loss).backward()
        clip = t.grad_clip if t.grad_clip is not None else float("inf")
        norms = {name: torch.nn.utils.clip_grad_norm_([p for g in o.param_groups for p in g["params"]], clip)
                 for name, o in (("decoder", self.opt_dec), ("prior", self.opt_prior), ("encoder", self.opt_enc))
                 if o is not None}
        self._check_finite(dec_loss, prior_loss, enc_loss, norms, pstats)
        for o in opts:
            o.step()
        for sc in self.scheds:
            sc.step()
        if z_neg is not None:
            pstats.update(self.objective.after_step(model.prior, z_pos, z_neg))
        out = {"dec_nll": dec_loss.detach(), f"dec_nll_{self.data.unit}": -logp.detach().sum() / self.data.units(x),
               "prior_loss": prior_loss.detach(), **pstats,
               **{f"grad_norm_{name}": v for name, v in norms.items()}, "prior_weight": prior_weight(t, self.step),
               "time_posterior": clock.between(t0, t1), "time_prior": clock.between(t1, t2),
               "time_step": clock.between(t0, clock.mark()), "lr_decoder": self.scheds[0].get_last_lr()[0]}
        if self.opt_enc is not None:
            out["encoder_loss"] = enc_loss.detach()
        return out

    def _check_finite(self, dec_loss, prior_loss, enc_loss, norms: dict, pstats: dict) -> None:
        """One host read per step: the losses and gradient norms are finite and, with the prior's maximum-likelihood
        statistics at hand, f(z+) - f(z-) and |f| stay within ``train.max_f_gap`` and ``train.max_abs_f``
        (an energy that runs away ruins the model long before anything is NaN). Raises
        :class:`TrainingDivergedError` naming what diverged."""
        t = self.recipe.train
        values = torch.stack([dec_loss.detach().float(), prior_loss.detach().float(), enc_loss.detach().float(),
                              *[v.float() for v in norms.values()]])
        ok = torch.isfinite(values).all()
        guard = "f_pos" in pstats and "f_neg" in pstats
        if guard:
            gap, top = pstats["f_pos"] - pstats["f_neg"], torch.maximum(pstats["f_pos"].abs(), pstats["f_neg"].abs())
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
                f"training diverged at step {self.step}: {', '.join(bad)} is NaN or infinite; lower the learning "
                f"rates (train.lr_decoder, train.lr_prior), clip gradients (train.grad_clip) or bound f "
                f"(prior.f_clamp)")
        g, f_top = float(gap), float(top)
        what = (f"f(z+) - f(z-) = {g:.4g} nats exceeds train.max_f_gap = {t.max_f_gap:g}"
                if t.max_f_gap is not None and abs(g) > t.max_f_gap else
                f"|f| = {f_top:.4g} exceeds train.max_abs_f = {t.max_abs_f:g}")
        raise TrainingDivergedError(
            f"the prior's energy diverged at step {self.step}: {what}; the prior chain no longer reaches the "
            f"posterior samples. Lower train.lr_prior, penalize f's gradient (prior.objective_args.grad_penalty, "
            f"e.g. 0.1), or start prior chains from posterior samples (sampling.prior_start: posterior)")

    def reset_decoder(self) -> None:
        """Re-initialize the decoder and its optimizer (the end of autoencoder pretraining, Li et al. 2019)."""
        self.model.decoder.reset_parameters()
        self.opt_dec.state.clear()
        log(f"step {self.step}: end of pretraining, decoder re-initialized")

    # -- validation --
    def evaluate(self, max_batches: Optional[int] = None) -> dict:
        """Validation metrics at posterior samples from fresh chains (the data module's reconstruction NLL, per
        example and per unit; MSE for images) and, for text, the latent diagnostics on ``train.latent_batches``
        batches (mutual information, active units, shuffled-latent gap, KL, reconstruction accuracy and BLEU).
        The chains start from the same seeded noise each time, so numbers at different steps are comparable."""
        model, t = self.model, self.recipe.train
        was = model.training
        model.eval()
        gen = torch.Generator(device=self.device)
        gen.manual_seed(VALID_SEED)
        sums, batches = {}, []
        try:
            for x in self.data.validation(max_batches):
                x = x.to(self.device)
                z = model.sample_posterior(x, generator=gen)
                for k, v in self.data.recon_sums(model, x, z).items():
                    sums[k] = sums.get(k, 0) + v
                if len(batches) < t.latent_batches:
                    batches.append(x)
            names = list(sums)
            out = self.data.summarize(dict(zip(names, torch.stack([sums[k].to(self.device) for k in names])
                                                   .tolist())))
            if batches and self.data.latent_diagnostics:
                from .eval.latent import latent_diagnostics

                diag = latent_diagnostics(model, batches, n_chains=t.latent_chains, seed=VALID_SEED)
                if diag.get("message"):
                    log(f"latent diagnostics: {diag['message']}")
                skip = ("n_sentences", "n_chains", "message")
                out.update({f"valid_{k}": v for k, v in diag.items() if k not in skip})
            if t.prior_fit_samples and self.data.latent_diagnostics:
                out.update(self._prior_fit())
        finally:
            model.train(was)
        return out

    def _prior_fit(self) -> dict:
        """The prior-fit diagnostics (:func:`textebm.eval.prior_fit.prior_fit`) on ``train.prior_fit_samples``
        codes per source, the aggregate posterior drawn from the training sentences; judged by the corpus's
        grammar when it has one, else by forward perplexity under an n-gram model of the training split (built
        at the first validation; skipped when kenlm is not installed)."""
        from .eval.prior_fit import grammar_judge, prior_fit

        if self._fit_judges is None:
            self._fit_judges = []
            from .eval.truth import grammar_for_corpus

            d = self.recipe.data
            try:
                pcfg = grammar_for_corpus(d.corpus, d.data_dir)
            except ValueError as e:
                log(f"prior fit: the corpus grammar is unusable ({e}); judged by FPPL instead")
                pcfg = None
            if pcfg is not None:
                self._fit_judges.append(grammar_judge(pcfg))
            else:
                self._fit_judges += self.data.ngram_judges(self._workdir())
        try:
            fit = prior_fit(self.model, self.data.train_ids, n=self.recipe.train.prior_fit_samples,
                            judges=self._fit_judges, seed=VALID_SEED, permutations=100)
        except SamplerDivergedError as e:  # a diagnostic: the training step owns what diverging means
            log(f"prior fit: not measured at step {self.step} ({e})")
            return {}
        return {f"valid_fit_{k}": v for k, v in fit.items() if k not in ("protocol", "n")}

    def _workdir(self) -> Path:
        """A private temporary directory for this run's scratch files (removed when training ends)."""
        if self._tmp is None:
            import tempfile

            self._tmp = tempfile.TemporaryDirectory(prefix="textebm-")
        return Path(self._tmp.name)

    # -- the loop --
    def _handle_signal(self, signum, frame):
        if self.stop_signal is not None:  # a second signal: stop now, without a new checkpoint
            raise KeyboardInterrupt
        self.stop_signal = signum
        log(f"received {signal.Signals(signum).name}: finishing this step, writing a checkpoint and stopping "
            f"(send it again to stop at once)")

    def run(self) -> dict:
        """Train to ``train.steps`` (or until SIGINT / SIGTERM), validating, logging and checkpointing on the way."""
        t, main = self.recipe.train, self.dist.is_main
        if self.dist.enabled and self.recipe.sampling.on_nan == "skip":
            raise ValueError("sampling.on_nan=skip is not supported with several processes (ranks would disagree "
                             "on which batches to skip); use on_nan=raise")
        if main:
            self._announce()
        summary = self._resumed_summary()
        with self._stop_on_signals(), MetricsLogger(self.run_dir, t.report_to, enabled=main) as metrics, \
                self._progress_bar() as bar:
            if self.step == 0 and main:
                self._validate(metrics, summary, bar)
            while self.step < t.steps and self.stop_signal is None:
                stats = self._update(self.data.next(), metrics)
                if stats is None:  # a skipped batch (sampling.on_nan: skip)
                    continue
                self.step += 1
                if self.step == t.pretrain_steps and t.pretrain_reset:
                    self.reset_decoder()
                if bar is not None:
                    bar.update(1)
                if self.step % t.log_every == 0 or self.step == t.steps:
                    metrics.log({"step": self.step, **stats})
                    if bar is not None:
                        bar.set_postfix(nll=f"{float(stats['dec_nll']):.2f}")
                if main and (self.step % t.eval_every == 0 or self.step == t.steps):
                    self._validate(metrics, summary, bar)
                if main and self.step % t.save_every == 0:
                    self.save_checkpoint()
        self._finish(summary)
        return summary

    def _announce(self) -> None:
        n = sum(p.numel() for p in self.model.parameters())
        log(f"run directory: {self.run_dir}  device: {self.device}  data: {json.dumps(self.data.stats)}")
        log(f"model: {n:,} parameters (prior {sum(p.numel() for p in self.model.prior.parameters()):,}, "
            f"{self.model.prior.kind})" + (f"  ranks: {self.dist.world_size}" if self.dist.enabled else ""))

    def _resumed_summary(self) -> dict:
        """The summary's start values: a resumed run's first validation is in its metrics file."""
        if self.step == 0 or not self.dist.is_main:
            return {}
        first = first_record_with(self.run_dir, "valid_recon_nll") or {}
        return {f"{k}_start": v for k, v in first.items() if k.startswith("valid_")}

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """SIGINT / SIGTERM finish the step, write a checkpoint and stop (see :meth:`_handle_signal`)."""
        handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                handlers[sig] = signal.signal(sig, self._handle_signal)
            except ValueError:  # not the main thread
                pass
        try:
            yield
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)

    @contextlib.contextmanager
    def _progress_bar(self):
        bar = progress(self.recipe.train.steps, "train", self.progress, initial=self.step)
        try:
            yield bar
        finally:
            if bar is not None:
                bar.close()

    def _validate(self, metrics, summary: dict, bar) -> None:
        """Validate, log the record, and keep the first (``_start``) and latest (``_end``) values in ``summary``."""
        ev = self.evaluate(self.recipe.train.eval_batches)
        metrics.log({"step": self.step, **ev})
        for k, v in ev.items():
            summary.setdefault(f"{k}_start", v)
            summary[f"{k}_end"] = v
        (bar.write if bar is not None else log)(f"step {self.step}: {_validation_line(ev)}")

    def _update(self, batch, metrics) -> Optional[dict]:
        """One training step; with ``sampling.on_nan: skip`` a diverged chain or step skips the batch and halves
        the step sizes (None), otherwise it stops the run; so do ``MAX_SKIPS_IN_A_ROW`` skips in a row (a model
        that diverges on every batch cannot recover by skipping)."""
        try:
            stats = self.train_step(batch)
            self._skips_in_a_row = 0
            return stats
        except (SamplerDivergedError, TrainingDivergedError) as e:
            if self.recipe.sampling.on_nan != "skip":
                raise
            self._skips_in_a_row = getattr(self, "_skips_in_a_row", 0) + 1
            if self._skips_in_a_row >= MAX_SKIPS_IN_A_ROW:
                raise TrainingDivergedError(f"{MAX_SKIPS_IN_A_ROW} batches in a row diverged (sampling.on_nan: "
                                            f"skip cannot recover); the last: {e}") from None
            self.nan_skips += 1
            self.step_scale *= 0.5
            log(f"step {self.step}: {e} -- skipped the batch; step sizes halved (x{self.step_scale:g})")
            metrics.log({"step": self.step, "nan_skip": self.nan_skips,
                         "sampler": getattr(e, "sampler", "training")})
            return None

    def _finish(self, summary: dict) -> None:
        """The last checkpoint; for a finished run the saved model and the data module's end products."""
        t, main = self.recipe.train, self.dist.is_main
        if self.dist.enabled:
            summary["max_parameter_difference_across_ranks"] = diff = self.dist.max_difference(
                [self.model, self.objective])
            if main:
                log(f"parameters across {self.dist.world_size} ranks: max difference from rank 0 {diff:.3g}")
        if main:
            self.save_checkpoint()
            if self.step >= t.steps:
                self.model.save_pretrained(self.run_dir)
                gen = torch.Generator(device=self.device)
                gen.manual_seed(self.recipe.seed)
                self.data.finish(self.model, self.run_dir, gen)
        self.dist.barrier()
        summary.update(step=self.step, stopped_early=self.step < t.steps, nan_skips=self.nan_skips,
                       interrupted_by=self.stop_signal, latent_dim=self.model.latent_dim)
        summary["report_lines"] = _report_lines(summary)

def _validation_line(ev: dict) -> str:
    """One line of validation numbers for the log."""
    if "valid_mse" in ev:
        return (f"validation reconstruction MSE {ev['valid_mse']:.5f} per pixel value, NLL "
                f"{ev['valid_recon_nll']:.1f} nats/image")
    line = (f"validation reconstruction NLL {ev['valid_recon_nll']:.3f} nats/sentence "
            f"({ev['valid_recon_nll_token']:.3f} nats/token)")
    if "valid_mi" in ev:
        line += (f"; latent: MI {_num(ev['valid_mi'])} nats, active units {ev['valid_active_units']}, "
                 f"shuffled-latent gap {_num(ev['valid_shuffle_gap'])} nats/sentence")
    fit = prior_fit_line(ev, "valid_fit_")
    return f"{line}; {fit}" if fit else line


def prior_fit_line(d: dict, prefix: str = "") -> str:
    """The prior-fit numbers of a record in words (empty when it has none)."""
    parts = []
    for metric, fmt in (("grammatical", "{:.3f}"), ("fppl", "{:.1f}")):
        for rule in ("decode", "greedy"):
            a, b = d.get(f"{prefix}prior_{rule}_{metric}"), d.get(f"{prefix}posterior_{rule}_{metric}")
            if a is not None and b is not None:
                ratio = d.get(f"{prefix}ratio_{rule}_{metric}")
                parts.append(f"{metric} ({'greedy' if rule == 'greedy' else 'decoded'}) prior {fmt.format(a)} / "
                             f"posterior {fmt.format(b)}" + (f" = {ratio:.2f}" if ratio is not None else ""))
    if d.get(f"{prefix}mmd2") is not None:
        parts.append(f"MMD^2 {d[f'{prefix}mmd2']:.3f} (p {d[f'{prefix}mmd_p']:.2f})")
    if d.get(f"{prefix}f_gap") is not None:
        parts.append(f"f gap {d[f'{prefix}f_gap']:.2f}")
    return ("prior fit: " + ", ".join(parts)) if parts else ""


def _num(v, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _report_lines(summary: dict) -> List[str]:
    """What ``textebm train`` prints at the end: validation numbers at the start and the end of the run."""
    end = {k[:-4]: v for k, v in summary.items() if k.endswith("_end") and k.startswith("valid_")}
    start = {k[:-6]: v for k, v in summary.items() if k.endswith("_start") and k.startswith("valid_")}
    if not end:
        return []
    if "valid_mse" in end:
        return [f"validation reconstruction MSE (per pixel value): start {start['valid_mse']:.5f} -> end "
                f"{end['valid_mse']:.5f}"]
    lines = [f"validation reconstruction NLL (nats/sentence): start {start['valid_recon_nll']:.3f} -> end "
             f"{end['valid_recon_nll']:.3f}"]
    if "valid_mi" in end:
        d = summary.get("latent_dim")
        lines.append(f"latent usage at the end: mutual information {_num(end['valid_mi'])} nats, active units "
                     f"{_num(end['valid_active_units'], 0)}" + (f" of {d}" if d else "") + f", shuffled-latent gap "
                     f"{_num(end['valid_shuffle_gap'])} nats/sentence, KL {_num(end['valid_kl'])} nats/sentence, "
                     f"reconstruction token accuracy {_num(end['valid_recon_token_acc'], 3)}")
    fit = prior_fit_line(end, "valid_fit_")
    if fit:
        lines.append(f"{fit} (at the end)")
    return lines


def train(recipe: Recipe, run_dir, device: Optional[str] = None, resume: bool = False, progress: bool = True,
          overwrite: bool = False, inputs=()) -> dict:
    """Train a model from a recipe into ``run_dir`` (or continue the run there with ``resume=True``).

    ``run_dir`` must be new or empty unless ``overwrite``: then its contents are set aside and replaced once the
    new run has trained a step and saved a checkpoint, and put back on any earlier exit (:mod:`textebm.rundir`;
    the summary's ``put_back`` says so). The run directory is locked while training. The summary's
    ``interrupted_by`` is the signal number that stopped the run, if any. ``inputs``: files the run reads (the
    recipe's), which ``run_dir`` may not hold.
    """
    with TrainSession(run_dir, recipe, resume=resume, overwrite=overwrite, inputs=inputs) as session:
        trainer = Trainer(recipe, run_dir, device=device, resume=resume, progress=progress, overwrite=overwrite)
        session.trainer = trainer
        summary = trainer.run()
        summary["put_back"] = session.finish()
        return summary
