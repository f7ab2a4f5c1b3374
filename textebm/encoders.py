"""Amortized posteriors q_phi(z | x): an inference network beside the model, never part of its likelihood.

    q_phi(z | x) = N(z; mu_phi(x), diag sigma_phi(x)^2)

The model's posterior p(z | x) ∝ p_alpha(z) p_beta(x | z) is sampled by a short-run chain; an encoder makes that
chain cheaper and better: it starts the chain near the posterior (``sampling.posterior_start: encoder``), so fewer
Langevin steps suffice, serves as an importance-sampling proposal, and gives a code for a sentence in one
forward pass (``textebm encode``).

Training (``train.encoder_loss``):

* ``chain`` (the default): fit q to the posterior chain's own samples z+ by maximum likelihood,
      min_phi  -mean_i log q_phi(z+_i | x_i),
  the inclusive KL(p_chain(z | x) || q_phi(z | x)) up to a constant. This is how DAMC (Yu et al. 2023,
  "Learning Energy-Based Prior Model with Diffusion-Amortized MCMC", Sec. 3.2) trains its amortizer: on the
  Langevin outputs, so q follows whatever the chain finds and needs no gradient through the decoder.
* ``elbo``: maximize the evidence lower bound in phi alone (the decoder and the prior are not updated by it),
      max_phi  E_{q_phi(z | x)}[log p_beta(x | z) + f_alpha(z) - |z|^2 / (2 sigma0^2)] + H[q_phi(. | x)],
  by the reparameterization z = mu + sigma * eps (log Z(alpha) does not depend on phi): the VAE-style encoder of
  ibebm (Pang & Wu 2021) and LDEBM (Yu et al. 2022), mode-seeking where ``chain`` is mass-covering; it costs one
  decoder forward and backward per step.

:class:`GRUEncoder` reads a sentence with a bidirectional GRU (Cho et al. 2014) over its token embeddings; the last
states of both directions give mu and log sigma through one linear layer. :class:`MLPEncoder` reads vectors (or
flattened images).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

from .energy import captures_config

#: log sigma is kept in [MIN_LOG_STD, MAX_LOG_STD]: a collapsed or exploding width cannot make log q infinite
MIN_LOG_STD, MAX_LOG_STD = -7.0, 2.0


class GRUEncoder(nn.Module):
    """q_phi(z | x) over token ids (module docstring).

    Args:
        vocab_size, latent_dim: sizes (from the tokenizer and the model).
        embed_dim, hidden_dim: embedding width and GRU state width (per direction).
        pad_id: the padding id of the batches (masked: a padded sentence reads as the sentence).
        init_log_std: sigma starts at exp(init_log_std) (the output layer's bias), mu at about 0.
    """

    kind = "gru"

    @captures_config
    def __init__(self, vocab_size: int, latent_dim: int, embed_dim: int = 64, hidden_dim: int = 128,
                 pad_id: int = 0, init_log_std: float = 0.0):
        super().__init__()
        if min(vocab_size, latent_dim, embed_dim, hidden_dim) < 1:
            raise ValueError("vocab_size, latent_dim, embed_dim and hidden_dim must be >= 1")
        self.latent_dim, self.pad_id = int(latent_dim), int(pad_id)
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.gru = nn.GRU(embed_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden_dim, 2 * latent_dim)
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()
            self.head.bias[latent_dim:] = float(init_log_std)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(mu, log sigma), each (batch, latent_dim), of q(z | x) for a padded (batch, T) LongTensor of ids."""
        if x.dim() != 2:
            raise ValueError(f"x must be a (batch, length) tensor of token ids; got shape {tuple(x.shape)}")
        lengths = (x != self.pad_id).sum(1).clamp_min(1).cpu()  # host values for packing (not in any chain)
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(x), lengths, batch_first=True,
                                                   enforce_sorted=False)
        _, h = self.gru(packed)                       # (2, batch, hidden): the last state of each direction
        out = self.head(torch.cat([h[0], h[1]], -1))
        mu, log_std = out.chunk(2, -1)
        return mu, log_std.clamp(MIN_LOG_STD, MAX_LOG_STD)

    def sample(self, x: torch.Tensor, generator: Optional[torch.Generator] = None,
               n: int = 1) -> torch.Tensor:
        """z ~ q(z | x): (batch, d), or (batch, n, d) for n > 1; reparameterized (differentiable in phi)."""
        mu, log_std = self(x)
        if n == 1:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            return mu + log_std.exp() * eps
        eps = torch.randn((mu.shape[0], n, mu.shape[1]), generator=generator, device=mu.device, dtype=mu.dtype)
        return mu.unsqueeze(1) + log_std.exp().unsqueeze(1) * eps

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log q(z | x), (batch,) for z of shape (batch, d), or (batch, k) for z of shape (batch, k, d)."""
        mu, log_std = self(x)
        return gaussian_log_prob(z, mu, log_std)


class MLPEncoder(nn.Module):
    """q_phi(z | x) for vector data x (batch, input_dim), or images flattened to vectors: an MLP
    (:func:`textebm.energy.mlp`) to mu and log sigma, with a linear path from x so that a linear-Gaussian
    posterior (mean linear in x, constant width) is represented exactly.

    Args:
        input_dim, latent_dim: sizes (an image's C * H * W for images).
        hidden, n_layers, activation: the MLP.
        init_log_std: sigma starts at exp(init_log_std).
    """

    kind = "mlp"

    @captures_config
    def __init__(self, input_dim: int, latent_dim: int, hidden: int = 256, n_layers: int = 2,
                 activation: str = "silu", init_log_std: float = 0.0):
        super().__init__()
        from .energy import mlp

        self.latent_dim, self.input_dim = int(latent_dim), int(input_dim)
        self.net = mlp(input_dim, hidden, n_layers, 2 * latent_dim, activation)
        self.linear = nn.Linear(input_dim, 2 * latent_dim, bias=False)
        with torch.no_grad():
            self.net[-1].weight.mul_(0.1)
            self.net[-1].bias.zero_()
            self.net[-1].bias[latent_dim:] = float(init_log_std)
            self.linear.weight.zero_()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = x.reshape(x.shape[0], -1).float()
        if x.shape[1] != self.input_dim:
            raise ValueError(f"x has {x.shape[1]} values per example; this encoder reads {self.input_dim}")
        out = self.net(x) + self.linear(x)
        mu, log_std = out.chunk(2, -1)
        return mu, log_std.clamp(MIN_LOG_STD, MAX_LOG_STD)

    sample = GRUEncoder.sample
    log_prob = GRUEncoder.log_prob


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(log_std)^2) summed over the last dimension; z may carry an extra sample dimension
    (batch, k, d) against mu, log_std of (batch, d)."""
    if z.dim() == mu.dim() + 1:
        mu, log_std = mu.unsqueeze(1), log_std.unsqueeze(1)
    u = (z - mu) * torch.exp(-log_std)
    return -0.5 * u.pow(2).sum(-1) - log_std.sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


ENCODERS = {"gru": GRUEncoder, "mlp": MLPEncoder}


def build_encoder(kind: str, **kwargs) -> nn.Module:
    """An encoder by its recipe name (``model.encoder``) from its constructor arguments."""
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder {kind!r}; choose one of {sorted(ENCODERS)}")
    return ENCODERS[kind](**kwargs)


def encoder_loss(model, x: torch.Tensor, z_pos: torch.Tensor, kind: str = "chain",
                 generator: Optional[torch.Generator] = None, symbol_information: float = 0.0,
                 symbol_balance: float = 1.0) -> torch.Tensor:
    """The encoder's loss on a batch (module docstring): ``chain``, -mean log q(z+ | x) at the posterior chain's
    samples; ``elbo``, -mean ELBO with gradients reaching only the encoder (the model's parameters are frozen
    for it by the caller's optimizer split: this loss is added to the others only through q's parameters).

    ``symbol_information`` lambda_I > 0 (a symbol-vector prior) adds -lambda_I * I(y; z) at reparameterized draws
    z ~ q(z | x) of the batch, the prior frozen (:func:`textebm.objectives.regularizers.symbol_information`): the
    information term of Pang & Wu (2021) reaching the codes, as their amortized posterior's samples carry it, so
    that the codes themselves gather into one region per symbol; the prior's share of the term is the learning
    rule's own regularizer. ``symbol_balance`` is the term's beta (the regularizer's ``symbol_balance``)."""
    from .sampling import frozen

    enc = model.encoder
    if kind not in ("chain", "elbo"):
        raise ValueError(f"unknown encoder loss {kind!r}; choose chain or elbo")
    mu, log_std = enc(x)
    if kind == "elbo" or symbol_information > 0:
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + log_std.exp() * eps
    if kind == "chain":
        loss = -gaussian_log_prob(z_pos.detach(), mu, log_std).mean()
    else:
        with frozen(model.prior, model.decoder):
            joint = model.prior.log_prob_unnormalized(z) + model.decoder.log_prob(x, z).float()
        entropy = log_std.sum(-1) + 0.5 * z.shape[-1] * (1.0 + math.log(2 * math.pi))
        loss = -(joint + entropy).mean()
    if symbol_information > 0:
        from .objectives.regularizers import symbol_information as information

        with frozen(model.prior):
            loss = loss - symbol_information * information(model.prior, z, detach=False, balance=symbol_balance)
    return loss
