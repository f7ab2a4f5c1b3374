"""Regularizers added to any prior learning rule.

    loss = base_loss + alpha_p * mean_i f(z+_i)^2 + lambda * mean_i |grad_z f(z+_i)|^2

* Potential control, alpha_p * E_q[f(z)^2] (Song & Ou 2018, "Learning Neural Random Fields with Inclusive
  Auxiliary Generators", Sec. 4): keeps the potential f near zero on the data, so exp f cannot drift by an
  arbitrary constant and the sampler's scale stays put.
* Zero-centered gradient penalty, lambda * E_q[|grad_z f(z)|^2] (Kumar, Ozair, Goyal, Courville, Bengio 2019,
  "Maximum Entropy Generators for Energy-Based Models", eq. 8; Mescheder et al. 2018 call it R1): smooths
  the energy surface around the data, making data points local maxima of f and sampling easier.

Both act on f, the network output, at the positives z+ (the posterior samples in the latent model).

* Symbol information, - lambda_I * I(y; z+) for a symbol-vector prior (:class:`textebm.prior.SymbolVectorPrior`;
  Pang & Wu 2021, Sec. 3.3, the information term of their bpucla/ibebm code): the mutual information between the
  symbol y and the posterior codes of the batch's sentences under p(y | z) = softmax(f_alpha(z)),

      I(y; z+) = H( mean_i p(y | z+_i) ) - mean_i H( p(y | z+_i) ),

  an estimate of the information the symbol carries about the sentences x. Maximizing it makes each sentence's
  symbol certain (the second term) while all symbols are used (the first), so that the symbols partition the
  codes of the data into clusters instead of one symbol explaining everything.
  Here the term moves the prior (z+ detached); with an amortized posterior it also moves the encoder's codes
  (:func:`textebm.encoders.encoder_loss`), at the weight ``symbol_information_encoder`` (default: the same
  lambda_I; 0: the prior's share only). ``symbol_balance`` beta weighs the first term,
  beta * H(mean p(y | z+)) - mean H(p(y | z+)) (the weighted information of Hu et al. 2017, "Learning Discrete
  Representations via Information Maximizing Self-Augmented Training", eq. 7): at beta = 1 the term wants
  the symbols used equally often, at beta < 1 it lets them take clusters of unequal size (a corpus whose types
  are 60 % statements), and at beta = 0 it only makes each code's symbol certain.

Recipe keys (under ``prior.objective_args``): ``potential_control: 0.0``, ``grad_penalty: 0.0``,
``symbol_information: 0.0`` (off), ``symbol_information_encoder`` (default: ``symbol_information``) and
``symbol_balance: 1.0``.
"""
from __future__ import annotations

from typing import Optional

import torch

from .base import PriorObjective


def potential_control(model, z: torch.Tensor) -> torch.Tensor:
    """mean_i f(z_i)^2 (Song & Ou 2018)."""
    return model.f(z.detach()).pow(2).mean()


def gradient_penalty(model, z: torch.Tensor) -> torch.Tensor:
    """mean_i |grad_z f(z_i)|^2, differentiable in the model parameters (Kumar et al. 2019, eq. 8)."""
    with torch.enable_grad():
        x = z.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model.f(x).sum(), x, create_graph=True)
    return g.pow(2).sum(-1).mean()


def symbol_information(model, z: torch.Tensor, detach: bool = True, balance: float = 1.0) -> torch.Tensor:
    """I(y; z) = H(mean_i p(y | z_i)) - mean_i H(p(y | z_i)) over the rows z_i of z, in nats, differentiable in the
    prior's parameters (``model.symbol_log_probs``: a symbol-vector prior), and in z unless ``detach``. Between 0
    and log K. ``balance`` beta weighs the first term (module docstring; 1: the mutual information)."""
    log_p = model.symbol_log_probs(z.detach() if detach else z)     # (n, K)
    p = log_p.exp()
    marginal = p.mean(0)
    h_marginal = -(marginal * torch.log(marginal.clamp_min(1e-30))).sum()
    h_conditional = -(p * log_p).sum(-1).mean()
    return balance * h_marginal - h_conditional


class Regularized(PriorObjective):
    """Wrap a base rule and add potential control, the zero-centered gradient penalty and/or (symbol-vector
    priors) the symbol information term to its loss.

    ``negatives``, ``after_step``, ``setup`` and ``amortizer_parameters`` are those of the base rule.

    Args:
        base: the wrapped :class:`PriorObjective`.
        potential_control: alpha_p >= 0.
        grad_penalty: lambda >= 0.
        symbol_information: lambda_I >= 0 (the loss gains - lambda_I * I(y; z+)).
        symbol_information_encoder: the term's weight on an amortized posterior's codes (:attr:`encoder_information`,
            which the training loss reads; default: ``symbol_information``).
        symbol_balance: beta >= 0 on the term's H(mean p(y | z)) (module docstring).
    """

    def __init__(self, base: PriorObjective, potential_control: float = 0.0, grad_penalty: float = 0.0,
                 symbol_information: float = 0.0, symbol_information_encoder: Optional[float] = None,
                 symbol_balance: float = 1.0):
        super().__init__()
        if not isinstance(base, PriorObjective):
            raise TypeError(f"base must be a PriorObjective, got {type(base).__name__}")
        if symbol_information_encoder is None:
            symbol_information_encoder = symbol_information
        for key, val in (("potential_control", potential_control), ("grad_penalty", grad_penalty),
                         ("symbol_information", symbol_information),
                         ("symbol_information_encoder", symbol_information_encoder),
                         ("symbol_balance", symbol_balance)):
            if not val >= 0:
                raise ValueError(f"{key} must be >= 0, got {val}")
        self.base = base
        self.potential_control = float(potential_control)
        self.grad_penalty = float(grad_penalty)
        self.symbol_information = float(symbol_information)
        self.encoder_information = float(symbol_information_encoder)
        self.symbol_balance = float(symbol_balance)
        self.name = base.name
        self.requires_negatives = base.requires_negatives

    def setup(self, dim: int, device=None) -> None:
        fn = getattr(self.base, "setup", None)
        if callable(fn):
            fn(dim, device=device)

    def amortizer_parameters(self):
        fn = getattr(self.base, "amortizer_parameters", None)
        return list(fn()) if callable(fn) else []

    def negatives(self, prior, z_pos: torch.Tensor, sample_prior) -> Optional[torch.Tensor]:
        return self.base.negatives(prior, z_pos, sample_prior)

    def forward(self, prior, z_pos: torch.Tensor, z_neg: Optional[torch.Tensor]):
        loss, stats = self.base(prior, z_pos, z_neg)
        stats = dict(stats)
        if self.potential_control > 0:
            pc = potential_control(prior, z_pos)
            loss = loss + self.potential_control * pc
            stats["potential_control"] = pc.detach()
        if self.grad_penalty > 0:
            gp = gradient_penalty(prior, z_pos)
            loss = loss + self.grad_penalty * gp
            stats["grad_penalty"] = gp.detach()
        if self.symbol_information > 0:
            if not hasattr(prior, "symbol_log_probs"):
                raise ValueError(f"symbol_information needs a prior with symbols (prior.kind: symbol_vector); this "
                                 f"prior is {getattr(prior, 'kind', type(prior).__name__)!r}")
            info = symbol_information(prior, z_pos, balance=self.symbol_balance)
            loss = loss - self.symbol_information * info
            stats["symbol_information"] = info.detach()
        return loss, stats

    def after_step(self, prior, z_pos: torch.Tensor, z_neg: Optional[torch.Tensor]) -> dict:
        return self.base.after_step(prior, z_pos, z_neg)
