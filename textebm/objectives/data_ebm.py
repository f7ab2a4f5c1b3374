"""Data-space energy-based models, and a small training loop for them.

Every learning rule in :mod:`textebm.objectives` works on any *energy model* over continuous vectors,
not only :class:`textebm.prior.LatentEBMPrior`. The duck type they use is

    model.f(z) -> (batch,)                      the network output (negative energy up to the reference)
    model.log_prob_unnormalized(z) -> (batch,)  log-density up to a constant (what samplers see)
    model.parameters()                          the parameters to train

with the one sign convention of the package: higher = more likely, energy = -log_prob_unnormalized.
f and log_prob_unnormalized differ by a term free of parameters (the log of the reference density), so
rules may take gradients in the parameters through either one.

:class:`DataEBM` is such a model for data vectors (tabular rows, flattened images), and :func:`fit_ebm` is
the training loop the tests use (and a template for data-space experiments). :func:`setup_objective` and
:func:`loss_parameters` are the two pieces of wiring any training loop needs.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, List, Optional

import torch
from torch import nn

from ..energy import Energy, captures_config, check_activation, mlp, soft_clamp


class DataEBM(Energy):
    """An energy-based model over data vectors: log p(x) = f(x) + log p0(x) - log Z.

    f is an MLP dim -> hidden x n_layers -> 1. The reference p0 is ``"gaussian"`` (N(0, sigma^2 I), as in
    the latent prior of Pang et al. 2020, eq. 1) or ``"flat"`` (p0 = 1, the plain EBM of Du & Mordatch 2019;
    then f alone must make exp f integrable). Densities, score and chains: :class:`~textebm.energy.Energy`;
    :meth:`sample` runs 100 Langevin steps of 0.1 from N(0, sigma^2 I) unless given a chain.

    Args:
        dim: data dimension.
        hidden, n_layers, activation: the MLP (activation one of :data:`textebm.energy.ACTIVATIONS`).
        reference: ``"gaussian"`` or ``"flat"``.
        sigma: standard deviation of the Gaussian reference; also of the default MCMC start for ``"flat"``.
        f_clamp: if set, soft-clamp f to (-f_clamp, f_clamp) with a scaled tanh.
    """

    kind = "data_ebm"
    REFERENCES = ("gaussian", "flat")

    @captures_config
    def __init__(self, dim: int, hidden: int = 128, n_layers: int = 2, activation: str = "silu",
                 reference: str = "gaussian", sigma: float = 1.0, f_clamp: Optional[float] = None):
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if reference not in self.REFERENCES:
            raise ValueError(f"unknown reference {reference!r}; choose one of {list(self.REFERENCES)}")
        check_activation(activation)
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.dim = int(dim)
        self.reference = reference
        self.sigma0 = float(sigma)
        self.f_clamp = f_clamp
        self.net = mlp(self.dim, hidden, n_layers, 1, activation)

    @property
    def sigma(self) -> float:
        return self.sigma0

    def f(self, x: torch.Tensor) -> torch.Tensor:
        """The network output f(x) (negative energy relative to the reference); shape (batch,)."""
        self._check(x)
        return soft_clamp(self.net(x).squeeze(-1), self.f_clamp)


# ---- wiring for training loops ---------------------------------------------------------------------------
def setup_objective(objective, dim: int, device=None):
    """Build an objective's auxiliary networks for inputs of dimension ``dim`` on ``device``.

    Call it before building the prior optimizer. Rules that own networks sized by the latent dimension (the
    f-divergence ratio network, the amortized generators) build them here; others have no ``setup`` and
    are returned unchanged.
    """
    fn = getattr(objective, "setup", None)
    if callable(fn):
        fn(int(dim), device=device)
    return objective


def loss_parameters(objective) -> List[nn.Parameter]:
    """The objective's parameters that belong in the prior optimizer: all except ``amortizer_parameters()``.

    An amortized sampler's generator is trained by its own optimizer in ``after_step``; it never appears
    in the prior loss, so the training loop must leave it out of the prior optimizer (this function does).
    """
    own = getattr(objective, "amortizer_parameters", None)
    excluded = {id(p) for p in own()} if callable(own) else set()
    return [p for p in objective.parameters() if id(p) not in excluded]


def _batches(n: int, batch_size: int, generator) -> Iterator[torch.Tensor]:
    while True:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i:i + batch_size]


def fit_ebm(ebm, data: torch.Tensor, objective, chain=None, steps: int = 1000, lr: float = 1e-3,
            batch_size: int = 128, generator: Optional[torch.Generator] = None, objective_lr: Optional[float] = None,
            betas=(0.9, 0.999), log_every: int = 0,
            callback: Optional[Callable[[int, dict], None]] = None) -> List[dict]:
    """Train a data-space energy model ``ebm`` on ``data`` (N, D) with a prior learning rule ``objective``.

    Per step, the same contract as the latent-prior training loop (:mod:`textebm.objectives.base`):

        x+ = a minibatch of data (shuffled epochs)
        x- = objective.negatives(ebm, x+, sample_model)      # sample_model(n, z0=None) -> (n, D)
        loss, stats = objective(ebm, x+, x-);  loss.backward();  Adam step on ebm + loss_parameters(objective)
        stats |= objective.after_step(ebm, x+, x-)

    ``sample_model`` runs ``ebm.sample(n, chain, z0=z0)``: the chain ``chain`` (a
    :class:`~textebm.sampling.chain.ChainConfig`; None: the model's own ``sample``, which may be exact, as in
    the tests) from ``z0`` or from ``ebm.sample_reference(n)``.

    Args:
        objective_lr: learning rate of the objective's own loss parameters (e.g. a ratio network);
            ``lr`` when None.
        log_every: keep the stats of every this many steps (0: only the last).
        callback: called as ``callback(step, stats)`` after every step (e.g. to average iterates).

    Returns:
        list of stats dicts (with ``step`` and ``loss``).
    """
    if not isinstance(data, torch.Tensor) or data.dim() != 2:
        raise ValueError(f"data must be a (N, D) tensor; got {type(data).__name__} "
                         f"{tuple(data.shape) if isinstance(data, torch.Tensor) else ''}")
    if not 1 <= batch_size <= data.shape[0]:
        raise ValueError(f"batch_size must be in [1, {data.shape[0]}], got {batch_size}")
    setup_objective(objective, data.shape[1], device=data.device)

    def sample_model(n: int, z0: Optional[torch.Tensor] = None) -> torch.Tensor:
        if chain is None:
            return ebm.sample(n, z0=z0, generator=generator)
        return ebm.sample(n, chain, z0=z0, generator=generator)

    groups = [{"params": list(ebm.parameters()), "lr": lr}]
    extra = loss_parameters(objective)
    if extra:
        groups.append({"params": extra, "lr": lr if objective_lr is None else objective_lr})
    opt = torch.optim.Adam(groups, betas=betas)
    history: List[dict] = []
    batches = _batches(data.shape[0], batch_size, generator)
    for step in range(int(steps)):
        x_pos = data[next(batches)]
        x_neg = objective.negatives(ebm, x_pos, sample_model)
        loss, stats = objective(ebm, x_pos, x_neg)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"fit_ebm: the loss became {loss_value} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        stats = dict(stats)
        stats.update(objective.after_step(ebm, x_pos, x_neg) or {})
        stats.update(step=step, loss=loss_value)
        if callback is not None:
            callback(step, stats)
        if (log_every and step % log_every == 0) or step == steps - 1:
            history.append(stats)
    return history
