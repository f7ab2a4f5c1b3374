"""Per-step schedules for a chain's step size and noise scale.

A schedule is resolved on the host, before the chain starts, into K plain floats (one per step), so that it never
costs a device synchronization inside the chain and a captured chain can bake it in. Accepted forms:

    0.1                      constant
    [0.8, 0.5, ..., 0.05]    one value per step (length K)
    Schedule("linear", 0.8, 0.05)      start -> end over the K steps, also "geometric" and "cosine"
    callable k -> value      evaluated at k = 0 .. K-1

With K steps and t = k / (K - 1) (t = 0 when K = 1):
    linear     v_k = a + (b - a) t
    geometric  v_k = a (b / a)^t                 (a, b > 0)
    cosine     v_k = b + (a - b) (1 + cos(pi t)) / 2
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Union

KINDS = ("constant", "linear", "geometric", "cosine")


@dataclass(frozen=True)
class Schedule:
    """A schedule from ``start`` to ``end`` (``end=None``: constant at ``start``)."""

    kind: str = "constant"
    start: float = 1.0
    end: Optional[float] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {', '.join(KINDS)}")
        for name, v in (("start", self.start), ("end", self.end)):
            if v is not None and not math.isfinite(v):
                raise ValueError(f"schedule {name} must be finite, got {v}")
        if self.kind == "geometric" and not (self.start > 0 and (self.end is None or self.end > 0)):
            raise ValueError(f"a geometric schedule needs start and end > 0, got {self.start}, {self.end}")

    def values(self, n_steps: int) -> List[float]:
        a = float(self.start)
        b = a if self.end is None else float(self.end)
        out = []
        for k in range(n_steps):
            t = k / (n_steps - 1) if n_steps > 1 else 0.0
            if self.kind == "constant" or a == b:
                v = a
            elif self.kind == "linear":
                v = a + (b - a) * t
            elif self.kind == "geometric":
                v = a * (b / a) ** t
            else:
                v = b + (a - b) * (1.0 + math.cos(math.pi * t)) / 2.0
            out.append(v)
        return out

    def scaled(self, factor: float) -> "Schedule":
        return Schedule(self.kind, self.start * factor, None if self.end is None else self.end * factor)


ScheduleLike = Union[float, int, Sequence[float], Schedule, Callable[[int], float]]


MAX_VALUE = 1e18  # the largest step size or noise scale a chain takes (float32 holds s^2 / 2 up to s ~ 2.6e19)


def resolve(schedule: ScheduleLike, n_steps: int, name: str = "step_size", positive: bool = True) -> List[float]:
    """K = ``n_steps`` floats from any accepted form; each must be finite (and > 0 when ``positive``, else >= 0)."""
    if isinstance(schedule, Schedule):
        vals = schedule.values(n_steps)
    elif isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
        vals = [float(schedule)] * n_steps
    elif callable(schedule):
        vals = [float(schedule(k)) for k in range(n_steps)]
    else:
        vals = [float(v) for v in schedule]
        if len(vals) != n_steps:
            raise ValueError(f"{name}: a list of values needs one per step ({n_steps}), got {len(vals)}")
    for k, v in enumerate(vals):
        if not math.isfinite(v) or (v <= 0 if positive else v < 0):
            need = "> 0" if positive else ">= 0"
            raise ValueError(f"{name} must be finite and {need}; step {k} has {v}")
        if v > MAX_VALUE:  # s^2 / 2 of a Langevin step would not fit a float32 state
            raise ValueError(f"{name} must be at most {MAX_VALUE:g}; step {k} has {v:g}")
    return vals


def first_value(schedule: ScheduleLike) -> float:
    """The value at step 0 (what an error message reports as 'the step size')."""
    if isinstance(schedule, Schedule):
        return float(schedule.start)
    if isinstance(schedule, (int, float)):
        return float(schedule)
    if callable(schedule):
        return float(schedule(0))
    return float(list(schedule)[0]) if len(schedule) else float("nan")
