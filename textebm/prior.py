"""The latent energy-based prior p_alpha(z) = exp(f_alpha(z)) N(z; 0, sigma0^2 I) / Z(alpha).

Pang, Han, Nijkamp, Zhu, Wu (2020), "Learning Latent Space Energy-Based Prior Model", eq. (1).
Depends on torch and :mod:`textebm.sampling` only, so it can be dropped into any decoder. Both priors are
:class:`~textebm.energy.Energy` models: the density, the score, the reference and the chains come from there.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .energy import Energy, captures_config, check_activation, mlp, soft_clamp

class LatentEBMPrior(Energy):
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

    @captures_config
    def __init__(self, latent_dim: int, hidden: int = 200, n_layers: int = 2, activation: str = "leaky_relu",
                 negative_slope: float = 0.2, sigma0: float = 1.0, f_clamp: Optional[float] = None,
                 reference: str = "gaussian", reference_momentum: float = 0.99):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if not sigma0 > 0:
            raise ValueError(f"sigma0 must be > 0, got {sigma0}")
        check_activation(activation)
        self.dim = int(latent_dim)
        self.sigma0 = float(sigma0)
        self.f_clamp = f_clamp
        self._init_reference(reference, reference_momentum)
        self.net = mlp(latent_dim, hidden, n_layers, 1, activation, negative_slope)

    @property
    def default_chain(self):
        """The paper's prior chain (:data:`textebm.sampling.PRIOR_CHAIN`)."""
        from .sampling import PRIOR_CHAIN

        return PRIOR_CHAIN

    def f(self, z: torch.Tensor) -> torch.Tensor:
        """f_alpha(z), the negative energy of the tilt; shape (batch,)."""
        self._check(z)
        return soft_clamp(self.net(z).squeeze(-1), self.f_clamp)

    def log_prob(self, z: torch.Tensor, log_z: float) -> torch.Tensor:
        """Normalized log p_alpha(z), given an estimate of log Z(alpha) (see :meth:`log_partition`)."""
        return self.log_prob_unnormalized(z) + self.log_reference_constant() - log_z

    def score(self, z: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """grad_z log p_alpha(z) = grad_z f_alpha(z) - z / sigma0^2; shape (batch, d).

        (The paper's one-page listing writes ``1.0 / z`` for the Gaussian term; ``z / sigma0^2`` is correct.)
        """
        return super().score(z, create_graph)

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
        scale = float(torch.exp(self.ref_log_std).max()) if self.reference == "fitted" else self.sigma0
        return ais_log_partition(self.f, z0, self.log_reference, scale=scale, n_temps=n_temps,
                                 step_size=step_size, generator=generator)


def log_mean_exp_se(log_w: torch.Tensor):
    """(log mean exp(log_w), its delta-method standard error sd(w) / (sqrt(n) mean(w))) as floats."""
    log_w = log_w.double()
    n = log_w.numel()
    log_mean = torch.logsumexp(log_w, 0) - math.log(n)
    w = torch.exp(log_w - log_w.max())
    return float(log_mean), float(w.std(unbiased=True) / w.mean() / math.sqrt(n))


def ais_log_partition(f, z0: torch.Tensor, log_reference, scale: float = 1.0, n_temps: int = 200,
                      step_size: float = 0.3, target_accept: float = 0.6,
                      generator: Optional[torch.Generator] = None):
    """log Z = log E_{p0}[exp f(z)] by annealed importance sampling (Neal 2001), p0 the reference whose
    unnormalized log-density is ``log_reference`` (e.g. -|z|^2 / (2 sigma0^2)) and whose draws are the rows of z0.

    Intermediate densities pi_t(z) ∝ p0(z) exp(b_t f(z)) with b_t = (t / T)^4, t = 0..T (dense near
    the reference, where the chains change most). Each of the n chains (rows of ``z0`` ~ p0)
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
        target = lambda v, b=b: b * f(v) + log_reference(v)  # noqa: E731
        out = run_chain(MALA(), target, z, 1, s, generator=generator, name="ais mala")
        z = out.z
        rate = out.stats["accept_rate"]
        s = min(2.0 * scale, max(1e-4, s * math.exp(0.5 * (rate - target_accept))))
        with torch.no_grad():
            f_z = f(z).double()
    return log_mean_exp_se(log_w)


class GaussianPrior(Energy):
    """The fixed prior p(z) = N(z; 0, sigma0^2 I): the same model without the energy-based tilt (f = 0).

    It is the ablation that tells what the EBM prior adds (``prior.kind: gaussian`` in a recipe): the decoder,
    the posterior sampler and the training loop stay the same, samples are exact draws (no prior chain) and
    nothing about the prior is learned (``fixed``). It has the interface of :class:`LatentEBMPrior`.
    """

    kind = "gaussian"
    fixed = True

    @captures_config
    def __init__(self, latent_dim: int, sigma0: float = 1.0, reference: str = "gaussian",
                 reference_momentum: float = 0.99):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if not sigma0 > 0:
            raise ValueError(f"sigma0 must be > 0, got {sigma0}")
        if reference == "flat":
            raise ValueError("a Gaussian prior has a Gaussian reference: gaussian or fitted")
        self.dim = int(latent_dim)
        self.sigma0 = float(sigma0)
        self._init_reference(reference, reference_momentum)
        self.register_buffer("_device_anchor", torch.zeros(0), persistent=False)

    def f(self, z: torch.Tensor) -> torch.Tensor:
        """0 for every z (no tilt); shape (batch,)."""
        self._check(z)
        return z.new_zeros(z.shape[0])

    def log_prob(self, z: torch.Tensor, log_z: float = 0.0) -> torch.Tensor:
        """log N(z; 0, sigma0^2 I) (or of the fitted reference; ``log_z`` is 0 for this prior and only kept for
        the common interface)."""
        return self.log_prob_unnormalized(z) + self.log_reference_constant() - log_z

    def score(self, z: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """-z / sigma0^2 (-(z - m) / s^2 for a fitted reference)."""
        if self.reference == "fitted":
            return -(z - self.ref_mean) * torch.exp(-2 * self.ref_log_std)
        return -z / self.sigma0 ** 2

    def sample(self, n: int, chain=None, z0=None, generator: Optional[torch.Generator] = None,
               return_samples: bool = False, **run_kwargs):
        """n exact draws from N(0, sigma0^2 I); no chain is run (``chain`` and ``z0`` are accepted for the
        common interface and unused)."""
        from .sampling import Samples

        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        z = self.sample_reference(n, generator=generator)
        return Samples(z=z) if return_samples else z

    def log_partition(self, n_samples: int = 0, batch_size: int = 0, generator: Optional[torch.Generator] = None):
        """log Z = 0 exactly (the prior is normalized), with standard error 0."""
        return 0.0, 0.0


class SymbolVectorPrior(LatentEBMPrior):
    """The symbol-vector coupling prior (Pang & Wu 2021, "Latent Space Energy-Based Model of Symbol-Vector
    Coupling for Text Generation and Classification", eq. 2-4; code: bpucla/ibebm): a discrete symbol y in
    {1..K} (one-hot) coupled with the vector z,

        p_alpha(y, z) = exp(<y, f_alpha(z)>) N(z; 0, sigma0^2 I) / Z(alpha),     f_alpha: R^d -> R^K,

    whose marginal over y is an EBM prior of the usual form with the tilt

        f(z) = log sum_k exp f_k(z)                      (:meth:`f`, what every sampler and learning rule sees)

    and the same normalizer Z(alpha) = E_{N(0, sigma0^2 I)}[sum_k exp f_k(z)]. The symbol given the vector is a
    softmax, p(y = k | z) = exp f_k(z) / sum_j exp f_j(z) (:meth:`symbol_log_probs`: sentences cluster by the most
    probable symbol of their codes), and the vector given a symbol is an EBM prior of its own,
    p(z | y = k) ∝ exp(f_k(z)) N(z; 0, sigma0^2 I) (:meth:`log_prob_given`, sampled by :meth:`sample_symbol` with
    any chain), so generation can be conditioned on a symbol. Learning p(z) by the short-run maximum likelihood
    of :class:`LatentEBMPrior` learns the joint, since the marginal's gradient is E_post[grad f] - E_prior[grad f]
    with f the log-sum-exp; the paper's information term on the symbols is the learning rules' regularizer
    ``symbol_information`` (:func:`textebm.objectives.regularizers.symbol_information`).

    Args: those of :class:`LatentEBMPrior`, plus ``n_symbols`` K (the network's last layer has K outputs) and
    ``spread``, a factor on that layer's initial weights: at the default scale the K outputs start nearly equal,
    so p(y | z) is nearly uniform, the information term's gradient nearly zero, and the maximum-likelihood
    gradient, shared among the symbols in proportion to p(y | z), lets the symbol that leads early take every code;
    a wider start gives each symbol a region of the codes from the first step. ``f_clamp`` bounds each f_k (so f
    stays below f_clamp + log K).
    """

    kind = "symbol_vector"

    @captures_config
    def __init__(self, latent_dim: int, n_symbols: int = 10, hidden: int = 200, n_layers: int = 2,
                 activation: str = "leaky_relu", negative_slope: float = 0.2, sigma0: float = 1.0,
                 f_clamp: Optional[float] = None, reference: str = "gaussian", reference_momentum: float = 0.99,
                 spread: float = 1.0):
        if n_symbols < 1:
            raise ValueError(f"n_symbols must be >= 1, got {n_symbols}")
        super().__init__(latent_dim, hidden, n_layers, activation, negative_slope, sigma0, f_clamp, reference,
                         reference_momentum)
        self.n_symbols = int(n_symbols)
        self.net = mlp(latent_dim, hidden, n_layers, self.n_symbols, activation, negative_slope)
        if spread != 1.0:
            with torch.no_grad():
                self.net[-1].weight.mul_(float(spread))

    def symbol_logits(self, z: torch.Tensor) -> torch.Tensor:
        """f_alpha(z) = (f_1(z), ..., f_K(z)), each soft-clamped by ``f_clamp``; shape (batch, K)."""
        self._check(z)
        return soft_clamp(self.net(z), self.f_clamp)

    def f(self, z: torch.Tensor) -> torch.Tensor:
        """The marginal tilt log sum_k exp f_k(z); shape (batch,)."""
        return torch.logsumexp(self.symbol_logits(z), dim=-1)

    def symbol_log_probs(self, z: torch.Tensor) -> torch.Tensor:
        """log p(y = k | z) = f_k(z) - log sum_j exp f_j(z); shape (batch, K)."""
        return torch.log_softmax(self.symbol_logits(z), dim=-1)

    def _symbols(self, y, n: int, device) -> torch.Tensor:
        y = torch.as_tensor(y, dtype=torch.long, device=device)
        if y.dim() == 0:
            y = y.expand(n)
        if y.shape != (n,):
            raise ValueError(f"symbols must be one symbol or one per row ({n}); got shape {tuple(y.shape)}")
        if bool(((y < 0) | (y >= self.n_symbols)).any()):
            raise ValueError(f"symbols must be in 0..{self.n_symbols - 1}; got {y.unique().tolist()}")
        return y

    def log_prob_given(self, z: torch.Tensor, y) -> torch.Tensor:
        """log p(z | y) up to its normalizer: f_y(z) + log p0(z), for one symbol ``y`` (an int) or one per row (a
        (batch,) tensor); shape (batch,). What a conditional chain samples."""
        y = self._symbols(y, z.shape[0], z.device)
        return self.symbol_logits(z).gather(1, y[:, None]).squeeze(1) + self.log_reference(z)

    def sample_symbol(self, n: int, y, chain=None, z0: Optional[torch.Tensor] = None,
                      generator: Optional[torch.Generator] = None, return_samples: bool = False, **run_kwargs):
        """n samples of p(z | y) ∝ exp(f_y(z)) N(z; 0, sigma0^2 I) by ``chain`` (a
        :class:`~textebm.sampling.chain.ChainConfig`, default :attr:`default_chain`; a model passes its prior
        chain) from ``z0`` or the reference; ``y`` is one symbol or one per row. Like :meth:`sample` otherwise."""
        from .sampling import frozen

        z0 = self.chain_start(n, z0, generator)
        y = self._symbols(y, z0.shape[0], z0.device)
        chain = self.default_chain if chain is None else chain
        run_kwargs.pop("graphs", None)  # a conditional chain runs eagerly (its target is not a captured density)
        with frozen(self):
            out = chain.run(lambda z: self.log_prob_given(z, y), z0, generator=generator, **run_kwargs)
        return out if return_samples else out.z


PRIORS = {"ebm": LatentEBMPrior, "gaussian": GaussianPrior, "symbol_vector": SymbolVectorPrior}


def build_prior(kind: str = "ebm", **kwargs) -> Energy:
    """A prior by its recipe name (``ebm``, ``gaussian`` or ``symbol_vector``) from its constructor arguments
    (``prior.config``)."""
    if kind not in PRIORS:
        raise ValueError(f"unknown prior kind {kind!r}; choose one of {sorted(PRIORS)}")
    return PRIORS[kind](**kwargs)
