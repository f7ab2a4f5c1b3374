"""Shared pieces of every sampler: the result type, the divergence error, gradients of a log-density.

Convention (one for the whole package): a sampler is handed a *log-density* ``log_prob(z) -> (batch,)``,
higher meaning more likely. It never sees an energy.
"""
from __future__ import annotations

import contextlib

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

LogDensity = Callable[[torch.Tensor], torch.Tensor]


class SamplerDivergedError(FloatingPointError):
    """Raised when a sampler's state or log-density stops being finite.

    Carries the sampler name and the step so the training loop can report or recover.
    """

    def __init__(self, sampler: str, step: int, what: str, step_size: float):
        self.sampler = sampler
        self.step = step
        self.what = what
        self.step_size = step_size
        super().__init__(
            f"{sampler} sampler diverged at step {step}: {what} is NaN or Inf (step size {step_size:g}). "
            f"Try a smaller step size, gradient clipping (train.grad_clip), or a clamp on |f| / |z| "
            f"(prior.f_clamp, sampling.z_clamp)."
        )


@dataclass
class Samples:
    """What a sampler returns.

    z: final states, (batch, dim), detached.
    trace: mean log-density over the batch at each step (length steps + 1, index 0 = start), or None.
    snapshots: list of (step, z) copies, or None.
    stats: sampler-specific numbers (for example MALA's acceptance rate).
    """

    z: torch.Tensor
    trace: Optional[list] = None
    snapshots: Optional[list] = None
    stats: dict = field(default_factory=dict)


def log_prob_and_grad(log_prob: LogDensity, z: torch.Tensor, create_graph: bool = False):
    """Return (log_prob(z), d/dz sum log_prob(z)) for a (batch, dim) tensor.

    Only z receives a gradient: ``torch.autograd.grad`` with ``inputs=z`` never writes ``.grad`` of any
    parameter, so sampling leaves the model's gradient buffers untouched.
    """
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        lp = log_prob(z).float()
        if lp.dim() != 1 or lp.shape[0] != z.shape[0]:
            raise ValueError(
                f"log_prob must return one value per row of z, shape ({z.shape[0]},); got {tuple(lp.shape)}"
            )
        (grad,) = torch.autograd.grad(lp.sum(), z, create_graph=create_graph)
    return lp.detach(), grad


@contextlib.contextmanager
def frozen(*modules):
    """Within the block, the parameters of ``modules`` do not require gradients (restored afterwards).

    Samplers only need d log p / dz. Autograd prunes most parameter-gradient work on its own, but not inside
    custom autograd functions and fused kernels (a fused LSTM's backward, the token likelihood's weight
    gradient), which decide from ``requires_grad``; freezing the parameters while sampling skips that work.
    """
    params = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def check_z(z: torch.Tensor, name: str = "z") -> None:
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if z.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, dim); got shape {tuple(z.shape)}")
    if not z.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got {z.dtype}")


def finish_chain(log_prob: LogDensity, z: torch.Tensor, n_steps: int, name: str, step_size: float,
                 trace: Optional[list], snapshots: Optional[list]) -> None:
    """The common end of every chain: NaN check on the final state, the final trace value and snapshot."""
    if not bool(torch.isfinite(z).all()):
        raise SamplerDivergedError(name, n_steps, "the state z", step_size)
    if trace is not None:
        with torch.no_grad():
            trace.append(float(log_prob(z).mean()))
    if snapshots is not None and snapshots[-1][0] != n_steps:
        snapshots.append((n_steps, z.clone()))
