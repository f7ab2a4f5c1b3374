"""Decoder, model, training loop and persistence against known answers."""
import json
import math

import pytest
import torch

from textebm.data import WordVocab, pad_batch
from textebm.decoders import LSTMDecoder
from textebm.model import LatentEBMModel
from textebm.prior import LatentEBMPrior
from textebm.sampling import POSTERIOR_CHAIN
from textebm.train import Trainer, train

from conftest import tiny_recipe


def small_model(vocab=20, d=4, seed=0, impl="auto"):
    torch.manual_seed(seed)
    dec = LSTMDecoder(vocab, d, embed_dim=8, hidden_dim=16, dropout_in=0.0, dropout_out=0.0, impl=impl)
    return LatentEBMModel(LatentEBMPrior(d, hidden=16), dec).eval()


def batch(vocab=20, B=6, T=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, vocab, (B, T), generator=g)
    x[:, 0] = 2
    for i in range(B):  # ragged lengths ending with </s>, then padding
        L = 3 + i % (T - 3)
        x[i, L] = 3
        x[i, L + 1:] = 0
    return x


def test_fused_and_unrolled_lstm_compute_the_same_function():
    x, z = batch(), torch.randn(6, 4)
    a, b = small_model(impl="fused"), small_model(impl="unrolled")
    za, zb = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    la, lb = a.decoder.log_prob(x, za), b.decoder.log_prob(x, zb)
    assert torch.allclose(la, lb, atol=1e-5)
    ga, = torch.autograd.grad(la.sum(), za, retain_graph=True)
    gb, = torch.autograd.grad(lb.sum(), zb, retain_graph=True)
    assert torch.allclose(ga, gb, atol=1e-5)
    # every parameter gradient too (the training update runs through the same hand-written backward)
    names = [n for n, _ in a.decoder.named_parameters()]
    pa = torch.autograd.grad(la.sum(), list(a.decoder.parameters()))
    pb = torch.autograd.grad(lb.sum(), list(b.decoder.parameters()))
    for n, u, v in zip(names, pa, pb):
        assert torch.allclose(u, v, atol=1e-5), n
        assert u.abs().max() > 0, n


def test_lstm_recurrence_matches_nn_lstm_values_and_gradients():
    from textebm.decoders.ops import lstm_recurrence

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 6, batch_first=True)
    x = torch.randn(3, 5, 4)
    x[:, :, 3] = x[:, :1, 3]  # the last input is per-sequence, as z enters the decoder at every step
    h0, c0 = torch.randn(3, 6, requires_grad=True), torch.randn(3, 6, requires_grad=True)
    ref, _ = lstm(x, (h0[None], c0[None]))
    proj = x[..., :3] @ lstm.weight_ih_l0[:, :3].t() + lstm.bias_ih_l0 + lstm.bias_hh_l0
    zb = x[:, 0, 3:] @ lstm.weight_ih_l0[:, 3:].t()
    got = lstm_recurrence(proj, zb, h0, c0, lstm.weight_hh_l0)
    assert torch.allclose(got, ref, atol=1e-6)
    w = torch.randn(3, 5, 6)
    wrt = [h0, c0, *lstm.parameters()]
    for u, v in zip(torch.autograd.grad((ref * w).sum(), wrt), torch.autograd.grad((got * w).sum(), wrt)):
        assert torch.allclose(u, v, atol=1e-6)


def test_log_prob_is_a_sum_over_real_tokens_only():
    m = small_model()
    x, z = batch(), torch.randn(6, 4)
    lp = m.decoder.log_prob(x, z)
    for i in range(6):
        L = int((x[i] != 0).sum())
        single = m.decoder.log_prob(x[i:i + 1, :L], z[i:i + 1])
        assert torch.allclose(lp[i], single[0], atol=1e-5)
    # extra padding changes nothing
    wider = torch.cat([x, torch.zeros(6, 5, dtype=torch.long)], 1)
    assert torch.allclose(m.decoder.log_prob(wider, z), lp, atol=1e-5)
    # the first-token probabilities over every non-pad token sum to 1 minus the mass given to <pad>
    with torch.no_grad():
        allx = torch.tensor([[2, t] for t in range(0, 20)])
        p = m.decoder.token_log_probs(m.decoder.prepare(allx), torch.zeros(20, 4))[:, 0].exp()
        logits = m.decoder.out(m.decoder._hidden(m.decoder.prepare(allx[:1]), torch.zeros(1, 4)))[0, 0]
    assert torch.allclose(p[1:].sum() + logits.softmax(-1)[0], torch.tensor(1.0), atol=1e-5)


def test_posterior_langevin_raises_joint_log_density():
    m = small_model()
    with torch.no_grad():  # make the likelihood depend strongly on z, as a trained decoder's does
        m.decoder.z_to_c.weight.mul_(20)
        m.decoder.lstm.weight_ih_l0[:, 8:].mul_(20)
        m.decoder.out.weight.mul_(30)
    x = batch(B=64, seed=1)
    g = torch.Generator().manual_seed(0)
    z0 = m.prior.sample_reference(64, generator=g)
    z = m.sample_posterior(x, POSTERIOR_CHAIN, z0=z0, generator=g)
    with torch.no_grad():
        before, after = m.joint_log_prob(x, z0), m.joint_log_prob(x, z)
    assert float((after - before).mean()) > 0.5


def test_generation_greedy_topk_nucleus_and_max_len():
    m = small_model()
    z = torch.randn(16, 4)
    g1 = m.decoder.generate(z, max_len=7, greedy=True)
    assert all(len(r) <= 7 for r in g1) and all(3 not in r and 0 not in r and 2 not in r for r in g1)
    assert m.decoder.generate(z, max_len=7, top_k=1, generator=torch.Generator().manual_seed(0)) == g1
    assert m.decoder.generate(z, max_len=7, top_p=1e-6, generator=torch.Generator().manual_seed(0)) == g1
    # stops at </s>: a decoder whose output always prefers </s> yields empty sentences
    with torch.no_grad():
        m.decoder.out.bias.zero_()
        m.decoder.out.bias[3] = 50.0
    assert m.decoder.generate(z, max_len=7, greedy=True) == [[]] * 16
    s1 = m.decoder.generate(z, max_len=7, temperature=0.7, generator=torch.Generator().manual_seed(5))
    s2 = m.decoder.generate(z, max_len=7, temperature=0.7, generator=torch.Generator().manual_seed(5))
    assert s1 == s2


def test_one_training_step_raises_f_on_posterior_relative_to_prior(toy_corpus, tmp_path):
    """train_step's prior update ascends mean f(z+) - mean f(z-) at the very samples it drew (eq. 11): the gap
    grows by about lr * |gradient|_1 (Adam's first step moves every parameter by lr against its gradient's sign)."""
    tr = Trainer(tiny_recipe(toy_corpus, "train.lr_prior=1e-3"), tmp_path / "r", device="cpu", progress=False)
    prior, drawn = tr.model.prior, {}
    post, pri = tr.sample_posterior, tr.sample_prior
    tr.sample_posterior = lambda *a, **k: drawn.setdefault("pos", post(*a, **k))
    tr.sample_prior = lambda *a, **k: drawn.setdefault("neg", pri(*a, **k))
    before = [p.detach().clone() for p in prior.parameters()]
    stats = tr.train_step(tr.data.next())
    gap = lambda: (prior.f(drawn["pos"]).mean() - prior.f(drawn["neg"]).mean())  # noqa: E731
    after = float(gap().detach())
    with torch.no_grad():
        for p, b in zip(prior.parameters(), before):
            p.copy_(b)
    g = torch.autograd.grad(gap(), list(prior.parameters()))
    expected = 1e-3 * sum(float(t.abs().sum()) for t in g)
    assert float(stats["f_gap"]) == pytest.approx(float(gap().detach()), abs=1e-5)
    assert after - float(stats["f_gap"]) == pytest.approx(expected, rel=0.2)


def test_training_lowers_validation_reconstruction_nll(toy_corpus, tmp_path):
    r = tiny_recipe(toy_corpus, "train.steps=60", "train.eval_every=60", "train.lr_decoder=0.01")
    summary = train(r, tmp_path / "run", device="cpu", progress=False)
    assert summary["valid_recon_nll_end"] < 0.7 * summary["valid_recon_nll_start"]
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if "dec_nll" in r]
    assert len(steps) == 60
    for key in ("dec_nll", "prior_loss", "f_gap", "grad_norm_decoder", "grad_norm_prior", "time_posterior",
                "time_prior"):
        assert key in steps[0]
    for f in ("recipe.yaml", "vocab.json", "config.json", "model.safetensors"):
        assert (tmp_path / "run" / f).exists()


def test_save_load_round_trip_gives_identical_samples(tiny_run, tmp_path):
    m = LatentEBMModel.from_pretrained(tiny_run).eval()
    m.save_pretrained(tmp_path / "copy")
    m2 = LatentEBMModel.from_pretrained(tmp_path / "copy").eval()
    for (k, v), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    a = m.generate(8, chain=m.prior_chain.replace(n_steps=10), generator=torch.Generator().manual_seed(4))
    b = m2.generate(8, chain=m2.prior_chain.replace(n_steps=10), generator=torch.Generator().manual_seed(4))
    assert a == b and all(isinstance(s, str) for s in a)


def test_saved_files_get_the_usual_permissions(tiny_run, tmp_path):
    """A shared run directory stays readable: every file the model writes has the umask's permissions (the
    safetensors writer alone creates 0600 files)."""
    import os

    LatentEBMModel.from_pretrained(tiny_run).save_pretrained(tmp_path / "copy")
    mask = os.umask(0)
    os.umask(mask)
    for p in (tmp_path / "copy").iterdir():
        assert p.stat().st_mode & 0o777 == 0o666 & ~mask, p.name


def test_latent_size_mismatch_is_reported():
    dec = LSTMDecoder(10, 8)
    with pytest.raises(ValueError, match="latent_dim 8 but the prior has latent_dim 4"):
        LatentEBMModel(LatentEBMPrior(4), dec)
    with pytest.raises(ValueError, match=r"z of shape \(batch, 8\)"):
        dec.log_prob(batch(vocab=10), torch.zeros(6, 3))


def test_vocab_round_trip_and_padding(tmp_path):
    v = WordVocab.build(["a b c", "a b", "a"], min_count=1)
    assert v.itos[:4] == ["<pad>", "<unk>", "<s>", "</s>"] and v.itos[4] == "a"
    ids = v.encode("a c zzz")
    assert ids[0] == v.bos_id and ids[-1] == v.eos_id and v.unk_id in ids
    assert v.decode(v.encode("b a c")) == "b a c"
    v.save(tmp_path)
    assert WordVocab.load(tmp_path).itos == v.itos
    x = pad_batch([[2, 5, 3], [2, 3]], v.pad_id)
    assert x.tolist() == [[2, 5, 3], [2, 3, 0]]


def test_fused_token_likelihood_matches_log_softmax_and_its_gradients():
    from textebm.decoders.ops import token_log_likelihood

    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 13)
    h = torch.randn(3, 5, 8, requires_grad=True)
    y = torch.randint(0, 13, (3, 5))
    mask = torch.ones(3, 5)
    mask[0, 3:] = 0
    mask[2, 1:] = 0
    ref = (torch.log_softmax(lin(h), -1).gather(-1, y.unsqueeze(-1)).squeeze(-1) * mask).sum(1)
    got = token_log_likelihood(h, lin, y, mask)
    assert torch.allclose(got, ref, atol=1e-5)
    w = torch.randn(3)
    gr = torch.autograd.grad((ref * w).sum(), [h, lin.weight, lin.bias])
    gg = torch.autograd.grad((got * w).sum(), [h, lin.weight, lin.bias])
    for a, b in zip(gr, gg):
        assert torch.allclose(a, b, atol=1e-5)
    # frozen weights (as while sampling z): the h-only backward W[y] - p W gives the same gradient
    lin.requires_grad_(False)
    got = token_log_likelihood(h, lin, y, mask)
    assert torch.allclose(torch.autograd.grad((got * w).sum(), h)[0], gr[0], atol=1e-5)


def test_prepared_batch_reuses_one_logits_buffer_and_never_returns_stale_gradients():
    """The posterior sampler's calls on one prepared batch reuse a single logits buffer; values and gradients
    are those of fresh calls, and a second forward before the first backward is an error, not a wrong answer."""
    m = small_model()
    dec = m.decoder
    x = batch()
    ctx = dec.prepare(x)
    for p in dec.parameters():
        p.requires_grad_(False)
    ptrs = []
    for seed in (1, 2, 3):
        z = torch.randn(6, 4, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)
        lp = dec.log_prob_prepared(ctx, z)
        g, = torch.autograd.grad(lp.sum(), z)
        ptrs.append(ctx.selection.workspace["logits"].data_ptr())
        z2 = z.detach().clone().requires_grad_(True)
        fresh = dec.log_prob(x, z2)
        assert torch.allclose(lp, fresh, atol=1e-5)
        assert torch.allclose(g, torch.autograd.grad(fresh.sum(), z2)[0], atol=1e-5)
    assert len(set(ptrs)) == 1
    za, zb = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    la = dec.log_prob_prepared(ctx, za)
    dec.log_prob_prepared(ctx, zb)
    with pytest.raises(RuntimeError, match="inplace"):
        torch.autograd.grad(la.sum(), za)


def test_fused_token_likelihood_is_exact_where_the_target_probability_underflows():
    """A target 200 nats below the rest has p = 0 in float32; its log-likelihood must still be exact."""
    from textebm.decoders.ops import token_log_likelihood

    lin = torch.nn.Linear(2, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[100., 0.], [-100., 0.], [0., 1.], [0., -1.]]))
        lin.bias.zero_()
    h = torch.tensor([[[1., 0.], [0., 1.]]], requires_grad=True)  # logits (100, -100, 0, 0), (0, 0, 1, -1)
    y = torch.tensor([[1, 2]])
    got = token_log_likelihood(h, lin, y, torch.ones(1, 2))
    ref = torch.log_softmax(lin(h), -1).gather(-1, y.unsqueeze(-1)).squeeze(-1).sum(1)
    assert torch.isfinite(got).all() and abs(got.item() - ref.item()) < 1e-4, (got, ref)
    assert abs(got.item() - (-200.0 + 1.0 - math.log(2 + math.e + 1 / math.e))) < 1e-4
    g_ref = torch.autograd.grad(ref.sum(), h)[0]
    assert torch.allclose(torch.autograd.grad(got.sum(), h)[0], g_ref, atol=1e-5)


def test_bf16_autocast_training_step_runs_and_keeps_fp32_state(toy_corpus, tmp_path):
    tr = Trainer(tiny_recipe(toy_corpus, "train.amp=bf16"), tmp_path / "r", device="cpu", progress=False)
    x = tr.data.next().x
    z = tr.sample_posterior(x)
    assert z.dtype == torch.float32 and torch.isfinite(z).all()
    st = tr.train_step(x)
    assert all(p.dtype == torch.float32 for p in tr.model.parameters())
    assert torch.isfinite(torch.as_tensor(st["dec_nll"]))
