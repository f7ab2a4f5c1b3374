"""Prior learning rules behind one interface (see :mod:`textebm.objectives.base`).

Rules (``OBJECTIVES``): ``mle`` (short-run MCMC maximum likelihood), ``fdiv`` (f-divergences, pick one with
``divergence=``), ``stein_cd`` (Stein contrastive divergence), ``ksd`` (kernel Stein discrepancy).
Amortized samplers (``AMORTIZERS``) wrap a rule and supply its negatives: ``inclusive``, ``maxent``, ``svgd``.
Regularizers (``potential_control``, ``grad_penalty``, ``symbol_information``) wrap any of them.
:func:`build_objective` assembles all three from recipe values.

Every rule works on any energy model with ``f``, ``log_prob_unnormalized`` and ``parameters`` (the latent
prior, or :class:`DataEBM` over data vectors).
"""
import inspect

from .amortized import AMORTIZERS, AmortizedSampler, AmortizedSVGD, InclusiveSampler, MaxEntropySampler
from .base import PriorObjective
from .data_ebm import DataEBM, fit_ebm, loss_parameters, setup_objective
from .fdiv import DIVERGENCES, Divergence, FDivergence, get_divergence
from .mle import ShortRunMLE
from .regularizers import Regularized, gradient_penalty, potential_control, symbol_information
from .stein import KSD, SteinCD, kernel_stein_discrepancy

OBJECTIVES = {"mle": ShortRunMLE, "fdiv": FDivergence, "stein_cd": SteinCD, "ksd": KSD}

REGULARIZER_KEYS = ("potential_control", "grad_penalty", "symbol_information", "symbol_information_encoder",
                    "symbol_balance")
#: the regularizers' weights (the others, e.g. ``symbol_balance``, shape a term that a weight switches on)
REGULARIZER_WEIGHTS = ("potential_control", "grad_penalty", "symbol_information", "symbol_information_encoder")


def _init_params(cls) -> list:
    sig = inspect.signature(cls.__init__)
    return [n for n, p in sig.parameters.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _amortizer_params(cls) -> list:
    names = set(_init_params(cls)) | set(_init_params(AmortizedSampler))
    return sorted(names - {"base"})


def _check_kwargs(what: str, given: dict, valid) -> None:
    bad = sorted(set(given) - set(valid))
    if bad:
        raise ValueError(f"unknown argument(s) {bad} for {what}; valid ones are {sorted(valid)}")


def get_objective(name: str, **kwargs) -> PriorObjective:
    """Build a prior learning rule by its recipe name; unknown names or arguments raise ``ValueError``."""
    try:
        cls = OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown prior objective {name!r}; choose one of {sorted(OBJECTIVES)}") from None
    _check_kwargs(f"prior objective {name!r}", kwargs, _init_params(cls))
    return cls(**kwargs)


def get_amortizer(name: str, base: PriorObjective = None, **kwargs) -> AmortizedSampler:
    """Build an amortized sampler (``inclusive``, ``maxent``, ``svgd``) around ``base`` (default ``mle``)."""
    try:
        cls = AMORTIZERS[name]
    except KeyError:
        raise ValueError(f"unknown amortizer {name!r}; choose one of {sorted(AMORTIZERS)} (or none)") from None
    _check_kwargs(f"amortizer {name!r}", kwargs, _amortizer_params(cls))
    return cls(base=base, **kwargs)


def build_objective(objective: str = "mle", amortizer=None, **kwargs) -> PriorObjective:
    """Assemble a prior learning rule from recipe values.

    ``build_objective("fdiv", None, divergence="js", grad_penalty=0.1)`` or
    ``build_objective("mle", "svgd", amortizer_args={"lr": 1e-4})``.

    Keyword arguments:
        the rule's own arguments (e.g. ``divergence``, ``alpha`` for fdiv; ``step_size`` for stein_cd);
        ``potential_control``, ``grad_penalty``, ``symbol_information``, ``symbol_information_encoder``:
        regularizer weights (0 = off), and ``symbol_balance`` (see :mod:`.regularizers`);
        ``amortizer_args``: dict of the amortizer's arguments (``lr``, ``revise_steps``, ...);
        ``latent_dim``: passed to the rule and the amortizer when they take it (else built on first use).

    The result is ``Regularized(Amortizer(Rule))`` with absent layers left out. Unknown names or keys raise
    ``ValueError`` listing the valid ones. The training loop should then call ``setup_objective(obj, dim)``
    and optimize ``prior.parameters()`` + ``loss_parameters(obj)`` (amortizers step their own parameters).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown prior objective {objective!r}; choose one of {sorted(OBJECTIVES)}")
    if amortizer in ("", "none", "None"):
        amortizer = None
    if amortizer is not None and amortizer not in AMORTIZERS:
        raise ValueError(f"unknown amortizer {amortizer!r}; choose one of {sorted(AMORTIZERS)} (or none)")
    kwargs = dict(kwargs)
    regs = {k: kwargs.pop(k) for k in REGULARIZER_KEYS if k in kwargs}
    amortizer_args = dict(kwargs.pop("amortizer_args", None) or {})
    latent_dim = kwargs.pop("latent_dim", None)
    cls = OBJECTIVES[objective]
    own = _init_params(cls)
    valid = set(own) | set(REGULARIZER_KEYS) | {"amortizer_args", "latent_dim"}
    _check_kwargs(f"prior objective {objective!r}", kwargs, valid)
    if latent_dim is not None and "latent_dim" in own:
        kwargs["latent_dim"] = latent_dim
    obj = cls(**kwargs)
    if amortizer is not None:
        if not obj.requires_negatives:
            raise ValueError(f"prior objective {objective!r} uses no negatives, so an amortizer has nothing to "
                             f"do; use one of {sorted(n for n, c in OBJECTIVES.items() if c.requires_negatives)}")
        if latent_dim is not None:
            amortizer_args.setdefault("latent_dim", latent_dim)
        obj = get_amortizer(amortizer, base=obj, **amortizer_args)
    elif amortizer_args:
        raise ValueError("amortizer_args given but no amortizer chosen; "
                         f"choose one of {sorted(AMORTIZERS)}")
    if any(float(v) != 0.0 for k, v in regs.items() if k in REGULARIZER_WEIGHTS):
        obj = Regularized(obj, **{k: float(v) for k, v in regs.items()})
    return obj


__all__ = ["PriorObjective", "ShortRunMLE", "FDivergence", "Divergence", "DIVERGENCES", "get_divergence",
           "SteinCD", "KSD", "kernel_stein_discrepancy", "Regularized", "potential_control", "gradient_penalty",
           "symbol_information",
           "AmortizedSampler", "InclusiveSampler", "MaxEntropySampler", "AmortizedSVGD", "AMORTIZERS",
           "OBJECTIVES", "get_objective", "get_amortizer", "build_objective", "DataEBM", "fit_ebm",
           "setup_objective", "loss_parameters"]
