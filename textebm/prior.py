"""The latent energy-based prior p_alpha(z) = exp(f_alpha(z)) N(z; 0, sigma0^2 I) / Z(alpha).

Pang, Han, Nijkamp, Zhu, Wu (2020), "Learning Latent Space Energy-Based Prior Model", eq. (1).
Depends on torch only, so it can be dropped into any decoder.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

ACTIVATIONS = {
    "leaky_relu": lambda slope: nn.LeakyReLU(slope),
    "gelu": lambda slope: nn.GELU(),
    "silu": lambda slope: nn.SiLU(),
    "swish": lambda slope: nn.SiLU(),
    "tanh": lambda slope: nn.Tanh(),
    "elu": lambda slope: nn.ELU(),
    "relu": lambda slope: nn.ReLU(),
}


def soft_clamp(x: torch.Tensor, bound: Optional[float]) -> torch.Tensor:
    """bound * tanh(x / bound): x squashed smoothly into (-bound, bound), about x where |x| << bound.

    ``bound=None`` returns x unchanged.
    """
    return x if bound is None else bound * torch.tanh(x / bound)


class LatentEBMPrior(nn.Module):
    """Energy-based tilt of a Gaussian in latent space.

    log p_alpha(z) = f_alpha(z) - |z|^2 / (2 sigma0^2) - (d/2) log(2 pi sigma0^2) - log Z(alpha),
    Z(alpha) = E_{z ~ N(0, sigma0^2 I)}[exp f_alpha(z)].

    f_alpha is an MLP latent_dim -> hidden -> ... -> hidden -> 1 (``n_layers`` hidden layers). The default,
    200 -> 200 with LeakyReLU(0.2), is the prior network of the paper's Table 6. ``f`` is the negative energy:
    every sampler sees the log-density ``log_prob_unnormalized``, and ``energy`` is exactly minus it.

    Args:
        latent_dim: dimension d of z.
        hidden: width of each hidden layer.
        n_layers: number of hidden layers (0 gives a linear f).
        activation: one of ``ACTIVATIONS``.
        negative_slope: slope of LeakyReLU.
        sigma0: standard deviation of the Gaussian reference p0.
        f_clamp: if set, f is soft-clamped to (-f_clamp, f_clamp) with a scaled tanh (a divergence guard).
    """

    kind = "ebm"

    def __init__(self, latent_dim: int, hidden: int = 200, n_layers: int = 2, activation: str = "leaky_relu",
                 negative_slope: float = 0.2, sigma0: float = 1.0, f_clamp: Optional[float] = None):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if not sigma0 > 0:
            raise ValueError(f"sigma0 must be > 0, got {sigma0}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.latent_dim = int(latent_dim)
        self.sigma0 = float(sigma0)
        self.f_clamp = f_clamp
        self.config = dict(kind=self.kind, latent_dim=latent_dim, hidden=hidden, n_layers=n_layers, activation=activation,
                           negative_slope=negative_slope, sigma0=sigma0, f_clamp=f_clamp)
        layers, width = [], latent_dim
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation](negative_slope)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    # ---- densities -------------------------------------------------------------------------------------
    def _check(self, z: torch.Tensor) -> None:
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"z must be a torch.Tensor of shape (batch, {self.latent_dim}); got {type(z).__name__}")
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (batch, {self.latent_dim}) for this prior; got {tuple(z.shape)}")
        dev = self.net[-1].weight.device
        if z.device != dev:
            raise ValueError(f"z is on {z.device} but the prior's parameters are on {dev}; "
                             f"move one of them with .to(device)")

    def f(self, z: torch.Tensor) -> torch.Tensor:
        """f_alpha(z), the negative energy of the tilt; shape (batch,)."""
        self._check(z)
        return soft_clamp(self.net(z).squeeze(-1), self.f_clamp)

    def log_prob_unnormalized(self, z: torch.Tensor) -> torch.Tensor:
        """f_alpha(z) - |z|^2 / (2 sigma0^2): log p_alpha(z) up to an additive constant."""
        return self.f(z) - z.pow(2).sum(-1) / (2.0 * self.sigma0 ** 2)

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        """Exactly ``-log_prob_unnormalized(z)``."""
        return -self.log_prob_unnormalized(z)

    def log_prob(self, z: torch.Tensor, log_z: float) -> torch.Tensor:
        """Normalized log p_alpha(z), given an estimate of log Z(alpha) (see :meth:`log_partition`)."""
        d = self.latent_dim
        return self.log_prob_unnormalized(z) - 0.5 * d * math.log(2 * math.pi * self.sigma0 ** 2) - log_z

    def score(self, z: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """grad_z log p_alpha(z) = grad_z f_alpha(z) - z / sigma0^2; shape (batch, d).

        (The paper's one-page listing writes ``1.0 / z`` for the Gaussian term; ``z / sigma0^2`` is correct.)
        """
        with torch.enable_grad():
            zz = z if create_graph and z.requires_grad else z.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.f(zz).sum(), zz, create_graph=create_graph)
        return g - z / self.sigma0 ** 2

    # ---- sampling --------------------------------------------------------------------------------------
    def sample_reference(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
        """n draws from p0 = N(0, sigma0^2 I)."""
        device = device if device is not None else self.net[0].weight.device
        return self.sigma0 * torch.randn(n, self.latent_dim, generator=generator, device=device)

    def sample(self, n: int, sampler=None, n_steps: int = 60, step_size=0.4, z0=None,
               generator: Optional[torch.Generator] = None, return_samples: bool = False, **kwargs):
        """Draw n samples by short-run MCMC on log p_alpha started at p0 (or at ``z0``).

        ``sampler`` is any sampler object (default Langevin); ``n_steps`` and ``step_size`` (a number or a
        schedule) default to the paper's K0 = 60, s0 = 0.4; other keywords go to
        :func:`textebm.sampling.run_chain` (``noise_scale``, ``warm_start``, ``trace``, ...).
        """
        from .sampling import Density, Langevin, frozen

        if n < 1 and z0 is None:
            raise ValueError(f"n must be >= 1, got {n}")
        if z0 is None:
            z0 = self.sample_reference(n, generator=generator)
        else:
            self._check(z0)
        sampler = sampler if sampler is not None else Langevin()
        kwargs.setdefault("name", f"prior {getattr(sampler, 'name', 'sampler')}")
        log_prob = self.log_prob_unnormalized
        if kwargs.get("graphs") is not None:  # a captured chain rebuilds its density inside the graph
            log_prob = Density(lambda: self.log_prob_unnormalized, key=("prior", id(self)), modules=(self,))
        with frozen(self):
            out = sampler.sample(log_prob, z0, n_steps=n_steps, step_size=step_size, generator=generator, **kwargs)
        return out if return_samples else out.z

    # ---- normalizer ------------------------------------------------------------------------------------
    @torch.no_grad()
    def log_partition(self, n_samples: int = 100_000, batch_size: int = 50_000,
                      generator: Optional[torch.Generator] = None):
        """Monte Carlo estimate of log Z(alpha) = log E_{p0}[exp f_alpha(z)] and its standard error.

        With w_i = exp f(z_i), z_i ~ p0: log Z ~ log mean(w), computed with logsumexp. Standard error by the
        delta method: se(log mean w) = sd(w) / (sqrt(n) mean(w)), evaluated stably relative to max f.
        Returns (estimate, standard_error) as floats.
        """
        fs = []
        left = int(n_samples)
        if left < 2:
            raise ValueError("n_samples must be >= 2")
        while left > 0:
            m = min(batch_size, left)
            fs.append(self.f(self.sample_reference(m, generator=generator)).double())
            left -= m
        return log_mean_exp_se(torch.cat(fs))

    def log_partition_ais(self, n_chains: int = 1000, n_temps: int = 200, step_size: float = 0.3,
                          generator: Optional[torch.Generator] = None):
        """log Z(alpha) by annealed importance sampling (Neal 2001) from p0 = N(0, sigma0^2 I) to p_alpha, with its
        standard error: see :func:`ais_log_partition`. Unlike :meth:`log_partition` it stays accurate when exp f
        is concentrated where p0 rarely samples (a peaked prior), where plain Monte Carlo under p0 is biased low."""
        with torch.no_grad():
            z0 = self.sample_reference(n_chains, generator=generator)
        return ais_log_partition(self.f, z0, self.sigma0, n_temps=n_temps, step_size=step_size,
                                 generator=generator)


def log_mean_exp_se(log_w: torch.Tensor):
    """(log mean exp(log_w), its delta-method standard error sd(w) / (sqrt(n) mean(w))) as floats."""
    log_w = log_w.double()
    n = log_w.numel()
    log_mean = torch.logsumexp(log_w, 0) - math.log(n)
    w = torch.exp(log_w - log_w.max())
    return float(log_mean), float(w.std(unbiased=True) / w.mean() / math.sqrt(n))


def ais_log_partition(f, z0: torch.Tensor, sigma0: float, n_temps: int = 200, step_size: float = 0.3,
                      target_accept: float = 0.6, generator: Optional[torch.Generator] = None):
    """log Z = log E_{N(0, sigma0^2 I)}[exp f(z)] by annealed importance sampling (Neal 2001).

    Intermediate densities pi_t(z) ∝ N(z; 0, sigma0^2 I) exp(b_t f(z)) with b_t = (t / T)^4, t = 0..T (dense near
    the reference, where the chains change most). Each of the n chains (rows of ``z0`` ~ N(0, sigma0^2 I))
    accumulates log w += (b_t - b_{t-1}) f(z) and then takes one MALA step that leaves pi_t invariant; the MALA
    step size adapts toward ``target_accept`` from the acceptance of the previous temperature (a population
    adaptation). E[w] = Z exactly, so log mean w is an estimate of log Z, biased low by about var(log w) / 2 and
    with the standard error of :func:`log_mean_exp_se`.
    """
    from .sampling import MALA, run_chain

    betas = [(t / n_temps) ** 4 for t in range(n_temps + 1)]
    z = z0.detach().clone()
    log_w = torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
    s = float(step_size)
    with torch.no_grad():
        f_z = f(z).double()
    for b_prev, b in zip(betas[:-1], betas[1:]):
        log_w += (b - b_prev) * f_z
        target = lambda v, b=b: b * f(v) - v.pow(2).sum(-1) / (2.0 * sigma0 ** 2)  # noqa: E731
        out = run_chain(MALA(), target, z, 1, s, generator=generator, name="ais mala")
        z = out.z
        rate = out.stats["accept_rate"]
        s = min(2.0 * sigma0, max(1e-4, s * math.exp(0.5 * (rate - target_accept))))
        with torch.no_grad():
            f_z = f(z).double()
    return log_mean_exp_se(log_w)


class GaussianPrior(nn.Module):
    """The fixed prior p(z) = N(z; 0, sigma0^2 I): the same model without the energy-based tilt (f = 0).

    It is the ablation that tells what the EBM prior adds (``prior.kind: gaussian`` in a recipe): the decoder,
    the posterior sampler and the training loop stay the same, samples are exact draws (no prior chain) and
    nothing about the prior is learned. It has the interface of :class:`LatentEBMPrior`.
    """

    kind = "gaussian"

    def __init__(self, latent_dim: int, sigma0: float = 1.0):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if not sigma0 > 0:
            raise ValueError(f"sigma0 must be > 0, got {sigma0}")
        self.latent_dim = int(latent_dim)
        self.sigma0 = float(sigma0)
        self.config = dict(kind=self.kind, latent_dim=self.latent_dim, sigma0=self.sigma0)
        self.register_buffer("_device_anchor", torch.zeros(0), persistent=False)

    def _check(self, z: torch.Tensor) -> None:
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != self.latent_dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must have shape (batch, {self.latent_dim}) for this prior; got {shape}")

    def f(self, z: torch.Tensor) -> torch.Tensor:
        """0 for every z (no tilt); shape (batch,)."""
        self._check(z)
        return z.new_zeros(z.shape[0])

    def log_prob_unnormalized(self, z: torch.Tensor) -> torch.Tensor:
        """-|z|^2 / (2 sigma0^2)."""
        self._check(z)
        return -z.pow(2).sum(-1) / (2.0 * self.sigma0 ** 2)

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        return -self.log_prob_unnormalized(z)

    def log_prob(self, z: torch.Tensor, log_z: float = 0.0) -> torch.Tensor:
        """log N(z; 0, sigma0^2 I) (``log_z`` is 0 for this prior and only kept for the common interface)."""
        d = self.latent_dim
        return self.log_prob_unnormalized(z) - 0.5 * d * math.log(2 * math.pi * self.sigma0 ** 2) - log_z

    def score(self, z: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        return -z / self.sigma0 ** 2

    def sample_reference(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
        device = device if device is not None else self._device_anchor.device
        return self.sigma0 * torch.randn(n, self.latent_dim, generator=generator, device=device)

    def sample(self, n: int, sampler=None, n_steps: int = 0, step_size: float = 0.0, z0=None,
               generator: Optional[torch.Generator] = None, return_samples: bool = False, **kwargs):
        """n exact draws from N(0, sigma0^2 I); no chain is run (``sampler``, ``n_steps``, ``step_size`` are
        accepted for the common interface and unused)."""
        from .sampling import Samples

        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        z = self.sample_reference(n, generator=generator)
        return Samples(z=z) if return_samples else z

    def log_partition(self, n_samples: int = 0, batch_size: int = 0, generator: Optional[torch.Generator] = None):
        """log Z = 0 exactly (the prior is normalized), with standard error 0."""
        return 0.0, 0.0


PRIORS = {"ebm": LatentEBMPrior, "gaussian": GaussianPrior}


def build_prior(kind: str = "ebm", **kwargs) -> nn.Module:
    """A prior by its recipe name (``ebm`` or ``gaussian``) from its constructor arguments (``prior.config``)."""
    if kind not in PRIORS:
        raise ValueError(f"unknown prior kind {kind!r}; choose one of {sorted(PRIORS)}")
    cls = PRIORS[kind]
    if cls is GaussianPrior:
        kwargs = {k: kwargs[k] for k in ("latent_dim", "sigma0") if k in kwargs}
    return cls(**kwargs)
