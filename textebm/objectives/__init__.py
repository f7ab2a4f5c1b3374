"""Prior learning rules behind one interface (see :mod:`textebm.objectives.base`)."""
from .base import PriorObjective
from .mle import ShortRunMLE

OBJECTIVES = {"mle": ShortRunMLE}


def get_objective(name: str, **kwargs) -> PriorObjective:
    """Build a prior learning rule by its recipe name."""
    try:
        cls = OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown prior objective {name!r}; choose one of {sorted(OBJECTIVES)}") from None
    return cls(**kwargs)


__all__ = ["PriorObjective", "ShortRunMLE", "OBJECTIVES", "get_objective"]
