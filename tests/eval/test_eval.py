"""Evaluation: importance-sampled NLL against analytic and exact answers, n-gram perplexities, diversity, CLI."""
import json
import math
import struct
import zlib
from collections import Counter
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
from torch import nn

from textebm.eval import likelihood, ngram, report, text
from textebm.model import LatentEBMModel
from textebm.prior import LatentEBMPrior
from textebm.sampling import POSTERIOR_CHAIN

CHAIN_100 = POSTERIOR_CHAIN.replace(n_steps=100)  # 100 Langevin steps of 0.1: the posterior of these small models

from conftest import assert_one_line_error, run_cli


# ---- the analytic case: linear-Gaussian decoder under a Gaussian / linearly tilted prior -------------------
class LinearGaussianDecoder(nn.Module):
    """p(x | z) = N(x; A z + b, s^2 I) with x a float tensor (the decoder protocol with continuous x)."""

    def __init__(self, A, b, s):
        super().__init__()
        self.register_buffer("A", A)
        self.register_buffer("b", b)
        self.s = float(s)
        self.latent_dim = A.shape[1]
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device for LatentEBMModel.device

    def log_prob(self, x, z):
        D = x.shape[1]
        r = x - (z @ self.A.t() + self.b)
        return -0.5 * r.pow(2).sum(-1) / self.s ** 2 - D * math.log(self.s) - 0.5 * D * math.log(2 * math.pi)

    def generate(self, z, **kw):
        return z @ self.A.t() + self.b


def linear_gaussian_model(w, c, d=3, D=5, s=0.5, seed=0):
    """f(z) = w.z + c on a N(0, I) reference: p_alpha = N(w, I), log Z = c + |w|^2 / 2 (sigma0 = 1).

    Then p(x) = N(x; A w + b, A A^T + s^2 I) exactly."""
    g = torch.Generator().manual_seed(seed)
    A, b = torch.randn(D, d, generator=g), torch.randn(D, generator=g)
    prior = LatentEBMPrior(d, n_layers=0)
    with torch.no_grad():
        prior.net[0].weight.copy_(torch.as_tensor(w, dtype=torch.float32)[None])
        prior.net[0].bias.fill_(c)
    model = LatentEBMModel(prior, LinearGaussianDecoder(A, b, s))
    wt = torch.as_tensor(w, dtype=torch.float32)
    marginal = torch.distributions.MultivariateNormal(A @ wt + b, A @ A.t() + s ** 2 * torch.eye(D))
    return model, marginal, float(c + wt.pow(2).sum() / 2)


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_importance_sampling_matches_the_analytic_marginal(covariance):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, marginal, log_z = linear_gaussian_model([0.5, -0.3, 0.2], 0.7)
    x = marginal.sample((16,))
    truth = marginal.log_prob(x).double()
    est_log_z, se_log_z = likelihood.estimate_log_partition(model.prior, 100_000)
    assert abs(est_log_z - log_z) < 4 * se_log_z + 1e-3
    gen = torch.Generator().manual_seed(1)
    res = likelihood.importance_log_likelihood(model, x, log_z, n_importance=1000, generator=gen, n_chains=16,
                                               chain=CHAIN_100, covariance=covariance)
    err = res.log_px - truth
    assert abs(float(err.mean())) < 0.03, err
    assert float(err.abs().max()) < 0.2, err
    assert bool((res.ess > 20).all())
    # with the estimated log Z the answer moves by exactly the log Z error
    res2 = likelihood.importance_log_likelihood(model, x, est_log_z, n_importance=1000,
                                                generator=torch.Generator().manual_seed(1), n_chains=16,
                                                chain=CHAIN_100, covariance=covariance)
    assert torch.allclose(res2.log_px - res.log_px, torch.full_like(truth, log_z - est_log_z), atol=1e-4)


def test_gaussian_proposal_densities():
    z = torch.randn(2, 50, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 0.5, 2.0])
    for cov in ("diag", "full"):
        q = likelihood.gaussian_from_samples(z, inflation=1.5, covariance=cov, shrinkage=0.2)
        zz = q.sample(7, generator=torch.Generator().manual_seed(1))
        for b in range(2):
            C = torch.diag(q.scale[b] ** 2) if cov == "diag" else q.scale[b] @ q.scale[b].t()
            ref = torch.distributions.MultivariateNormal(q.mean[b], C).log_prob(zz[b])
            assert torch.allclose(q.log_prob(zz)[b], ref, atol=1e-4)
            S = torch.cov(z[b].t())
            want = torch.diag(torch.diagonal(S)) if cov == "diag" else 0.8 * S + 0.2 * torch.diag(torch.diagonal(S))
            assert torch.allclose(C, 1.5 * (want + (0 if cov == "diag" else 1e-4) * torch.eye(3)), atol=1e-4)


def test_flat_prior_has_log_z_zero_and_matches():
    model, marginal, log_z = linear_gaussian_model([0.0, 0.0, 0.0], 0.0, seed=3)
    assert log_z == 0.0
    assert likelihood.estimate_log_partition(model.prior, 1000) == (0.0, 0.0)
    x = marginal.sample((8,))
    res = likelihood.importance_log_likelihood(model, x, 0.0, n_importance=500,
                                               generator=torch.Generator().manual_seed(0), n_chains=8,
                                               chain=CHAIN_100)
    assert float((res.log_px - marginal.log_prob(x).double()).abs().max()) < 0.3


def test_a_bad_proposal_is_biased_low_and_improves_with_more_samples():
    torch.manual_seed(0)
    model, marginal, log_z = linear_gaussian_model([0.3, 0.1, -0.2], 0.0, seed=1)
    x = marginal.sample((8,))
    truth = marginal.log_prob(x).double()
    good = likelihood.fit_posterior_proposal(model, x, n_chains=32, chain=CHAIN_100, inflation=1.0,
                                             generator=torch.Generator().manual_seed(0))
    # wrong mean (shifted by two proposal standard deviations) and twice too wide
    bad = likelihood.GaussianProposal(good.mean + 2 * good.scale, 2 * good.scale)
    errs = {}
    for K in (5, 2000):
        reps = [likelihood.importance_log_likelihood(model, x, log_z, n_importance=K, proposal=bad,
                                                     generator=torch.Generator().manual_seed(r)).log_px - truth
                for r in range(10)]
        e = torch.stack(reps)  # (reps, sentences)
        # IS is unbiased for p(x), so log p_hat is biased low: never clearly above the truth on average
        assert float(e.mean()) < 3 * float(e.std()) / math.sqrt(e.numel()) + 0.02
        errs[K] = float(e.abs().mean())
    assert errs[2000] < 0.5 * errs[5] and errs[2000] < 0.15, errs


# ---- the NLL of a text model is not below the true entropy -----------------------------------------------
@pytest.fixture(scope="module")
def grammar_model(tmp_path_factory):
    from conftest import tiny_recipe
    from textebm.train import train

    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("grammar") / "run"
    train(tiny_recipe("grammar", "train.steps=40", "train.eval_batches=1", "train.lr_decoder=0.005",
                      "data.max_len=30"), run, device="cpu", progress=False)
    return LatentEBMModel.from_pretrained(run)


def test_nll_is_not_below_the_grammars_exact_entropy(grammar_model):
    from textebm.data import load_corpus
    from textebm.data.grammar import default_grammar

    vocab = grammar_model.tokenizer.stoi
    test = [s for s in load_corpus("grammar").test if all(w in vocab for w in s.split())][:40]
    assert len(test) == 40
    exact = -sum(default_grammar().log_probs([s.split() for s in test]))
    res = likelihood.evaluate_nll(grammar_model, test, n_importance=20, n_chains=8, log_z_samples=20_000)
    assert res["n_sentences"] == 40 and res["unk_tokens"] == 0
    assert res["n_tokens"] == sum(len(s.split()) + 1 for s in test)
    assert math.isfinite(res["nll_total"])
    # cross-entropy >= entropy: a model that reports less than the exact NLL is wrong
    assert res["nll_total"] >= exact, (res["nll_total"], exact)
    assert res["ppl_per_token"] == pytest.approx(math.exp(res["nll_total"] / res["n_tokens"]))
    assert "</s>" in res["protocol"] and res["log_z_se"] >= 0
    rec = likelihood.evaluate_reconstruction(grammar_model, test)
    assert rec["n_tokens"] == res["n_tokens"] and rec["recon_nll_per_sentence"] > 0


# ---- n-gram perplexities ----------------------------------------------------------------------------------
TRAIN = ["the cat sat", "the dog sat", "a cat ran", "the cat ran", "a dog sat down", "the bird sang"]
TEST = ["the cat sat down", "a bird ran", "the dog ran"]


@pytest.mark.parametrize("estimator", ["builtin", "auto"])
def test_fppl_and_rppl_equal_a_direct_ngram_computation(tmp_path, estimator):
    samples = ["the cat sat", "a dog ran", "the dog sat down", "a cat sang", "the zebra sat"]
    f = text.forward_perplexity(TRAIN, samples, order=3, estimator=estimator)
    res = ngram.train(3, TRAIN, tmp_path / "f.arpa", estimator=estimator)
    direct = ngram.perplexity(res.path, samples)
    assert f["value"] == pytest.approx(direct["ppl"], rel=1e-12)
    assert f["oov"] == direct["oov"] == 1 and f["words"] == direct["words"] == 16
    assert f["estimator"] == res.estimator_used and f["message"] is None
    r = text.reverse_perplexity(samples, TEST, order=3, estimator=estimator)
    res = ngram.train(3, samples, tmp_path / "r.arpa", estimator=estimator)
    assert r["value"] == pytest.approx(ngram.perplexity(res.path, TEST)["ppl"], rel=1e-12)
    assert "only 5 samples" in r["message"]  # few samples are flagged
    # the hand computation of what kenlm's perplexity means: 10^(-total log10 p / (words + sentences))
    assert f["value"] == pytest.approx(10 ** (-f["total_log10prob"] / (16 + 5)))
    assert "</s>" in f["protocol"] and "<unk>" in f["protocol"]


def _is_json(d):
    json.dumps(report.jsonable(d), allow_nan=False)
    return True


def test_degenerate_sample_sets_give_messages_not_crashes():
    for samples in ([], ["", ""], ["zzz qqq"], ["the"], ["cat"] * 3):
        f = text.forward_perplexity(TRAIN, samples, order=5)
        r = text.reverse_perplexity(samples, TEST, order=5)
        d = text.diversity(samples)
        for res in (f, r, d):
            assert _is_json(res)
        for res in (f, r):
            assert res["value"] is None or math.isfinite(res["value"])
    assert text.forward_perplexity(TRAIN, [])["message"] == "no samples to score"
    assert "no words" in text.reverse_perplexity(["", ""], TEST)["message"]
    assert "every sample is empty" in text.forward_perplexity(TRAIN, ["", ""])["message"]
    f = text.forward_perplexity(TRAIN, ["zzz qqq"])
    assert "no sample word occurs in the training text" in f["message"] and math.isfinite(f["value"])
    r = text.reverse_perplexity(["zzz qqq"], TEST)
    assert "share no word" in r["message"] and "only 1 samples" in r["message"]
    # every test word is OOV: kenlm's value gives each the whole <unk> mass; the spread value divides it
    assert "flatters RPPL" in r["message"] and r["oov_rate"] == 1.0
    assert r["unseen_vocab"] == len({w for s in TEST for w in s.split()})
    assert r["ppl_oov_spread"] == pytest.approx(
        10 ** (-(r["total_log10prob"] - r["oov"] * math.log10(r["unseen_vocab"])) / (r["words"] + 3)))
    assert r["ppl_oov_spread"] > r["value"]
    assert "at least 2 non-empty samples" in text.diversity(["one sample"])["message"]
    assert text.diversity([])["distinct_1"] is None


# ---- diversity --------------------------------------------------------------------------------------------
def test_distinct_n_by_hand():
    d = text.distinct_n(["a b a b", "a c", ""])
    # unigrams a b a b a c: 3 unique / 6; bigrams ab ba ab ac: 3 / 4; trigrams aba bab: 2 / 2
    assert d == {"distinct_1": 0.5, "distinct_2": 0.75, "distinct_3": 1.0}


def _naive_bleu(hyp, refs, max_order=4, eps=0.1):
    """Sentence BLEU written directly from its definition (effective order, method1 smoothing)."""
    c = len(hyp)
    logs = []
    for n in range(1, min(max_order, c) + 1):
        h = Counter(tuple(hyp[i:i + n]) for i in range(c - n + 1))
        best = Counter()
        for r in refs:
            for g, k in Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1)).items():
                best[g] = max(best[g], k)
        clipped = sum(min(k, best[g]) for g, k in h.items())
        logs.append(math.log((clipped or eps) / (c - n + 1)))
    r = min((abs(len(x) - c), len(x)) for x in refs)[1]
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return bp * math.exp(sum(logs) / len(logs))


def test_self_bleu():
    same = ["the cat sat on the mat"] * 5
    assert text.self_bleu(same)["value"] == pytest.approx(1.0)
    disjoint = ["a b c d e", "f g h i j", "k l m n o", "p q r s t"]
    assert text.self_bleu(disjoint)["value"] < 0.05
    mixed = ["the cat sat on the mat", "the cat sat", "a dog sat on the mat today", "the the the cat",
             "mat on the cat sat the", "dog", "a dog ran"]
    toks = [s.split() for s in mixed]
    naive = sum(_naive_bleu(t, toks[:i] + toks[i + 1:]) for i, t in enumerate(toks)) / len(toks)
    assert text.self_bleu(mixed)["value"] == pytest.approx(naive, rel=1e-12)
    sub = text.self_bleu(mixed * 10, max_samples=20)
    assert sub["n_used"] == 20


# ---- pictures ---------------------------------------------------------------------------------------------
def read_png_size(path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks.setdefault(kind, b"")
        chunks[kind] += body
        pos += 12 + n
    w, h = struct.unpack(">II", chunks[b"IHDR"][:8])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[chunks[b"IHDR"][9]]  # 8-bit gray, RGB, gray + alpha, RGBA
    assert len(zlib.decompress(chunks[b"IDAT"])) == h * (1 + channels * w) and b"IEND" in chunks
    return w, h


# ---- the command line -------------------------------------------------------------------------------------


def test_eval_command_end_to_end(tiny_run, tmp_path):
    out = tmp_path / "report.json"
    p = run_cli("eval", str(tiny_run), "--out", str(out), "--no-progress", "--max-sentences", "32")
    assert p.returncode == 0, p.stderr
    rep = json.loads(out.read_text())
    for key in ("run", "data", "settings", "samples", "fppl", "rppl", "nll", "recon", "diversity", "protocol",
                "messages", "timing_s"):
        assert key in rep, key
    assert rep["samples"]["n"] == rep["data"]["train_sentences"] == 600
    for m in ("fppl", "rppl"):
        assert rep[m]["estimator"] in ("lmplz", "builtin") and "fallback_reason" in rep[m]
        assert rep[m]["value"] > 1
    assert rep["nll"]["n_sentences"] == 32 and rep["nll"]["settings"]["n_importance"] == 100
    assert rep["nll"]["nll_per_sentence"] > 0 and rep["nll"]["log_z_se"] >= 0
    assert set(rep["protocol"]) >= {"fppl", "rppl", "nll", "recon", "diversity", "samples"}
    assert "| FPPL |" in p.stdout and "| NLL (nats/sentence) |" in p.stdout
    # a subset of metrics on given samples
    samples = tmp_path / "s.txt"
    samples.write_text("the dog sees a fish .\na cat likes the car .\n")
    p = run_cli("eval", str(tiny_run), "--fppl", "--diversity", "--samples", str(samples), "--out", str(out))
    assert p.returncode == 0, p.stderr
    rep = json.loads(out.read_text())
    assert rep["metrics"] == ["fppl", "diversity"] and "nll" not in rep and rep["samples"]["n"] == 2


def test_chain_command_end_to_end(tiny_run, tmp_path):
    png, js = tmp_path / "chain.png", tmp_path / "chain.json"
    plots = find_spec("matplotlib") is not None  # the --out plot needs the [plots] extra
    p = run_cli("chain", str(tiny_run), "--steps", "30", "--every", "10", "--seed", "1",
                *(["--out", str(png)] if plots else []), "--json", str(js))
    assert p.returncode == 0, p.stderr
    rows = [l for l in p.stdout.splitlines() if l.startswith("| ") and not l.startswith("| step")]
    assert [int(l.split("|")[1]) for l in rows] == [0, 10, 20, 30]
    res = json.loads(js.read_text())
    assert len(res["trace"]) == 31 and res["rows"][2]["log_density"] == res["trace"][20]
    if plots:
        assert read_png_size(png) == (640, 400)
    # the reported log-density is prior.log_prob_unnormalized at the decoded z; the same seed, the same chain
    model = LatentEBMModel.from_pretrained(tiny_run)
    z = torch.tensor([r["z"] for r in res["rows"]])
    with torch.no_grad():
        lp = model.prior.log_prob_unnormalized(z)
    assert lp.tolist() == pytest.approx([r["log_density"] for r in res["rows"]], abs=1e-4)
    again = text.long_run_chain(model, steps=30, every=10, seed=1)
    assert [r["sentence"] for r in again["rows"]] == [r["sentence"] for r in res["rows"]]


def test_eval_and_chain_bad_input(tmp_path, tiny_run):
    assert_one_line_error(run_cli("eval", str(tmp_path / "nope")), "no such run directory")
    assert_one_line_error(run_cli("chain", str(tmp_path / "nope")), "no such run directory")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert_one_line_error(run_cli("eval", str(tiny_run), "--samples", str(empty)), "empty")
    assert_one_line_error(run_cli("eval", str(tiny_run), "--samples", str(tmp_path / "missing.txt")),
                          "sample file not found")
    assert_one_line_error(run_cli("eval", str(tiny_run), "--n-samples", "0"), "--n-samples")
    assert_one_line_error(run_cli("chain", str(tiny_run), "--out", str(tmp_path / "no" / "p.png")),
                          "does not exist")
