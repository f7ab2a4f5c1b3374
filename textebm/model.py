"""LatentEBMModel: the latent EBM prior joined to a decoder, p(x, z) = p_alpha(z) p_beta(x | z).

Posterior log-density (up to a constant in z), the target of posterior Langevin (Pang et al. 2020, eq. 10):
    log p(z | x) = f_alpha(z) - |z|^2 / (2 sigma0^2) + log p_beta(x | z) + const.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from .decoders import DECODERS, build_decoder, rnn_backward_mode, split_log_prob
from .prior import PRIORS, GaussianPrior, LatentEBMPrior, build_prior
from .sampling import Density, Samples, Schedule, frozen, get_sampler, run_chain

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class LatentEBMModel(nn.Module):
    """Prior + decoder (+ the tokenizer that maps text to the decoder's ids, when there is one)."""

    def __init__(self, prior: LatentEBMPrior, decoder: nn.Module, tokenizer=None, recipe=None):
        super().__init__()
        if getattr(decoder, "latent_dim", prior.latent_dim) != prior.latent_dim:
            raise ValueError(f"decoder expects latent_dim {decoder.latent_dim} but the prior has "
                             f"latent_dim {prior.latent_dim}; they must match")
        self.prior = prior
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.recipe = recipe
        self._compiled_log_prob = None  # set by compile_sampling

    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    @property
    def is_image(self) -> bool:
        """True for an image model (a decoder with a mean image g(z) and no tokenizer)."""
        return self.tokenizer is None and hasattr(self.decoder, "mean")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---- densities -------------------------------------------------------------------------------------
    def posterior_log_prob(self, x, prior_weight: float = 1.0, static: bool = False
                           ) -> Callable[[torch.Tensor], torch.Tensor]:
        """z -> w log p_alpha(z) + log p_beta(x | z) (unnormalized; w = 1 is the posterior), reusing per-batch
        decoder work. ``prior_weight`` w < 1 anneals the prior term (a warm-up against posterior collapse);
        ``static`` prepares the batch with shapes that depend only on x's shape (for captured chains)."""
        dec_fn, ctx = split_log_prob(self.decoder, x, static=static)
        density, prior = self._compiled_log_prob or _posterior_density, self.prior
        w = prior_weight if torch.is_tensor(prior_weight) else float(prior_weight)
        return lambda z: density(prior, dec_fn, ctx, z, w)

    def compile_sampling(self, mode: Optional[str] = "default") -> None:
        """Compile the posterior log-density (prior + decoder, forward and backward) with ``torch.compile``.

        ``mode`` is torch.compile's: ``default``, ``reduce-overhead`` (CUDA graphs on GPU, for small batches whose
        Langevin steps are launch-bound), ``max-autotune``; ``None`` or ``"none"`` switches back to eager. The
        function is the same; the first batch of each new shape pays the compilation (tens of seconds on CPU).
        """
        self._compiled_log_prob = None if mode in (None, "none") else torch.compile(
            _posterior_density, mode=None if mode == "default" else mode, dynamic=None)

    def joint_log_prob(self, x, z: torch.Tensor) -> torch.Tensor:
        """log p_alpha(z) + log p_beta(x | z) without log Z(alpha): (batch,)."""
        return self.prior.log_prob_unnormalized(z) + self.decoder.log_prob(x, z)

    # ---- sampling --------------------------------------------------------------------------------------
    def sample_prior(self, n: int, n_steps: Optional[int] = None, step_size=None, sampler=None,
                     generator: Optional[torch.Generator] = None, **kw) -> torch.Tensor:
        """z ~ p_alpha by the recipe's prior chain from p0 (K0 = 60, s0 = 0.4 without a recipe); any of the
        chain's settings can be overridden (see :func:`chain_settings`)."""
        cfg = chain_settings(self.recipe, "prior", n_steps=n_steps, step_size=step_size, sampler=sampler)
        return self.prior.sample(n, generator=generator, **{**cfg, **kw})

    def sample_posterior(self, x, n_steps: Optional[int] = None, step_size=None, z0: Optional[torch.Tensor] = None,
                         sampler=None, generator: Optional[torch.Generator] = None, return_samples: bool = False,
                         prior_weight: float = 1.0, graphs=None, **kw):
        """z ~ p(z | x) by the recipe's posterior chain (K1 = 20 Langevin steps of s1 = 0.1 without a recipe) from
        ``z0`` (default p0). ``n_steps``, ``step_size`` (a number or a schedule), ``sampler``, ``noise_scale``,
        ``z_clamp`` override the recipe; other keywords go to :func:`textebm.sampling.run_chain` (``warm_start``,
        ``index``, ``trace``, ...). ``prior_weight`` scales the prior term of the target (annealing). With
        ``graphs`` (a :class:`~textebm.sampling.ChainGraphs`) the chain, the batch's preparation included, runs
        as a captured CUDA graph where possible."""
        n = x.shape[0] if hasattr(x, "shape") else len(x)
        if z0 is None:
            z0 = self.prior.sample_reference(n, generator=generator)
        cfg = chain_settings(self.recipe, "posterior", n_steps=n_steps, step_size=step_size, sampler=sampler)
        cfg.update({k: v for k, v in kw.items() if v is not None or k not in cfg})  # None: the recipe's value
        chain = cfg.pop("sampler")
        if graphs is not None:
            w = torch.full((), float(prior_weight), device=z0.device)
            target = Density(lambda xx, ww: self.posterior_log_prob(xx, ww, static=True), (x, w),
                             key=("posterior", id(self)), modules=(self,))
        else:
            target = self.posterior_log_prob(x, prior_weight)
        with frozen(self), rnn_backward_mode(self.decoder, always=True):
            out: Samples = run_chain(chain, target, z0, cfg.pop("n_steps"),
                                     cfg.pop("step_size"), generator=generator, graphs=graphs,
                                     name=cfg.pop("name", f"posterior {chain.name}"), **cfg)
        return out if return_samples else out.z

    @torch.no_grad()
    def generate(self, n: int = 0, z: Optional[torch.Tensor] = None, n_steps: int = 60, step_size: float = 0.4,
                 generator: Optional[torch.Generator] = None, decode: bool = True, **gen_kwargs):
        """Sample z from the prior (or use ``z``) and decode: strings when a tokenizer is attached, images
        (batch, C, H, W) from an image decoder."""
        if z is None:
            if n < 1:
                raise ValueError(f"number of samples must be >= 1, got {n}")
            z = self.sample_prior(n, n_steps=n_steps, step_size=step_size, generator=generator)
        out = self.decoder.generate(z, generator=generator, **gen_kwargs)
        if decode and self.tokenizer is not None:
            return [self.tokenizer.decode(ids) for ids in out]
        return out

    @torch.no_grad()
    def reconstruct(self, x, n_steps: Optional[int] = None, step_size=None,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Images decoded at a posterior sample: g(z+) with z+ ~ p(z | x) by the recipe's posterior chain."""
        with torch.enable_grad():
            z = self.sample_posterior(x, n_steps=n_steps, step_size=step_size, generator=generator)
        return self.decoder.mean(z)

    # ---- persistence -----------------------------------------------------------------------------------
    def save_pretrained(self, directory) -> Path:
        """Write ``config.json`` (the recipe), ``model.safetensors`` and the tokenizer into ``directory``."""
        from safetensors.torch import save_file

        from .config import to_dict
        from .files import atomic_write

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cfg = {"recipe": to_dict(self.recipe) if self.recipe is not None else None,
               "prior": self.prior.config, "decoder": getattr(self.decoder, "config", None),
               "decoder_class": type(self.decoder).__name__}
        text = json.dumps(cfg, indent=2)
        atomic_write(directory / CONFIG, lambda tmp: tmp.write_text(text))
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(directory / WEIGHTS, lambda tmp: save_file(state, str(tmp)))
        if self.tokenizer is not None:
            self.tokenizer.save(directory)
        return directory

    @classmethod
    def from_pretrained(cls, directory, device="cpu") -> "LatentEBMModel":
        """Load a model written by :meth:`save_pretrained` (or a finished training run directory).

        Reads JSON and safetensors only, so opening a model runs no code from its files; a malformed
        ``config.json`` or weights that do not fit it are a ``ValueError`` naming the file.
        """
        from safetensors.torch import load_file

        from .config import ConfigError, Recipe, from_dict
        from .data.tokenizers import load_tokenizer
        from .files import load_state, read_json

        directory = Path(directory)
        if not (directory / CONFIG).exists() or not (directory / WEIGHTS).exists():
            raise FileNotFoundError(f"{directory} is not a saved model: expected {CONFIG} and {WEIGHTS} in it")
        path = directory / CONFIG
        cfg = read_json(path)
        names = {c.__name__: key for key, c in DECODERS.items()}
        if not isinstance(cfg.get("prior"), dict) or not isinstance(cfg.get("decoder"), dict) \
                or not isinstance(cfg.get("decoder_class"), str) or cfg["decoder_class"] not in names:
            raise ValueError(f"{path} is not a textebm model config: expected the keys prior and decoder (mappings) "
                             f"and decoder_class (one of {sorted(names)})")
        try:
            recipe = from_dict(Recipe, cfg["recipe"]) if cfg.get("recipe") else None
        except (ConfigError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"{path}: the recipe in it is invalid ({e})") from None
        tokenizer = None
        try:
            tokenizer = load_tokenizer(directory)
        except FileNotFoundError:
            pass
        try:
            weights = load_file(str(directory / WEIGHTS))
        except Exception as e:  # safetensors raises its own error types for truncated files
            raise ValueError(f"could not read weights {directory / WEIGHTS}: {e}") from None
        prior_cls = PRIORS.get(cfg["prior"].get("kind", "ebm"))
        if prior_cls is None:
            raise ValueError(f"{path} (prior): unknown kind {cfg['prior'].get('kind')!r}; one of {sorted(PRIORS)}")
        _check_types(prior_cls.__init__, {k: v for k, v in cfg["prior"].items() if k != "kind"}, f"{path} (prior)")
        _check_types(DECODERS[names[cfg["decoder_class"]]].__init__, cfg["decoder"], f"{path} (decoder)")
        for part in ("prior", "decoder"):
            _check_sizes(cfg[part], f"{path} ({part})", weights)
        try:
            prior = build_prior(**cfg["prior"])
            decoder = build_decoder(names[cfg["decoder_class"]], **cfg["decoder"])
        except Exception as e:  # whatever a module makes of a value it cannot use: the file is at fault
            msg = " ".join(str(e).split())[:300]
            raise ValueError(f"{path} describes a model that cannot be built: {type(e).__name__}: {msg}") from None
        model = cls(prior, decoder, tokenizer, recipe)
        load_state(model, weights, f"weights {directory / WEIGHTS}")
        return model.to(device)


def _check_types(init, values: dict, where: str) -> None:
    """Each value of a config part against the annotation of its constructor argument (int, finite float, str,
    bool, optionally None); unknown keys are errors. What cannot be checked this way (mappings) is left to the
    constructor."""
    import inspect
    import math
    import typing

    hints = typing.get_type_hints(init)
    params = inspect.signature(init).parameters
    for key, value in values.items():
        if key not in params or key == "self":
            raise ValueError(f"{where}: unknown key {key!r}")
        hint = hints.get(key)
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if args else hint
        if value is None:
            if optional or params[key].default is None:
                continue
            raise ValueError(f"{where}: {key} may not be null")
        if base is bool:
            ok = isinstance(value, bool)
        elif base is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif base is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        elif base is str:
            ok = isinstance(value, str)
        else:
            continue
        if not ok:
            raise ValueError(f"{where}: {key} must be {'a finite number' if base is float else base.__name__}, "
                             f"got {value!r}"[:300])


def _check_sizes(cfg: dict, where: str, weights: dict) -> None:
    """Bounds on a config's integers that the weights file itself sets (a hostile config must not build a model
    of a billion layers before its weights are found not to fit): every width or count owns parameters, so none
    can exceed the weights' number of values, and no layer count their number of tensors; token ids lie in
    [0, vocab_size)."""
    n_values = sum(t.numel() for t in weights.values())
    vocab = cfg.get("vocab_size")
    for key, value in cfg.items():
        if isinstance(value, dict):  # a nested library config (lm_config): its layer counts
            for k, v in value.items():
                if "layer" in k and isinstance(v, int) and not isinstance(v, bool) and v > len(weights):
                    raise ValueError(f"{where}: {key}.{k} = {v} is more layers than the weights file has tensors "
                                     f"({len(weights)})")
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        if value < 0 and key != "unk_id":
            raise ValueError(f"{where}: {key} = {value} is negative")
        if key.endswith("_id") and isinstance(vocab, int) and value >= vocab:
            raise ValueError(f"{where}: {key} = {value} is not a token id (vocab_size {vocab})")
        limit = len(weights) if "layer" in key else n_values
        if value > limit:
            raise ValueError(f"{where}: {key} = {value} is more than the weights file can hold ({limit}); "
                             f"the config does not describe these weights")


def _posterior_density(prior, decoder_log_prob, ctx, z: torch.Tensor, prior_weight: float = 1.0) -> torch.Tensor:
    """w log p_alpha(z) (unnormalized) + log p_beta(x | z), the decoder's part given as (fn, ctx) by
    split_log_prob."""
    lp = prior.log_prob_unnormalized(z)
    if torch.is_tensor(prior_weight) or prior_weight != 1.0:  # a tensor weight is an input of a captured chain
        lp = prior_weight * lp
    return lp + decoder_log_prob(ctx, z)


def chain_settings(recipe, which: str, n_steps: Optional[int] = None, step_size=None, sampler=None) -> dict:
    """The recipe's ``prior`` or ``posterior`` chain as keyword arguments of :func:`textebm.sampling.run_chain`:
    ``sampler`` (built by name from the recipe), ``n_steps``, ``step_size`` (a :class:`Schedule`), ``noise_scale``,
    ``z_clamp`` and ``check_every`` (the sampler's own, else ``sampling.check_every``); given values override.
    Without a recipe: Langevin, K0 = 60, s0 = 0.4 (prior) and K1 = 20, s1 = 0.1 (posterior), Pang et al. (2020)."""
    if which not in ("prior", "posterior"):
        raise ValueError(f"which must be 'prior' or 'posterior', got {which!r}")
    if recipe is None:
        from .sampling import Langevin

        cfg = dict(sampler=Langevin(), n_steps=60 if which == "prior" else 20,
                   step_size=0.4 if which == "prior" else 0.1, noise_scale=1.0, z_clamp=None)
    else:
        s = recipe.sampling
        if which == "prior":
            name, args = recipe.prior.sampler, dict(recipe.prior.sampler_args)
            k, sched = s.prior_steps, Schedule(s.prior_schedule, s.prior_step_size, s.prior_step_size_end)
            scale = s.prior_noise
        else:
            name, args = s.posterior_sampler, dict(s.posterior_sampler_args)
            k, sched = s.posterior_steps, Schedule(s.posterior_schedule, s.posterior_step_size,
                                                   s.posterior_step_size_end)
            scale = s.posterior_noise
        chain = get_sampler(name, **args)
        cfg = dict(sampler=chain, n_steps=k, step_size=sched, noise_scale=scale if s.noise else 0.0,
                   z_clamp=s.z_clamp, check_every=getattr(chain, "check_every", 0) or s.check_every)
    for key, value in (("n_steps", n_steps), ("step_size", step_size), ("sampler", sampler)):
        if value is not None:
            cfg[key] = value
    return cfg


def describe_chain(cfg: dict) -> dict:
    """JSON-ready summary of chain settings (from :func:`chain_settings`), for reports: the sampler's name, K, the
    step size (a number, or e.g. ``"linear 0.8 -> 0.05"``) and the noise scale."""
    step = cfg["step_size"]
    if isinstance(step, Schedule):
        step = step.start if step.end is None or step.kind == "constant" else f"{step.kind} {step.start:g} -> {step.end:g}"
    return {"sampler": getattr(cfg["sampler"], "name", type(cfg["sampler"]).__name__), "n_steps": cfg["n_steps"],
            "step_size": step, "noise_scale": cfg.get("noise_scale", 1.0)}


def build_model(recipe, tokenizer=None) -> LatentEBMModel:
    """Construct prior + decoder from a recipe and, for text, a tokenizer (vocabulary size and special ids)."""
    m, p = recipe.model, recipe.prior
    if p.kind == "gaussian":
        prior = GaussianPrior(m.latent_dim, sigma0=p.sigma0)
    else:
        prior = LatentEBMPrior(m.latent_dim, hidden=p.hidden, n_layers=p.n_layers, activation=p.activation,
                               negative_slope=p.negative_slope, sigma0=p.sigma0, f_clamp=p.f_clamp)
    if m.decoder == "conv":
        kwargs = dict(latent_dim=m.latent_dim, channels=recipe.data.channels, image_size=recipe.data.image_size,
                      ngf=m.ngf, sigma=m.likelihood_sigma, **m.decoder_args)
        return LatentEBMModel(prior, build_decoder("conv", **kwargs), None, recipe)
    if tokenizer is None:
        raise ValueError(f"a {m.decoder} decoder needs a tokenizer (the vocabulary); none was given")
    kwargs = dict(vocab_size=len(tokenizer), latent_dim=m.latent_dim, pad_id=tokenizer.pad_id,
                  bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, unk_id=tokenizer.unk_id,
                  word_dropout=m.word_dropout)
    if m.decoder == "lstm":
        kwargs.update(embed_dim=m.embed_dim, hidden_dim=m.hidden_dim, dropout_in=m.dropout_in,
                      dropout_out=m.dropout_out, init_range=m.init_range)
    elif m.decoder == "transformer" and not m.decoder_args.get("pretrained"):
        # GPT-2 sizes from the model section: n_embd = embed_dim, MLP width n_inner = hidden_dim, embedding
        # dropout = dropout_in, attention/residual dropout = dropout_out; decoder_args (n_layer, n_head,
        # n_prefix, add_to_inputs, n_positions, ...) complete or override them. The context holds the prefix,
        # <s> and the longest sentence or generation. A pretrained model brings its own sizes and dropout.
        n_prefix = int(m.decoder_args.get("n_prefix", 1))
        kwargs.update(n_embd=m.embed_dim, n_inner=m.hidden_dim, embd_dropout=m.dropout_in, dropout=m.dropout_out,
                      n_positions=n_prefix + max(recipe.data.max_len, recipe.generate.max_len) + 2)
    kwargs.update(m.decoder_args)
    decoder = build_decoder(m.decoder, **kwargs)
    return LatentEBMModel(prior, decoder, tokenizer, recipe)
