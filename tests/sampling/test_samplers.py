"""Samplers against known answers: moments of a correlated 2-D Gaussian, MALA's exactness, mode visits.

Tolerances are statistical: k standard errors of the estimator (chains are independent) plus, for the
unadjusted samplers, an allowance for their O(step^2) discretization bias.
"""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from textebm.sampling import (MALA, SAMPLERS, SGHMC, SVGD, ChainConfig, Langevin, PersistentChains,
                              SamplerDivergedError, get_sampler, langevin, mala, sghmc, svgd, svgd_direction)


MEAN = torch.tensor([1.0, -0.5])
COV = torch.tensor([[1.0, 0.6], [0.6, 0.8]])
PREC = torch.linalg.inv(COV)


def gauss_log_prob(z):
    d = z - MEAN
    return -0.5 * ((d @ PREC) * d).sum(-1)


def assert_moments(z, mean=MEAN, cov=COV, k=4.5, bias=0.0):
    """Sample mean and covariance within k standard errors (+ bias * scale) of the truth."""
    n = z.shape[0]
    m_hat = z.mean(0)
    c_hat = torch.cov(z.T)
    sd = cov.diagonal().sqrt()
    se_mean = sd / math.sqrt(n)
    assert torch.all((m_hat - mean).abs() <= k * se_mean + bias * sd), (m_hat, mean)
    se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov ** 2) / n).sqrt()
    scale = sd[:, None] * sd[None, :]
    assert torch.all((c_hat - cov).abs() <= k * se_cov + bias * scale), (c_hat, cov)


# ---- Gaussian targets ------------------------------------------------------------------------------------
def test_langevin_small_step_long_chains_match_gaussian():
    g = torch.Generator().manual_seed(1)
    z0 = torch.randn(1500, 2, generator=g)
    # s = 0.15: the stationary covariance of unadjusted Langevin is off by < 2% here
    z = ChainConfig(Langevin(), 500, 0.15).run(gauss_log_prob, z0, generator=g).z
    assert_moments(z, bias=0.03)


def test_sghmc_matches_gaussian():
    g = torch.Generator().manual_seed(2)
    z0 = torch.randn(1500, 2, generator=g)
    out = ChainConfig(SGHMC(friction=0.1), 500, 0.01).run(gauss_log_prob, z0, generator=g)
    assert out.stats["velocity"].shape == z0.shape
    assert_moments(out.z, bias=0.03)


def test_sghmc_with_unit_friction_is_langevin():
    """beta = 1 forgets the momentum: z <- z + delta grad + sqrt(2 delta) eps, Langevin with s^2/2 = delta."""
    z0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    a = sghmc(gauss_log_prob, z0, 20, 0.02, friction=1.0, generator=torch.Generator().manual_seed(5)).z
    b = langevin(gauss_log_prob, z0, 20, math.sqrt(0.04), generator=torch.Generator().manual_seed(5)).z
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_mala_matches_gaussian_and_reports_acceptance():
    g = torch.Generator().manual_seed(3)
    z0 = torch.randn(1500, 2, generator=g)
    out = ChainConfig(MALA(), 150, 0.8).run(gauss_log_prob, z0, generator=g)
    assert_moments(out.z)
    acc = out.stats["accept_rate"]
    assert 0.4 < acc < 0.95
    assert len(out.stats["accept_rate_per_step"]) == 150
    assert out.stats["accept_rate_per_chain"].shape == (1500,)
    assert abs(float(out.stats["accept_rate_per_chain"].mean()) - acc) < 1e-6


def test_mala_tiny_step_accepts_nearly_everything():
    g = torch.Generator().manual_seed(4)
    out = mala(gauss_log_prob, torch.randn(500, 2, generator=g), 20, 0.01, generator=g)
    assert out.stats["accept_rate"] > 0.995
    # and a huge step is nearly always rejected
    out = mala(gauss_log_prob, torch.randn(500, 2, generator=g), 20, 20.0, generator=g)
    assert out.stats["accept_rate"] < 0.05


def test_mala_is_exact_in_law_where_unadjusted_langevin_is_biased():
    """Started in the target, MALA with a large step keeps the target exactly; ULA with the same step does not.

    For a Gaussian with precision eigenvalue lam, ULA's stationary variance is 1 / (lam (1 - s^2 lam / 4)):
    with s = 1 that is 1.8x too large in the tight direction here.
    """
    g = torch.Generator().manual_seed(5)
    L = torch.linalg.cholesky(COV)
    z0 = MEAN + torch.randn(3000, 2, generator=g) @ L.T
    z = mala(gauss_log_prob, z0, 30, 1.0, generator=g).z
    assert_moments(z)
    # whitened squared radius ~ chi^2(2) under the target
    d = z - MEAN
    r2 = ((d @ PREC) * d).sum(-1).numpy()
    assert stats.kstest(r2, stats.chi2(2).cdf).pvalue > 1e-3
    # the check has power: ULA at the same step is far off
    z_ula = langevin(gauss_log_prob, z0, 30, 1.0, generator=g).z
    rel = (torch.cov(z_ula.T) - COV).abs().max() / COV.abs().max()
    assert rel > 0.3


def test_mala_adapts_step_toward_target_acceptance():
    g = torch.Generator().manual_seed(6)
    out = mala(gauss_log_prob, torch.randn(400, 2, generator=g), 200, 5.0, adapt=True, target_accept=0.574,
               adapt_rate=0.1, generator=g)
    late = float(np.mean(out.stats["accept_rate_per_step"][-50:]))
    assert abs(late - 0.574) < 0.12
    assert out.stats["step_size"] < 5.0
    # off by default: the step size is untouched
    assert ChainConfig(MALA(), 5, 0.3).run(gauss_log_prob, torch.zeros(4, 2)).stats["step_size"] == 0.3


def test_svgd_particles_match_gaussian():
    g = torch.Generator().manual_seed(7)
    z0 = torch.randn(200, 2, generator=g)
    out = ChainConfig(SVGD(), 300, 0.2).run(gauss_log_prob, z0)
    # SVGD particles are not independent draws: a fixed relative tolerance (finite-n SVGD under-disperses a bit)
    torch.testing.assert_close(out.z.mean(0), MEAN, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(out.z.T), COV, atol=0.12, rtol=0)
    assert out.stats["bandwidth"] > 0


def test_svgd_direction_matches_the_definition():
    """phi(z_i) = 1/n sum_j [k(z_j, z_i) score_j + grad_{z_j} k(z_j, z_i)], against a loop with autograd."""
    g = torch.Generator().manual_seed(8)
    z = torch.randn(7, 3, generator=g, dtype=torch.float64)
    score = torch.randn(7, 3, generator=g, dtype=torch.float64)
    h = 0.7
    for exclude_self in (False, True):
        phi, h_used = svgd_direction(z, score, bandwidth=h, exclude_self=exclude_self)
        assert h_used == h
        ref = torch.zeros_like(z)
        for i in range(7):
            terms = 0
            for j in range(7):
                if exclude_self and i == j:
                    continue
                zj = z[j].clone().requires_grad_(True)
                k = torch.exp(-(zj - z[i]).pow(2).sum() / h)
                (gk,) = torch.autograd.grad(k, zj)
                ref[i] += k.detach() * score[j] + gk
                terms += 1
            ref[i] /= terms
        torch.testing.assert_close(phi, ref)


def test_svgd_median_bandwidth():
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    _, h = svgd_direction(z, torch.zeros_like(z))
    # pairwise distances 1, 3, sqrt(10): median 3 -> h = 9 / log(4)
    assert h == pytest.approx(9.0 / math.log(4.0))


# ---- a mixture of well-separated Gaussians: persistent chains ----------------------------------------------
MODES = torch.tensor([[3.0, 3.0], [-3.0, 3.0], [-3.0, -3.0], [3.0, -3.0]])
MODE_SD = 0.4


def mixture_log_prob(z):
    d = (z[:, None, :] - MODES[None]).pow(2).sum(-1)
    return torch.logsumexp(-d / (2 * MODE_SD ** 2), 1)


def mode_counts(z):
    d = (z[:, None, :] - MODES[None]).pow(2).sum(-1).sqrt()
    dmin, k = d.min(1)
    return torch.bincount(k[dmin < 3 * MODE_SD], minlength=len(MODES))


def test_persistent_chains_with_reinit_visit_every_mode():
    g = torch.Generator().manual_seed(9)
    inner = ChainConfig(Langevin(), 15, 0.15)
    # start every chain in mode 0: without re-initialization Langevin never leaves it ...
    at_mode0 = lambda n, gen: MODES[0] + MODE_SD * torch.randn(n, 2, generator=gen)  # noqa: E731
    stuck = PersistentChains(inner, n_chains=400, reinit=0.0, init=at_mode0)
    for _ in range(30):
        stuck.sample(mixture_log_prob, batch_size=100, generator=g)
    assert (mode_counts(stuck.buffer) > 0).sum() == 1
    # ... with 10% re-initialization from N(0, 3^2 I) the buffer spreads over all four modes
    pc = PersistentChains(inner, n_chains=400, reinit=0.1, sigma0=3.0, init=None, dim=2)
    pc.buffer = at_mode0(400, g)
    seen = torch.zeros(4, dtype=torch.long)
    n_re = 0
    for _ in range(60):
        out = pc.sample(mixture_log_prob, torch.empty(100, 2), generator=g)
        seen += mode_counts(out.z)
        n_re += out.stats["n_reinit"]
    assert torch.all(seen > 0), seen
    assert torch.all(mode_counts(pc.buffer) >= 10), mode_counts(pc.buffer)
    assert 0.05 < n_re / 6000 < 0.15
    # saved and restored
    state = pc.state_dict()
    pc2 = PersistentChains(inner, n_chains=400, reinit=0.1)
    pc2.load_state_dict(state)
    torch.testing.assert_close(pc2.buffer, pc.buffer)
    assert pc2.n_calls == pc.n_calls == 60
    with pytest.raises(ValueError, match="chains"):
        PersistentChains(inner, n_chains=10).load_state_dict(state)


def test_persistent_chains_drop_in_for_any_sampler():
    g = torch.Generator().manual_seed(10)
    for sampler in (Langevin(), SGHMC(), MALA(), SVGD()):
        pc = PersistentChains(ChainConfig(sampler, 3, 0.05), n_chains=50, reinit=0.5)
        out = pc.sample(gauss_log_prob, torch.zeros(20, 2), generator=g)
        assert out.z.shape == (20, 2)
        torch.testing.assert_close(pc.buffer[out.stats["indices"]], out.z)


# ---- interface -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_registry_builds_and_reproduces_with_a_generator(name):
    s = ChainConfig(get_sampler(name), 5, 0.05)
    z0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    a = s.run(gauss_log_prob, z0, generator=torch.Generator().manual_seed(1), trace=True, snapshot_every=2)
    b = s.run(gauss_log_prob, z0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.z, b.z)
    assert len(a.trace) == 6
    assert [k for k, _ in a.snapshots] == [0, 2, 4, 5]
    assert not torch.equal(a.z, z0)


def test_registry_errors_list_the_valid_choices():
    with pytest.raises(ValueError, match="langevin.*mala.*sghmc.*svgd|'langevin', 'mala', 'sghmc', 'svgd'"):
        get_sampler("hmc")
    with pytest.raises(ValueError, match="friction"):
        get_sampler("sghmc", frictoin=0.2)


@pytest.mark.parametrize("fn", [sghmc, mala, svgd])
def test_nan_guard(fn):
    bad = lambda z: torch.full((z.shape[0],), float("nan")) + z.sum(-1)  # noqa: E731
    with pytest.raises(SamplerDivergedError):
        fn(bad, torch.zeros(4, 2), 3, 0.1)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_leave_parameter_gradients_alone(name):
    w = torch.nn.Parameter(torch.tensor(1.5))
    lp = lambda z: -w * z.pow(2).sum(-1)  # noqa: E731
    ChainConfig(get_sampler(name), 3, 0.05).run(lp, torch.randn(8, 2))
    assert w.grad is None
