r"""Training an energy-based prior by f-divergence minimization (f-EBM).

Yu, Song, Song, Ermon (2020), "Training Deep Energy-Based Models with f-Divergence Minimization", ICML.

Setting and signs
-----------------
"Data" q = the distribution of the posterior samples z+, "model" p_theta(z) = exp(l_theta(z)) / Z(theta)
with l_theta = ``model.log_prob_unnormalized`` (log-density, higher = more likely; energy E = -l).
For a convex f with f(1) = 0 the divergence and its variational lower bound (Nguyen, Wainwright, Jordan
2010; Nowozin et al. 2016, f-GAN) are

    D_f(q || p) = E_p[ f(q / p) ] = sup_T  E_q[T(z)] - E_p[f*(T(z))],     T* = f'(q / p).

f-EBM parameterizes the density ratio r = q / p_theta = q Z e^{-l_theta} by a log-ratio

    s(z) = H_omega(z) - l_theta(z)        (= H + E; the optimum is H* = log q + log Z),

with a ratio network H_omega owned by this objective, and sets T = f'(e^s). Then
f*(f'(u)) = u f'(u) - f(u) gives the game

    L(theta, omega) = E_q[ T(s) ] - E_{p_theta}[ F(s) ],    T(s) = f'(e^s),  F(s) = e^s f'(e^s) - f(e^s),

maximized over omega (L <= D_f, with equality at e^s = r) and minimized over theta.

The gradient in theta (derived here; the paper's printed formula is garbled)
-------------------------------------------------------------------------
theta enters L twice: through s (directly, ds/dtheta = -grad_theta l) and through the sampling
distribution p_theta of the second expectation. For a fixed function g,
grad_theta E_{p_theta}[g] = E_p[g grad_theta log p_theta] = E_p[g (grad l - E_p grad l)] = Cov_p(g, grad l).
Hence, with T'(s) = e^s f''(e^s) and F'(s) = e^{2s} f''(e^s) = e^s T'(s),

    grad_theta L = - E_q[ T'(s) grad l ]  +  E_p[ F'(s) grad l ]  -  Cov_p( F(s), grad_theta l ).
                   \__________ direct: s depends on theta ________/    \__ score-function term __/

At the inner optimum e^s = q / p, E_q[T'(s) grad l] = E_p[e^s T'(s) grad l] = E_p[F'(s) grad l]: the two
direct terms cancel (envelope theorem) and grad_theta D_f = -Cov_p(F(s), grad_theta l). For KL, F = e^s
and this is E_p[grad l] - E_q[grad l] (E_p[e^s] = 1): the contrastive-divergence gradient.
The samples z- of p_theta come from an MCMC sampler and are detached, so autograd alone would miss the
score-function term; the loss below adds the surrogate

    - mean_i [ (F(s_i) - mean_j F(s_j)) ]_detached * l_theta(z-_i)     (its value is subtracted again),

whose theta-gradient is the sample covariance term. As in contrastive divergence, the formula assumes
z- ~ p_theta; with short-run MCMC negatives it is the gradient for the sampler's distribution instead.
(The tests check this gradient, with the exact ratio plugged in, against quadrature of D_f for all seven
divergences below.)

One loss, one optimizer: gradient reversal
------------------------------------------
theta minimizes L and omega maximizes it. H's output passes through a gradient-reversal layer (identity
forward, gradient times -1 backward; Ganin & Lempitsky 2015), so a single ``loss.backward()`` and one
optimizer step over prior + objective parameters descends L in theta and ascends L in omega.
The loss value is the estimate of the lower bound on D_f(q || p_theta).

Two parameterizations of the ratio (``ratio_param``)
----------------------------------------------------
``"tracking"`` is the paper's s = H_omega(z) - l_theta(z): H estimates the fixed log q + log Z, and the ratio
estimate follows theta between steps. Its drawback is scale: at the start s = H - l is as large as |l|
(for the latent prior |z|^2 / (2 sigma0^2), tens in 16-D), so e^s, e^{2s} in F overflow or dominate and
the ratio network can collapse (observed for Pearson chi^2 on a 1-D test).

``"direct"`` (the default) lets the network output the log-ratio itself:

    s = h_omega(z) - (l_theta(z) - [l_theta(z)]_detached).

Its value is h_omega(z) (0 at the start, 0 when the model fits) and its theta-gradient is the same
-grad_theta l as above, so the gradient formula is unchanged and the game's fixed points are the same
(inner optimum h* = log q / p_theta). What is lost is the automatic following of theta between steps: h
must track q / p_theta, which moves slowly when the model's learning rate is small.

Divergences (u = e^s; each f(1) = 0; T and F written stably in s)
-----------------------------------------------------------------
    kl                 f = u log u                               T = s + 1                  F = e^s
    reverse_kl         f = -log u                                T = -e^{-s}                F = s - 1
    js (Jensen-Shannon) f = 1/2 [u log u - (u+1) log((u+1)/2)]
                                                     T = (log 2 - softplus(-s)) / 2   F = (softplus(s) - log 2) / 2
    squared_hellinger  f = (sqrt u - 1)^2                        T = -expm1(-s/2)           F = expm1(s/2)
    pearson (chi^2)    f = (u - 1)^2                             T = 2 expm1(s)             F = expm1(2 s)
    neyman (chi^2)     f = (1 - u)^2 / u                         T = -expm1(-2 s)           F = -2 expm1(-s)
    alpha (a != 0, 1)  f = (u^a - 1 - a (u - 1)) / (a (a - 1))   T = expm1((a-1) s)/(a-1)  F = expm1(a s)/a
                       (a = 1 is KL, a = 0 is reverse KL, in the forms f = u log u - u + 1 and -log u + u - 1)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F_
from torch import nn

from ..energy import check_activation, mlp
from .base import PriorObjective

LOG2 = math.log(2.0)


@dataclass(frozen=True)
class Divergence:
    """An f-divergence in the form the game needs: f(u), T(s) = f'(e^s) and F(s) = e^s f'(e^s) - f(e^s)."""

    name: str
    f: Callable[[torch.Tensor], torch.Tensor]
    T: Callable[[torch.Tensor], torch.Tensor]
    F: Callable[[torch.Tensor], torch.Tensor]


def _alpha_divergence(a: float) -> Divergence:
    a = float(a)
    if abs(a - 1.0) < 1e-8:
        return Divergence("alpha(1)", lambda u: u * torch.log(u) - u + 1.0, lambda s: s, torch.expm1)
    if abs(a) < 1e-8:
        return Divergence("alpha(0)", lambda u: -torch.log(u) + u - 1.0, lambda s: -torch.expm1(-s), lambda s: s)
    return Divergence(
        f"alpha({a:g})",
        lambda u: (u.pow(a) - 1.0 - a * (u - 1.0)) / (a * (a - 1.0)),
        lambda s: torch.expm1((a - 1.0) * s) / (a - 1.0),
        lambda s: torch.expm1(a * s) / a,
    )


DIVERGENCES = {
    "kl": lambda: Divergence("kl", lambda u: u * torch.log(u), lambda s: s + 1.0, torch.exp),
    "reverse_kl": lambda: Divergence("reverse_kl", lambda u: -torch.log(u), lambda s: -torch.exp(-s),
                                     lambda s: s - 1.0),
    "js": lambda: Divergence(
        "js", lambda u: 0.5 * (u * torch.log(u) - (u + 1.0) * torch.log((u + 1.0) / 2.0)),
        lambda s: 0.5 * (LOG2 - F_.softplus(-s)), lambda s: 0.5 * (F_.softplus(s) - LOG2)),
    "squared_hellinger": lambda: Divergence(
        "squared_hellinger", lambda u: (torch.sqrt(u) - 1.0) ** 2,
        lambda s: -torch.expm1(-0.5 * s), lambda s: torch.expm1(0.5 * s)),
    "pearson": lambda: Divergence("pearson", lambda u: (u - 1.0) ** 2, lambda s: 2.0 * torch.expm1(s),
                                  lambda s: torch.expm1(2.0 * s)),
    "neyman": lambda: Divergence("neyman", lambda u: (1.0 - u) ** 2 / u, lambda s: -torch.expm1(-2.0 * s),
                                 lambda s: -2.0 * torch.expm1(-s)),
    "alpha": _alpha_divergence,
}


def get_divergence(name: str, alpha: Optional[float] = None) -> Divergence:
    """The :class:`Divergence` called ``name`` (one of ``DIVERGENCES``); ``alpha`` only for ``"alpha"``."""
    if name not in DIVERGENCES:
        raise ValueError(f"unknown divergence {name!r}; choose one of {sorted(DIVERGENCES)}")
    if name == "alpha":
        if alpha is None:
            raise ValueError("divergence 'alpha' needs the parameter alpha (e.g. alpha=0.5)")
        return _alpha_divergence(alpha)
    if alpha is not None:
        raise ValueError(f"alpha is only used by divergence 'alpha', not {name!r}")
    return DIVERGENCES[name]()


class _GradReverse(torch.autograd.Function):
    """Identity forward, gradient times -1 backward (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return -g


def grad_reverse(x: torch.Tensor) -> torch.Tensor:
    """y = x in the forward pass; dL/dx = -dL/dy in the backward pass."""
    return _GradReverse.apply(x)


class FDivergence(PriorObjective):
    """f-EBM: minimize D_f(q_data || p_theta) through its variational bound (Yu et al. 2020).

    loss = mean_i T(s(z+_i)) - mean_i F(s(z-_i)) + [score-function surrogate], s = H(z) - l_theta(z),
    with H behind a gradient-reversal layer so one optimizer step minimizes over the model and maximizes
    over H. The derivation of the model gradient, the table of divergences and the ``direct`` variant are in
    the module docstring.

    Args:
        divergence: one of ``DIVERGENCES`` (kl, reverse_kl, js, squared_hellinger, pearson, neyman, alpha).
        alpha: the parameter of the alpha-divergence.
        latent_dim: input dimension of H; when None, H is built by :meth:`setup`, which the training loop
            calls before building its optimizer (``setup_objective``); using the rule before that is an error.
        hidden, n_layers, activation: the ratio network's MLP.
        ratio_param: ``"direct"`` (default; s = h - (l - l.detach())) or ``"tracking"`` (s = H - l, the
            paper's); see the module docstring.
        s_clamp: if set, clamp s to [-s_clamp, s_clamp] before T and F (an overflow guard for the
            exponential divergences; the gradient is cut where the clamp is active).
        quadratic_features: feed (z, z * z) to the ratio network, so the quadratic part of a log-ratio
            between near-Gaussian densities is linear in its inputs (off by default).
    """

    name = "fdiv"

    def __init__(self, divergence: str = "kl", alpha: Optional[float] = None, latent_dim: Optional[int] = None,
                 hidden: int = 64, n_layers: int = 2, activation: str = "silu", ratio_param: str = "direct",
                 s_clamp: Optional[float] = None, quadratic_features: bool = False):
        super().__init__()
        self.div = get_divergence(divergence, alpha)
        self.divergence = divergence
        if ratio_param not in ("tracking", "direct"):
            raise ValueError(f"ratio_param must be 'tracking' or 'direct', got {ratio_param!r}")
        if s_clamp is not None and not s_clamp > 0:
            raise ValueError(f"s_clamp must be > 0 or None, got {s_clamp}")
        self.ratio_param = ratio_param
        self.s_clamp = s_clamp
        self.quadratic_features = bool(quadratic_features)
        self._net_args = dict(hidden=hidden, n_layers=n_layers, activation=activation)
        check_activation(activation)
        self.ratio_net: Optional[nn.Module] = None
        if latent_dim is not None:
            self.setup(latent_dim)

    def setup(self, dim: int, device=None) -> None:
        """Build the ratio network for inputs of dimension ``dim`` (no-op if already built).

        Call it (or pass ``latent_dim``) before building the optimizer, so the ratio network is in it.
        """
        if self.ratio_net is None:
            a = self._net_args
            in_dim = 2 * int(dim) if self.quadratic_features else int(dim)
            self.ratio_net = mlp(in_dim, a["hidden"], a["n_layers"], 1, a["activation"])
            if device is not None:
                self.ratio_net.to(device)
            self.ratio_dim = int(dim)
        elif getattr(self, "ratio_dim", dim) != dim:
            raise ValueError(f"the ratio network takes dim {self.ratio_dim}, got z of dim {dim}")

    def log_ratio(self, model, z: torch.Tensor, reverse: bool = True):
        """s(z), the estimate of log q(z) / p_theta(z), and l_theta(z); H behind gradient reversal if ``reverse``."""
        if self.ratio_net is None:
            raise RuntimeError("fdiv: the ratio network is not built; call objective.setup(latent_dim) (or "
                               "setup_objective(objective, dim)) before building the optimizer, so that it trains")
        if getattr(self, "ratio_dim", z.shape[1]) != z.shape[1]:
            raise ValueError(f"the ratio network takes dim {self.ratio_dim}, got z of dim {z.shape[1]}")
        x = torch.cat([z, z * z], -1) if self.quadratic_features else z
        h = self.ratio_net(x).squeeze(-1)
        if reverse:
            h = grad_reverse(h)
        l = model.log_prob_unnormalized(z)
        s = h - l if self.ratio_param == "tracking" else h - (l - l.detach())
        if self.s_clamp is not None:
            s = s.clamp(-self.s_clamp, self.s_clamp)
        return s, l

    def forward(self, model, z_pos: torch.Tensor, z_neg: torch.Tensor):
        if z_neg is None:
            raise ValueError("fdiv needs model samples z_neg")
        s_pos, _ = self.log_ratio(model, z_pos.detach())
        s_neg, l_neg = self.log_ratio(model, z_neg.detach())
        t_pos = self.div.T(s_pos)
        f_neg = self.div.F(s_neg)
        bound = t_pos.mean() - f_neg.mean()
        w = f_neg.detach() - f_neg.detach().mean()
        score_term = -(w * l_neg).mean()
        loss = bound + (score_term - score_term.detach())
        with torch.no_grad():
            stats = {"fdiv_bound": bound.detach(), "s_pos": s_pos.detach().mean(), "s_neg": s_neg.detach().mean(),
                     "ratio_mean_neg": torch.exp(s_neg.detach().clamp(max=80.0)).mean()}
        return loss, stats
