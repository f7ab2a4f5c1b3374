"""A chain's settings as one object: :class:`ChainConfig`.

A short-run chain is defined by its sampler (the update), the number of steps K, the step-size and noise-scale
schedules, an optional clamp on z, how often its divergence flags are read, where it starts and whether it may run
as a captured CUDA graph. Everything but the target density and the start state lives here, built once (from a
recipe: :func:`textebm.model.recipe_chains`) and passed whole to whatever runs the chain: training, ``generate``,
``textebm sample``, ``eval``, ``chain``, the amortizers. A sampler object holds only the parameters of its own
update (Langevin's noise switch, MALA's adaptation, SGHMC's friction); the runner's settings are here, so no
setting can be given to one and read by the other.

The paper's chains (Pang et al. 2020, Sec. 4 and Table 6) are written once, here:
:data:`PRIOR_CHAIN` (K0 = 60 Langevin steps of s0 = 0.4 from N(0, sigma0^2 I)) and :data:`POSTERIOR_CHAIN`
(K1 = 20 steps of s1 = 0.1).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from .base import LogDensity, Sampler, Samples, Target
from .langevin import Langevin
from .runner import run_chain
from .schedules import Schedule, ScheduleLike, first_value

#: where a prior chain may start: N(0, sigma0^2 I); a replay buffer of its own past states (persistent chains,
#: Tieleman 2008); recent posterior samples z+ of the training batches
PRIOR_STARTS = ("reference", "persistent", "posterior")
#: where a posterior chain may start: N(0, sigma0^2 I); each training example's last z+ (Han et al. 2017); a draw
#: of the amortized posterior q(z | x) (the model's encoder); its mean mu(x)
POSTERIOR_STARTS = ("reference", "example", "encoder", "encoder_mean")


@dataclass(frozen=True)
class ChainConfig:
    """Everything that defines a chain except its target and its start state.

    Args:
        sampler: the update, a :class:`~textebm.sampling.base.Sampler` (Langevin, MALA, SGHMC, SVGD, yours).
        n_steps: K, the number of steps.
        step_size: s_k, a number or a schedule (:class:`~textebm.sampling.schedules.Schedule`, a list, a function
            of k).
        noise_scale: c_k, multiplies the injected noise (1: the sampler's own dynamics; 0: none).
        z_clamp: clamp every coordinate of z to [-z_clamp, z_clamp] after each step (None: no clamp).
        check_every: read the divergence flags every this many steps (each read is a host synchronization;
            0: once, when the chain ends).
        start: where the chain starts (:data:`PRIOR_STARTS` for a prior chain, :data:`POSTERIOR_STARTS` for a
            posterior chain); what owns the chain's state (the trainer, the model) resolves it to a z0.
        start_fraction: the fraction of chains started from ``start``; the rest start from N(0, sigma0^2 I)
            (DAMC, Yu et al. 2023, starts half its prior chains from its amortizer).
        capture: run as a captured CUDA graph where that is possible (a CUDA device, a target given as a
            :class:`~textebm.sampling.runner.Density`).
        name: how messages name the chain (``"prior langevin"``).

    ``chain.run(log_prob, z0)`` runs it; ``chain.replace(n_steps=100)`` is a copy with some settings changed
    (None keeps a setting); ``chain.scaled(0.5)`` halves the step sizes.
    """

    sampler: Sampler = field(default_factory=Langevin)
    n_steps: int = 0
    step_size: ScheduleLike = 0.1
    noise_scale: ScheduleLike = 1.0
    z_clamp: Optional[float] = None
    check_every: int = 0
    start: str = "reference"
    start_fraction: float = 1.0
    capture: bool = False
    name: str = ""

    def __post_init__(self):
        if not isinstance(self.sampler, Sampler):
            raise TypeError(f"sampler must be a Sampler object (Langevin(), MALA(), ...), got "
                            f"{type(self.sampler).__name__}")
        if isinstance(self.n_steps, bool) or not isinstance(self.n_steps, int) or self.n_steps < 0:
            raise ValueError(f"n_steps must be an integer >= 0, got {self.n_steps!r}")
        if self.z_clamp is not None and not (self.z_clamp > 0 and math.isfinite(self.z_clamp)):
            raise ValueError(f"z_clamp must be a positive finite number or None, got {self.z_clamp}")
        if isinstance(self.check_every, bool) or not isinstance(self.check_every, int) or self.check_every < 0:
            raise ValueError(f"check_every must be an integer >= 0, got {self.check_every!r}")
        if self.start not in PRIOR_STARTS + POSTERIOR_STARTS:
            raise ValueError(f"unknown chain start {self.start!r}; one of {', '.join(PRIOR_STARTS + POSTERIOR_STARTS)}")
        if not 0.0 <= self.start_fraction <= 1.0:
            raise ValueError(f"start_fraction must be in [0, 1], got {self.start_fraction}")
        if not self.name:
            object.__setattr__(self, "name", self.sampler.name)

    def replace(self, **changes) -> "ChainConfig":
        """A copy with the given settings changed; a value of None keeps the setting (so optional command-line
        arguments pass straight through)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    def scaled(self, factor: float) -> "ChainConfig":
        """The same chain with every step size multiplied by ``factor`` (the divergence back-off)."""
        if factor == 1.0:
            return self
        s = self.step_size
        if isinstance(s, Schedule):
            s = s.scaled(factor)
        elif isinstance(s, (int, float)):
            s = float(s) * factor
        elif callable(s):
            s = (lambda f, g: (lambda k: f * g(k)))(factor, s)
        else:
            s = [float(v) * factor for v in s]
        return dataclasses.replace(self, step_size=s)

    def run(self, log_prob: Optional[LogDensity], z0: torch.Tensor, *, target: Optional[Target] = None,
            generator: Optional[torch.Generator] = None, trace: bool = False, snapshot_every: int = 0,
            noise: Optional[list] = None, warm_start=None, index: Optional[torch.Tensor] = None, graphs=None,
            name: Optional[str] = None) -> Samples:
        """Run this chain on ``log_prob`` (or ``target``) from ``z0``: :func:`~textebm.sampling.run_chain` with
        these settings; the keyword arguments are the per-call ones (noise, traces, stores, graphs).
        ``graphs`` is used only when the chain allows capture."""
        return run_chain(self.sampler, log_prob, z0, self.n_steps, self.step_size, noise_scale=self.noise_scale,
                         target=target, generator=generator, trace=trace, snapshot_every=snapshot_every,
                         z_clamp=self.z_clamp, check_every=self.check_every, noise=noise, warm_start=warm_start,
                         index=index, graphs=graphs if self.capture else None, name=name or self.name)

    def describe(self) -> dict:
        """JSON-ready summary for reports: the sampler's name, K, the step size (a number, or e.g.
        ``"linear 0.8 -> 0.05"``), the noise scale and the start."""
        return {"sampler": self.sampler.name, "n_steps": self.n_steps, "step_size": _describe(self.step_size),
                "noise_scale": _describe(self.noise_scale), "start": self.start,
                **({"start_fraction": self.start_fraction} if self.start != "reference" else {})}


def _describe(value):
    if isinstance(value, Schedule):
        if value.end is None or value.kind == "constant" or value.end == value.start:
            return value.start
        return f"{value.kind} {value.start:g} -> {value.end:g}"
    if isinstance(value, (int, float)):
        return value
    return first_value(value) if callable(value) else list(value)


#: the paper's prior chain: K0 = 60 Langevin steps of s0 = 0.4 (Pang et al. 2020, Sec. 4 and Table 6)
PRIOR_CHAIN = ChainConfig(Langevin(), n_steps=60, step_size=0.4, name="prior langevin")
#: the paper's posterior chain: K1 = 20 Langevin steps of s1 = 0.1 (same)
POSTERIOR_CHAIN = ChainConfig(Langevin(), n_steps=20, step_size=0.1, name="posterior langevin")
