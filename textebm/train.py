"""One training loop for every decoder: Algorithm 1 of Pang et al. (2020).

Per batch x:
    z+ ~ p(z | x)       posterior short-run Langevin, K1 steps of size s1, from p0
    z- ~ p_alpha(z)     prior short-run Langevin, K0 steps of size s0, from p0 (or the objective's negatives)
    decoder:  minimize  -mean_x log p_beta(x | z+)           (sum over tokens per sentence, mean over the batch)
    prior:    minimize  objective(prior, z+, z-)              (default: mean f(z-) - mean f(z+))
with separate Adam optimizers. Posterior samples are drawn with the decoder in eval mode (no dropout), so the
sampler targets the model's own posterior; the decoder update then runs in train mode.

The same loop trains text decoders (batches of token ids) and the conv image generator (batches of images):
only the data setup and the per-unit bookkeeping (tokens or pixel values) differ.

A run directory holds recipe.yaml, the tokenizer (text), metrics.jsonl, checkpoints/ and, at the end,
config.json + model.safetensors (``LatentEBMModel.from_pretrained(run_dir)``), plus PNG grids for images.
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

from .config import Recipe, dump_recipe, to_dict
from .data import BucketBatcher, load_corpus
from .data.vocab import WordVocab
from .model import LatentEBMModel, build_model
from .objectives import build_objective
from .objectives.data_ebm import loss_parameters, setup_objective
from .runs import clear_dir, holds_anything, list_checkpoints, load_latest_checkpoint, load_state, rng_state, \
    save_checkpoint, set_rng_state
from .sampling import SamplerDivergedError, frozen, get_sampler


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


# ---- multi-process (torchrun) ---------------------------------------------------------------------------
class Dist:
    """Data-parallel context from torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK); a no-op alone.

    Each rank samples z+ and z- for its own shard of the batches; gradients are averaged across ranks with one
    flattened all-reduce per optimizer step (the same update DistributedDataParallel makes); rank 0 alone
    evaluates, logs and writes checkpoints.
    """

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1

    def setup(self, device: torch.device) -> torch.device:
        if not self.enabled:
            return device
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast_parameters(self, modules) -> None:
        if not self.enabled:
            return
        import torch.distributed as dist

        for m in modules:
            for t in list(m.parameters()) + list(m.buffers()):
                dist.broadcast(t.data, 0)

    def average_gradients(self, params) -> None:
        if not self.enabled:
            return
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        i = 0
        for g in grads:
            g.copy_(flat[i:i + g.numel()].view_as(g))
            i += g.numel()

    def check_in_sync(self, modules) -> float:
        """Largest difference of any parameter from rank 0's copy (0.0 when alone)."""
        if not self.enabled:
            return 0.0
        import torch.distributed as dist

        flat = torch.cat([p.detach().reshape(-1) for m in modules for p in m.parameters()])
        ref = flat.clone()
        dist.broadcast(ref, 0)
        diff = (flat - ref).abs().max()
        dist.all_reduce(diff, op=dist.ReduceOp.MAX)
        return float(diff)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


# ---- data -----------------------------------------------------------------------------------------------
def build_tokenizer(recipe: Recipe, train_sentences: List[str]):
    d = recipe.data
    if d.tokenizer == "word":
        return WordVocab.build(train_sentences, min_count=d.min_count, max_size=d.max_vocab)
    from .data.spm import SentencePieceTokenizer

    return SentencePieceTokenizer.train(train_sentences, vocab_size=d.spm_vocab_size)


def encode_sentences(sentences: List[str], tokenizer, max_len: int, policy: str):
    """Token ids with <s> ... </s>; sentences over ``max_len`` tokens are truncated or dropped (and counted)."""
    out, truncated, dropped = [], 0, 0
    for s in sentences:
        ids = tokenizer.encode(s)
        body = ids[1:-1]
        if len(body) > max_len:
            if policy == "drop":
                dropped += 1
                continue
            truncated += 1
            ids = ids[:1] + body[:max_len] + ids[-1:]
        if len(ids) <= 2:  # nothing between <s> and </s>
            dropped += 1
            continue
        out.append(ids)
    return out, {"truncated": truncated, "dropped": dropped}


# ---- learning-rate schedule -----------------------------------------------------------------------------
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


# ---- the trainer ----------------------------------------------------------------------------------------
class Trainer:
    """Sets up data, model, objective and optimizers from a recipe, then runs Algorithm 1."""

    def __init__(self, recipe: Recipe, run_dir, device: Optional[str] = None, resume: bool = False,
                 progress: bool = True, overwrite: bool = False):
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.dist = Dist()
        self.progress = progress and self.dist.is_main
        self.device = self.dist.setup(resolve_device(device or recipe.train.device))
        if recipe.train.num_threads:
            torch.set_num_threads(recipe.train.num_threads)
        seed_everything(recipe.seed)
        self.step = 0
        self.stop_signal = None
        self.nan_skips = 0
        self.prior_step_size = recipe.sampling.prior_step_size
        self.posterior_step_size = recipe.sampling.posterior_step_size

        ckpt = None
        if resume:
            path, ckpt = load_latest_checkpoint(self.run_dir)
            log(f"resuming from {path} (step {ckpt['step']})")
        elif holds_anything(self.run_dir) and not overwrite:
            raise FileExistsError(f"{self.run_dir} is not empty; resume the run there, choose another directory, "
                                  f"or pass overwrite=True (--overwrite) to replace it")
        # nothing is written before the data and the model are set up: a run that fails to start touches nothing
        self._setup_data(ckpt)
        self._setup_model()
        if ckpt is not None:
            self._restore(ckpt)
            if self.dist.is_main:
                (self.run_dir / "recipe.yaml").write_text(dump_recipe(recipe))  # with the resumable overrides
        elif self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if overwrite:
                clear_dir(self.run_dir)
            (self.run_dir / "recipe.yaml").write_text(dump_recipe(recipe))
            if self.tokenizer is not None:
                self.tokenizer.save(self.run_dir)
        self.dist.barrier()
        self.dist.broadcast_parameters([self.model, self.objective])

    # -- setup --
    def _setup_data(self, ckpt) -> None:
        if self.recipe.data.kind == "image":
            self._setup_image_data()
        else:
            self._setup_text_data(ckpt)

    def _setup_image_data(self) -> None:
        from .data.images import ImageBatcher, held_out_class_split, load_images

        r, d = self.recipe, self.recipe.data
        images = load_images(d.corpus, d.image_size, d.channels, data_dir=d.data_dir, limit=d.limit, seed=r.seed,
                             **d.options)
        if d.held_out_class is not None:
            images = held_out_class_split(images, d.held_out_class)
        self.images, self.tokenizer = images, None
        bs = r.train.batch_size
        if len(images.train) < bs * self.dist.world_size:
            raise ValueError(f"image set {d.corpus!r}: {len(images.train)} training images, fewer than one batch "
                             f"of train.batch_size={bs} per process; lower train.batch_size")
        self.data_stats = {"images": images.name, "train_images": len(images.train),
                           "valid_images": len(images.valid), "test_images": len(images.test),
                           "image_shape": list(images.train.shape[1:]), **images.stats}
        self.batcher = ImageBatcher(images.train, bs, seed=r.seed, rank=self.dist.rank,
                                    world_size=self.dist.world_size)
        self.valid_batcher = ImageBatcher(images.valid, bs, shuffle=False, drop_last=False)

    def _setup_text_data(self, ckpt) -> None:
        r = self.recipe
        corpus = load_corpus(r.data.corpus, data_dir=r.data.data_dir, **r.data.options)
        lower = r.data.lowercase
        prep = (lambda xs: [s.lower() for s in xs]) if lower else (lambda xs: xs)
        train, valid = prep(corpus.train), prep(corpus.valid)
        if ckpt is not None:
            from .data.vocab import load_tokenizer

            self.tokenizer = load_tokenizer(self.run_dir)
        else:
            self.tokenizer = build_tokenizer(r, train)
        self.train_ids, tstats = encode_sentences(train, self.tokenizer, r.data.max_len, r.data.length_policy)
        self.valid_ids, vstats = encode_sentences(valid, self.tokenizer, r.data.max_len, r.data.length_policy)
        if not self.train_ids:
            raise ValueError(f"corpus {r.data.corpus!r}: no training sentences left after length handling")
        if not self.valid_ids:
            raise ValueError(f"corpus {r.data.corpus!r}: no validation sentences left after length handling")
        if len(self.train_ids) < r.train.batch_size:
            log(f"warning: corpus {r.data.corpus!r} has {len(self.train_ids)} training sentence(s), fewer than one "
                f"batch (train.batch_size={r.train.batch_size}); every batch repeats them and the model will overfit")
        self.data_stats = {"corpus": corpus.name, "train_sentences": len(self.train_ids),
                           "valid_sentences": len(self.valid_ids), "vocab_size": len(self.tokenizer),
                           "train_truncated": tstats["truncated"], "train_dropped": tstats["dropped"],
                           "valid_truncated": vstats["truncated"], "valid_dropped": vstats["dropped"],
                           **corpus.stats}
        bs = r.train.batch_size
        self.batcher = BucketBatcher(self.train_ids, bs, self.tokenizer.pad_id, seed=r.seed,
                                     rank=self.dist.rank, world_size=self.dist.world_size)
        # a fixed random order of length buckets: eval_batches then scores a random subset, not the shortest
        self.valid_batcher = BucketBatcher(self.valid_ids, bs, self.tokenizer.pad_id, seed=12345, shuffle=True)

    def _setup_model(self) -> None:
        r = self.recipe
        self.model: LatentEBMModel = build_model(r, self.tokenizer).to(self.device)
        try:
            self.objective = build_objective(r.prior.objective, r.prior.amortizer, **r.prior.objective_args)
        except TypeError as e:
            raise ValueError(f"prior.objective_args: {e}") from None
        setup_objective(self.objective, self.model.prior.latent_dim, self.device)
        self.objective.to(self.device)
        # an amortized sampler trains its generator with its own optimizer (in after_step)
        self.amortizers = [m for m in self.objective.modules() if hasattr(m, "optimizer_state_dict")]
        s = r.sampling
        sampler_args = {"n_steps": s.prior_steps, "step_size": s.prior_step_size, **r.prior.sampler_args}
        if r.prior.sampler == "langevin":
            sampler_args.setdefault("z_clamp", s.z_clamp)
            sampler_args.setdefault("noise", s.noise)
        try:
            self.prior_sampler = get_sampler(r.prior.sampler, **sampler_args)
        except TypeError as e:
            raise ValueError(f"prior.sampler_args: {e}") from None
        if hasattr(self.prior_sampler, "name"):
            try:
                self.prior_sampler.name = f"prior {r.prior.sampler}"
            except AttributeError:
                pass
        if s.compile != "none":
            self.model.compile_sampling(s.compile)
        t = r.train
        self.opt_dec = torch.optim.Adam(self.model.decoder.parameters(), lr=t.lr_decoder,
                                        betas=tuple(t.betas_decoder), weight_decay=t.weight_decay)
        prior_params = list(self.model.prior.parameters()) + loss_parameters(self.objective)
        self.opt_prior = torch.optim.Adam(prior_params, lr=t.lr_prior, betas=tuple(t.betas_prior))
        lam = lr_lambda(t.lr_schedule, t.steps, t.warmup_steps, t.lr_gamma, t.lr_decay_every)
        self.sched_dec = torch.optim.lr_scheduler.LambdaLR(self.opt_dec, lam)
        self.sched_prior = torch.optim.lr_scheduler.LambdaLR(self.opt_prior, lam)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(r.seed + 1_000_003 * self.dist.rank)  # each rank draws its own noise

    # -- checkpoint --
    def state_dict(self) -> dict:
        return {
            "step": self.step, "recipe": to_dict(self.recipe),
            "model": self.model.state_dict(), "objective": self.objective.state_dict(),
            "opt_dec": self.opt_dec.state_dict(), "opt_prior": self.opt_prior.state_dict(),
            "sched_dec": self.sched_dec.state_dict(), "sched_prior": self.sched_prior.state_dict(),
            "batcher": self.batcher.state_dict(), "sampler_gen": self.gen.get_state(), "rng": rng_state(),
            "step_sizes": (self.prior_step_size, self.posterior_step_size), "nan_skips": self.nan_skips,
            "amortizer_optimizers": [m.optimizer_state_dict() for m in self.amortizers],
        }

    def _restore(self, ck: dict) -> None:
        self.step = int(ck["step"])
        load_state(self.model, ck["model"], f"the checkpoint in {self.run_dir}")
        load_state(self.objective, ck["objective"], f"the checkpoint in {self.run_dir} (prior objective)")
        self.opt_dec.load_state_dict(ck["opt_dec"])
        self.opt_prior.load_state_dict(ck["opt_prior"])
        self.sched_dec.load_state_dict(ck["sched_dec"])
        self.sched_prior.load_state_dict(ck["sched_prior"])
        self.batcher.load_state_dict(ck["batcher"])
        self.gen.set_state(ck["sampler_gen"])
        set_rng_state(ck["rng"])
        self.prior_step_size, self.posterior_step_size = ck["step_sizes"]
        self.nan_skips = ck.get("nan_skips", 0)
        for m, st in zip(self.amortizers, ck.get("amortizer_optimizers", [])):
            m.load_optimizer_state_dict(st)

    def save_checkpoint(self) -> Path:
        return save_checkpoint(self.state_dict(), self.run_dir, self.recipe.train.keep_checkpoints)

    # -- one step of Algorithm 1 --
    def sample_prior(self, n: int, z0: Optional[torch.Tensor] = None) -> torch.Tensor:
        prior = self.model.prior
        if z0 is None:
            z0 = prior.sample_reference(n, generator=self.gen)
        with frozen(prior):
            return self.prior_sampler.sample(prior.log_prob_unnormalized, z0, step_size=self.prior_step_size,
                                             generator=self.gen).z

    def autocast(self):
        """Mixed precision for the decoder's matrix work (train.amp); z and the Langevin updates stay fp32."""
        amp = self.recipe.train.amp
        if amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def sample_posterior(self, x: torch.Tensor) -> torch.Tensor:
        s = self.recipe.sampling
        z0 = self.model.prior.sample_reference(x.shape[0], generator=self.gen)
        was_training = self.model.training
        self.model.eval()
        try:
            with self.autocast():
                return self.model.sample_posterior(x, z0=z0, n_steps=s.posterior_steps,
                                                   step_size=self.posterior_step_size, generator=self.gen,
                                                   z_clamp=s.z_clamp, noise=s.noise)
        finally:
            self.model.train(was_training)

    def train_step(self, x: torch.Tensor) -> dict:
        t, model = self.recipe.train, self.model
        model.train()
        t0 = time.perf_counter()
        z_pos = self.sample_posterior(x)
        t1 = time.perf_counter()
        z_neg = self.objective.negatives(model.prior, z_pos, self.sample_prior)
        t2 = time.perf_counter()

        # decoder: ascend log p_beta(x | z+)
        self.opt_dec.zero_grad(set_to_none=True)
        with self.autocast():
            logp = model.decoder.log_prob(x, z_pos).float()
        dec_loss = -logp.mean()
        # prior: the objective's loss (default mean f(z-) - mean f(z+))
        self.opt_prior.zero_grad(set_to_none=True)
        prior_loss, pstats = self.objective(model.prior, z_pos, z_neg)
        if not (torch.isfinite(dec_loss) and torch.isfinite(prior_loss)):
            raise SamplerDivergedError("training", self.step, "the loss", self.posterior_step_size)
        (dec_loss + prior_loss).backward()
        self.dist.average_gradients(list(model.decoder.parameters()) +
                                    [p for g in self.opt_prior.param_groups for p in g["params"]])
        clip = t.grad_clip if t.grad_clip is not None else float("inf")
        gn_dec = torch.nn.utils.clip_grad_norm_(model.decoder.parameters(), clip)
        gn_prior = torch.nn.utils.clip_grad_norm_(
            [p for g in self.opt_prior.param_groups for p in g["params"]], clip)
        self.opt_dec.step()
        self.opt_prior.step()
        self.sched_dec.step()
        self.sched_prior.step()
        pstats.update(self.objective.after_step(model.prior, z_pos, z_neg))
        unit = "token" if self.tokenizer is not None else "dim"
        return {"dec_nll": float(dec_loss.detach()), f"dec_nll_{unit}": float(-logp.detach().sum()) / self._units(x),
                "prior_loss": float(prior_loss.detach()), **pstats,
                "grad_norm_decoder": float(gn_dec), "grad_norm_prior": float(gn_prior),
                "time_posterior": t1 - t0, "time_prior": t2 - t1, "time_step": time.perf_counter() - t0,
                "lr_decoder": self.sched_dec.get_last_lr()[0], "lr_prior": self.sched_prior.get_last_lr()[0]}

    def _units(self, x: torch.Tensor) -> int:
        """What a per-unit NLL divides by: real tokens (text) or pixel values (images)."""
        if self.tokenizer is not None:
            return max(1, int((x[:, 1:] != self.tokenizer.pad_id).sum()))
        return x.numel()

    def evaluate(self, max_batches: Optional[int] = None) -> dict:
        """Validation reconstruction NLL: -log p_beta(x | z+) at posterior samples, per example and per unit
        (token or pixel value); for images also the reconstruction MSE |x - g(z+)|^2 per pixel value.

        A fixed generator seed makes numbers at different steps comparable (same noise, same data).
        """
        s = self.recipe.sampling
        model = self.model
        was = model.training
        model.eval()
        gen = torch.Generator(device=self.device)
        gen.manual_seed(12345)
        image = self.tokenizer is None
        total, sq, n_ex, n_units = 0.0, 0.0, 0, 0
        for i, x in enumerate(self.valid_batcher):
            if max_batches is not None and i >= max_batches:
                break
            x = x.to(self.device)
            z0 = model.prior.sample_reference(x.shape[0], generator=gen)
            z = model.sample_posterior(x, z0=z0, n_steps=s.posterior_steps, step_size=s.posterior_step_size,
                                       generator=gen)
            with torch.no_grad():
                if image:
                    mean = model.decoder.mean(z)
                    total += float(-model.decoder.log_prob_given_mean(x, mean).sum())
                    sq += float((x - mean).pow(2).sum())
                else:
                    total += float(-model.decoder.log_prob(x, z).sum())
            n_ex += x.shape[0]
            n_units += self._units(x)
        model.train(was)
        if image:
            return {"valid_recon_nll": total / n_ex, "valid_recon_nll_dim": total / n_units,
                    "valid_mse": sq / n_units}
        return {"valid_recon_nll": total / n_ex, "valid_recon_nll_token": total / n_units,
                "valid_recon_ppl": math.exp(min(50.0, total / n_units))}

    def write_image_grids(self) -> dict:
        """samples.png, reconstructions.png (validation images) and chain.png in the run directory."""
        from .eval.vision import write_image_grids

        s = self.recipe.sampling
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.recipe.seed)
        self.model.eval()
        paths = write_image_grids(self.model, self.images.valid, self.run_dir, prior_steps=s.prior_steps,
                                  prior_step_size=s.prior_step_size, posterior_steps=s.posterior_steps,
                                  posterior_step_size=s.posterior_step_size, generator=gen)
        log("image grids: " + ", ".join(paths.values()))
        return paths

    # -- the loop --
    def _handle_signal(self, signum, frame):
        if self.stop_signal is not None:  # a second signal: stop now, without a new checkpoint
            raise KeyboardInterrupt
        self.stop_signal = signum
        log(f"received {signal.Signals(signum).name}: finishing this step, writing a checkpoint and stopping "
            f"(send it again to stop at once)")

    def run(self) -> dict:
        r, t = self.recipe, self.recipe.train
        metrics_path = self.run_dir / "metrics.jsonl"
        old_handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old_handlers[sig] = signal.signal(sig, self._handle_signal)
            except ValueError:  # not the main thread
                pass
        main = self.dist.is_main
        if main:
            log(f"run directory: {self.run_dir}  device: {self.device}  data: {json.dumps(self.data_stats)}")
            n_params = sum(p.numel() for p in self.model.parameters())
            log(f"model: {n_params:,} parameters (prior {sum(p.numel() for p in self.model.prior.parameters()):,})"
                + (f"  ranks: {self.dist.world_size}" if self.dist.enabled else ""))
        if self.dist.enabled and r.sampling.on_nan == "skip":
            raise ValueError("sampling.on_nan=skip is not supported with several processes (ranks would disagree "
                             "on which batches to skip); use on_nan=raise")
        summary = {}
        try:
            with open(metrics_path if main else os.devnull, "a") as mf:
                def write(rec):
                    mf.write(json.dumps(rec) + "\n")
                    mf.flush()

                def evaluate(step):
                    ev = self.evaluate(t.eval_batches)
                    write({"step": step, **ev})
                    if "valid_mse" in ev:
                        msg = (f"step {step}: validation reconstruction MSE {ev['valid_mse']:.5f} per pixel value, "
                               f"NLL {ev['valid_recon_nll']:.1f} nats/image")
                    else:
                        msg = (f"step {step}: validation reconstruction NLL {ev['valid_recon_nll']:.3f} "
                               f"nats/sentence ({ev['valid_recon_nll_token']:.3f} nats/token)")
                    (bar.write if bar is not None else log)(msg)
                    return ev

                bar = None
                if self.step == 0 and main:
                    ev = evaluate(0)
                    summary["valid_recon_nll_start"] = ev["valid_recon_nll"]
                    if "valid_mse" in ev:
                        summary["valid_mse_start"] = ev["valid_mse"]
                bar = _progress(t.steps, self.step, self.progress)
                while self.step < t.steps and self.stop_signal is None:
                    x = self.batcher.next().to(self.device)
                    try:
                        stats = self.train_step(x)
                    except SamplerDivergedError as e:
                        if r.sampling.on_nan != "skip":
                            raise
                        self.nan_skips += 1
                        self.prior_step_size *= 0.5
                        self.posterior_step_size *= 0.5
                        log(f"step {self.step}: {e} -- skipped the batch; step sizes halved to "
                            f"{self.prior_step_size:g} / {self.posterior_step_size:g}")
                        write({"step": self.step, "nan_skip": self.nan_skips, "sampler": e.sampler})
                        continue
                    self.step += 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(nll=f"{stats['dec_nll']:.2f}", gap=f"{stats.get('f_gap', 0.0):.2f}")
                    if self.step % t.log_every == 0 or self.step == t.steps:
                        write({"step": self.step, **stats})
                    if main and (self.step % t.eval_every == 0 or self.step == t.steps):
                        ev = evaluate(self.step)
                        summary["valid_recon_nll_end"] = ev["valid_recon_nll"]
                        if "valid_mse" in ev:
                            summary["valid_mse_end"] = ev["valid_mse"]
                    if main and self.step % t.save_every == 0:
                        self.save_checkpoint()
                if bar is not None:
                    bar.close()
        finally:
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
        if self.dist.enabled:
            summary["max_parameter_difference_across_ranks"] = self.dist.check_in_sync([self.model, self.objective])
            if main:
                log(f"parameters across {self.dist.world_size} ranks: max difference from rank 0 "
                    f"{summary['max_parameter_difference_across_ranks']:.3g}")
        if main:
            self.save_checkpoint()
            if self.step >= t.steps:
                self.model.save_pretrained(self.run_dir)
                if self.tokenizer is None:
                    self.write_image_grids()
        self.dist.barrier()
        summary.update(step=self.step, stopped_early=self.step < t.steps, nan_skips=self.nan_skips,
                       interrupted_by=self.stop_signal)
        summary["report_lines"] = _report_lines(summary)
        return summary


def _report_lines(summary: dict) -> List[str]:
    """What ``textebm train`` prints at the end: validation numbers at the start and the end of the run."""
    lines = []
    if summary.get("valid_mse_start") is not None and summary.get("valid_mse_end") is not None:
        lines.append(f"validation reconstruction MSE (per pixel value): start {summary['valid_mse_start']:.5f} -> "
                     f"end {summary['valid_mse_end']:.5f}")
    elif summary.get("valid_recon_nll_start") is not None and summary.get("valid_recon_nll_end") is not None:
        lines.append(f"validation reconstruction NLL (nats/sentence): start {summary['valid_recon_nll_start']:.3f}"
                     f" -> end {summary['valid_recon_nll_end']:.3f}")
    return lines


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc="train", file=sys.stderr, dynamic_ncols=True)


def train(recipe: Recipe, run_dir, device: Optional[str] = None, resume: bool = False, progress: bool = True,
          overwrite: bool = False) -> dict:
    """Train a model from a recipe into ``run_dir`` (or continue the run there with ``resume=True``).

    ``run_dir`` must be new or empty unless ``overwrite`` (then its contents are replaced once the run has set up
    its data and model). The summary's ``interrupted_by`` is the signal number that stopped the run, if any.
    """
    fresh = not resume and not holds_anything(run_dir)
    trainer = Trainer(recipe, run_dir, device=device, resume=resume, progress=progress, overwrite=overwrite)
    try:
        return trainer.run()
    except BaseException:
        # a new run that fails before its first checkpoint leaves nothing behind (so the same --out works again)
        if fresh and trainer.dist.is_main and not list_checkpoints(run_dir) and Path(run_dir).is_dir():
            clear_dir(run_dir)
            Path(run_dir).rmdir()
        raise
