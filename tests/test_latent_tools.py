"""The latent as a tool (textebm.latent_tools and the model's encode / reconstruct / interpolate / sample_near),
checked against known answers: a decoder that copies z into its output, whose posterior under a Gaussian prior is
known in closed form, and an amortized posterior whose mean is known."""
import math

import pytest
import torch
from torch import nn

from textebm.data import WordVocab
from textebm.latent_tools import (code_format, encode_all, interpolate_pairs, read_codes, reconstruct_all,
                                  write_codes)
from textebm.model import LatentEBMModel, interpolate_codes
from textebm.prior import GaussianPrior
from textebm.sampling import ChainConfig, Langevin

WORDS = "a b c d e f"
SIGMA, SIGMA0, D = 0.1, 10.0, 6          # likelihood width, prior width, latent = the longest sentence + </s>
#: a chain long enough to reach the posterior N(y s0^2 / (s0^2 + s^2), s0^2 s^2 / (s0^2 + s^2)) from N(0, 100 I)
CHAIN = ChainConfig(Langevin(), n_steps=150, step_size=0.05)


class CopyDecoder(nn.Module):
    """p(x | z) = prod_t N(y_t; z_t, s^2) over the positions t < D of y = (tokens, </s>, <pad>...) as numbers: z
    is the sentence written as token ids, and decoding rounds z back to ids (and stops at </s>)."""

    def __init__(self, vocab):
        super().__init__()
        self.latent_dim, self.vocab_size = D, len(vocab)
        self.bos_id, self.eos_id, self.pad_id = vocab.bos_id, vocab.eos_id, vocab.pad_id
        self.anchor = nn.Parameter(torch.zeros(()))  # the model needs a parameter for its device

    def targets(self, x):
        y = torch.full((x.shape[0], D), float(self.pad_id))
        body = x[:, 1:1 + D].float()
        y[:, :body.shape[1]] = body
        return y.to(x.device)

    def log_prob(self, x, z):
        return -((z - self.targets(x)) ** 2).sum(-1) / (2 * SIGMA ** 2) + 0 * self.anchor

    def generate(self, z, max_len=40, greedy=True, generator=None, **_):
        out = []
        for row in z.round().clamp(0, self.vocab_size - 1).long().tolist():
            ids = []
            for t in row[:max_len]:
                if t == self.eos_id:
                    break
                ids.append(t)
            out.append(ids)
        return out


class MeanEncoder(nn.Module):
    """q(z | x) = N(targets(x) + shift, 0.3^2 I): an amortized posterior whose mean and spread are known."""

    def __init__(self, decoder, shift=0.2):
        super().__init__()
        self.decoder, self.latent_dim = decoder, D
        self.shift = shift if torch.is_tensor(shift) else torch.full((D,), float(shift))

    def forward(self, x):
        mu = self.decoder.targets(x) + self.shift
        return mu, torch.full_like(mu, math.log(0.3))

    def sample(self, x, generator=None, n=1):
        mu, log_std = self(x)
        return mu + log_std.exp() * torch.randn(mu.shape, generator=generator)


@pytest.fixture(scope="module")
def vocab():
    return WordVocab.build([WORDS])


def copy_model(vocab, encoder=False, shift=0.2):
    dec = CopyDecoder(vocab)
    enc = MeanEncoder(dec, shift) if encoder else None
    return LatentEBMModel(GaussianPrior(D, sigma0=SIGMA0), dec, vocab, None, enc)


SENTENCES = ["a b c", "f e d c b", "a", "c c a f", "e"]


def posterior_mean(vocab, s):
    """The exact posterior mean of the copy model: y s0^2 / (s0^2 + s^2) coordinate by coordinate."""
    ids = vocab.encode(s)[1:]
    y = torch.full((D,), float(vocab.pad_id))
    y[:len(ids)] = torch.tensor(ids, dtype=torch.float)
    return y * SIGMA0 ** 2 / (SIGMA0 ** 2 + SIGMA ** 2)


def test_encode_gives_the_posterior_mean_and_spread_of_the_copy_model(vocab):
    model = copy_model(vocab)
    codes = encode_all(model, SENTENCES, batch_size=2, n_chains=64, chain=CHAIN, seed=0)
    assert codes.source == "chains" and codes.samples.shape == (5, 64, D)
    want = torch.stack([posterior_mean(vocab, s) for s in SENTENCES])
    assert torch.allclose(codes.mean, want, atol=0.04), (codes.mean - want).abs().max()
    tau = SIGMA0 * SIGMA / math.sqrt(SIGMA0 ** 2 + SIGMA ** 2)   # the posterior's standard deviation
    assert abs(codes.std.mean().item() / tau - 1) < 0.15, codes.std.mean().item()


def test_refining_moves_each_code_to_its_posteriors_mode(vocab):
    """Two chains give a noisy mean; ascent to the mode lands on the exact posterior mode (= its mean here)."""
    model = copy_model(vocab)
    want = torch.stack([posterior_mean(vocab, s) for s in SENTENCES])
    g = torch.Generator().manual_seed(0)
    rough = model.encode(SENTENCES, n_chains=2, chain=CHAIN, generator=g)
    assert (rough.mean - want).abs().max() > 0.02  # the chains' mean is off by their noise
    # step 0.1: z <- z + 0.005 grad, curvature 1 / tau^2 ~ 100, so each step halves the distance to the mode
    g = torch.Generator().manual_seed(0)
    sharp = model.encode(SENTENCES, n_chains=2, chain=CHAIN, generator=g, refine=60, refine_step_size=0.1)
    assert sharp.source == "chains+mode"
    assert torch.allclose(sharp.mean, want, atol=1e-4), (sharp.mean - want).abs().max()
    assert torch.equal(sharp.std, rough.std)  # the spread is still the chains'


def test_a_recipes_code_refine_is_the_default_ascent_and_an_explicit_refine_overrides_it(vocab):
    from textebm.config import Recipe, apply_overrides

    model = copy_model(vocab)
    want = torch.stack([posterior_mean(vocab, s) for s in SENTENCES])
    assert model.code_refine() == 0  # no recipe: the mean itself
    model._recipe = apply_overrides(Recipe(), ["sampling.code_refine=60"])  # the chains stay the test's
    assert model.code_refine() == 60 and model.code_refine(0) == 0
    g = torch.Generator().manual_seed(0)
    sharp = model.encode(SENTENCES, n_chains=2, chain=CHAIN, generator=g, refine_step_size=0.1)
    assert sharp.source == "chains+mode" and torch.allclose(sharp.mean, want, atol=1e-4)
    g = torch.Generator().manual_seed(0)
    rough = model.encode(SENTENCES, n_chains=2, chain=CHAIN, generator=g, refine=0)
    assert rough.source == "chains" and (rough.mean - want).abs().max() > 0.02


def test_the_round_trip_through_the_copy_model_gives_the_sentences_back(vocab):
    model = copy_model(vocab)
    decodes, rows, scores = reconstruct_all(model, SENTENCES, batch_size=2, n_chains=4, chain=CHAIN, seed=1)
    assert decodes == SENTENCES
    assert scores["token_acc"] == 1.0 and scores["exact"] == 1.0 and scores["bleu"] == pytest.approx(1.0)
    assert all(r == {"token_acc": 1.0, "exact": True} for r in rows)
    # the model's own method decodes the same codes the same way
    assert model.reconstruct(SENTENCES[:2], CHAIN, n_chains=4) == SENTENCES[:2]


def test_the_scores_count_a_wrong_token(vocab):
    """Codes moved by one id at the second position: "a b c" comes back as "a c c" (one token of its 4, </s>
    included, wrong) and "d" as "d a" (its </s> moved to the next id, "a": 1 of 2 right)."""
    shift = torch.zeros(D)
    shift[1] = 1.0
    model = copy_model(vocab, encoder=True, shift=shift)
    decodes, rows, scores = reconstruct_all(model, ["a b c", "d"])
    assert decodes == ["a c c", "d a"]
    assert rows == [{"token_acc": 0.75, "exact": False}, {"token_acc": 0.5, "exact": False}]
    assert scores["token_acc"] == pytest.approx(4 / 6) and scores["exact"] == 0.0 and scores["n_tokens"] == 6
    assert reconstruct_all(model, ["a b c"], scores=False)[1:] == (None, None)


def test_an_amortized_posterior_gives_its_mean_and_spread(vocab):
    model = copy_model(vocab, encoder=True)
    codes = model.encode(SENTENCES)
    want = torch.stack([posterior_mean(vocab, s) for s in SENTENCES]) * (SIGMA0 ** 2 + SIGMA ** 2) / SIGMA0 ** 2
    assert codes.source == "encoder" and codes.samples is None
    assert torch.allclose(codes.mean, want + 0.2) and torch.allclose(codes.std, torch.full_like(want, 0.3))
    assert model.reconstruct(SENTENCES) == SENTENCES        # 0.2 off rounds back to the same ids
    chains = model.encode(SENTENCES[:1], n_chains=3, chain=CHAIN, amortized=False)
    assert chains.source == "chains"
    with pytest.raises(ValueError, match="no amortized posterior"):
        copy_model(vocab).encode(SENTENCES, amortized=True)


def test_a_sentence_longer_than_the_recipe_allows_is_truncated_as_in_training(vocab, toy_corpus):
    from conftest import tiny_recipe

    model = copy_model(vocab)
    model.recipe = tiny_recipe(toy_corpus, "data.max_len=2")
    x = model.as_batch(["a b c d", ""])
    assert x.tolist()[0] == vocab.encode("a b")
    assert x.tolist()[1][:2] == vocab.encode("")      # the empty sentence is <s> </s>


@pytest.mark.parametrize("spherical", [False, True])
def test_interpolation_endpoints_are_the_codes_exactly(spherical):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, generator=g) * 3, torch.randn(7, generator=g) * 3 + 1
    for center in (None, torch.full((7,), 0.5)):
        path = interpolate_codes(a, b, 9, spherical=spherical, center=center)
        assert path.shape == (9, 7)
        assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    if not spherical:
        assert torch.allclose(path[4], (a + b) / 2)


def test_spherical_interpolation_keeps_the_radius_of_codes_of_equal_norm():
    """slerp between two codes of norm r stays on the sphere of radius r (about the centre) and at t = 1/2 lies
    on the bisector; the straight line cuts inside."""
    a, b = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 3.0, 0.0])
    c = torch.tensor([1.0, 1.0, 1.0])
    path = interpolate_codes(a + c, b + c, 5, spherical=True, center=c)
    assert torch.allclose((path - c).norm(dim=1), torch.full((5,), 3.0), atol=1e-5)
    assert torch.allclose(path[2] - c, torch.tensor([3 / math.sqrt(2), 3 / math.sqrt(2), 0.0]), atol=1e-5)
    assert interpolate_codes(a, b, 3)[1].norm() < 3.0
    same = interpolate_codes(a, 2 * a, 3, spherical=True)           # parallel: the straight line
    assert torch.allclose(same[1], 1.5 * a)
    with pytest.raises(ValueError, match="steps"):
        interpolate_codes(a, b, 1)


def test_interpolating_two_sentences_starts_and_ends_at_their_codes(vocab):
    model = copy_model(vocab, encoder=True)
    path, decodes = model.interpolate("a b c", "f e d c b", steps=5)
    codes = model.encode(["a b c", "f e d c b"]).mean
    assert torch.equal(path[0], codes[0]) and torch.equal(path[-1], codes[1])
    assert decodes[0] == "a b c" and decodes[-1] == "f e d c b" and len(decodes) == 5
    # the copy model decodes each point of the straight line: position by position, the rounded average
    mid = model.decode(((codes[0] + codes[1]) / 2)[None], greedy=True)
    assert interpolate_pairs(model, [("a b c", "f e d c b")], steps=3)[1][0][1] == mid[0]
    assert torch.equal(model.interpolate(codes[0], codes[1], steps=3)[0][0], codes[0])


def test_sample_near_draws_from_the_posterior_or_a_ball_about_the_code(vocab):
    model = copy_model(vocab)
    g = torch.Generator().manual_seed(0)
    z, sents = model.sample_near("c c a f", n=32, chain=CHAIN, generator=g)
    m = posterior_mean(vocab, "c c a f")
    assert z.shape == (32, D) and (z - m).abs().max() < 0.5          # posterior draws: within 5 sd of 0.1
    assert set(sents) == {"c c a f"}
    z, sents = model.sample_near("c c a f", n=400, radius=2.0, chain=CHAIN, n_chains=4, generator=g)
    assert abs(float((z - m).std()) - 2.0) < 0.15                     # N(m, 4 I) about the code
    assert len(set(sents)) > 10


def test_codes_files_by_extension(vocab, tmp_path):
    model = copy_model(vocab, encoder=True)
    codes = model.encode(SENTENCES)
    for ext in ("safetensors", "npy", "jsonl"):
        path = write_codes(tmp_path / f"codes.{ext}", codes, SENTENCES)
        assert torch.allclose(read_codes(path), codes.mean, atol=1e-5), ext
    import json

    first = json.loads((tmp_path / "codes.jsonl").read_text().splitlines()[0])
    assert first["text"] == "a b c" and len(first["std"]) == D
    with pytest.raises(ValueError, match=".safetensors"):
        code_format("codes.txt")


def test_cluster_puts_sentences_in_the_symbol_whose_region_holds_their_codes(vocab):
    """A symbol-vector prior with a linear f: f_0(z) - f_1(z) = 10 (z_0 - m), so p(y | z) switches from symbol 1
    to symbol 0 where the first coordinate crosses m, half-way between the ids of "a" and "f". The copy model's
    codes are the sentences' ids, so sentences starting with "a" or "b" fall in symbol 1, "e" or "f" in symbol 0."""
    from textebm.prior import SymbolVectorPrior

    m = (vocab.stoi["a"] + vocab.stoi["f"]) / 2
    prior = SymbolVectorPrior(D, n_symbols=2, n_layers=0, sigma0=SIGMA0)
    with torch.no_grad():
        prior.net[0].weight.zero_()
        prior.net[0].weight[0, 0], prior.net[0].weight[1, 0] = 5.0, -5.0
        prior.net[0].bias.copy_(torch.tensor([-5.0 * m, 5.0 * m]))
    model = LatentEBMModel(prior, CopyDecoder(vocab), vocab)
    labels, probs = model.cluster(["a b c", "f e d", "b", "e a a"], n_chains=4, chain=CHAIN)
    assert labels.tolist() == [1, 0, 1, 0]
    assert probs.shape == (4, 2) and bool((probs.max(1).values > 0.99).all())
    with pytest.raises(ValueError, match="symbol_vector"):
        copy_model(vocab).cluster(["a"])
