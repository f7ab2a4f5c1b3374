"""Samplers over any log-density callable ``log_prob(z) -> (batch,)``.

Samplers import no model: hand them a function. Pick one by name with :func:`get_sampler`.
"""
from .base import LogDensity, Samples, SamplerDivergedError, log_prob_and_grad
from .langevin import Langevin, langevin

SAMPLERS = {"langevin": Langevin}


def get_sampler(name: str, **kwargs):
    """Build a sampler object by its recipe name (``langevin``, ...)."""
    try:
        cls = SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}") from None
    return cls(**kwargs)


__all__ = ["LogDensity", "Samples", "SamplerDivergedError", "log_prob_and_grad", "Langevin", "langevin",
           "SAMPLERS", "get_sampler"]
