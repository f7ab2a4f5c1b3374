"""The prior and short-run Langevin against known answers (Gaussian targets, analytic scores, log Z)."""
import math

import pytest
import torch

from textebm.prior import LatentEBMPrior
from textebm.sampling import PRIOR_CHAIN, SamplerDivergedError, langevin


def STD_NORMAL(z):
    return -0.5 * z.pow(2).sum(-1)


def linear_prior(d=3, sigma0=1.0, seed=0):
    """n_layers=0 gives f(z) = w.z + b, so p_alpha = N(sigma0^2 w, sigma0^2 I) exactly."""
    torch.manual_seed(seed)
    prior = LatentEBMPrior(d, n_layers=0, sigma0=sigma0)
    with torch.no_grad():
        prior.net[0].weight.copy_(torch.tensor([[0.8, -0.5, 0.3][:d]]))
        prior.net[0].bias.fill_(0.7)
    return prior


def test_langevin_gaussian_moments_match_ula_stationary_law():
    """ULA on N(mu, sigma^2 I) with step s has stationary mean mu and variance 2 sigma^2 / (2 - s^2 / (2 sigma^2))."""
    sigma0, s = 1.5, 0.3
    prior = linear_prior(sigma0=sigma0)
    w = prior.net[0].weight.detach()[0]
    mu = sigma0 ** 2 * w
    g = torch.Generator().manual_seed(1)
    n = 6000
    z0 = prior.sample_reference(n, generator=g)
    z = langevin(prior.log_prob_unnormalized, z0, n_steps=600, step_size=s, generator=g).z
    a = s ** 2 / (2 * sigma0 ** 2)
    var_ula = 2 * sigma0 ** 2 / (2 - a)
    se_mean = math.sqrt(var_ula / n)
    assert torch.allclose(z.mean(0), mu, atol=4 * se_mean), (z.mean(0), mu)
    se_var = var_ula * math.sqrt(2 / (n - 1))
    assert torch.allclose(z.var(0), torch.full((3,), var_ula), atol=4 * se_var), (z.var(0), var_ula)


def test_langevin_quadratic_tilt_changes_variance():
    """f(z) = -c |z|^2 / 2 with sigma0 = 1 gives N(0, 1 / (1 + c)); a 1/z Gaussian term would not."""
    class Quad(LatentEBMPrior):
        def f(self, z):
            return -1.5 * z.pow(2).sum(-1)  # c = 3

    prior = Quad(2)
    g = torch.Generator().manual_seed(0)
    s = 0.1
    z = langevin(prior.log_prob_unnormalized, prior.sample_reference(8000, generator=g), 400, s, generator=g).z
    prec = 4.0
    a = s ** 2 * prec / 2
    var = 2 / prec / (2 - a)  # ULA's stationary variance for precision 4
    assert abs(z.var(0).mean().item() - var) < 0.05 * var
    assert z.mean(0).abs().max() < 0.02


def test_noise_off_is_gradient_ascent_to_the_mode():
    prior = linear_prior()
    w = prior.net[0].weight.detach()[0]
    z = langevin(prior.log_prob_unnormalized, torch.zeros(5, 3), 300, 0.5, noise=False).z
    assert torch.allclose(z, w.expand(5, 3), atol=1e-4)


def test_score_matches_autograd_and_analytic_gaussian_term():
    prior = linear_prior(sigma0=0.7)
    z = torch.randn(7, 3)
    w = prior.net[0].weight.detach()[0]
    assert torch.allclose(prior.score(z), w - z / 0.7 ** 2, atol=1e-6)
    torch.manual_seed(0)
    mlp = LatentEBMPrior(5, hidden=32, sigma0=2.0)
    z = torch.randn(11, 5, requires_grad=True)
    (auto,) = torch.autograd.grad(mlp.log_prob_unnormalized(z).sum(), z)
    assert torch.allclose(mlp.score(z), auto, atol=1e-6)
    (fgrad,) = torch.autograd.grad(mlp.f(z).sum(), z)
    assert torch.allclose(mlp.score(z) - fgrad, -z.detach() / 4.0, atol=1e-6)


def test_log_partition_matches_closed_form():
    """Z = E_{N(0, s^2 I)}[exp(w.z + b)] = exp(b + s^2 |w|^2 / 2)."""
    prior = linear_prior(sigma0=1.0)
    w = prior.net[0].weight.detach()[0]
    exact = 0.7 + 0.5 * float(w.pow(2).sum())
    est, se = prior.log_partition(200_000, generator=torch.Generator().manual_seed(0))
    assert 0 < se < 0.01
    assert abs(est - exact) < 4 * se + 1e-3


def test_normalized_log_prob_integrates_to_one_in_1d():
    torch.manual_seed(0)
    prior = LatentEBMPrior(1, hidden=16)
    log_z, _ = prior.log_partition(400_000, generator=torch.Generator().manual_seed(1))
    grid = torch.linspace(-9, 9, 20001).unsqueeze(1)
    with torch.no_grad():
        mass = torch.trapezoid(prior.log_prob(grid, log_z).exp(), grid.squeeze(1))
    assert abs(float(mass) - 1.0) < 0.01


def test_sampling_accumulates_no_parameter_gradients():
    torch.manual_seed(0)
    prior = LatentEBMPrior(4, hidden=16)
    prior.sample(32, PRIOR_CHAIN.replace(n_steps=5))
    assert all(p.grad is None for p in prior.parameters())


def test_trace_snapshots_and_determinism():
    prior = linear_prior()
    z0 = torch.zeros(50, 3)
    a = langevin(prior.log_prob_unnormalized, z0, 20, 0.3, trace=True, snapshot_every=5,
                 generator=torch.Generator().manual_seed(3))
    b = langevin(prior.log_prob_unnormalized, z0, 20, 0.3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.z, b.z)
    assert len(a.trace) == 21 and [s for s, _ in a.snapshots] == [0, 5, 10, 15, 20]
    c = langevin(prior.log_prob_unnormalized, z0, 20, 0.3, noise=False, trace=True)
    assert all(u < v for u, v in zip(c.trace, c.trace[1:]))  # without noise each step climbs toward the mode
    assert torch.equal(z0, torch.zeros(50, 3))  # start not modified


def test_divergence_raises_naming_sampler_and_step():
    def exploding(z):
        return 1e30 * z.pow(4).sum(-1)

    with pytest.raises(SamplerDivergedError, match=r"langevin sampler diverged at step \d+"):
        langevin(exploding, torch.ones(4, 2), 50, 1.0)


def test_bad_shapes_are_reported():
    prior = LatentEBMPrior(4)
    with pytest.raises(ValueError, match=r"shape \(batch, 4\)"):
        prior.f(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="batch, dim"):
        langevin(prior.log_prob_unnormalized, torch.zeros(4), 3, 0.1)


def test_ais_log_partition_matches_closed_forms_where_plain_monte_carlo_fails():
    """f(z) = -lam |z - mu|^2 / 2 under N(0, I): Z = (1 + lam)^(-d/2) exp(-lam |mu|^2 / (2 (1 + lam))). With a
    narrow, off-centre f plain Monte Carlo under p0 misses the mass; AIS gets it within a few standard errors."""
    import math

    from textebm.prior import ais_log_partition, log_mean_exp_se

    d, lam = 4, 40.0
    mu = torch.full((d,), 1.5)
    f = lambda z: -lam * (z - mu).pow(2).sum(-1) / 2  # noqa: E731
    exact = -0.5 * d * math.log(1 + lam) - lam * mu.pow(2).sum().item() / (2 * (1 + lam))
    g = torch.Generator().manual_seed(0)
    est, se = ais_log_partition(f, torch.randn(2000, d, generator=g), STD_NORMAL, n_temps=200, generator=g)
    assert abs(est - exact) < max(4 * se, 0.15), (est, se, exact)
    mc, _ = log_mean_exp_se(f(torch.randn(20000, d, generator=g)))
    assert mc < exact - 1.0  # what plain Monte Carlo would have said
    # a linear f: Z = exp(|a|^2 / 2), and the prior's own method on an MLP agrees with plain MC where MC is fine
    a = torch.tensor([0.5, -0.3, 0.2, 0.0])
    est, se = ais_log_partition(lambda z: z @ a, torch.randn(1000, d, generator=g), STD_NORMAL, n_temps=50,
                                generator=g)
    assert abs(est - a.pow(2).sum().item() / 2) < max(4 * se, 0.02)
    prior = LatentEBMPrior(d, hidden=16)
    ais, ais_se = prior.log_partition_ais(n_chains=1000, n_temps=50, generator=g)
    mc, mc_se = prior.log_partition(n_samples=100_000, generator=g)
    assert abs(ais - mc) < 4 * (ais_se + mc_se) + 0.01
