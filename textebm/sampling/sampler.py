"""The base class of the samplers: the step contract of :mod:`.base`. A sampler holds only the parameters of its
own update; how many steps, of what size, from where, is a :class:`~textebm.sampling.chain.ChainConfig`."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

from .base import Target

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
