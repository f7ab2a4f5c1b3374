"""The training run: :class:`Trainer` sets up data, model, objective, optimizers and chain stores from a recipe and
runs Algorithm 1 (:func:`textebm.train.step.train_step`) step after step, validating, logging and checkpointing on
the way; :func:`train` is the same inside a locked run directory (:class:`textebm.runs.TrainSession`)."""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Optional

import torch

from ..config import ConfigError, Recipe, dump_recipe, to_dict
from ..data.modules import build_data
from ..distributed import Distributed
from ..files import FileFormatError, load_state
from ..metrics_log import MetricsLogger, first_record_with
from ..model import LatentEBMModel, build_model
from ..objectives import build_objective
from ..objectives.data_ebm import loss_parameters, setup_objective
from ..runs import (CheckpointError, TrainSession, drop_aside, holds_anything, load_latest_checkpoint,
                    restore_aside, rng_state, save_checkpoint, set_aside, set_rng_state, write_run_file)
from ..sampling import ChainGraphs, CodeReplay, ExampleChains, PersistentChains, SamplerDivergedError
from .environment import StepClock, resolve_device, seed_everything, use_deterministic_kernels
from .report import report_lines, validation_line
from .schedules import lr_lambda
from .signals import StopOnSignals
from .step import TrainingDivergedError, TrainingLoss, train_step
from .validation import Validator
from ..console import log, progress

#: with sampling.on_nan: skip, this many diverged batches in a row stop the run
MAX_SKIPS_IN_A_ROW = 50  # halving the step sizes 50 times spans a factor of 1e15


class Trainer:
    """Sets up data, model, objective, optimizers and chain stores from a recipe, then runs Algorithm 1.

    Nothing is written before the data and the model are set up, so a run that fails to start touches nothing;
    ``resume`` continues the run in ``run_dir`` from its newest checkpoint (model, optimizers, chain stores,
    random states and data position), ``overwrite`` sets what ``run_dir`` holds aside until the new run has
    trained and saved (:mod:`textebm.rundir`)."""

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
        self._skips_in_a_row, self._saved = 0, (None, None)

        ckpt, path = None, None
        if resume:
            path, ckpt = load_latest_checkpoint(self.run_dir)
            log(f"resuming from {path} (step {ckpt['step']})")
        elif holds_anything(self.run_dir) and not overwrite:
            raise FileExistsError(f"{self.run_dir} is not empty; resume the run there, choose another directory, "
                                  f"or pass overwrite=True (--overwrite) to replace it")
        self.data = build_data(r, self.dist.rank, self.dist.world_size, self.run_dir if ckpt is not None else None)
        self._setup_model()
        self.validate = Validator(r, self.data, self.device)
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
        #: the optimizers of one update, by the part they train
        self.optimizers = {name: opt for name, opt in (("decoder", self.opt_dec), ("prior", self.opt_prior),
                                                       ("encoder", self.opt_enc)) if opt is not None}
        lam = lr_lambda(t.lr_schedule, t.steps, t.warmup_steps, t.lr_gamma, t.lr_decay_every)
        lam_prior = lr_lambda(t.lr_prior_schedule, t.steps, t.warmup_steps, t.lr_gamma, t.lr_decay_every) \
            if t.lr_prior_schedule else lam
        self.scheds = [torch.optim.lr_scheduler.LambdaLR(o, lam_prior if name == "prior" else lam)
                       for name, o in self.optimizers.items()]
        self.loss = self.dist.wrap(TrainingLoss(self.model, self.objective, t.encoder_loss), self.device,
                                   find_unused_parameters=bool(self.amortizers))
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(r.seed + 1_000_003 * self.dist.rank)  # each rank draws its own noise
        capture = s.capture == "cuda_graph" or (s.capture == "auto" and self.device.type == "cuda")
        self.graphs = ChainGraphs() if capture else None  # chains as CUDA graphs (eager where not possible)

    # -- checkpoints --
    def state_dict(self) -> dict:
        return {
            "step": self.step, "recipe": to_dict(self.recipe), "model": self.model.state_dict(),
            "objective": self.objective.state_dict(), "opt_dec": self.opt_dec.state_dict(),
            "opt_prior": self.opt_prior.state_dict() if self.opt_prior else None,
            "opt_enc": self.opt_enc.state_dict() if self.opt_enc else None,
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
        if self.opt_enc is not None:
            self.opt_enc.load_state_dict(ck["opt_enc"])
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
        if self._saved[0] == self.step:  # the last step is also a multiple of save_every: written once
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
        """z- ~ p_alpha by the prior chain (from ``z0``, p0, or its store), its step sizes scaled by the divergence
        back-off (1 until a NaN skip)."""
        prior = self.model.prior
        z0 = prior.sample_reference(n, generator=self.gen) if z0 is None else z0
        return prior.sample(n, self.prior_chain.scaled(self.step_scale), z0=z0, generator=self.gen,
                            graphs=self.graphs, warm_start=self.prior_store)

    def sample_posterior(self, x: torch.Tensor, index: Optional[torch.Tensor] = None, weight: float = 1.0,
                         noise: Optional[float] = None):
        """z+ ~ p(z | x) by the posterior chain (with the noise scale ``noise`` when given and the prior term
        weighted by ``weight``), in eval mode, from p0, the encoder or each example's stored chain."""
        model = self.model
        z0 = model.posterior_start(x, self.posterior_chain, generator=self.gen)
        store = dict(warm_start=self.posterior_store, index=index) if self.posterior_store is not None else {}
        if self.graphs is not None:  # a few padded lengths, so a few graphs (padding is masked: same density)
            x = self.data.bucket(x, self.recipe.sampling.capture_bucket)
        chain = self.posterior_chain.scaled(self.step_scale).replace(noise_scale=noise)
        was = model.training
        model.eval()
        try:
            with self.autocast():
                z = model.sample_posterior(x, chain, z0=z0, generator=self.gen, prior_weight=weight,
                                           graphs=self.graphs, **store)
        finally:
            model.train(was)
        if self.posterior_store is not None and self.dist.enabled:
            self.posterior_store.store(*self.dist.gather_rows(index.to(z.device), z))
        return z

    def observe_posterior(self, z_pos: torch.Tensor) -> None:
        """What follows the posterior samples: a fitted reference (:meth:`Energy.update_reference`) and a prior
        chain store of posterior samples (:class:`~textebm.sampling.CodeReplay`)."""
        self.model.prior.update_reference(z_pos)
        if isinstance(self.prior_store, CodeReplay):
            self.prior_store.add(z_pos)

    train_step = train_step

    def evaluate(self, max_batches: Optional[int] = None) -> dict:
        """The validation record at this step (:class:`~textebm.train.validation.Validator`)."""
        return self.validate(self.model, self.step, max_batches)

    def reset_decoder(self) -> None:
        """Re-initialize the decoder and its optimizer (the end of autoencoder pretraining, Li et al. 2019)."""
        self.model.decoder.reset_parameters()
        self.opt_dec.state.clear()
        log(f"step {self.step}: end of pretraining, decoder re-initialized")

    # -- the loop --
    def run(self) -> dict:
        """Train to ``train.steps`` (or until SIGINT / SIGTERM), validating, logging and checkpointing on the way."""
        t, main = self.recipe.train, self.dist.is_main
        if self.dist.enabled and self.recipe.sampling.on_nan == "skip":
            raise ValueError("sampling.on_nan=skip is not supported with several processes (ranks would disagree "
                             "on which batches to skip); use on_nan=raise")
        if main:
            self._announce()
        summary = self._resumed_summary()
        self._started, self._validating = time.perf_counter(), 0.0
        with StopOnSignals(self._stop), MetricsLogger(self.run_dir, t.report_to, enabled=main) as metrics, \
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
        wall = time.perf_counter() - self._started
        summary["time_wall_s"] = wall
        summary["validation_fraction"] = self._validating / wall if wall > 0 else 0.0
        self._finish(summary)
        return summary

    def _stop(self, signum: int) -> None:
        self.stop_signal = signum  # the loop finishes its step, then checkpoints and stops

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
    def _progress_bar(self):
        bar = progress(self.recipe.train.steps, "train", self.progress, initial=self.step)
        try:
            yield bar
        finally:
            if bar is not None:
                bar.close()

    def _validate(self, metrics, summary: dict, bar) -> None:
        """Validate, log the record, and keep the first (``_start``) and latest (``_end``) values in ``summary``."""
        t0 = time.perf_counter()
        ev = self.evaluate()
        ev["time_validation"] = time.perf_counter() - t0
        self._validating += ev["time_validation"]
        metrics.log({"step": self.step, **ev})
        for k, v in ev.items():
            summary.setdefault(f"{k}_start", v)
            summary[f"{k}_end"] = v
        (bar.write if bar is not None else log)(f"step {self.step}: {validation_line(ev)}")

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
            self._skips_in_a_row += 1
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
        summary["report_lines"] = report_lines(summary)


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
