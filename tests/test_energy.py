"""The energy base class: references (standard, flat, fitted to samples) with exact densities and normalizers,
configs captured from constructor arguments, and log Z of a fitted reference in closed form."""

import pytest
import torch

from textebm.energy import Energy, captures_config, mlp
from textebm.objectives import DataEBM
from textebm.prior import GaussianPrior, LatentEBMPrior, build_prior


def test_a_fitted_reference_follows_the_moments_of_its_samples():
    prior = GaussianPrior(3, reference="fitted", reference_momentum=0.9)
    assert torch.equal(prior.ref_mean, torch.zeros(3)) and torch.equal(prior.ref_log_std, torch.zeros(3))
    g = torch.Generator().manual_seed(0)
    mean, std = torch.tensor([3.0, -1.0, 0.5]), torch.tensor([0.4, 2.0, 1.0])
    for _ in range(200):
        prior.update_reference(mean + std * torch.randn(256, 3, generator=g))
    torch.testing.assert_close(prior.ref_mean, mean, atol=0.05, rtol=0)
    torch.testing.assert_close(prior.ref_log_std.exp(), std, atol=0.0, rtol=0.05)
    # the density is exactly that Gaussian, normalized; draws come from it; the score is its gradient
    z = torch.randn(10, 3, generator=g)
    ref = torch.distributions.Normal(prior.ref_mean, prior.ref_log_std.exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(prior.log_prob(z), ref)
    draws = prior.sample(20000, generator=g)
    torch.testing.assert_close(draws.mean(0), prior.ref_mean, atol=0.05, rtol=0)
    z.requires_grad_(True)
    (auto,) = torch.autograd.grad(prior.log_prob(z).sum(), z)
    torch.testing.assert_close(prior.score(z), auto)
    # a standard reference ignores updates
    plain = GaussianPrior(3)
    plain.update_reference(torch.randn(8, 3))
    assert not hasattr(plain, "ref_mean")


def test_log_z_of_a_linear_tilt_of_a_fitted_reference_is_the_gaussian_mgf():
    """f(z) = a.z + b on N(m, diag s^2): Z = E[exp f] = exp(b + a.m + sum a^2 s^2 / 2), and p_alpha is
    N(m + s^2 a, diag s^2)."""
    prior = LatentEBMPrior(2, n_layers=0, reference="fitted")
    a, b = torch.tensor([0.7, -0.4]), 0.3
    with torch.no_grad():
        prior.net[0].weight.copy_(a[None])
        prior.net[0].bias.fill_(b)
        prior.ref_mean.copy_(torch.tensor([2.0, -1.0]))
        prior.ref_log_std.copy_(torch.log(torch.tensor([0.5, 1.5])))
    s2 = torch.tensor([0.25, 2.25])
    want = b + float(a @ prior.ref_mean) + float((a ** 2 * s2).sum()) / 2
    est, se = prior.log_partition_ais(n_chains=2000, n_temps=100, generator=torch.Generator().manual_seed(1))
    assert abs(est - want) < 4 * se + 0.01, (est, want, se)
    mc, mc_se = prior.log_partition(200_000, generator=torch.Generator().manual_seed(2))
    assert abs(mc - want) < 4 * mc_se + 0.01
    # normalized with that log Z, the density is the shifted Gaussian's
    z = torch.randn(6, 2)
    ref = torch.distributions.Normal(prior.ref_mean + s2 * a, s2.sqrt()).log_prob(z).sum(-1)
    torch.testing.assert_close(prior.log_prob(z, want), ref, atol=1e-5, rtol=0)


def test_configs_are_the_constructor_arguments_and_rebuild_the_model():
    p = LatentEBMPrior(4, hidden=7, f_clamp=3.0, reference="fitted")
    assert p.config == {"kind": "ebm", "latent_dim": 4, "hidden": 7, "n_layers": 2, "activation": "leaky_relu",
                        "negative_slope": 0.2, "sigma0": 1.0, "f_clamp": 3.0, "reference": "fitted",
                        "reference_momentum": 0.99}
    again = build_prior(**p.config)
    assert [t.shape for t in again.state_dict().values()] == [t.shape for t in p.state_dict().values()]
    assert GaussianPrior(5, 2.0).config == {"kind": "gaussian", "latent_dim": 5, "sigma0": 2.0,
                                            "reference": "gaussian", "reference_momentum": 0.99}
    assert DataEBM(3, hidden=8).config["dim"] == 3


def test_every_energy_is_one_density_with_the_sign_convention():
    """log_prob_unnormalized = f + log p0; energy is exactly its negative; the score is its gradient."""
    torch.manual_seed(0)
    for model in (LatentEBMPrior(3, hidden=8), GaussianPrior(3, sigma0=2.0), DataEBM(3, hidden=8),
                  DataEBM(3, hidden=8, reference="flat")):
        z = torch.randn(5, 3)
        lp = model.log_prob_unnormalized(z)
        torch.testing.assert_close(lp, model.f(z) + model.log_reference(z))
        torch.testing.assert_close(model.energy(z), -lp)
        zz = z.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model.log_prob_unnormalized(zz).sum(), zz)
        torch.testing.assert_close(model.score(z), g)
    assert GaussianPrior(3).fixed and not LatentEBMPrior(3).fixed


def test_a_user_energy_needs_only_f():
    class Quadratic(Energy):
        kind = "quadratic"

        @captures_config
        def __init__(self, dim: int, center: float = 1.0):
            super().__init__()
            self.dim, self.center = dim, center
            self._init_reference("gaussian")
            self.net = mlp(dim, 4, 1)  # unused: a parameter so that the device is known

        def f(self, z):
            return -(z - self.center).pow(2).sum(-1) / 2  # with N(0, I): N(c / 2, I / 2)

    q = Quadratic(2, center=2.0)
    assert q.config == {"kind": "quadratic", "dim": 2, "center": 2.0}
    from textebm.sampling import ChainConfig, Langevin

    z = q.sample(4000, ChainConfig(Langevin(), 300, 0.3), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), torch.full((2,), 1.0), atol=0.05, rtol=0)
    assert z.var(0).mean().item() == pytest.approx(0.5, rel=0.1)  # (unadjusted Langevin: +1% at s = 0.3)
