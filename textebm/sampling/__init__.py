"""Samplers over any log-density callable ``log_prob(z) -> (batch,)``.

Samplers import no model: hand them a function. Pick one by name with :func:`get_sampler`; wrap any of
them in :class:`PersistentChains` for a replay buffer.
"""
import dataclasses

from .base import LogDensity, Samples, SamplerDivergedError, frozen, log_prob_and_grad
from .langevin import Langevin, langevin
from .mala import MALA, mala
from .persistent import PersistentChains
from .sghmc import SGHMC, sghmc
from .svgd import SVGD, median_bandwidth, rbf_kernel, svgd, svgd_direction

SAMPLERS = {"langevin": Langevin, "sghmc": SGHMC, "mala": MALA, "svgd": SVGD}


def get_sampler(name: str, **kwargs):
    """Build a sampler object by its recipe name (``langevin``, ``sghmc``, ``mala``, ``svgd``).

    Unknown names or keyword arguments raise ``ValueError`` listing the valid ones.
    """
    try:
        cls = SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}") from None
    valid = sorted(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else None
    if valid is not None:
        bad = sorted(set(kwargs) - set(valid))
        if bad:
            raise ValueError(f"unknown argument(s) {bad} for sampler {name!r}; valid ones are {valid}")
    return cls(**kwargs)


__all__ = ["LogDensity", "Samples", "SamplerDivergedError", "frozen", "log_prob_and_grad", "Langevin", "langevin",
           "SGHMC", "sghmc", "MALA", "mala", "SVGD", "svgd", "svgd_direction", "rbf_kernel", "median_bandwidth",
           "PersistentChains", "SAMPLERS", "get_sampler"]
