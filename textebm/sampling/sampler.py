"""The base class of the samplers: the step contract of :mod:`.base` and a ``sample`` shortcut to the runner."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

from .base import LogDensity, Samples, Target
from .runner import run_chain

NoiseSpec = List[Tuple[str, Tuple[int, ...]]]


class Sampler:
    """Base class of the samplers (see the module docstring for the step contract).

    Subclasses are dataclasses whose fields are the recipe's ``sampler_args``; ``n_steps`` and ``step_size`` are
    the defaults of :meth:`sample`. ``exact`` says whether the chain leaves its target exactly invariant.
    """

    name = "sampler"
    n_steps: int = 0
    step_size: float = 0.1

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

    def sample(self, log_prob: LogDensity, z0: torch.Tensor, *, n_steps: Optional[int] = None,
               step_size=None, **kwargs) -> Samples:
        """Run this sampler's chain on ``log_prob`` from ``z0`` (keyword arguments: :func:`run_chain`)."""
        return run_chain(self, log_prob, z0, self.n_steps if n_steps is None else n_steps,
                         self.step_size if step_size is None else step_size, **kwargs)
