"""What every sampler shares: the step interface, the result type, the divergence error, gradients of a log-density.

Convention (one for the whole package): a sampler is handed a *log-density* ``log_prob(z) -> (batch,)``, higher
meaning more likely. It never sees an energy.

A sampler is a small object with a documented ``step`` (the shape of a diffusers scheduler; the base class is
:class:`Sampler`, here); the loop around it, with its checks, traces, schedules, warm starts
and graph capture, is :func:`textebm.sampling.run_chain`, the one loop every caller uses::

    state = sampler.init(z, target)                       # e.g. a velocity, or log pi and its gradient at z
    z, state, lp = sampler.step(z, state, target, s_k, noise_k, noise_scale_k)

``target(z)`` returns ``(log pi(z), grad_z log pi(z))`` (one evaluation per step for every sampler); ``noise_k``
holds the step's random draws, made by the runner ahead of the chain as ``sampler.noise_spec(z)`` asks; ``lp`` is
log pi at the state the step started from (MALA: the current state). Steps never synchronize with the host.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

LogDensity = Callable[[torch.Tensor], torch.Tensor]
#: z -> (log pi(z) of shape (batch,), grad_z log pi(z) of z's shape)
Target = Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


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
    """What a chain returns.

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
    parameter, so sampling leaves the model's gradient buffers untouched. The shape check is on shapes only
    (no device synchronization).
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


def gradient_target(log_prob: LogDensity) -> Target:
    """The target of a chain on ``log_prob``: z -> (log_prob(z), its gradient) by autograd."""
    return lambda z: log_prob_and_grad(log_prob, z)


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


def coordinate_scale(scale: Optional[torch.Tensor], like: torch.Tensor):
    """A per-coordinate step multiplier as a (dim,) tensor on ``like``'s device, or 1.0."""
    if scale is None:
        return 1.0
    scale = torch.as_tensor(scale, dtype=like.dtype, device=like.device)
    if scale.dim() != 1 or scale.shape[0] != like.shape[1]:
        raise ValueError(f"coordinate_scale must have shape ({like.shape[1]},); got {tuple(scale.shape)}")
    return scale


# ---- the base class of the samplers ------------------------------------------------------------------------
NoiseSpec = List[Tuple[str, Tuple[int, ...]]]


class Sampler:
    """Base class of the samplers (see the module docstring for the step contract).

    Subclasses are dataclasses whose fields are the parameters of their update (the recipe's ``sampler_args``);
    the chain around them (steps, step sizes, noise scale, clamp, checks) is a
    :class:`~textebm.sampling.chain.ChainConfig` or the arguments of :func:`~textebm.sampling.run_chain`.
    """

    name = "sampler"

    def noise_spec(self, z: torch.Tensor) -> NoiseSpec:
        """The random draws one step needs: a list of (``"normal"`` | ``"uniform"``, shape)."""
        return [("normal", tuple(z.shape))]

    def init(self, z: torch.Tensor, target: Target) -> Dict[str, torch.Tensor]:
        """The chain's state besides z (empty for memoryless samplers)."""
        return {}

    def step(self, z, state, target: Target, step_size: float, noise, noise_scale: float):
        raise NotImplementedError

    def finish(self, z: torch.Tensor, state) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """(numbers to read once the chain ends, tensors to hand back as they are) for ``Samples.stats``."""
        return {}, {}
