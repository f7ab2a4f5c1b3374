"""Energy-based models over vectors: one base class for the latent prior, the Gaussian prior and data-space EBMs.

An energy model tilts a reference density p0 by a network output f:

    log p(z) = f(z) + log p0(z) - log Z,      p0 = N(0, sigma^2 I)  ("gaussian")  or  1  ("flat"),

with the one sign convention of the package: every sampler sees ``log_prob_unnormalized(z) = f(z) + log p0(z)``
(higher = more likely, up to the constant -log Z and p0's normalizer) and ``energy`` is exactly its negative.
:class:`Energy` implements everything but ``f``: the reference, the log-density, the score, draws from the
reference and MCMC samples through a :class:`~textebm.sampling.chain.ChainConfig`. Subclasses:
:class:`textebm.prior.LatentEBMPrior` (Pang et al. 2020), :class:`textebm.prior.GaussianPrior` (f = 0) and
:class:`textebm.objectives.data_ebm.DataEBM`.

Each subclass records its constructor's arguments in ``self.config`` (:func:`captures_config`, the idea of
diffusers' ``ConfigMixin``), so a model is saved as JSON and rebuilt as ``cls(**config)`` with nothing else to keep
in step. :func:`mlp` is the one MLP builder of the package.
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Callable, Dict, Optional

import torch
from torch import nn

#: activations by recipe name; ``leaky_relu`` takes its negative slope
ACTIVATIONS: Dict[str, Callable[[float], nn.Module]] = {
    "leaky_relu": lambda slope: nn.LeakyReLU(slope),
    "gelu": lambda slope: nn.GELU(),
    "silu": lambda slope: nn.SiLU(),
    "swish": lambda slope: nn.SiLU(),
    "tanh": lambda slope: nn.Tanh(),
    "elu": lambda slope: nn.ELU(),
    "relu": lambda slope: nn.ReLU(),
}


def check_activation(name: str) -> None:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")


def mlp(in_dim: int, hidden: int, n_layers: int, out_dim: int = 1, activation: str = "silu",
        negative_slope: float = 0.2) -> nn.Sequential:
    """in_dim -> hidden (x ``n_layers``, each followed by the activation) -> out_dim; ``n_layers=0`` is linear."""
    check_activation(activation)
    layers, width = [], int(in_dim)
    for _ in range(int(n_layers)):
        layers += [nn.Linear(width, hidden), ACTIVATIONS[activation](negative_slope)]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def soft_clamp(x: torch.Tensor, bound: Optional[float]) -> torch.Tensor:
    """bound * tanh(x / bound): x squashed smoothly into (-bound, bound), about x where |x| << bound.

    ``bound=None`` returns x unchanged.
    """
    return x if bound is None else bound * torch.tanh(x / bound)


def captures_config(init):
    """Decorate ``__init__`` so that the arguments it is called with (defaults filled in) are kept as
    ``self.config``, with the class's ``kind`` first: ``type(m)(**{k: v for k, v in m.config.items() if k !=
    "kind"})`` builds the same model."""
    sig = inspect.signature(init)

    @functools.wraps(init)
    def wrapped(self, *args, **kwargs):
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        init(self, *args, **kwargs)
        values = {k: v for k, v in bound.arguments.items() if k != "self"}
        self.config = {"kind": type(self).kind, **values}

    return wrapped


class Energy(nn.Module):
    """Base class of the energy models (see the module docstring). Subclasses define ``f`` and set ``dim``,
    ``sigma0`` and ``reference``; ``default_chain`` is the chain :meth:`sample` runs when it is given none.

    References: ``"gaussian"``, N(0, sigma0^2 I); ``"flat"``, 1; ``"fitted"``, N(m, diag s^2) whose mean and
    standard deviations are buffers that :meth:`update_reference` moves toward the moments of given samples (an
    exponential moving average): a Gaussian fitted to the aggregate posterior ex post (Ghosh et al. 2020, "From
    Variational to Deterministic Autoencoders", Sec. 4) that f then tilts, so that chains started at the reference
    start where the codes of real sentences are, however far from the origin those sit.
    """

    kind = "energy"
    reference = "gaussian"
    REFERENCES = ("gaussian", "flat", "fitted")
    #: True when nothing about the model is learned and :meth:`sample` draws exact samples (no chain)
    fixed = False
    dim: int
    sigma0: float = 1.0

    @property
    def latent_dim(self) -> int:
        """The dimension of z (the name the latent-model code uses)."""
        return self.dim

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    @property
    def default_chain(self):
        from .sampling import ChainConfig, Langevin

        return ChainConfig(Langevin(), n_steps=100, step_size=0.1, name=f"{self.kind} langevin")

    def _check(self, z: torch.Tensor) -> None:
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"z must be a torch.Tensor of shape (batch, {self.dim}); got {type(z).__name__}")
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(f"z must have shape (batch, {self.dim}) for this {self.kind} model; got "
                             f"{tuple(z.shape)}")
        dev = self.device
        if next(self.parameters(), None) is not None and z.device != dev:
            raise ValueError(f"z is on {z.device} but the model's parameters are on {dev}; "
                             f"move one of them with .to(device)")

    # ---- densities -------------------------------------------------------------------------------------
    def f(self, z: torch.Tensor) -> torch.Tensor:
        """The tilt f(z) (negative energy relative to the reference); shape (batch,)."""
        raise NotImplementedError

    def _init_reference(self, reference: str, momentum: float = 0.99) -> None:
        """Set the reference; a fitted one gets its buffers (mean 0, standard deviations sigma0 to start)."""
        if reference not in self.REFERENCES:
            raise ValueError(f"unknown reference {reference!r}; choose one of {list(self.REFERENCES)}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"reference_momentum must be in [0, 1), got {momentum}")
        self.reference, self.reference_momentum = reference, float(momentum)
        if reference == "fitted":
            self.register_buffer("ref_mean", torch.zeros(self.dim))
            self.register_buffer("ref_log_std", torch.full((self.dim,), math.log(self.sigma0)))
            self.register_buffer("ref_updates", torch.zeros((), dtype=torch.long))

    def log_reference(self, z: torch.Tensor) -> torch.Tensor:
        """log p0(z) up to its normalizer (:meth:`log_reference_constant`): -|z|^2 / (2 sigma0^2) (Gaussian),
        -|(z - m) / s|^2 / 2 (fitted) or 0 (flat)."""
        if self.reference == "flat":
            return z.new_zeros(z.shape[0])
        if self.reference == "fitted":
            return -0.5 * ((z - self.ref_mean) * torch.exp(-self.ref_log_std)).pow(2).sum(-1)
        return -z.pow(2).sum(-1) / (2.0 * self.sigma0 ** 2)

    def log_reference_constant(self) -> float:
        """log p0(z) - :meth:`log_reference` (z): the Gaussian normalizer, -(d/2) log(2 pi) - sum log s (0 for a
        flat reference)."""
        if self.reference == "flat":
            return 0.0
        log_std = float(self.ref_log_std.sum()) if self.reference == "fitted" else self.dim * math.log(self.sigma0)
        return -0.5 * self.dim * math.log(2 * math.pi) - log_std

    @torch.no_grad()
    def update_reference(self, z: torch.Tensor, min_std: float = 1e-2) -> None:
        """A fitted reference moves toward the mean and the per-coordinate standard deviation of the rows of z:
        m <- mu m + (1 - mu) mean(z), s^2 <- mu s^2 + (1 - mu) var(z) (mu = ``reference_momentum``; the first
        update takes the moments as they are), s at least ``min_std``. No-op for other references. Device-side
        only (no host synchronization)."""
        if self.reference != "fitted" or z.shape[0] < 2:
            return
        z = z.detach().to(self.ref_mean)
        mean, var = z.mean(0), z.var(0)
        mu = torch.where(self.ref_updates > 0, torch.tensor(self.reference_momentum, device=z.device),
                         torch.zeros((), device=z.device))
        self.ref_mean.copy_(mu * self.ref_mean + (1 - mu) * mean)
        new_var = mu * torch.exp(2 * self.ref_log_std) + (1 - mu) * var
        self.ref_log_std.copy_(0.5 * torch.log(new_var.clamp_min(min_std ** 2)))
        self.ref_updates.add_(1)

    def log_prob_unnormalized(self, z: torch.Tensor) -> torch.Tensor:
        """f(z) + log p0(z): log p(z) up to an additive constant (what samplers see)."""
        return self.f(z) + self.log_reference(z)

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        """Exactly ``-log_prob_unnormalized(z)``."""
        return -self.log_prob_unnormalized(z)

    def score(self, z: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """grad_z log p(z); shape (batch, dim)."""
        with torch.enable_grad():
            zz = z if create_graph and z.requires_grad else z.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.log_prob_unnormalized(zz).sum(), zz, create_graph=create_graph)
        return g

    # ---- sampling --------------------------------------------------------------------------------------
    def sample_reference(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
        """n draws from the reference: N(0, sigma0^2 I), N(m, diag s^2) when fitted (for a flat reference, the
        chains' start N(0, sigma0^2 I))."""
        device = device if device is not None else self.device
        eps = torch.randn(n, self.dim, generator=generator, device=device)
        if self.reference == "fitted":
            return self.ref_mean.to(device) + torch.exp(self.ref_log_std).to(device) * eps
        return self.sigma0 * eps

    def chain_start(self, n: int, z0: Optional[torch.Tensor] = None,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Where a chain starts: ``z0`` (checked) or ``n`` draws of the reference."""
        if z0 is None:
            if n < 1:
                raise ValueError(f"n must be >= 1, got {n}")
            return self.sample_reference(n, generator=generator)
        self._check(z0)
        return z0

    def sample(self, n: int, chain=None, z0: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None, return_samples: bool = False, **run_kwargs):
        """n samples by the short-run chain ``chain`` (a :class:`~textebm.sampling.chain.ChainConfig`; default
        :attr:`default_chain`) on :meth:`log_prob_unnormalized`, started at ``z0`` or at the reference.
        ``run_kwargs`` are :meth:`ChainConfig.run`'s per-call arguments (``trace``, ``warm_start``, ``graphs``...).
        Returns z (or the chain's :class:`~textebm.sampling.base.Samples` with ``return_samples``)."""
        from .sampling import Density, frozen

        z0 = self.chain_start(n, z0, generator)
        chain = self.default_chain if chain is None else chain
        log_prob = self.log_prob_unnormalized
        if run_kwargs.get("graphs") is not None:  # a captured chain rebuilds its density inside the graph
            log_prob = Density(lambda: self.log_prob_unnormalized, key=(self.kind, id(self)), modules=(self,))
        with frozen(self):
            out = chain.run(log_prob, z0, generator=generator, **run_kwargs)
        return out if return_samples else out.z
