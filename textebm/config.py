"""Recipes: YAML in, typed dataclasses out. Unknown keys and wrong types are rejected with the valid choices.

A recipe has the sections ``data``, ``model``, ``prior``, ``sampling``, ``train`` and ``generate`` plus
``name`` and ``seed``. ``apply_overrides(recipe, ["train.steps=200"])`` sets values from the command line,
each value parsed as YAML (so ``1e-3``, ``true``, ``null`` and ``[0.5, 0.999]`` work).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional


SCHEDULES = ("constant", "linear", "geometric", "cosine")   # textebm.sampling.schedules.KINDS
SAMPLER_NAMES = ("langevin", "mala", "sghmc", "svgd")        # textebm.sampling.SAMPLERS
REPORT_TO = ("jsonl", "tensorboard")                          # textebm.metrics_log.BACKENDS

#: Upper bounds on every size a recipe (or a saved model's config.json) sets, checked before any work: each keeps
#: the memory that one value asks for sane (a tensor of ~10^9 values at most), far above what the paper uses.
SIZE_BOUNDS = {
    "latent_dim": (1, 4096), "embed_dim": (1, 16384), "hidden_dim": (1, 16384), "hidden": (1, 16384),
    "n_layers": (0, 64), "ngf": (1, 2048), "vocab_size": (1, 10 ** 7), "max_vocab": (1, 10 ** 7),
    "spm_vocab_size": (8, 10 ** 6), "image_size": (4, 1024), "max_len": (1, 100_000), "data_max_len": (1, 16384),
    "n_embd": (1, 16384), "n_inner": (1, 65536), "n_layer": (1, 256), "n_head": (1, 256),
    "n_positions": (1, 200_000), "n_prefix": (1, 1024), "batch_size": (1, 65536), "prior_persistent": (0, 10 ** 7),
    "steps_chain": (0, 10 ** 6), "n_symbols": (1, 65536), "latent_chains": (3, 10 ** 4), "top_k": (0, 10 ** 7), "capture_bucket": (1, 4096),
}
#: the most parameters a recipe's model may have, estimated from its sizes before anything is built (8 GiB of
#: float32 values); the vocabulary's rows come on top (bounded by max_vocab / spm_vocab_size)
MAX_PARAMETERS = 2 ** 31
#: a recipe file or a --set value: at most this many bytes, this nesting depth, and this many values once YAML
#: aliases are expanded (a few aliases nested a few levels deep expand to billions: "billion laughs")
MAX_RECIPE_BYTES = 1 << 20
MAX_YAML_DEPTH = 32
MAX_YAML_NODES = 100_000
#: a recipe's name names its default run directory (runs/<name>): a name, never a path
MAX_NAME_LENGTH = 128


def _b(key):
    return SIZE_BOUNDS[key]


class ConfigError(ValueError):
    """A recipe is malformed; the message names the key and what was expected (always one line)."""

    def __init__(self, msg: str):
        super().__init__(" ".join(str(msg).split()))


@dataclass
class DataConfig:
    kind: str = "text"                 # text | image
    corpus: str = "grammar"            # text: a name in textebm.data.CORPORA or a local file/directory;
                                       # image: svhn | cifar10 | celeba | mnist | digits or a local folder/array file
    data_dir: Optional[str] = None     # where the corpus files are (named corpora)
    tokenizer: str = "word"            # word | sentencepiece | hf (a pretrained model's own tokenizer)
    tokenizer_path: Optional[str] = None  # hf: a local tokenizer directory (save_pretrained); default:
                                          # model.decoder_args.pretrained
    min_count: int = 1                 # word vocabulary: minimum training count
    max_vocab: Optional[int] = None    # word vocabulary: maximum size including special tokens
    spm_vocab_size: int = 8000         # sentencepiece vocabulary size
    max_len: int = 40                  # maximum tokens per sentence (words or pieces, no <s> </s>)
    length_policy: str = "truncate"    # truncate | drop sentences longer than max_len
    lowercase: bool = False
    image_size: int = 32               # images: height = width after loading (resized where needed)
    channels: int = 3                  # images: 3 (RGB) or 1 (grey)
    limit: Optional[int] = None        # images: at most this many per split (quick runs)
    held_out_class: Optional[int] = None  # images: anomaly protocol, train without this class, test on all
    options: Dict[str, Any] = field(default_factory=dict)  # corpus-specific loader options

    _choices = {"kind": ("text", "image"), "tokenizer": ("word", "sentencepiece", "hf"),
                "length_policy": ("truncate", "drop"), "channels": (1, 3)}
    _ranges = {"min_count": (1, None), "max_len": _b("data_max_len"), "spm_vocab_size": _b("spm_vocab_size"),
               "image_size": _b("image_size"), "limit": (1, None), "max_vocab": _b("max_vocab")}


@dataclass
class ModelConfig:
    latent_dim: int = 32
    decoder: str = "lstm"
    embed_dim: int = 128
    hidden_dim: int = 512
    dropout_in: float = 0.5
    dropout_out: float = 0.5
    init_range: float = 0.1
    word_dropout: float = 0.0          # text decoders: replace this fraction of input words by <unk> while
                                       # training the decoder (Bowman et al. 2016); 0 = off
    ngf: int = 64                      # conv decoder: base channel width
    likelihood_sigma: float = 0.3      # conv decoder: std of the Gaussian pixel likelihood
    decoder_args: Dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for the decoder
    encoder: Optional[str] = None      # amortized posterior q(z | x) beside the model (text): gru | null (none)
    encoder_args: Dict[str, Any] = field(default_factory=dict)  # e.g. {embed_dim: 64, hidden_dim: 128}

    _choices = {"decoder": ("lstm", "transformer", "conv"), "encoder": (None, "gru")}
    _ranges = {"latent_dim": _b("latent_dim"), "embed_dim": _b("embed_dim"), "hidden_dim": _b("hidden_dim"),
               "dropout_in": (0.0, 1.0), "dropout_out": (0.0, 1.0), "word_dropout": (0.0, 0.99),
               "init_range": (0.0, 1e6), "ngf": _b("ngf"), "likelihood_sigma": (1e-12, 1e6)}


@dataclass
class PriorConfig:
    kind: str = "ebm"                  # ebm: exp(f_alpha(z)) N(0, sigma0^2 I) / Z;  gaussian: N(0, sigma0^2 I),
                                       # fixed (the same model without the energy tilt, for ablations);
                                       # symbol_vector: exp(<y, f_alpha(z)>) N(0, sigma0^2 I) / Z with a symbol y
                                       # of n_symbols (Pang & Wu 2021): f = logsumexp_y f_y, clusters, conditions
    n_symbols: int = 10                # symbol_vector: the number K of symbols (f_alpha: latent -> R^K)
    symbol_spread: float = 1.0         # symbol_vector: the output layer's initial weights times this, so that the
                                       # symbols differ across the codes from the start (docs/latent.md)
    hidden: int = 200
    n_layers: int = 2
    activation: str = "leaky_relu"
    negative_slope: float = 0.2
    sigma0: float = 1.0
    f_clamp: Optional[float] = None
    reference: str = "gaussian"        # gaussian: N(0, sigma0^2 I) | fitted: N(m, diag s^2) moved toward the moments
                                       # of the posterior samples z+ (a moving average), which f then tilts
    reference_momentum: float = 0.99   # fitted reference: m <- mu m + (1 - mu) mean(z+), likewise s^2
    objective: str = "mle"
    objective_args: Dict[str, Any] = field(default_factory=dict)
    sampler: str = "langevin"
    sampler_args: Dict[str, Any] = field(default_factory=dict)
    amortizer: Optional[str] = None

    _choices = {"kind": ("ebm", "gaussian", "symbol_vector"), "sampler": SAMPLER_NAMES,
                "reference": ("gaussian", "fitted")}
    _ranges = {"hidden": _b("hidden"), "n_layers": _b("n_layers"), "sigma0": (1e-12, 1e6),
               "n_symbols": _b("n_symbols"), "symbol_spread": (0.0, 1e6),
               "f_clamp": (1e-12, 1e12), "reference_momentum": (0.0, 0.999999)}


@dataclass
class SamplingConfig:
    # A chain's step size follows a schedule from *_step_size to *_step_size_end (null: constant) over its steps;
    # *_noise scales the injected noise (1: Langevin at the model's temperature, 0: gradient ascent).
    prior_steps: int = 60             # K0
    prior_step_size: float = 0.4      # s0
    prior_step_size_end: Optional[float] = None
    prior_schedule: str = "constant"  # constant | linear | geometric | cosine
    prior_noise: float = 1.0
    prior_persistent: int = 0         # > 0: persistent prior chains, a replay buffer of this many states
    prior_reinit: float = 0.05        # persistent chains: fraction of rows restarted from N(0, sigma0^2 I)
    prior_start: str = "reference"    # reference: N(0, sigma0^2 I) | posterior: recent posterior samples z+ of
                                      # the training batches (training only; generation starts at the reference)
    prior_start_fraction: float = 1.0  # fraction of prior chains started from prior_start (the rest: reference)
    prior_replay: int = 1024          # prior_start posterior: how many recent posterior samples are kept
    posterior_steps: int = 20         # K1
    posterior_step_size: float = 0.1  # s1
    posterior_step_size_end: Optional[float] = None
    posterior_schedule: str = "constant"
    posterior_noise: float = 1.0
    posterior_sampler: str = "langevin"  # langevin | mala | sghmc | svgd
    posterior_sampler_args: Dict[str, Any] = field(default_factory=dict)
    posterior_warm_start: bool = False  # each training example's chain starts from its last posterior sample
    posterior_start: str = "reference"  # reference: N(0, sigma0^2 I) | encoder: a draw of the amortized
                                        # posterior q(z | x) | encoder_mean: its mean (both need model.encoder)
    code_refine: int = 0              # a sentence's code (encode, reconstruct, interpolate, sample --near): the
                                      # encoder's or chains' mean climbed this many noise-free steps to the
                                      # posterior's mode (0: the mean itself; --refine overrides)
    noise: bool = True                # false: no noise in either chain (both become gradient ascent)
    z_clamp: Optional[float] = None
    check_every: int = 0              # also read a chain's divergence flags every N steps (0: once, at its end)
    on_nan: str = "raise"             # raise | skip (skip the batch and halve both step sizes)
    compile: str = "none"             # none | default | reduce-overhead | max-autotune: torch.compile the
                                      # posterior log-density (reduce-overhead uses CUDA graphs on GPU)
    capture: str = "auto"             # auto | none | cuda_graph: run each chain as one captured CUDA graph per
                                      # batch shape (auto: on CUDA devices, off on CPU)
    capture_bucket: int = 8           # captured chains pad batches to a multiple of this many tokens

    _choices = {"on_nan": ("raise", "skip"), "compile": ("none", "default", "reduce-overhead", "max-autotune"),
                "prior_schedule": SCHEDULES, "posterior_schedule": SCHEDULES, "posterior_sampler": SAMPLER_NAMES,
                "capture": ("auto", "none", "cuda_graph"), "prior_start": ("reference", "posterior"),
                "posterior_start": ("reference", "encoder", "encoder_mean")}
    _ranges = {"prior_steps": _b("steps_chain"), "posterior_steps": _b("steps_chain"),
               "prior_step_size": (1e-12, None), "posterior_step_size": (1e-12, None),
               "prior_step_size_end": (1e-12, None), "posterior_step_size_end": (1e-12, None),
               "prior_noise": (0.0, None), "posterior_noise": (0.0, None),
               "prior_persistent": _b("prior_persistent"), "prior_reinit": (0.0, 1.0), "check_every": (0, None),
               "capture_bucket": _b("capture_bucket"), "code_refine": (0, 10 ** 5),
               "z_clamp": (1e-12, None), "prior_start_fraction": (0.0, 1.0), "prior_replay": (1, 10 ** 7)}


@dataclass
class TrainConfig:
    steps: int = 40000
    batch_size: int = 32
    lr_decoder: float = 1e-3
    lr_prior: float = 1e-4
    betas_decoder: List[float] = field(default_factory=lambda: [0.9, 0.999])
    betas_prior: List[float] = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 0.0
    grad_clip: Optional[float] = 5.0   # max global gradient norm per optimizer; null = no clipping
    prior_updates: int = 1             # prior updates per step (on the step's z+, fresh z- each): > 1 lets the
                                       # prior catch up with the aggregate posterior (the decoder moves once)
    lr_prior_schedule: Optional[str] = None  # the prior's own learning-rate schedule (null: lr_schedule)
    max_f_gap: Optional[float] = 100.0  # stop when |f(z+) - f(z-)| exceeds this (nats; null: no guard): the prior's
                                        # energy runs away (a healthy run stays within tens of nats)
    max_abs_f: Optional[float] = 1000.0  # stop when |f| at z+ or z- exceeds this (null: no guard)
    lr_schedule: str = "constant"      # constant | cosine | linear (decay to 0 at the last step) | exponential
    lr_gamma: float = 1.0              # exponential: multiply the learning rates by this ...
    lr_decay_every: int = 1000         # ... every this many steps
    warmup_steps: int = 0
    log_every: int = 10
    eval_every: int = 500
    eval_batches: Optional[int] = None  # validation batches per evaluation (null = whole split)
    save_every: int = 1000
    keep_checkpoints: int = 3
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    num_threads: Optional[int] = None  # torch CPU threads (null = torch's default)
    amp: str = "none"                  # none | bf16 | fp16: autocast the decoder; Langevin states stay fp32
    deterministic: bool = False        # deterministic kernels (torch.use_deterministic_algorithms, cuDNN), so a
                                       # resumed GPU run ends where an uninterrupted one does; slower on GPU
    report_to: List[str] = field(default_factory=lambda: ["jsonl"])  # jsonl and/or tensorboard
    # weight w of log p_alpha(z) in the posterior the chains sample, w log p_alpha(z) + log p_beta(x | z):
    anneal: str = "none"               # none (w = 1) | linear (w rises from anneal_start to 1 over anneal_steps)
                                       # | cyclical (Fu et al. 2019: anneal_cycles cycles over train.steps, w rising
                                       # linearly over the first anneal_ratio of each, then 1)
    anneal_start: float = 0.0
    anneal_steps: int = 1000
    anneal_cycles: int = 4
    anneal_ratio: float = 0.5
    posterior_noise_to: Optional[float] = None  # the posterior chain's noise scale moves linearly from
                                       # sampling.posterior_noise to this over posterior_noise_steps (null: fixed)
    posterior_noise_steps: int = 1000
    pretrain_steps: int = 0            # first steps as an autoencoder: w = 0 (no prior term in the posterior) ...
    pretrain_reset: bool = True        # ... then re-initialize the decoder (Li et al. 2019); chains and prior stay
    encoder_loss: str = "chain"        # model.encoder's loss: chain (fit q to the posterior chain's samples, DAMC) |
                                       # elbo (the ELBO in the encoder's parameters, as a VAE encoder)
    lr_encoder: Optional[float] = None  # the encoder's Adam learning rate (null: lr_decoder)
    latent_batches: int = 2            # latent diagnostics at every validation on this many batches (0 = off)
    latent_chains: int = 8             # posterior chains per sentence for the diagnostics (mutual information, ...)
    prior_fit_samples: int = 256       # prior-fit diagnostics at every validation on this many codes per source
                                       # (prior, aggregate posterior, N(0, I)); 0 = off (docs/latent.md)

    _choices = {"lr_schedule": ("constant", "cosine", "linear", "exponential"), "amp": ("none", "bf16", "fp16"),
                "anneal": ("none", "linear", "cyclical"), "encoder_loss": ("chain", "elbo"),
                "lr_prior_schedule": (None, "constant", "cosine", "linear", "exponential")}
    _ranges = {"lr_gamma": (1e-12, 1.0), "lr_decay_every": (1, None), "steps": (0, None),
               "batch_size": _b("batch_size"), "posterior_noise_to": (0.0, None), "posterior_noise_steps": (1, None),
               "max_f_gap": (1e-12, None), "prior_updates": (1, 100), "max_abs_f": (1e-12, None),
               "lr_encoder": (0.0, None),
               "lr_decoder": (0.0, None), "lr_prior": (0.0, None),
               "log_every": (1, None), "eval_every": (1, None), "save_every": (1, None),
               "keep_checkpoints": (1, None), "warmup_steps": (0, None), "anneal_start": (0.0, 1.0),
               "anneal_steps": (1, None), "anneal_cycles": (1, None), "anneal_ratio": (1e-6, 1.0),
               "pretrain_steps": (0, None), "latent_batches": (0, 10 ** 4), "latent_chains": _b("latent_chains"),
               "prior_fit_samples": (0, 10 ** 6),
               "grad_clip": (1e-12, None), "weight_decay": (0.0, None), "num_threads": (1, 1024)}


@dataclass
class GenerateConfig:
    max_len: int = 40
    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    _ranges = {"max_len": _b("max_len"), "temperature": (1e-12, None), "top_k": _b("top_k"),
               "top_p": (1e-12, 1.0)}


@dataclass
class Recipe:
    name: str = "run"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)

    _ranges = {"seed": (0, 2**63 - 1)}


# ---- conversion -----------------------------------------------------------------------------------------
def _fields(cls) -> Dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value, tp, where: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def from_dict(cls, data, where: str = "recipe"):
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and checking types, choices and ranges."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {type(data).__name__}")
    fields = _fields(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys are: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where != "recipe" else k) for k, v in data.items()}
    obj = cls(**kwargs)
    validate(obj, where)
    if cls is Recipe:
        check_recipe(obj)
    return obj


def validate(obj, where: str = "recipe") -> None:
    prefix = "" if where == "recipe" else f"{where}."
    for k, allowed in getattr(type(obj), "_choices", {}).items():
        v = getattr(obj, k)
        if v not in allowed:
            raise ConfigError(f"{prefix}{k}: {v!r} is not one of {', '.join(map(str, allowed))}")
    for k, (lo, hi) in getattr(type(obj), "_ranges", {}).items():
        v = getattr(obj, k)
        if v is None:
            continue
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise ConfigError(f"{prefix}{k}: {v!r} must be {rng}")


def check_name(name) -> None:
    """A recipe's ``name`` names its default run directory ``runs/<name>``: it must be a name, never a path (no
    ``/``, not ``.`` or ``..``, no control characters or NUL, at most :data:`MAX_NAME_LENGTH` characters)."""
    bad = (not name or len(name) > MAX_NAME_LENGTH or name in (".", "..") or "/" in name
           or any(ord(c) < 32 or ord(c) == 127 for c in name))
    if bad:
        raise ConfigError(f"name: {name[:MAX_NAME_LENGTH + 20]!r} is not a run name: it names the directory "
                          f"runs/<name>, so it must be 1 to {MAX_NAME_LENGTH} characters without '/' or control "
                          f"characters, and not '.' or '..'; pass --out DIR to choose a directory")


#: decoder_args keys that set sizes (the transformer's GPT-2 sizes), bounded like the model section
DECODER_SIZE_ARGS = ("n_embd", "n_inner", "n_layer", "n_head", "n_positions", "n_prefix")


def estimated_parameters(recipe: "Recipe") -> int:
    """Parameters of the recipe's prior and decoder without the vocabulary's rows (which the data decide),
    from its sizes alone: what :func:`check_recipe` bounds by :data:`MAX_PARAMETERS` before anything is built."""
    m, p = recipe.model, recipe.prior
    z = m.latent_dim
    n = 0
    if p.kind in ("ebm", "symbol_vector"):
        h, k = p.hidden, (p.n_symbols if p.kind == "symbol_vector" else 1)
        n += z * h + max(0, p.n_layers - 1) * h * h + h * k if p.n_layers else z * k
    a = m.decoder_args
    if m.decoder == "lstm":
        e, h = m.embed_dim, m.hidden_dim
        n += 4 * h * (e + z + h) + z * h
    elif m.decoder == "transformer":
        e = int(a.get("n_embd", m.embed_dim)) if isinstance(a.get("n_embd", m.embed_dim), int) else m.embed_dim
        inner = a.get("n_inner", m.hidden_dim)
        inner = inner if isinstance(inner, int) else m.hidden_dim
        layers = a.get("n_layer", 12)
        layers = layers if isinstance(layers, int) else 12
        prefix = a.get("n_prefix", 1)
        prefix = prefix if isinstance(prefix, int) else 1
        positions = a.get("n_positions", prefix + max(recipe.data.max_len, recipe.generate.max_len) + 2)
        positions = positions if isinstance(positions, int) else 0
        n += layers * (4 * e * e + 2 * e * inner) + positions * e + z * e * prefix
    else:  # conv: 4x4 transposed convolutions from ngf*8 channels down, one per doubling of the resolution
        w = m.ngf * 8
        n += z * w * 16
        size = 4
        while size < recipe.data.image_size:
            n += w * max(1, w // 2) * 16
            w, size = max(1, w // 2), size * 2
    return int(n)


def check_recipe(recipe: "Recipe") -> None:
    """Checks that span keys or sections (a conv decoder needs image data, a text decoder needs text), the name,
    and the sizes that decide memory (bounded one by one and together, :data:`MAX_PARAMETERS`)."""
    check_name(recipe.name)
    for key in DECODER_SIZE_ARGS:
        v = recipe.model.decoder_args.get(key)
        lo, hi = SIZE_BOUNDS[key]
        if v is not None and not isinstance(v, bool) and isinstance(v, (int, float)) and not lo <= v <= hi:
            raise ConfigError(f"model.decoder_args.{key}: {v!r} must be in [{lo}, {hi}]")
    n = estimated_parameters(recipe)
    if n > MAX_PARAMETERS:
        raise ConfigError(f"the recipe's model would have about {n:.3g} parameters ({n * 4 / 2 ** 30:.0f} GiB in "
                          f"float32), more than the {MAX_PARAMETERS:.3g} a run may have; reduce model.hidden_dim, "
                          f"model.embed_dim, prior.hidden or the decoder's sizes")
    image_decoder = recipe.model.decoder == "conv"
    if image_decoder != (recipe.data.kind == "image"):
        raise ConfigError(f"model.decoder {recipe.model.decoder!r} does not fit data.kind {recipe.data.kind!r}: "
                          f"images need model.decoder: conv, text needs lstm or transformer")
    t, s = recipe.train, recipe.sampling
    for name in ("betas_decoder", "betas_prior"):
        b = getattr(t, name)
        if len(b) != 2 or not all(0.0 <= v < 1.0 for v in b):
            raise ConfigError(f"train.{name}: expected two numbers in [0, 1), got {b}")
    bad = [b for b in t.report_to if b not in REPORT_TO]
    if bad or not t.report_to:
        raise ConfigError(f"train.report_to: {t.report_to!r}; choose one or more of {', '.join(REPORT_TO)}")
    for which in ("prior", "posterior"):
        if getattr(s, f"{which}_schedule") != "constant" and getattr(s, f"{which}_step_size_end") is None:
            raise ConfigError(f"sampling.{which}_schedule: {getattr(s, f'{which}_schedule')} needs "
                              f"sampling.{which}_step_size_end")
    if s.posterior_start in ("encoder", "encoder_mean") and not recipe.model.encoder:
        raise ConfigError(f"sampling.posterior_start: {s.posterior_start} needs an amortized posterior: set "
                          f"model.encoder: gru")
    if recipe.model.encoder and recipe.data.kind != "text":
        raise ConfigError("model.encoder reads token ids: it is for text runs only")
    if s.prior_persistent and s.prior_start != "reference":
        raise ConfigError("sampling.prior_persistent and sampling.prior_start are two ways to start the prior chain; "
                          "choose one (prior_persistent: 0, or prior_start: reference)")
    if recipe.prior.kind == "gaussian" and (recipe.prior.amortizer or s.prior_persistent
                                            or s.prior_start != "reference"):
        raise ConfigError("prior.kind: gaussian draws exact samples; it takes no amortizer and no persistent chains")
    args = recipe.prior.objective_args
    for key in ("symbol_information", "symbol_information_encoder", "symbol_balance"):
        if key in args and recipe.prior.kind != "symbol_vector":
            raise ConfigError(f"prior.objective_args.{key}: {args[key]!r} needs symbols: set prior.kind: "
                              f"symbol_vector (or remove the key)")
        if key in args and (isinstance(args[key], bool) or not isinstance(args[key], (int, float))
                            or not args[key] >= 0):
            raise ConfigError(f"prior.objective_args.{key}: {args[key]!r} must be a number >= 0")
    if "symbol_information_encoder" in args and not recipe.model.encoder:
        raise ConfigError("prior.objective_args.symbol_information_encoder weighs the information term on an "
                          "amortized posterior's codes: set model.encoder (or remove the key)")
    if s.prior_persistent and s.prior_persistent < t.batch_size:
        raise ConfigError(f"sampling.prior_persistent: {s.prior_persistent} chains cannot serve train.batch_size "
                          f"{t.batch_size}; use at least {t.batch_size} (or 0 for fresh chains)")
    for which, sampler, noise in (("prior", recipe.prior.sampler, s.prior_noise),
                                  ("posterior", s.posterior_sampler, s.posterior_noise)):
        key = "prior.sampler" if which == "prior" else "sampling.posterior_sampler"
        if which == "posterior" and t.posterior_noise_to is not None:
            noise = min(noise, t.posterior_noise_to)
        if sampler == "mala" and s.noise and noise != 1.0:
            raise ConfigError(f"{key}: mala's accept test needs the full proposal noise, but "
                              f"sampling.{which}_noise is {noise:g}; set it to 1 or choose another sampler")


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def load_yaml(text: str, what: str):
    """``yaml.safe_load(text)`` within bounds, so that no YAML can hang or exhaust a command: at most
    :data:`MAX_YAML_DEPTH` levels of nesting (counted on the event stream, before the recursive composer runs)
    and at most :data:`MAX_YAML_NODES` values once aliases are expanded (counted without expanding them, so "a
    billion laughs" stops at the bound). Tags other than YAML's plain types are refused by ``safe_load``.
    Errors are :class:`ConfigError` naming ``what``; invalid YAML is left to the caller (``yaml.YAMLError``)."""
    import yaml

    depth = events = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        events += 1
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(f"{what} nests more than {MAX_YAML_DEPTH} levels deep")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        if events > MAX_YAML_NODES:
            raise ConfigError(f"{what} holds more than {MAX_YAML_NODES} values")
    data = yaml.safe_load(text)
    count = 0
    stack = [(data, 1)]
    while stack:  # the tree as the rest of the program would walk it: every alias expanded
        node, d = stack.pop()
        count += 1
        if count > MAX_YAML_NODES:
            raise ConfigError(f"{what} expands to more than {MAX_YAML_NODES} values (YAML aliases repeat what "
                              f"they name); write the values out or use fewer aliases")
        if d > MAX_YAML_DEPTH:
            raise ConfigError(f"{what} nests more than {MAX_YAML_DEPTH} levels deep")
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
            stack.extend((k, d + 1) for k in node.keys() if isinstance(k, (tuple, list)))
        elif isinstance(node, (list, tuple)):
            stack.extend((v, d + 1) for v in node)
    return data


def _read_recipe_data(path: Path):
    """(the recipe's mapping, the file it came from: ``path``, or the packaged recipe a name stands for)."""
    import yaml

    from .files import FileFormatError, read_regular

    if not path.exists():
        from .recipes import find_recipe, recipe_names

        packaged = find_recipe(str(path))
        if packaged is None:
            raise ConfigError(f"recipe file not found: {path} is neither a file nor a packaged recipe (packaged: "
                              f"{', '.join(n for n in recipe_names() if '/' not in n)}; `textebm recipes` lists them)")
        path = packaged
    if path.is_dir():
        raise ConfigError(f"recipe path is a directory, expected a YAML file: {path}")
    try:
        raw = read_regular(path, "recipe", MAX_RECIPE_BYTES)
    except FileFormatError as e:
        raise ConfigError(str(e)) from None
    try:
        data = load_yaml(raw.decode("utf-8"), f"recipe {path}")
    except UnicodeDecodeError:
        raise ConfigError(f"recipe {path} is not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"recipe {path} is not valid YAML{at}: {problem}") from None
    if data is None:
        raise ConfigError(f"recipe {path} is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path}: expected a mapping of sections, got {type(data).__name__}")
    base = data.get("base")
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"recipe {path}: base must be the path of another recipe, got {base!r}")
    return data, path


def load_recipe(path, _seen: frozenset = frozenset()) -> Recipe:
    """Read a YAML recipe file into a :class:`Recipe` (clear errors for missing files and bad YAML).

    ``path`` is a file, or the name of a recipe that ships with the package (``quickstart``; ``textebm recipes``
    lists them; :func:`textebm.recipes.find_recipe`). A recipe may start from another: ``base: other.yaml``
    (relative to this file) loads that recipe first, and the keys given here override it section by section.
    Recipe files are regular files of at most
    :data:`MAX_RECIPE_BYTES` (``/dev/zero`` is refused before a byte is read), read with :func:`load_yaml`.
    """
    data, path = _read_recipe_data(Path(path))
    base = data.pop("base", None)
    if base is not None:
        base_path = (path.parent / base).resolve()
        if base_path in _seen:
            raise ConfigError(f"recipe {path}: base {base!r} leads back to itself")
        data = _merge(to_dict(load_recipe(base_path, _seen | {path.resolve()})), data)
    return from_dict(Recipe, data)


def recipe_files(path) -> List[Path]:
    """The recipe file and the files its ``base`` keys name, in order (a command's inputs)."""
    out, path = [], Path(path)
    while path is not None and path.resolve() not in {p.resolve() for p in out}:
        out.append(path)
        try:
            data, found = _read_recipe_data(path)
        except ConfigError:
            break
        base = data.get("base")
        path = (found.parent / base) if isinstance(base, str) else None
    return out


def data_inputs(recipe: Recipe) -> List[Path]:
    """The paths a recipe reads its data from (the corpus as a path, ``data.data_dir``), where they exist."""
    out = []
    for p in (recipe.data.corpus, recipe.data.data_dir):
        if p and Path(p).expanduser().exists():
            out.append(Path(p).expanduser())
    return out


def check_key(key: str) -> None:
    """A ConfigError unless ``key`` (``section.key``) names a key of the recipe schema (free-form mappings such
    as ``prior.objective_args`` may be followed by any sub-key)."""
    node = Recipe
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(node):
            return  # inside a free-form mapping
        fields = _fields(node)
        if part not in fields:
            where = ".".join(parts[:i]) or "the recipe"
            raise ConfigError(f"{key!r} is not a recipe key: {where} has no key {part!r}; valid keys are: "
                              f"{', '.join(fields)}")
        node = typing.get_type_hints(node)[part]
    if dataclasses.is_dataclass(node):
        raise ConfigError(f"{key!r} is a section, not a key; e.g. {key}.{next(iter(_fields(node)))}")


def _merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``, section by section (nested mappings merge, other values replace)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(recipe: Recipe, overrides: List[str]) -> Recipe:
    """Return a new recipe with ``section.key=value`` overrides applied (values parsed as YAML)."""
    import yaml

    data = to_dict(recipe)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.steps=200)")
        key, raw = item.split("=", 1)
        if len(raw) > MAX_RECIPE_BYTES:
            raise ConfigError(f"override {key!r}: the value is longer than {MAX_RECIPE_BYTES} characters")
        try:
            value = load_yaml(raw, f"override {key!r}")
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        node = data
        for i, p in enumerate(parts[:-1]):
            if not isinstance(node, dict) or p not in node:
                raise ConfigError(f"override {key!r}: unknown section {'.'.join(parts[:i + 1])!r}; "
                                  f"valid sections are: {', '.join(k for k, v in data.items() if isinstance(v, dict))}")
            node = node[p]
        if not isinstance(node, dict) or (parts[-1] not in node and not _is_free_mapping(recipe, parts[:-1])):
            valid = ", ".join(node) if isinstance(node, dict) else "(none)"
            raise ConfigError(f"override {key!r}: unknown key {parts[-1]!r}; valid keys are: {valid}")
        node[parts[-1]] = value
    return from_dict(Recipe, data)


def _is_free_mapping(recipe, path) -> bool:
    """True when ``path`` names a free-form dict field (e.g. prior.objective_args)."""
    node = recipe
    for p in path:
        node = getattr(node, p, None) if not isinstance(node, dict) else node.get(p)
    return isinstance(node, dict)


def dump_recipe(recipe: Recipe) -> str:
    import yaml

    return yaml.safe_dump(to_dict(recipe), sort_keys=False)
