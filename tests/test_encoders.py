"""Amortized posteriors against known answers: a linear-Gaussian model's exact posterior, learned by both of the
encoder's losses, the sign model's posterior moments by quadrature, and the chain start they provide."""
import math

import pytest
import torch
from torch import nn

from textebm.config import Recipe, apply_overrides
from textebm.encoders import GRUEncoder, MLPEncoder, encoder_loss, gaussian_log_prob
from textebm.model import LatentEBMModel
from textebm.prior import GaussianPrior


class LinearGaussianDecoder(nn.Module):
    """p(x | z) = N(x; W z, sigma^2 I) with W = Q diag(w): the posterior under N(0, I) is
    N(S W^T x / sigma^2, S), S = diag(1 / (1 + w^2 / sigma^2))."""

    def __init__(self, w, D=6, sigma=0.5, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
        self.register_buffer("W", Q[:, :len(w)] * torch.tensor(w))
        self.sigma, self.latent_dim = sigma, len(w)
        self.S = 1.0 / (1.0 + torch.tensor(w) ** 2 / sigma ** 2)

    def log_prob(self, x, z):
        return -0.5 * ((x - z @ self.W.T) / self.sigma).pow(2).sum(-1) - x.shape[1] * math.log(self.sigma)

    def data(self, n, g):
        z = torch.randn(n, self.latent_dim, generator=g)
        return z @ self.W.T + self.sigma * torch.randn(n, self.W.shape[0], generator=g)

    def posterior(self, x):
        return (x @ self.W) / self.sigma ** 2 * self.S, self.S


@pytest.mark.parametrize("kind", ["chain", "elbo"])
def test_the_encoder_recovers_the_posterior_of_a_linear_gaussian_model(kind):
    torch.manual_seed(0)
    dec = LinearGaussianDecoder([2.0, 1.0, 0.5])
    model = LatentEBMModel(GaussianPrior(3), dec, encoder=MLPEncoder(6, 3, hidden=32))
    opt = torch.optim.Adam(model.encoder.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for step in range(800):
        x = dec.data(256, g)
        mean, var = dec.posterior(x)
        z_pos = mean + var.sqrt() * torch.randn(mean.shape, generator=g)  # exact posterior samples (the chain's)
        loss = encoder_loss(model, x, z_pos, kind, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 600:
            for group in opt.param_groups:
                group["lr"] = 2e-3
    x = dec.data(2000, g)
    mean, var = dec.posterior(x)
    mu, log_std = model.encoder(x)
    assert (mu - mean).abs().mean() < 0.03, (mu - mean).abs().mean()
    torch.testing.assert_close(log_std.exp().pow(2).mean(0), var, rtol=0.06, atol=0.003)


def test_the_gru_encoder_learns_the_sign_models_posterior_moments_and_ignores_padding():
    """Token i is ``a`` with probability sigmoid(4 z_i): p(z_i | a) ∝ N(z_i; 0, 1) sigmoid(4 z_i), whose mean and
    variance come from quadrature; the chain loss moves q to them (the inclusive KL's Gaussian optimum)."""
    grid = torch.linspace(-8, 8, 16001, dtype=torch.float64)
    dens = torch.exp(-grid ** 2 / 2) * torch.sigmoid(4 * grid)
    dens /= dens.sum()
    m_a = float((grid * dens).sum())
    v_a = float(((grid - m_a) ** 2 * dens).sum())
    torch.manual_seed(0)
    enc = GRUEncoder(6, 2, embed_dim=8, hidden_dim=16)
    opt = torch.optim.Adam(enc.parameters(), lr=2e-2)
    g = torch.Generator().manual_seed(2)
    for step in range(500):
        if step == 300:
            opt.param_groups[0]["lr"] = 3e-3
        signs = torch.randint(0, 2, (128, 2), generator=g)
        x = torch.cat([torch.full((128, 1), 2), 4 + signs, torch.full((128, 1), 3)], 1)
        s = 1 - 2 * signs.double()  # +1 for a (token 4), -1 for b
        # exact posterior draws by rejection: z ~ N(0, 1), kept with probability sigmoid(4 s z)
        z = torch.randn(128, 2, 64, generator=g, dtype=torch.float64)
        keep = torch.rand(z.shape, generator=g, dtype=torch.float64) < torch.sigmoid(4 * s[..., None] * z)
        first = keep.double().argmax(-1, keepdim=True)
        z_pos = z.gather(-1, first).squeeze(-1).float()
        loss = -enc.log_prob(x, z_pos).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.tensor([[2, 4, 5, 3], [2, 5, 4, 3]])
    mu, log_std = enc(x)
    assert mu[0, 0].item() == pytest.approx(m_a, abs=0.05) and mu[0, 1].item() == pytest.approx(-m_a, abs=0.05)
    assert log_std.exp().pow(2).mean().item() == pytest.approx(v_a, rel=0.15)
    padded = torch.cat([x, torch.zeros(2, 5, dtype=torch.long)], 1)  # <pad> = 0: the same sentences
    torch.testing.assert_close(enc(padded)[0], mu)


def test_gaussian_log_prob_is_the_normal_density():
    mu, log_std = torch.randn(5, 3), torch.randn(5, 3) * 0.3
    z = torch.randn(5, 3)
    ref = torch.distributions.Normal(mu, log_std.exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(gaussian_log_prob(z, mu, log_std), ref)
    zk = torch.randn(5, 7, 3)
    ref_k = torch.distributions.Normal(mu[:, None], log_std.exp()[:, None]).log_prob(zk).sum(-1)
    torch.testing.assert_close(gaussian_log_prob(zk, mu, log_std), ref_k)


def fixed_encoder_model(start: str, log_std: float):
    """A tiny model whose chain (0 steps: the start itself) starts at ``start`` and whose encoder gives
    q(z | x) = N((5, -5, 2), exp(log_std)^2 I) for every sentence; with its vocabulary."""
    from textebm.data import WordVocab
    from textebm.model import build_model

    r = apply_overrides(Recipe(), ["model.latent_dim=3", "model.embed_dim=8", "model.hidden_dim=8",
                                   "prior.hidden=8", "model.encoder=gru", f"sampling.posterior_start={start}",
                                   "sampling.posterior_steps=0"])
    vocab = WordVocab.build(["a b c"])
    model = build_model(r, vocab).eval()
    with torch.no_grad():
        model.encoder.head.weight.zero_()
        model.encoder.head.bias.copy_(torch.tensor([5.0, -5.0, 2.0, log_std, log_std, log_std]))
    return model, vocab


def test_a_chain_that_starts_at_the_encoder_starts_at_its_draws(tmp_path):
    model, vocab = fixed_encoder_model("encoder", math.log(0.1))
    x = torch.tensor([[vocab.bos_id, 4, 5, vocab.eos_id]] * 400)
    z = model.sample_posterior(x, generator=torch.Generator().manual_seed(0))  # 0 steps: the start itself
    torch.testing.assert_close(z.mean(0), torch.tensor([5.0, -5.0, 2.0]), atol=0.03, rtol=0)
    torch.testing.assert_close(z.std(0), torch.full((3,), 0.1), atol=0.015, rtol=0)
    # the model saves and reloads its encoder
    model.save_pretrained(tmp_path / "m")
    again = LatentEBMModel.from_pretrained(tmp_path / "m").eval()
    torch.testing.assert_close(again.encoder(x[:2])[0], model.encoder(x[:2])[0])
    with pytest.raises(Exception, match="posterior_start: encoder needs"):
        apply_overrides(Recipe(), ["sampling.posterior_start=encoder"])


def test_a_chain_that_starts_at_the_encoders_mean_starts_at_mu_exactly():
    model, vocab = fixed_encoder_model("encoder_mean", 0.0)  # sigma = 1: draws would spread
    x = torch.tensor([[vocab.bos_id, 4, 5, vocab.eos_id]] * 50)
    z = model.sample_posterior(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z, torch.tensor([[5.0, -5.0, 2.0]]).expand(50, 3), atol=1e-6, rtol=0)
    with pytest.raises(Exception, match="posterior_start: encoder_mean needs"):
        apply_overrides(Recipe(), ["sampling.posterior_start=encoder_mean"])


@pytest.mark.parametrize("kind", ["chain", "elbo"])
def test_the_information_term_on_the_encoders_codes_is_minus_lambda_times_i_and_moves_only_the_encoder(kind):
    """encoder_loss(lambda) - encoder_loss(0) at the same draws is -lambda I(y; z), I computed by hand from the
    symbol prior's softmax at those draws; the prior's parameters get no gradient from it, the encoder's do, and
    one descent step on it raises I (codes move toward confident, balanced symbols)."""
    from textebm.prior import SymbolVectorPrior

    torch.manual_seed(0)
    enc = MLPEncoder(4, 2, hidden=16)
    prior = SymbolVectorPrior(2, n_symbols=3, hidden=8)
    with torch.no_grad():
        prior.net[-1].weight.mul_(10.0)  # symbols that differ across the codes
    dec = LinearGaussianDecoder([1.0, 0.5], D=4)
    model = type("M", (), {"encoder": enc, "prior": prior, "decoder": dec})()
    x = dec.data(64, torch.Generator().manual_seed(1))
    z_pos = torch.randn(64, 2)
    base = encoder_loss(model, x, z_pos, kind, torch.Generator().manual_seed(2))
    with_info = encoder_loss(model, x, z_pos, kind, torch.Generator().manual_seed(2), symbol_information=3.0)
    mu, log_std = enc(x)
    z = mu + log_std.exp() * torch.randn(mu.shape, generator=torch.Generator().manual_seed(2))
    p = torch.softmax(prior.symbol_logits(z), -1)
    m = p.mean(0)
    info = -(m * m.log()).sum() + (p * p.log()).sum(-1).mean()
    assert float(info.detach()) > 0.01
    torch.testing.assert_close(with_info - base, -3.0 * info, atol=1e-5, rtol=1e-5)
    (with_info - base).backward()
    assert all(q.grad is None or float(q.grad.abs().max()) == 0.0 for q in prior.parameters())
    assert sum(float(q.grad.abs().sum()) for q in enc.parameters() if q.grad is not None) > 0
    opt = torch.optim.SGD(enc.parameters(), lr=0.5)
    before = float(info.detach())
    for _ in range(20):
        opt.zero_grad()
        (encoder_loss(model, x, z_pos, kind, torch.Generator().manual_seed(2), symbol_information=1.0)
         - encoder_loss(model, x, z_pos, kind, torch.Generator().manual_seed(2))).backward()
        opt.step()
    mu, log_std = enc(x)
    z = mu + log_std.exp() * torch.randn(mu.shape, generator=torch.Generator().manual_seed(2))
    p = torch.softmax(prior.symbol_logits(z), -1)
    m = p.mean(0)
    after = float((-(m * m.log()).sum() + (p * p.log()).sum(-1).mean()).detach())
    assert after > before + 0.05


def test_the_encoders_share_takes_its_own_weight_and_the_balance():
    """symbol_information_encoder sets the term's weight on the codes apart from the prior's (0: the prior's
    share only) and symbol_balance beta reaches both shares: encoder_loss gains exactly
    -lambda (beta H(mean p) - mean H(p)) at its draws."""
    from textebm.objectives import build_objective
    from textebm.prior import SymbolVectorPrior
    from textebm.train.step import TrainingLoss

    torch.manual_seed(0)
    enc = MLPEncoder(4, 2, hidden=16)
    prior = SymbolVectorPrior(2, n_symbols=3, hidden=8, spread=10.0)
    dec = LinearGaussianDecoder([1.0, 0.5], D=4)
    model = type("M", (), {"encoder": enc, "prior": prior, "decoder": dec})()
    x = dec.data(64, torch.Generator().manual_seed(1))
    z_pos = torch.randn(64, 2)
    base = encoder_loss(model, x, z_pos, "chain", torch.Generator().manual_seed(2))
    got = encoder_loss(model, x, z_pos, "chain", torch.Generator().manual_seed(2), symbol_information=3.0,
                       symbol_balance=0.4)
    mu, log_std = enc(x)
    z = mu + log_std.exp() * torch.randn(mu.shape, generator=torch.Generator().manual_seed(2))
    p = torch.softmax(prior.symbol_logits(z), -1)
    m = p.mean(0)
    torch.testing.assert_close(got - base, -3.0 * (-0.4 * (m * m.log()).sum() + (p * p.log()).sum(-1).mean()),
                               atol=1e-5, rtol=1e-5)
    prior_only = build_objective("mle", symbol_information=5.0, symbol_information_encoder=0.0, symbol_balance=0.4)
    loss = TrainingLoss(model, prior_only)
    assert (loss.symbol_information, loss.symbol_balance) == (0.0, 0.4)
    assert (prior_only.symbol_information, prior_only.symbol_balance) == (5.0, 0.4)
    both = TrainingLoss(model, build_objective("mle", symbol_information=5.0))
    assert (both.symbol_information, both.symbol_balance) == (5.0, 1.0)
