"""Prior-fit diagnostics against known answers: the MMD of Gaussians in closed form, a calibrated permutation
test, and a model whose aggregate posterior is known, with a prior fitted to it and one that is not."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from textebm.data import WordVocab
from textebm.eval.prior_fit import gaussian_mmd2, mmd_test, prior_fit
from textebm.model import LatentEBMModel
from textebm.prior import LatentEBMPrior
from textebm.sampling import ChainConfig, Langevin


def test_mmd_is_unbiased_for_gaussians_with_a_closed_form():
    d, h = 3, 2.0
    shift = torch.tensor([0.6, 0.0, -0.3])
    want = gaussian_mmd2([0, 0, 0], 1.0, shift.tolist(), 1.5, h)
    g = torch.Generator().manual_seed(0)
    est = [mmd_test(torch.randn(200, d, generator=g), shift + 1.5 ** 0.5 * torch.randn(200, d, generator=g),
                    bandwidth=h, permutations=0)["mmd2"] for _ in range(30)]
    mean = sum(est) / len(est)
    se = (sum((e - mean) ** 2 for e in est) / (len(est) - 1) / len(est)) ** 0.5
    assert want > 0.02 and abs(mean - want) < 3 * se + 1e-4, (mean, want, se)
    # equal distributions: the population value is exactly 0, and so is the estimator's mean
    assert gaussian_mmd2([0, 0, 0], 1.0, [0, 0, 0], 1.0, h) == 0.0
    null = [mmd_test(torch.randn(200, d, generator=g), torch.randn(200, d, generator=g), bandwidth=h,
                     permutations=0)["mmd2"] for _ in range(30)]
    m0 = sum(null) / len(null)
    se0 = (sum((e - m0) ** 2 for e in null) / (len(null) - 1) / len(null)) ** 0.5
    assert abs(m0) < 3 * se0 + 1e-5, (m0, se0)


def test_the_permutation_p_value_is_calibrated_and_detects_a_shift():
    g = torch.Generator().manual_seed(1)
    pvals = [mmd_test(torch.randn(60, 2, generator=g), torch.randn(60, 2, generator=g), permutations=99,
                      generator=g)["p_value"] for _ in range(40)]
    # under the null the p-value is uniform on {0.01, ..., 1}: about 10% of them below 0.1
    assert sum(p <= 0.1 for p in pvals) <= 10 and 0.35 < sum(pvals) / len(pvals) < 0.65, pvals
    shifted = mmd_test(torch.randn(100, 2, generator=g), 0.8 + torch.randn(100, 2, generator=g),
                       permutations=199, generator=g)
    assert shifted["p_value"] <= 0.01 and shifted["mmd2"] > 0.05


# ---- a model whose aggregate posterior is known ---------------------------------------------------------------
class SignDecoder(nn.Module):
    """Sentences of d tokens, token i ``a`` with probability sigmoid(kappa z_i), else ``b``; decoding writes the
    sign pattern of z (whatever the rule), so a code decodes to ``a a a a`` exactly when all its coordinates are
    positive."""

    pad_id, unk_id, bos_id, eos_id, A, B = 0, 1, 2, 3, 4, 5

    def __init__(self, d, kappa=4.0):
        super().__init__()
        self.latent_dim, self.kappa = d, kappa

    def log_prob(self, x, z):
        s = (x[:, 1:1 + self.latent_dim] == self.A).to(z.dtype) * 2 - 1
        return F.logsigmoid(s * self.kappa * z).sum(-1)

    def generate(self, z, max_len=40, greedy=False, **kw):
        return [row[:max_len] + [self.eos_id] for row in torch.where(z > 0, self.A, self.B).tolist()]


def _sign_model(tilt: float, d: int = 4) -> LatentEBMModel:
    """Prior exp(f(z)) N(0, I) with a linear f(z) = tilt * sum(z): exactly N(tilt * 1, I)."""
    prior = LatentEBMPrior(d, n_layers=0)
    with torch.no_grad():
        prior.net[0].weight.fill_(tilt)
        prior.net[0].bias.zero_()
    vocab = WordVocab(["<pad>", "<unk>", "<s>", "</s>", "a", "b"])
    model = LatentEBMModel(prior, SignDecoder(d), tokenizer=vocab)
    model.posterior_chain = ChainConfig(Langevin(), 300, 0.2, name="posterior langevin")  # converges here
    return model


def test_the_prior_fit_tells_a_prior_fitted_to_the_aggregate_posterior_from_n01():
    """Every sentence is ``a a a a``: the aggregate posterior puts nearly all its mass on the positive orthant.
    A prior N(3 * 1, I) covers it (the fraction of its codes that decode to the data is Phi(3)^4 = 0.99); N(0, I)
    does not (1/16 of its codes decode to the data)."""
    data = [[2, 4, 4, 4, 4, 3]] * 100
    judge = lambda sents: {"grammatical": sum(s == "a a a a" for s in sents) / len(sents)}  # noqa: E731
    fitted = prior_fit(_sign_model(3.0), data, n=200, judges=[judge], seed=0, permutations=99)
    plain = prior_fit(_sign_model(0.0), data, n=200, judges=[judge], seed=0, permutations=99)
    phi3 = 0.5 * (1 + math.erf(3 / math.sqrt(2)))
    assert fitted["prior_decode_grammatical"] == pytest.approx(phi3 ** 4, abs=0.03)
    assert fitted["posterior_decode_grammatical"] > 0.97
    assert fitted["ratio_decode_grammatical"] > 0.95 and fitted["ratio_greedy_grammatical"] > 0.95
    assert plain["prior_decode_grammatical"] == pytest.approx(1 / 16, abs=0.05)
    assert plain["ratio_decode_grammatical"] < 0.2
    assert plain["reference_decode_grammatical"] == pytest.approx(1 / 16, abs=0.05)  # the reference is N(0, I)
    assert plain["mmd_p"] <= 0.01 and plain["mmd2"] > 5 * fitted["mmd2"]
    assert plain["nn_prior"] > fitted["nn_prior"]
    # f = 3 sum(z): the gap is 3 * 4 * (E[z_i | posterior] - E[z_i | prior]) = 12 phi(3) / Phi(3) = 0.05 (a
    # truncation of N(3, 1) at 0), measured with the noise of 100 + 200 codes (standard error about 0.7)
    assert abs(fitted["f_gap"]) < 2.5 and plain["f_gap"] == 0.0
    assert "protocol" in fitted and fitted["n"] == 100
