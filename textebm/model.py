"""LatentEBMModel: the latent EBM prior joined to a decoder, p(x, z) = p_alpha(z) p_beta(x | z).

Posterior log-density (up to a constant in z), the target of posterior Langevin (Pang et al. 2020, eq. 10):
    log p(z | x) = f_alpha(z) - |z|^2 / (2 sigma0^2) + log p_beta(x | z) + const.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Tuple

import torch
from torch import nn

from .decoders import DECODERS, build_decoder, rnn_backward_mode, split_log_prob
from .prior import PRIORS, GaussianPrior, LatentEBMPrior, SymbolVectorPrior, build_prior
from .sampling import (POSTERIOR_CHAIN, PRIOR_CHAIN, ChainConfig, Density, Langevin, Samples, Schedule, frozen,
                       get_sampler)

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class LatentEBMModel(nn.Module):
    """Prior + decoder (+ the tokenizer that maps text to the decoder's ids, when there is one, and an amortized
    posterior q(z | x), :mod:`textebm.encoders`, when the recipe asks for one: it is not part of the model's
    density, only a faster way into its posterior)."""

    def __init__(self, prior: LatentEBMPrior, decoder: nn.Module, tokenizer=None, recipe=None,
                 encoder: Optional[nn.Module] = None):
        super().__init__()
        for part, other in (("decoder", decoder), ("encoder", encoder)):
            if other is not None and getattr(other, "latent_dim", prior.latent_dim) != prior.latent_dim:
                raise ValueError(f"{part} expects latent_dim {other.latent_dim} but the prior has "
                                 f"latent_dim {prior.latent_dim}; they must match")
        self.prior = prior
        self.decoder = decoder
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.recipe = recipe
        self._compiled_log_prob = None  # set by compile_sampling

    @property
    def recipe(self):
        """The recipe the model was built from (None for a model built by hand); setting it rebuilds the chains."""
        return self._recipe

    @recipe.setter
    def recipe(self, recipe) -> None:
        self._recipe = recipe
        #: the chains every sampling call uses unless given another (:func:`recipe_chains`)
        self.prior_chain, self.posterior_chain = recipe_chains(recipe)

    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    @property
    def is_image(self) -> bool:
        """True for an image model: its decoder's declared modality (:func:`textebm.decoders.register_decoder`)."""
        return getattr(self.decoder, "modality", "text") == "image"

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

    # ---- sampling ----------------------------------------------------------------------------------------
    def sample_prior(self, n: int, chain: Optional[ChainConfig] = None, z0: Optional[torch.Tensor] = None,
                     generator: Optional[torch.Generator] = None, **run_kwargs):
        """z ~ p_alpha by ``chain`` (default: the model's prior chain, :attr:`prior_chain`) from ``z0`` or
        N(0, sigma0^2 I); ``run_kwargs`` are :meth:`ChainConfig.run`'s per-call arguments (``trace``,
        ``warm_start``, ``graphs``, ``return_samples``...)."""
        return self.prior.sample(n, chain or self.prior_chain, z0=z0, generator=generator, **run_kwargs)

    def sample_posterior(self, x, chain: Optional[ChainConfig] = None, z0: Optional[torch.Tensor] = None,
                         generator: Optional[torch.Generator] = None, prior_weight: float = 1.0,
                         return_samples: bool = False, graphs=None, **run_kwargs):
        """z ~ p(z | x) by ``chain`` (default: the model's posterior chain, :attr:`posterior_chain`) from ``z0``
        (default N(0, sigma0^2 I)). ``prior_weight`` w scales the prior term of the target, w log p_alpha(z) +
        log p_beta(x | z) (annealing); with ``graphs`` (a :class:`~textebm.sampling.ChainGraphs`) and a chain
        that allows capture, the chain, the batch's preparation included, runs as a captured CUDA graph where
        possible. ``run_kwargs`` are :meth:`ChainConfig.run`'s per-call arguments (``warm_start``, ``index``,
        ``trace``, ``name``...)."""
        chain = chain or self.posterior_chain
        if z0 is None:
            z0 = self.posterior_start(x, chain, generator)
        if graphs is not None and chain.capture:
            w = torch.full((), float(prior_weight), device=z0.device)
            target = Density(lambda xx, ww: self.posterior_log_prob(xx, ww, static=True), (x, w),
                             key=("posterior", id(self)), modules=(self,))
        else:
            target = self.posterior_log_prob(x, prior_weight)
        with frozen(self), rnn_backward_mode(self.decoder, always=True):
            out: Samples = chain.run(target, z0, generator=generator, graphs=graphs, **run_kwargs)
        return out if return_samples else out.z

    @torch.no_grad()
    def posterior_start(self, x, chain: Optional[ChainConfig] = None,
                        generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Where a posterior chain on x starts: a draw of the encoder's q(z | x) when the chain starts at the
        encoder (``sampling.posterior_start: encoder``), its mean mu(x) (``encoder_mean``: the chain alone then
        supplies the noise), when the model has one; else N(0, sigma0^2 I)."""
        chain = chain or self.posterior_chain
        n = x.shape[0] if hasattr(x, "shape") else len(x)
        if chain.start in ("encoder", "encoder_mean") and self.encoder is not None:
            was = self.encoder.training
            self.encoder.eval()
            try:
                if chain.start == "encoder_mean":
                    return self.encoder(x)[0].float()
                return self.encoder.sample(x, generator=generator).float()
            finally:
                self.encoder.train(was)
        return self.prior.sample_reference(n, generator=generator)

    @torch.no_grad()
    def generate(self, n: int = 0, z: Optional[torch.Tensor] = None, chain: Optional[ChainConfig] = None,
                 generator: Optional[torch.Generator] = None, decode: bool = True, symbol=None, **decoding):
        """Sample z from the prior by ``chain`` (default: the model's prior chain) or use ``z``, and decode:
        strings when a tokenizer is attached, images (batch, C, H, W) from an image decoder. ``decoding`` are
        the decoder's ``generate`` arguments (``max_len``, ``greedy``, ``temperature``, ``top_k``, ``top_p``).
        ``symbol`` k (a symbol-vector prior): z from p(z | y = k) ∝ exp(f_k(z)) N(z; 0, sigma0^2 I) by the same
        chain instead of the marginal prior."""
        if z is None:
            if n < 1:
                raise ValueError(f"number of samples must be >= 1, got {n}")
            if symbol is not None:
                z = self.sample_symbol(n, symbol, chain, generator=generator)
            else:
                z = self.sample_prior(n, chain, generator=generator)
        out = self.decoder.generate(z, generator=generator, **decoding)
        if decode and self.tokenizer is not None:
            return [self.tokenizer.decode(ids) for ids in out]
        return out

    # ---- the latent as a tool: codes of inputs, decodes of codes ---------------------------------------
    def as_batch(self, x):
        """A batch the decoder reads: sentences (a list of strings, text models) become a padded LongTensor of
        token ids framed by <s> and </s> as in training (lower-cased when the recipe says so, bodies longer than
        the recipe's ``data.max_len`` truncated; an empty string is the empty sentence); a tensor (token ids, or
        images (batch, C, H, W)) is moved to the model's device. One row per input, in order."""
        if isinstance(x, torch.Tensor):
            return x.to(self.device)
        if isinstance(x, str) or not all(isinstance(s, str) for s in x):
            raise TypeError("x must be a tensor or a list of strings (sentences)")
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: it reads tensors, not sentences")
        if len(x) == 0:
            raise ValueError("no inputs (an empty list)")
        from .data import pad_batch

        r = self.recipe
        max_len = r.data.max_len if r is not None else None
        lower = r is not None and r.data.lowercase
        rows = []
        for sent in x:
            ids = self.tokenizer.encode(sent.lower() if lower else sent)
            if max_len is not None and len(ids) - 2 > max_len:
                ids = ids[:1 + max_len] + ids[-1:]
            rows.append(ids)
        return pad_batch(rows, self.tokenizer.pad_id).to(self.device)

    def encode(self, x, n_chains: int = 8, chain: Optional[ChainConfig] = None,
               generator: Optional[torch.Generator] = None, amortized: Optional[bool] = None,
               refine: Optional[int] = None, refine_step_size: float = 0.3) -> "Codes":
        """The code of each input: a point in latent space with its spread, :class:`Codes` (``mean``, ``std``,
        each (batch, d); ``samples`` (batch, C, d) when chains were run; ``source``).

        With an amortized posterior (``model.encoder``) and ``amortized`` not False: q(z | x) = N(mu(x),
        diag sigma(x)^2), mean mu and spread sigma (one forward pass). Otherwise C = ``n_chains`` independent
        posterior chains per input, ``chain`` (default: the model's posterior chain, what training feeds the
        decoder) from where the chain starts, in eval mode (no dropout): the mean of their final states and
        their standard deviation per coordinate (0 for C = 1, whose mean is one posterior sample). ``x``: see
        :meth:`as_batch`.

        ``refine`` > 0 moves each mean to the posterior's mode by that many steps of gradient ascent on
        log p_alpha(z) + log p_beta(x | z) (Langevin steps of size ``refine_step_size`` without noise:
        z <- z + s^2/2 grad), the code a reconstruction decodes best; the source then ends in ``+mode``. None:
        the recipe's ``sampling.code_refine`` (:meth:`code_refine`)."""
        refine = self.code_refine(refine)
        codes = self._encode(x, n_chains, chain, generator, amortized)
        if refine <= 0:
            return codes
        x = self.as_batch(x)
        ascent = ChainConfig(Langevin(), n_steps=int(refine), step_size=float(refine_step_size), noise_scale=0.0,
                             name="posterior mode")
        was = self.training
        self.eval()
        try:
            with torch.enable_grad():
                mode = self.sample_posterior(x, ascent, z0=codes.mean.detach().clone(), generator=generator)
        finally:
            self.train(was)
        return Codes(mode.detach().float(), codes.std, codes.samples, codes.source + "+mode")

    def code_refine(self, refine: Optional[int] = None) -> int:
        """The steps of ascent to the posterior's mode that make a code: ``refine`` when given, else the recipe's
        ``sampling.code_refine`` (0 for a model without a recipe)."""
        if refine is not None:
            return int(refine)
        return int(self.recipe.sampling.code_refine) if self.recipe is not None else 0

    def _encode(self, x, n_chains: int, chain: Optional[ChainConfig], generator: Optional[torch.Generator],
                amortized: Optional[bool]) -> "Codes":
        x = self.as_batch(x)
        B = x.shape[0]
        was = self.training
        self.eval()
        try:
            if self.encoder is not None and amortized is not False:
                with torch.no_grad():
                    mu, log_std = self.encoder(x)
                return Codes(mu.float(), log_std.exp().float(), None, "encoder")
            if amortized:
                raise ValueError("amortized=True, but this model has no amortized posterior (model.encoder)")
            if n_chains < 1:
                raise ValueError(f"n_chains must be >= 1, got {n_chains}")
            xx = x.repeat_interleave(n_chains, 0) if n_chains > 1 else x
            z = self.sample_posterior(xx, chain, generator=generator).detach().view(B, n_chains, -1)
        finally:
            self.train(was)
        std = z.std(1, unbiased=True) if n_chains > 1 else torch.zeros_like(z[:, 0])
        return Codes(z.mean(1), std, z, "chains")

    @torch.no_grad()
    def decode(self, z: torch.Tensor, generator: Optional[torch.Generator] = None, **decoding):
        """Decodes of codes z (batch, d): sentences by the decoding rule (``decoding``: the decoder's ``generate``
        arguments, e.g. ``greedy=True``; :func:`recipe_decoding` gives a recipe's rule), or mean images g(z)."""
        was = self.training
        self.eval()
        try:
            if self.is_image:
                return self.decoder.mean(z)
            return self.generate(z=z, generator=generator, **decoding)
        finally:
            self.train(was)

    @torch.no_grad()
    def reconstruct(self, x, chain: Optional[ChainConfig] = None, generator: Optional[torch.Generator] = None,
                    n_chains: Optional[int] = None, codes: Optional[torch.Tensor] = None,
                    refine: Optional[int] = None, **decoding):
        """Each input decoded at its code: sentences (text) or mean images g(z) (images).

        The code is ``codes`` when given, else :meth:`encode`'s mean (the amortized posterior's mean, or the mean
        of ``n_chains`` posterior chains by ``chain``; default 8 chains for text and 1 for images, whose code is
        then one posterior sample z+, as the image evaluation has always reconstructed). Sentences are decoded
        greedily unless ``decoding`` says otherwise (the most likely sentence of the code, token by token).
        ``refine``: :meth:`encode`'s ascent to the posterior mode (None: the recipe's)."""
        if codes is None:
            n = n_chains if n_chains is not None else (1 if self.is_image else 8)
            with torch.enable_grad():
                codes = self.encode(x, n, chain, generator, refine=refine).mean
        if not self.is_image:
            decoding.setdefault("greedy", True)
            decoding.setdefault("max_len", self.recipe.generate.max_len if self.recipe is not None else 40)
        return self.decode(codes, generator=generator, **decoding)

    @torch.no_grad()
    def interpolate(self, a, b, steps: int = 8, spherical: bool = False, generator: Optional[torch.Generator] = None,
                    n_chains: int = 8, chain: Optional[ChainConfig] = None, **decoding):
        """Decodes along the path between the codes of two inputs (Bowman et al. 2016, Sec. 5; Pang et al. 2020,
        Table 7): ``a`` and ``b`` are codes (d,) or inputs (a sentence, an image (C, H, W)) encoded by
        :meth:`encode` (``n_chains``, ``chain``). The path is :func:`interpolate_codes` (linear, or spherical
        about the prior reference's mean); its endpoints are the two codes exactly. Returns (path (steps, d),
        decodes): sentences greedy unless ``decoding`` says otherwise, or images (steps, C, H, W)."""
        ends = []
        for v in (a, b):
            if isinstance(v, torch.Tensor) and v.dim() == 1 and v.is_floating_point():  # a code
                if v.shape[0] != self.latent_dim:
                    raise ValueError(f"a code has {self.latent_dim} values; got {v.shape[0]}")
                ends.append(v.to(self.device).float())
            else:
                x = [v] if isinstance(v, str) else v.unsqueeze(0)
                with torch.enable_grad():
                    ends.append(self.encode(x, n_chains, chain, generator).mean[0])
        center = self.prior.ref_mean if getattr(self.prior, "reference", None) == "fitted" else None
        path = interpolate_codes(ends[0], ends[1], steps, spherical=spherical, center=center)
        if not self.is_image:
            decoding.setdefault("greedy", True)
        return path, self.decode(path, generator=generator, **decoding)

    @torch.no_grad()
    def sample_near(self, x, n: int = 10, radius: Optional[float] = None, chain: Optional[ChainConfig] = None,
                    generator: Optional[torch.Generator] = None, n_chains: int = 8, **decoding):
        """Variations of one input ``x`` (a sentence, or a one-row batch): decodes of n codes from its posterior
        (``radius`` None: n posterior chains by ``chain``, or n draws of q(z | x) when the model has an amortized
        posterior), or from its neighbourhood N(m, radius^2 I) about its code m (:meth:`encode`'s mean, with
        ``n_chains``). Returns (codes (n, d), decodes by ``decoding``: the decoder's ``generate`` arguments)."""
        x = [x] if isinstance(x, str) else x
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        xb = self.as_batch(x)
        if xb.shape[0] != 1:
            raise ValueError(f"sample_near takes one input; got {xb.shape[0]}")
        with torch.enable_grad():
            if radius is None:
                if self.encoder is not None:
                    was = self.encoder.training
                    self.encoder.eval()
                    try:
                        z = self.encoder.sample(xb.expand(n, -1), generator=generator).float()
                    finally:
                        self.encoder.train(was)
                else:
                    z = self.encode(xb, n, chain, generator).samples[0]
            else:
                if not radius >= 0:
                    raise ValueError(f"radius must be >= 0, got {radius}")
                m = self.encode(xb, n_chains, chain, generator).mean
                eps = torch.randn((n, self.latent_dim), generator=generator, device=m.device)
                z = m + float(radius) * eps
        return z, self.decode(z, generator=generator, **decoding)

    def sample_symbol(self, n: int, symbol, chain: Optional[ChainConfig] = None,
                      generator: Optional[torch.Generator] = None, **run_kwargs) -> torch.Tensor:
        """z ~ p(z | y = ``symbol``) ∝ exp(f_y(z)) N(z; 0, sigma0^2 I) by ``chain`` (default: the model's prior
        chain) from the reference: a symbol-vector prior only (:class:`~textebm.prior.SymbolVectorPrior`)."""
        if not hasattr(self.prior, "sample_symbol"):
            raise ValueError(f"this model's prior ({self.prior.kind}) has no symbols; conditional sampling needs "
                             f"prior.kind: symbol_vector")
        return self.prior.sample_symbol(n, symbol, chain or self.prior_chain, generator=generator, **run_kwargs)

    @torch.no_grad()
    def symbol_probs(self, x, n_chains: int = 8, chain: Optional[ChainConfig] = None,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """p(y | x) = E_{p(z|x)}[p(y | z)] of a symbol-vector prior, (batch, K): the mean of softmax f_alpha(z)
        over the ``n_chains`` posterior chains of :meth:`encode` (with an amortized posterior, at its mean)."""
        if not hasattr(self.prior, "symbol_log_probs"):
            raise ValueError(f"this model's prior ({self.prior.kind}) has no symbols; clustering needs "
                             f"prior.kind: symbol_vector")
        with torch.enable_grad():
            codes = self.encode(x, n_chains, chain, generator)
        z = codes.samples if codes.samples is not None else codes.mean.unsqueeze(1)
        B, C, d = z.shape
        return self.prior.symbol_log_probs(z.reshape(B * C, d)).exp().view(B, C, -1).mean(1)

    def cluster(self, x, n_chains: int = 8, chain: Optional[ChainConfig] = None,
                generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """(the most probable symbol of each input, (batch,), and p(y | x), (batch, K)): :meth:`symbol_probs`."""
        p = self.symbol_probs(x, n_chains, chain, generator)
        return p.argmax(-1), p

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
               "decoder_class": type(self.decoder).__name__,
               "decoder_name": getattr(self.decoder, "registry_name", None),
               "encoder": self.encoder.config if self.encoder is not None else None}
        text = json.dumps(cfg, indent=2)
        atomic_write(directory / CONFIG, lambda tmp: tmp.write_text(text))
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(directory / WEIGHTS, lambda tmp: save_file(state, str(tmp)))
        if self.tokenizer is not None:
            self.tokenizer.save(directory)
        return directory

    def push_to_hub(self, repo_id: str, run_dir=None, private: Optional[bool] = None, token=None,
                    commit_message: Optional[str] = None, revision: Optional[str] = None, api=None):
        """Upload the model to the Hugging Face Hub repository ``repo_id`` (``org/name``; created if needed):
        :meth:`save_pretrained`'s files (safetensors weights, config, tokenizer), ``recipe.yaml``, the
        ``metrics.jsonl`` and evaluation reports of ``run_dir`` when given, and a model card (``README.md``) with
        the ecosystem's metadata generated from them (:func:`textebm.hub.model_card`). Needs the ``[hub]`` extra.
        Returns the commit's information; :meth:`from_pretrained` loads it back by id."""
        from .hub import push

        return push(self, repo_id, run_dir=run_dir, private=private, token=token, commit_message=commit_message,
                    revision=revision, api=api)

    @classmethod
    def from_pretrained(cls, directory, device="cpu") -> "LatentEBMModel":
        """Load a model written by :meth:`save_pretrained` (or a finished training run directory), or one pushed
        to the Hugging Face Hub, by id (``org/name[@revision]``, through the local cache; ``HF_HUB_OFFLINE=1``
        reads the cache only; :func:`textebm.hub.download`).

        Reads JSON and safetensors only, so opening a model runs no code from its files; a malformed
        ``config.json`` or weights that do not fit it are a ``ValueError`` naming the file.
        """
        from safetensors.torch import load_file

        from .config import ConfigError, Recipe, from_dict
        from .data.tokenizers import load_tokenizer
        from .files import load_state, read_json
        from .hub import download, is_hub_id

        if is_hub_id(directory):
            directory = download(str(directory))
        directory = Path(directory)
        if not (directory / CONFIG).exists() or not (directory / WEIGHTS).exists():
            raise FileNotFoundError(f"{directory} is not a saved model: expected {CONFIG} and {WEIGHTS} in it")
        path = directory / CONFIG
        cfg = read_json(path)
        names = {c.__name__: key for key, c in DECODERS.items()}  # by class name (configs of older versions)
        if isinstance(cfg.get("decoder_name"), str) and cfg["decoder_name"] in DECODERS \
                and isinstance(cfg.get("decoder_class"), str):
            names[cfg["decoder_class"]] = cfg["decoder_name"]  # by its registered name
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
        enc_cfg = cfg.get("encoder")
        if enc_cfg is not None:
            from .encoders import ENCODERS

            if not isinstance(enc_cfg, dict) or enc_cfg.get("kind") not in ENCODERS:
                raise ValueError(f"{path} (encoder): expected a mapping with kind one of {sorted(ENCODERS)}")
            _check_types(ENCODERS[enc_cfg["kind"]].__init__, {k: v for k, v in enc_cfg.items() if k != "kind"},
                         f"{path} (encoder)")
            _check_sizes(enc_cfg, f"{path} (encoder)", weights)
        try:
            prior = build_prior(**cfg["prior"])
            decoder = build_decoder(names[cfg["decoder_class"]], **cfg["decoder"])
            encoder = None
            if enc_cfg is not None:
                from .encoders import build_encoder

                encoder = build_encoder(**enc_cfg)
        except Exception as e:  # whatever a module makes of a value it cannot use: the file is at fault
            msg = " ".join(str(e).split())[:300]
            raise ValueError(f"{path} describes a model that cannot be built: {type(e).__name__}: {msg}") from None
        model = cls(prior, decoder, tokenizer, recipe, encoder)
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
        if key == "lora" and isinstance(value, dict):  # an adapter's rank owns parameters too
            r = value.get("r")
            if isinstance(r, int) and not isinstance(r, bool) and r > n_values:
                raise ValueError(f"{where}: lora.r = {r} is more than the weights file can hold ({n_values})")
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


class Codes(NamedTuple):
    """Codes of inputs (:meth:`LatentEBMModel.encode`): ``mean`` and ``std`` (batch, d), the chains' final states
    ``samples`` (batch, C, d) when chains were run (else None), and ``source``: ``"encoder"`` (the amortized
    posterior q(z | x)) or ``"chains"`` (the model's posterior chains)."""

    mean: torch.Tensor
    std: torch.Tensor
    samples: Optional[torch.Tensor]
    source: str


def interpolate_codes(a: torch.Tensor, b: torch.Tensor, steps: int, spherical: bool = False,
                      center: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(steps, d) codes from a to b at t_i = i / (steps - 1), whose first and last rows are a and b exactly.

    Linear: z(t) = (1 - t) a + t b (Bowman et al. 2016, "Generating Sentences from a Continuous Space", Sec. 5).
    Spherical (slerp; Shoemake 1985, White 2016 "Sampling Generative Networks" for latent spaces), about
    ``center`` c (default the origin): with u = a - c, v = b - c and the angle omega between them,
        z(t) = c + sin((1 - t) omega) / sin(omega) u + sin(t omega) / sin(omega) v,
    which keeps z(t) - c near the shell where a Gaussian's mass is; nearly parallel u, v (sin omega < 1e-6) fall
    back to the linear path."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2 (the two endpoints included), got {steps!r}")
    a, b = a.detach().float().reshape(-1), b.detach().float().reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"the two codes differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
    t = torch.linspace(0.0, 1.0, steps, device=a.device).unsqueeze(1)
    path = (1 - t) * a + t * b
    if spherical:
        c = torch.zeros_like(a) if center is None else center.detach().float().to(a.device).reshape(-1)
        u, v = a - c, b - c
        cos = torch.dot(u, v) / (u.norm() * v.norm()).clamp_min(1e-30)
        omega = torch.arccos(cos.clamp(-1.0, 1.0))
        if float(torch.sin(omega)) >= 1e-6:
            path = c + (torch.sin((1 - t) * omega) * u + torch.sin(t * omega) * v) / torch.sin(omega)
    path[0], path[-1] = a, b
    return path


def recipe_chains(recipe) -> Tuple[ChainConfig, ChainConfig]:
    """(prior chain, posterior chain) of a recipe: the one place where the recipe's chain keys become chains.

    Prior: ``prior.sampler`` with ``prior.sampler_args``, ``sampling.prior_steps`` (K0), the step-size schedule
    ``prior_schedule`` from ``prior_step_size`` (s0) to ``prior_step_size_end``, ``prior_noise``, and the start
    (``prior_persistent`` > 0: a replay buffer, else ``prior_start``). Posterior: ``sampling.posterior_*`` the same
    way, started per ``posterior_start`` (``posterior_warm_start``: each example's last state), with the noise
    scale training ends at (``train.posterior_noise_to`` when set). Both: ``noise``
    (false: no noise in either), ``z_clamp``, ``check_every``, ``capture`` (``none`` turns capture off; whether a
    device can capture is decided when the chain runs). Without a recipe: the paper's chains
    (:data:`~textebm.sampling.PRIOR_CHAIN`, :data:`~textebm.sampling.POSTERIOR_CHAIN`).
    """
    if recipe is None:
        return PRIOR_CHAIN, POSTERIOR_CHAIN
    s = recipe.sampling
    common = dict(z_clamp=s.z_clamp, check_every=s.check_every, capture=s.capture != "none")

    def build(which: str, sampler: str, args: dict, start: str, fraction: float) -> ChainConfig:
        try:
            update = get_sampler(sampler, **args)
        except (TypeError, ValueError) as e:
            key = "prior.sampler_args" if which == "prior" else "sampling.posterior_sampler_args"
            raise ValueError(f"{key}: {e}") from None
        step = Schedule(getattr(s, f"{which}_schedule"), getattr(s, f"{which}_step_size"),
                        getattr(s, f"{which}_step_size_end"))
        noise = getattr(s, f"{which}_noise") if s.noise else 0.0
        if which == "posterior" and s.noise and recipe.train.posterior_noise_to is not None:
            noise = recipe.train.posterior_noise_to  # where training ends (it moves there: train.posterior_noise)
        return ChainConfig(update, getattr(s, f"{which}_steps"), step, noise, start=start, start_fraction=fraction,
                           name=f"{which} {update.name}", **common)

    prior_start = "persistent" if s.prior_persistent else s.prior_start
    post_start = "example" if s.posterior_warm_start else s.posterior_start
    return (build("prior", recipe.prior.sampler, dict(recipe.prior.sampler_args), prior_start,
                  s.prior_start_fraction),
            build("posterior", s.posterior_sampler, dict(s.posterior_sampler_args), post_start, 1.0))


def recipe_decoding(recipe, max_len: Optional[int] = None, greedy: Optional[bool] = None,
                    temperature: Optional[float] = None, top_k: Optional[int] = None,
                    top_p: Optional[float] = None) -> dict:
    """The decoding rule of a recipe (its ``generate`` section; defaults without one), with the given values
    overriding it: the keyword arguments of a decoder's ``generate``. A temperature, top-k or top-p given here
    means sampling (it turns off the recipe's ``greedy``); ``greedy=True`` means arg-max decoding."""
    from .config import GenerateConfig

    g = recipe.generate if recipe is not None else GenerateConfig()
    sampling_asked = any(v is not None for v in (temperature, top_k, top_p))
    return dict(max_len=max_len if max_len is not None else g.max_len,
                greedy=bool(greedy) if greedy is not None else (g.greedy and not sampling_asked),
                temperature=temperature if temperature is not None else g.temperature,
                top_k=top_k if top_k is not None else g.top_k,
                top_p=top_p if top_p is not None else g.top_p)


def describe_decoding(rule: dict) -> str:
    """``greedy`` or e.g. ``sampling (temperature 1, top-k 0, top-p 0.9)``, with the length limit: for reports."""
    how = "greedy" if rule["greedy"] else (f"sampling (temperature {rule['temperature']:g}, top-k {rule['top_k']}, "
                                           f"top-p {rule['top_p']:g})")
    return f"{how}, max_len {rule['max_len']}"


def build_model(recipe, tokenizer=None) -> LatentEBMModel:
    """Construct prior + decoder from a recipe and, for text, a tokenizer (vocabulary size and special ids)."""
    m, p = recipe.model, recipe.prior
    ref = dict(reference=p.reference, reference_momentum=p.reference_momentum)
    if p.kind == "gaussian":
        prior = GaussianPrior(m.latent_dim, sigma0=p.sigma0, **ref)
    elif p.kind == "symbol_vector":
        prior = SymbolVectorPrior(m.latent_dim, n_symbols=p.n_symbols, hidden=p.hidden, n_layers=p.n_layers,
                                  activation=p.activation, negative_slope=p.negative_slope, sigma0=p.sigma0,
                                  f_clamp=p.f_clamp, spread=p.symbol_spread, **ref)
    else:
        prior = LatentEBMPrior(m.latent_dim, hidden=p.hidden, n_layers=p.n_layers, activation=p.activation,
                               negative_slope=p.negative_slope, sigma0=p.sigma0, f_clamp=p.f_clamp, **ref)
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
    elif m.decoder == "transformer" and getattr(tokenizer, "kind", None) == "hf":
        # the model's own tokenizer: its embeddings grow by the tokens the run added (a padding token, say)
        kwargs.update(added_tokens=tokenizer.n_added)
    kwargs.update(m.decoder_args)
    decoder = build_decoder(m.decoder, **kwargs)
    encoder = None
    if m.encoder:
        from .encoders import build_encoder

        try:
            encoder = build_encoder(m.encoder, vocab_size=len(tokenizer), latent_dim=m.latent_dim,
                                    pad_id=tokenizer.pad_id, **m.encoder_args)
        except TypeError as e:
            raise ValueError(f"model.encoder_args: {e}") from None
    return LatentEBMModel(prior, decoder, tokenizer, recipe, encoder)
