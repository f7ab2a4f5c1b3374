"""Samplers over any log-density callable ``log_prob(z) -> (batch,)``, and the one loop that runs them.

Samplers import no model: hand them a function. Each sampler is a small object with a documented ``step``
(:mod:`.base`) that holds only the parameters of its own update; a :class:`ChainConfig` (:mod:`.chain`) holds
everything else about a chain (steps, step-size and noise schedules, clamp, checks, start, capture), and
:func:`run_chain` (:mod:`.runner`) is the loop every chain runs in, with schedules (:mod:`.schedules`), warm
starts (:mod:`.persistent`) and CUDA-graph capture (:mod:`.capture`). Pick a sampler by name with
:func:`get_sampler`.
"""
import dataclasses

from .base import (LogDensity, Sampler, SamplerDivergedError, Samples, Target, frozen, gradient_target,
                   log_prob_and_grad)
from .langevin import Langevin, langevin
from .mala import MALA, mala
from .persistent import CodeReplay, ExampleChains, PersistentChains
from .capture import ChainGraphs
from .chain import POSTERIOR_CHAIN, POSTERIOR_STARTS, PRIOR_CHAIN, PRIOR_STARTS, ChainConfig
from .runner import Density, draw_noise, run_chain
from .schedules import Schedule
from .sghmc import SGHMC, sghmc
from .svgd import SVGD, median_bandwidth, rbf_kernel, svgd, svgd_direction

SAMPLERS = {"langevin": Langevin, "sghmc": SGHMC, "mala": MALA, "svgd": SVGD}
#: settings of a chain (ChainConfig), which a sampler's arguments must not re-declare
CHAIN_KEYS = tuple(f.name for f in dataclasses.fields(ChainConfig) if f.name != "sampler")


def get_sampler(name: str, **kwargs):
    """Build a sampler object by its recipe name (``langevin``, ``sghmc``, ``mala``, ``svgd``).

    Unknown names or keyword arguments raise ``ValueError`` listing the valid ones.
    """
    try:
        cls = SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}") from None
    valid = sorted(f.name for f in dataclasses.fields(cls))
    bad = sorted(set(kwargs) - set(valid))
    if bad:
        chain = [k for k in bad if k in CHAIN_KEYS]
        hint = (f" ({', '.join(chain)} belong to the chain, not the sampler: set them in the recipe's sampling "
                f"section or on the ChainConfig)") if chain else ""
        raise ValueError(f"unknown argument(s) {bad} for sampler {name!r}; valid ones are {valid}{hint}")
    return cls(**kwargs)


__all__ = ["LogDensity", "Target", "Samples", "Sampler", "SamplerDivergedError", "frozen", "log_prob_and_grad",
           "gradient_target", "ChainConfig", "PRIOR_CHAIN", "POSTERIOR_CHAIN", "PRIOR_STARTS", "POSTERIOR_STARTS",
           "run_chain", "draw_noise", "Density", "ChainGraphs", "Schedule", "Langevin", "langevin", "SGHMC", "sghmc",
           "MALA", "mala", "SVGD", "svgd", "svgd_direction", "rbf_kernel", "median_bandwidth", "PersistentChains",
           "ExampleChains", "CodeReplay", "SAMPLERS", "get_sampler"]
