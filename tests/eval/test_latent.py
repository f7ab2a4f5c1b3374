"""Latent-usage diagnostics (textebm.eval.latent) against known answers.

* MI and active units on exact posterior samples of linear-Gaussian models (closed-form MI);
* end to end through ``latent_diagnostics`` with real posterior Langevin chains: a decoder that ignores z reads
  ~0 everywhere, a decoder that copies sign(z) into its tokens reads the known MI, KL and log p(x);
* BLEU and token accuracy on hand-computed examples.
"""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from textebm.data import WordVocab
from textebm.decoders import LSTMDecoder
from textebm.eval.latent import (active_units, corpus_bleu, latent_diagnostics, latent_diagnostics_for_sentences,
                                 mutual_information, random_derangement, reconstruction,
                                 reconstruction_scores, shuffled_latent_gap)
from textebm.model import LatentEBMModel
from textebm.eval.likelihood import posterior_chains
from textebm.prior import GaussianPrior, LatentEBMPrior
from textebm.sampling import POSTERIOR_CHAIN


# ---- linear-Gaussian models: exact posteriors, closed-form MI ------------------------------------------------
def linear_gaussian(N, C, w, D=8, sigma=1.0, seed=0):
    """z ~ N(0, I_d), x = W z + sigma eps with W = Q diag(w) (orthonormal Q, so W^T W = diag(w^2) and the posterior
    N(S W^T x / sigma^2, S), S = (I + W^T W / sigma^2)^-1, is diagonal). Returns C exact posterior samples per
    x (N, C, d) and I(x; z) = 0.5 log det(I + W^T W / sigma^2)."""
    g = torch.Generator().manual_seed(seed)
    d = len(w)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    W = Q[:, :d] * torch.tensor(w, dtype=torch.float64)
    z = torch.randn(N, d, generator=g, dtype=torch.float64)
    x = z @ W.T + sigma * torch.randn(N, D, generator=g, dtype=torch.float64)
    prec = 1 + torch.tensor(w, dtype=torch.float64) ** 2 / sigma ** 2
    mean = (x @ W) / sigma ** 2 / prec
    zs = mean[:, None] + prec.rsqrt() * torch.randn(N, C, d, generator=g, dtype=torch.float64)
    return zs.float(), 0.5 * float(torch.log(prec).sum())


W_USED = [math.sqrt(3.0), math.sqrt(7.0), 0.0, 0.0, 0.0, 0.0]  # I = 0.5 (log 4 + log 8) = 1.733 nats
W_ZERO = [0.0] * 6


@pytest.mark.parametrize("C, seed", [(8, 0), (16, 1)])
def test_mi_matches_closed_form_on_linear_gaussian(C, seed):
    z, true = linear_gaussian(1500, C, W_USED, seed=seed)
    assert 1.5 < true < 2.5
    r = mutual_information(z)
    # Tolerance: 3 standard errors (mi_se ~0.024 here) + 0.02 for the known remaining bias. The corrections
    # leave second-order and O(1/N) terms: over 30 replications of the C = 8 setting the mean error was
    # -0.004 +- 0.004 with a spread of 0.023 (= mi_se); a d = 16 analogue with N = 1000 showed +0.045 +- 0.005.
    assert abs(r["mi"] - true) < 3 * r["mi_se"] + 0.02, (r, true)
    assert r["n"] == 1500 and r["mi_max"] == pytest.approx(math.log(1500)) and r["n_folds"] == C
    # the two uncorrected estimators are off by far more than that, in the directions their docstring gives
    assert mutual_information(z, estimator="in_sample")["mi"] > true + 0.3
    assert mutual_information(z, estimator="cross_fitted")["mi"] < true - 0.4


def test_mi_of_an_unused_latent_is_zero():
    C, d = 8, 6
    z, true = linear_gaussian(1500, C, W_ZERO, seed=2)
    assert true == 0.0
    r = mutual_information(z)
    assert abs(r["mi"]) < 3 * r["mi_se"] + 0.01 and abs(r["mi"]) < 0.04, r   # reads 0.0007 +- 0.009
    # in-sample: biased up by at least (d/2) log(1 + 1/C) (0.35 here; it reads 0.86); plain held-out reads -1.6
    assert mutual_information(z, estimator="in_sample")["mi"] > d / 2 * math.log(1 + 1 / C)
    assert mutual_information(z, estimator="cross_fitted")["mi"] < -1.0
    r2 = mutual_information(z, n_eval=2)
    assert r2["n_folds"] == 4 and abs(r2["mi"]) < 0.05
    with pytest.raises(ValueError, match="chains"):
        mutual_information(z[:, :2])
    with pytest.raises(ValueError, match="estimator"):
        mutual_information(z, estimator="exact")


def test_active_units_are_the_nonzero_columns():
    z, _ = linear_gaussian(1500, 8, W_USED, seed=3)
    au = active_units(z)
    assert au["active_units"] == 2 and au["active_fraction"] == pytest.approx(2 / 6)
    active = [u for u in range(6) if au["variance"][u] > au["threshold"] and au["p_value"][u] < au["alpha"]]
    assert active == [0, 1]
    # Cov_x(E[z_u | x]) = w_u^2 / (1 + w_u^2) = 0.75, 0.875; 0 for the unused dimensions
    assert au["variance"][0] == pytest.approx(0.75, abs=0.08) and au["variance"][1] == pytest.approx(0.875, abs=0.08)
    assert max(abs(v) for v in au["variance"][2:]) < 0.02
    # without the correction every dimension looks active: chain means of N(0, 1) posteriors vary by 1/C = 0.125
    assert au["active_units_uncorrected"] == 6
    assert au["variance_uncorrected"][4] == pytest.approx(1 / 8, abs=0.03)
    z0, _ = linear_gaussian(1500, 8, W_ZERO, seed=4)
    none = active_units(z0)
    assert none["active_units"] == 0 and none["active_units_uncorrected"] == 6
    json.dumps(au, allow_nan=False)


# ---- tiny decoders -------------------------------------------------------------------------------------------
class SignDecoder(nn.Module):
    """Sentences of d tokens: token i is ``a`` with probability sigmoid(kappa z_i), else ``b``.

    x = [<s>, t_1, .., t_d, </s>], log p(x | z) = sum_i log sigmoid(+-kappa z_i); greedy decoding writes sign(z).
    Under z ~ N(0, I) every sign pattern has p(x) = 2^-d, and I(x; z) = d (log 2 - E_z h(sigmoid(kappa z))).
    """

    pad_id, unk_id, bos_id, eos_id, A, B = 0, 1, 2, 3, 4, 5

    def __init__(self, d, kappa=4.0):
        super().__init__()
        self.latent_dim = d
        self.kappa = nn.Parameter(torch.tensor(float(kappa)))

    def log_prob(self, x, z):
        s = (x[:, 1:1 + self.latent_dim] == self.A).to(z.dtype) * 2 - 1
        return F.logsigmoid(s * self.kappa * z).sum(-1)

    def generate(self, z, max_len=40, greedy=True, **kw):
        return [row[:max_len] for row in torch.where(z > 0, self.A, self.B).tolist()]


def sign_mi(d, kappa):
    zz = torch.linspace(-10, 10, 40001, dtype=torch.float64)
    p = torch.sigmoid(kappa * zz)
    h = -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))
    pz = torch.exp(-zz ** 2 / 2) / math.sqrt(2 * math.pi)
    return d * (math.log(2) - float((h * pz).sum() * (zz[1] - zz[0])))


def sign_batch(signs):
    n = signs.shape[0]
    return torch.cat([torch.full((n, 1), 2), 4 + signs, torch.full((n, 1), 3)], 1)


@pytest.fixture(scope="module")
def sign_model():
    d = 4
    vocab = WordVocab(["<pad>", "<unk>", "<s>", "</s>", "a", "b"])
    return LatentEBMModel(GaussianPrior(d), SignDecoder(d), tokenizer=vocab)


@pytest.fixture(scope="module")
def sign_data():
    signs = torch.randint(0, 2, (128, 4), generator=torch.Generator().manual_seed(1))
    return sign_batch(signs)


SIGN_SAMPLING = dict(n_chains=8, chain=POSTERIOR_CHAIN.replace(n_steps=100, step_size=0.3))


def test_copy_decoder_reads_clearly_positive_end_to_end(sign_model, sign_data):
    x = sign_data
    out = latent_diagnostics(sign_model, [x[:64], x[64:]], seed=0, **SIGN_SAMPLING)
    json.dumps(out, allow_nan=False)
    for key in ("mi", "mi_se", "active_units", "active_fraction", "shuffle_gap", "recon_nll", "is_nll", "kl",
                "recon_token_acc", "recon_exact", "recon_bleu", "n_sentences", "n_chains"):
        assert key in out and not isinstance(out[key], (list, dict)), key
    d, true_mi = 4, sign_mi(4, 4.0)                    # 1.609 nats
    assert out["n_sentences"] == 128 and out["n_chains"] == 8 and out["log_z"] == 0.0
    # seen: mi 1.58 +- 0.04 (the posteriors are skewed, the fits Gaussian), kl 1.72 +- 0.09, is_nll 2.83 (4 log 2
    # = 2.77), shuffle gap 6.0 nats, 4 active units, token accuracy 0.89, exact 0.57, BLEU 0.73
    assert out["mi"] == pytest.approx(true_mi, abs=0.25)
    assert out["active_units"] == d and out["active_fraction"] == 1.0
    assert out["shuffle_gap"] > 3.0
    assert out["is_nll"] == pytest.approx(d * math.log(2), abs=0.15)   # p(x) = 2^-d exactly
    # E_{z+ ~ p(z|x)} [log p(x|z+)] - log p(x) = KL(p(z|x) || p(z)), whose mean over x ~ p(x) is I(x; z)
    assert out["kl"] == pytest.approx(true_mi, abs=0.35)
    assert out["kl"] == pytest.approx(out["is_nll"] - out["recon_nll"])
    assert out["recon_token_acc"] > 0.8 and out["recon_exact"] > 0.4 and out["recon_bleu"] > 0.5
    # seeded: the same numbers again; the sentence front end encodes to the same batches
    again = latent_diagnostics(sign_model, [x[:64], x[64:]], seed=0, **SIGN_SAMPLING)
    assert again == out
    sents = [" ".join("a" if t == 4 else "b" for t in row[1:-1]) for row in x.tolist()]
    via_text = latent_diagnostics_for_sentences(sign_model, sents, max_sentences=None, batch_size=64, seed=0,
                                                **SIGN_SAMPLING)
    assert via_text["n_input_sentences"] == 128 and via_text["unk_tokens"] == 0
    assert {k: via_text[k] for k in out} == out
    few = latent_diagnostics_for_sentences(sign_model, sents, max_sentences=10, seed=0, **SIGN_SAMPLING)
    assert few["n_sentences"] == 10


def test_decoder_that_ignores_z_reads_zero_end_to_end():
    torch.manual_seed(0)
    d = 4
    dec = LSTMDecoder(20, d, embed_dim=16, hidden_dim=32, dropout_in=0.0, dropout_out=0.0)
    with torch.no_grad():  # z enters through c0 = W_z z + b and through the inputs [emb; z]: cut both
        dec.z_to_c.weight.zero_()
        dec.lstm.weight_ih_l0[:, 16:].zero_()
    model = LatentEBMModel(LatentEBMPrior(d, hidden=16), dec)
    x = torch.randint(4, 20, (128, 8), generator=torch.Generator().manual_seed(2))
    x[:, 0], x[:, -1] = 2, 3
    x[:40, 5:] = torch.tensor([3, 0, 0])  # some shorter, padded sentences
    out = latent_diagnostics(model, [x[:64], x[64:]], n_chains=8, seed=0)  # K1 = 20, s1 = 0.1 by default
    json.dumps(out, allow_nan=False)
    # seen: mi -0.01 +- 0.02, kl 0.02 +- 0.02, log Z = -0.17 (estimated: an EBM prior)
    assert out["n_steps"] == 20 and out["step_size"] == 0.1 and out["log_z"] != 0.0
    assert abs(out["mi"]) < 3 * out["mi_se"] + 0.02
    assert out["active_units"] == 0 and out["active_units_uncorrected"] == d  # the correction matters
    assert abs(out["shuffle_gap"]) < 1e-9      # exactly the same likelihood whatever z
    assert abs(out["kl"]) < 3 * out["kl_se"] + 0.03
    assert out["is_nll"] == pytest.approx(out["recon_nll"], abs=0.1)


# ---- pieces --------------------------------------------------------------------------------------------------
def test_posterior_chains_sample_each_sentences_posterior_independently(sign_model, sign_data):
    """p(z_i | a) ∝ N(z_i; 0, 1) sigmoid(4 z_i) (b: z -> -z): its mean and variance by quadrature; 64 independent
    chains per sentence match them, and the model's train/eval mode is restored."""
    grid = torch.linspace(-8, 8, 16001, dtype=torch.float64)
    w = torch.exp(-grid ** 2 / 2) * torch.sigmoid(4 * grid)
    w /= w.sum()
    mean, var = float((grid * w).sum()), float(((grid - (grid * w).sum()) ** 2 * w).sum())
    sign_model.train()
    x = sign_data[:6]
    z = posterior_chains(sign_model, x, n_chains=256, chain=POSTERIOR_CHAIN.replace(n_steps=300, step_size=0.3),
                         generator=torch.Generator().manual_seed(0))
    assert z.shape == (6, 256, 4) and sign_model.training
    sign_model.eval()
    sign = 1 - 2 * (x[:, 1:5] - 4).double()  # +1 for a, -1 for b
    torch.testing.assert_close(z.mean(1).double() * sign, torch.full((6, 4), mean, dtype=torch.float64), atol=0.1,
                               rtol=0)
    assert z.var(1).mean().item() == pytest.approx(var, rel=0.1)
    # independent chains: the correlation of two chains' states across the 24 coordinates' deviations is ~0
    dev = (z - z.mean(1, keepdim=True)).reshape(-1, 4).double()
    corr = torch.corrcoef(torch.stack([dev[0::256].flatten(), dev[1::256].flatten()]))[0, 1]
    assert abs(float(corr)) < 0.6


def test_derangement_and_shuffled_gap(sign_model):
    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 7, 50):
        pi = random_derangement(n, g)
        assert sorted(pi.tolist()) == list(range(n)) and not bool((pi == torch.arange(n)).any())
    x = sign_batch(torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]))
    z = torch.tensor([[3.0] * 4, [-3.0] * 4])          # each z matches its own sentence's signs
    out = shuffled_latent_gap(sign_model, x, z, generator=g)
    own, other = 4 * F.logsigmoid(torch.tensor(12.0)).item(), 4 * F.logsigmoid(torch.tensor(-12.0)).item()
    assert out["log_lik_matched"] == pytest.approx(own) and out["log_lik_shuffled"] == pytest.approx(other)
    assert out["shuffle_gap"] == pytest.approx(own - other) and out["n"] == 2


def test_corpus_bleu_hand_computed():
    hyps = ["the cat is on the mat today".split(), "a dog".split()]
    refs = ["the cat is on the mat".split(), "a big dog barks".split()]
    # clipped matches / n-grams over the corpus: p1 = (6 + 2) / (7 + 2), p2 = (5 + 0) / (6 + 1), p3 = 4 / 5,
    # p4 = 3 / 4 (the short hypothesis has no 3- and 4-grams); c = 9 < r = 10: BP = exp(1 - 10/9)
    expected = math.exp(1 - 10 / 9) * (8 / 9 * 5 / 7 * 4 / 5 * 3 / 4) ** 0.25  # = exp(-1/9) (8/21)^(1/4)
    assert corpus_bleu(hyps, refs) == pytest.approx(expected, rel=1e-12)
    assert corpus_bleu(hyps, refs) == pytest.approx(0.703012, abs=1e-6)
    assert corpus_bleu(refs, refs) == 1.0
    assert corpus_bleu([["x", "y", "z", "w"]], [["x", "y", "z", "v"]]) == 0.0  # no matching 4-gram
    assert corpus_bleu([[]], [["a"]]) == 0.0
    # clipping: "the the the the" against "the cat": p1 = 1/4
    assert corpus_bleu(["the the the the".split()], ["the cat".split()], max_order=1) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        corpus_bleu(hyps, refs[:1])


def test_reconstruction_token_accuracy(sign_model):
    perfect = reconstruction_scores([[5, 6], [7]], [[5, 6], [7]], eos=3)
    assert perfect["token_acc"] == 1.0 and perfect["exact"] == 1.0 and perfect["bleu"] == 0.0  # too short for 4-grams
    # positions compared with the input + </s>: [5, 6, </s>] vs [5, 9, </s>] -> 2/3; [7, </s>] vs [7, 8, </s>] -> 1/2
    # (the decoded 8 sits where the input has </s>); [4, 4, 4, </s>] vs not stopped [4, 4, 4, 4] -> 3/4
    s = reconstruction_scores([[5, 9], [7, 8], [4, 4, 4, 4]], [[5, 6], [7], [4, 4, 4]],
                              stopped=[True, True, False], eos=3)
    assert s["correct_tokens"] == 2 + 1 + 3 and s["n_tokens"] == 3 + 2 + 4
    assert s["token_acc"] == pytest.approx(6 / 9) and s["exact"] == 0.0
    # through the model: the sign decoder writes sign(z); flip one sign of one of two sentences
    x = sign_batch(torch.tensor([[0, 1, 0, 1], [1, 1, 0, 0]]))   # tokens 4 = a (z > 0), 5 = b (z < 0)
    z = torch.tensor([[1.0, -1.0, 1.0, -1.0], [-1.0, -1.0, 1.0, 1.0]])
    good = reconstruction(sign_model, x, z)
    assert good["token_acc"] == 1.0 and good["exact"] == 1.0 and good["bleu"] == 1.0 and good["n_tokens"] == 10
    z[1, 2] = -1.0
    bad = reconstruction(sign_model, x, z)
    assert bad["token_acc"] == pytest.approx(9 / 10) and bad["exact"] == 0.5
    # BLEU: sentence 1 is exact (4/4, 3/3, 2/2, 1/1 n-gram matches), sentence 2 decodes to b b b a against
    # b b a a (3/4, 2/3, 1/2, 0/1): p1 = 7/8, p2 = 5/6, p3 = 3/4, p4 = 1/2, BP = 1 (c = r = 8)
    assert bad["bleu"] == pytest.approx((7 / 8 * 5 / 6 * 3 / 4 * 1 / 2) ** 0.25, rel=1e-12)


def test_negative_mi_or_kl_beyond_noise_is_flagged():
    from textebm.eval.latent import implausible
    assert implausible({"mi": 4.9, "mi_se": 0.1, "kl": 7.4, "kl_se": 0.2}) is None
    assert implausible({"mi": -0.02, "mi_se": 0.03, "kl": 0.3, "kl_se": 0.05}) is None   # within noise of 0
    assert implausible({"mi": None, "mi_se": None, "kl": None, "kl_se": None}) is None
    msg = implausible({"mi": -6.21, "mi_se": 0.37, "kl": 0.3, "kl_se": 0.05})             # a diverged prior's run
    assert msg is not None and "mi -6.21" in msg and "kl" not in msg.split("nats")[0]
    msg = implausible({"mi": 1.0, "mi_se": 0.1, "kl": -4.7e4, "kl_se": 156.0})
    assert msg is not None and "kl -4.7e+04" in msg
