"""The symbol-vector prior (Pang & Wu 2021) against known answers: its marginal tilt is the log-sum-exp over the
symbols; with a linear f every quantity has a closed form (log Z, p(y), p(z | y) a shifted Gaussian); the symbol
information term; and learning recovers the clusters of a planted mixture in latent space."""
import math

import pytest
import torch

from textebm.config import ConfigError, Recipe, apply_overrides
from textebm.objectives import build_objective, symbol_information
from textebm.prior import PRIORS, SymbolVectorPrior, build_prior
from textebm.sampling import ChainConfig, Langevin


def linear_prior(w, b, sigma0=1.0):
    """f_k(z) = <w_k, z> + b_k: p(z | y = k) = N(sigma0^2 w_k, sigma0^2 I), Z_k = exp(b_k + sigma0^2 |w_k|^2 / 2)."""
    K, d = w.shape
    p = SymbolVectorPrior(d, n_symbols=K, n_layers=0, sigma0=sigma0)
    with torch.no_grad():
        p.net[0].weight.copy_(w)
        p.net[0].bias.copy_(b)
    return p


def test_the_marginal_tilt_is_the_log_sum_exp_over_symbols():
    torch.manual_seed(0)
    p = SymbolVectorPrior(5, n_symbols=7, hidden=16)
    z = torch.randn(50, 5) * 3
    logits = p.net(z).double()
    naive = torch.log(torch.exp(logits).sum(-1))
    assert torch.allclose(p.f(z).double(), naive, atol=1e-5)
    assert torch.allclose(p.log_prob_unnormalized(z), p.f(z) - z.pow(2).sum(-1) / 2, atol=1e-6)
    lp = p.symbol_log_probs(z)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(50), atol=1e-6)
    # Bayes: log p(y | z) = log p(z | y) - log p(z), both unnormalized with the same Z
    assert torch.allclose(lp[:, 3], p.log_prob_given(z, 3) - p.log_prob_unnormalized(z), atol=1e-5)
    # the score (what every sampler uses) is that of the log-sum-exp
    zz = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.logsumexp(p.net(zz), -1).sum() - zz.pow(2).sum() / 2, zz)
    assert torch.allclose(p.score(z), g, atol=1e-5)


def test_log_z_and_the_symbol_marginal_of_a_linear_prior_match_their_closed_forms():
    w = torch.tensor([[1.0, 0.0], [0.0, -1.5], [0.5, 0.5]])
    b = torch.tensor([0.3, -0.2, 0.0])
    p = linear_prior(w, b, sigma0=1.0)
    log_zk = b + w.pow(2).sum(-1) / 2
    want = float(torch.logsumexp(log_zk, 0))
    est, se = p.log_partition(200_000, generator=torch.Generator().manual_seed(0))
    assert abs(est - want) < 4 * se + 1e-3, (est, want, se)
    est_ais, se_ais = p.log_partition_ais(n_chains=400, n_temps=100, generator=torch.Generator().manual_seed(1))
    assert abs(est_ais - want) < 0.1


def test_conditional_samples_follow_p_z_given_y():
    """p(z | y = k) = N(w_k, I) for the linear prior with sigma0 = 1: the conditional chain's samples have that mean
    and variance; samples of the marginal mix the symbols in proportion Z_k / Z."""
    w = torch.tensor([[3.0, 0.0], [-3.0, 0.0]])
    p = linear_prior(w, torch.zeros(2))
    chain = ChainConfig(Langevin(), n_steps=300, step_size=0.3)
    g = torch.Generator().manual_seed(0)
    for k in range(2):
        z = p.sample_symbol(2000, k, chain, generator=g)
        assert torch.allclose(z.mean(0), w[k], atol=0.15), z.mean(0)
        assert torch.allclose(z.var(0), torch.ones(2), atol=0.2), z.var(0)
    mixed = p.sample_symbol(4, torch.tensor([0, 1, 0, 1]), chain, generator=g)
    assert (mixed[:, 0] > 0).tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="symbols must be in 0..1"):
        p.sample_symbol(3, 2, chain)


def test_symbol_information_is_zero_for_one_symbol_and_log_k_for_certain_balanced_ones():
    w = torch.tensor([[10.0, 0.0], [-10.0, 0.0], [0.0, 10.0], [0.0, -10.0]])
    p = linear_prior(w, torch.zeros(4))
    z = torch.cat([w / 10 * 3] * 5)                     # every row certain, the four symbols equally often
    assert float(symbol_information(p, z).detach()) == pytest.approx(math.log(4), abs=1e-4)
    z_one = (w[:1] / 10 * 3).repeat(20, 1)
    assert float(symbol_information(p, z_one).detach()) == pytest.approx(0.0, abs=1e-4)
    flat = linear_prior(torch.zeros(4, 2), torch.zeros(4))  # p(y | z) uniform: no information
    assert float(symbol_information(flat, torch.randn(30, 2)).detach()) == pytest.approx(0.0, abs=1e-6)


def test_learning_recovers_planted_clusters_in_a_latent_mixture():
    """Codes from a mixture of three well separated Gaussians; a symbol-vector prior learned from them by the
    training loop's own rule (short-run maximum likelihood against prior chains) with the symbol information
    term assigns the planted components to distinct symbols."""
    from textebm.objectives import fit_ebm

    torch.manual_seed(0)
    centers = torch.tensor([[2.5, 0.0], [-1.25, 2.2], [-1.25, -2.2]])
    truth = torch.randint(0, 3, (600,))
    data = centers[truth] + 0.35 * torch.randn(600, 2)
    prior = SymbolVectorPrior(2, n_symbols=3, hidden=32, n_layers=1, activation="silu")
    obj = build_objective("mle", symbol_information=1.0)
    chain = ChainConfig(Langevin(), n_steps=15, step_size=0.2)
    fit_ebm(prior, data, obj, chain=chain, steps=100, lr=1e-2, batch_size=64,
            generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = prior.symbol_log_probs(data).argmax(-1)
    # each planted component goes to one symbol, a different one for each component
    majority = [int(labels[truth == c].mode().values) for c in range(3)]
    assert sorted(majority) == [0, 1, 2], majority
    agree = float((labels == torch.tensor(majority)[truth]).float().mean())
    assert agree > 0.98, agree


def test_recipes_build_and_check_the_symbol_prior(toy_corpus):
    from conftest import tiny_recipe

    from textebm.model import build_model
    from textebm.data import WordVocab

    r = tiny_recipe(toy_corpus, "prior.kind=symbol_vector", "prior.n_symbols=5",
                    "prior.objective_args={symbol_information: 2.0}")
    model = build_model(r, WordVocab.build(["a b c"]))
    assert isinstance(model.prior, SymbolVectorPrior) and model.prior.n_symbols == 5
    assert model.prior.config["kind"] == "symbol_vector" and model.prior.config["n_symbols"] == 5
    assert type(build_prior(**model.prior.config)) is SymbolVectorPrior and PRIORS["symbol_vector"] is SymbolVectorPrior
    with pytest.raises(ConfigError, match="symbol_information.*symbol_vector"):
        apply_overrides(Recipe(), ["prior.objective_args={symbol_information: 1.0}"])
    with pytest.raises(ConfigError, match="n_symbols"):
        apply_overrides(Recipe(), ["prior.kind=symbol_vector", "prior.n_symbols=0"])


def test_a_wider_start_spreads_the_symbols_over_the_codes_from_the_first_step():
    """spread multiplies the output layer's initial weights (the rest of the network is the same draw), so p(y | z)
    starts far from uniform: at the default start every code is nearly undecided, at spread 10 most codes have a
    clear symbol and several symbols have codes; the recipe key builds it."""
    torch.manual_seed(3)
    plain = SymbolVectorPrior(8, n_symbols=6, hidden=32)
    torch.manual_seed(3)
    wide = SymbolVectorPrior(8, n_symbols=6, hidden=32, spread=10.0)
    torch.testing.assert_close(wide.net[-1].weight, 10.0 * plain.net[-1].weight)
    torch.testing.assert_close(wide.net[0].weight, plain.net[0].weight)
    z = torch.randn(2000, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p_plain, p_wide = plain.symbol_log_probs(z).exp(), wide.symbol_log_probs(z).exp()
    assert p_plain.max(1).values.mean() < 0.25 and p_wide.max(1).values.mean() > 0.45  # uniform: 1/6; here 0.20, 0.50
    assert len(p_wide.argmax(1).unique()) >= 3
    from textebm.config import Recipe, apply_overrides
    r = apply_overrides(Recipe(), ["prior.kind=symbol_vector", "prior.symbol_spread=10"])
    assert r.prior.symbol_spread == 10.0


def test_the_balance_weighs_the_entropy_of_the_symbols_marginal():
    """symbol_information(balance=beta) = beta H(mean p(y | z)) - mean H(p(y | z)), by hand on known softmaxes:
    certain, balanced symbols give beta log K; one symbol gives 0 at any beta."""
    w = torch.tensor([[10.0, 0.0], [-10.0, 0.0], [0.0, 10.0], [0.0, -10.0]])
    p = linear_prior(w, torch.zeros(4))
    z = torch.cat([w / 10 * 3] * 5)
    assert float(symbol_information(p, z, balance=0.5).detach()) == pytest.approx(0.5 * math.log(4), abs=1e-4)
    z_one = (w[:1] / 10 * 3).repeat(20, 1)
    assert float(symbol_information(p, z_one, balance=0.3).detach()) == pytest.approx(0.0, abs=1e-4)
    soft = linear_prior(w / 20, torch.tensor([0.0, 0.5, -0.5, 1.0]))  # undecided, unequal symbols
    zs = torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
    q = torch.softmax(soft.symbol_logits(zs), -1)
    m = q.mean(0)
    want = -0.7 * (m * m.log()).sum() + (q * q.log()).sum(-1).mean()
    torch.testing.assert_close(symbol_information(soft, zs, balance=0.7), want, atol=1e-6, rtol=0)
    # the prior's share: the learning rule's loss gains exactly -lambda times the weighted term at z+
    z_neg = torch.randn(40, 2, generator=torch.Generator().manual_seed(1))
    base, _ = build_objective("mle")(soft, zs, z_neg)
    reg, stats = build_objective("mle", symbol_information=2.0, symbol_balance=0.7)(soft, zs, z_neg)
    torch.testing.assert_close(reg - base, -2.0 * want, atol=1e-5, rtol=0)


def test_recipe_keys_of_the_information_term_are_checked():
    ok = apply_overrides(Recipe(), ["prior.kind=symbol_vector", "model.encoder=gru",
                                    "prior.objective_args={symbol_information: 5, symbol_information_encoder: 0, "
                                    "symbol_balance: 0.5}"])
    obj = build_objective("mle", **ok.prior.objective_args)
    assert (obj.symbol_information, obj.encoder_information, obj.symbol_balance) == (5.0, 0.0, 0.5)
    assert build_objective("mle", symbol_information=5.0).encoder_information == 5.0  # the default: the same weight
    with pytest.raises(ConfigError, match="symbol_balance.*needs symbols"):
        apply_overrides(Recipe(), ["prior.objective_args={symbol_balance: 0.5}"])
    with pytest.raises(ConfigError, match="symbol_balance.*number >= 0"):
        apply_overrides(Recipe(), ["prior.kind=symbol_vector", "prior.objective_args={symbol_balance: -1}"])
    with pytest.raises(ConfigError, match="symbol_information_encoder.*model.encoder"):
        apply_overrides(Recipe(), ["prior.kind=symbol_vector",
                                   "prior.objective_args={symbol_information: 1, symbol_information_encoder: 1}"])
