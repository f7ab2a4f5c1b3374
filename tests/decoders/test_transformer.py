"""The Transformer decoder: likelihood vs padding and caching, generation, training, persistence, bad input."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from textebm.decoders import DECODERS, TransformerDecoder
from textebm.model import LatentEBMModel, build_model
from textebm.prior import LatentEBMPrior

from conftest import ROOT, tiny_recipe

V, D = 24, 4
PAD, BOS, EOS = 0, 2, 3


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tensors this small run fastest on one thread (and a shared machine's cores are not all ours)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_decoder(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(n_embd=16, n_layer=2, n_head=2, n_positions=24, n_prefix=2, add_to_inputs=True, dropout=0.0)
    args.update(kw)
    return TransformerDecoder(V, D, **args).eval()


def batch(B=6, T=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, V, (B, T), generator=g)
    x[:, 0] = BOS
    for i in range(B):  # ragged lengths ending with </s>, then right padding
        L = 3 + i % (T - 3)
        x[i, L] = EOS
        x[i, L + 1:] = PAD
    return x


def run_py(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=ROOT)


def teacher_forced_logits(dec, x, z):
    """(B, T-1, V) next-token logits from one plain forward pass (no prepared context, no fused output)."""
    ctx = dec.prepare(x)
    prefix, add = dec._z_inputs(z)
    tok = ctx.emb if add is None else ctx.emb + add
    states, _ = dec._run(torch.cat([prefix, tok], 1), ctx.attention_mask, ctx.position_ids)
    return dec._logits(states[:, dec.n_prefix:])


# ---- likelihood -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_prefix,add_to_inputs", [(1, False), (3, True)])
def test_log_prob_is_a_sum_over_real_tokens_whatever_the_padding(n_prefix, add_to_inputs):
    dec = tiny_decoder(n_prefix=n_prefix, add_to_inputs=add_to_inputs)
    x, z = batch(), torch.randn(6, D)
    lp = dec.log_prob(x, z)
    assert lp.shape == (6,)
    # the known answer: sum_t log softmax(logits_t)[x_t] over real targets, from a plain forward pass
    with torch.no_grad():
        logp = torch.log_softmax(teacher_forced_logits(dec, x, z), -1)
        ref = (logp.gather(2, x[:, 1:].unsqueeze(2)).squeeze(2) * (x[:, 1:] != PAD)).sum(1)
    assert torch.allclose(lp, ref, atol=1e-4)
    zg = z.clone().requires_grad_(True)
    g_batch, = torch.autograd.grad(dec.log_prob(x, zg).sum(), zg)
    for i in range(6):  # each sentence alone, unpadded: same value and same gradient in z
        L = int((x[i] != PAD).sum())
        zi = z[i:i + 1].clone().requires_grad_(True)
        single = dec.log_prob(x[i:i + 1, :L], zi)
        g_single, = torch.autograd.grad(single.sum(), zi)
        assert torch.allclose(lp[i], single[0], atol=1e-4)
        assert torch.allclose(g_batch[i], g_single[0], atol=1e-4)
    wider = torch.cat([x, torch.full((6, 4), PAD)], 1)  # extra padding changes nothing
    assert torch.allclose(dec.log_prob(wider, z), lp, atol=1e-4)


def test_prepared_context_matches_log_prob_and_holds_only_z_free_work():
    dec = tiny_decoder()
    x = batch(seed=1)
    ctx = dec.prepare(x)
    assert torch.equal(ctx.emb, dec.lm.get_input_embeddings()(x[:, :-1]))
    assert ctx.attention_mask.shape == ctx.position_ids.shape == (6, dec.n_prefix + x.shape[1] - 1)
    for seed in range(3):  # one context, several z (as across Langevin steps)
        z = torch.randn(6, D, generator=torch.Generator().manual_seed(seed))
        za, zb = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        a, b = dec.log_prob_prepared(ctx, za), dec.log_prob(x, zb)
        assert torch.allclose(a, b, atol=1e-5)
        ga, = torch.autograd.grad(a.sum(), za)
        gb, = torch.autograd.grad(b.sum(), zb)
        assert torch.allclose(ga, gb, atol=1e-5)
    m = LatentEBMModel(LatentEBMPrior(D, hidden=8), dec)
    z = torch.randn(6, D)
    assert torch.allclose(m.posterior_log_prob(x)(z), m.prior.log_prob_unnormalized(z) + dec.log_prob(x, z),
                          atol=1e-5)


# ---- generation -----------------------------------------------------------------------------------------
def test_generation_max_len_eos_and_cache_agree_with_full_forward():
    dec = tiny_decoder()
    with torch.no_grad():  # a spread of output preferences so greedy decodes are not constant
        dec.out_bias.copy_(torch.randn(V, generator=torch.Generator().manual_seed(3)) * 2)
        dec.out_bias[EOS] = -5.0
    z = torch.randn(8, D)
    greedy = dec.generate(z, max_len=7, greedy=True)
    assert all(len(r) <= 7 for r in greedy) and any(len(r) == 7 for r in greedy)
    assert all(t not in (PAD, BOS, EOS) for r in greedy for t in r)
    # the key/value cache gives what a full forward pass over the decoded prefix gives
    with torch.no_grad():
        for i, row in enumerate(greedy):
            x = torch.tensor([[BOS] + row + [EOS]])
            assert teacher_forced_logits(dec, x, z[i:i + 1])[0, :len(row)].argmax(-1).tolist() == row
    assert dec.generate(z, max_len=7, top_k=1, generator=torch.Generator().manual_seed(0)) == greedy
    assert dec.generate(z, max_len=7, top_p=1e-6, generator=torch.Generator().manual_seed(0)) == greedy
    s1 = dec.generate(z, max_len=7, temperature=0.8, generator=torch.Generator().manual_seed(5))
    s2 = dec.generate(z, max_len=7, temperature=0.8, generator=torch.Generator().manual_seed(5))
    assert s1 == s2
    # stops at </s>: an output layer that always prefers </s> gives empty sentences
    with torch.no_grad():
        dec.out_bias.zero_()
        dec.out_bias[EOS] = 50.0
    assert dec.generate(z, max_len=7, greedy=True) == [[]] * 8
    assert dec.generate(z, max_len=7, generator=torch.Generator().manual_seed(1)) == [[]] * 8
    with pytest.raises(ValueError, match="n_positions 24"):
        dec.generate(z, max_len=30)


# ---- training, persistence, command line -----------------------------------------------------------------
@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory):
    from textebm.train import train

    run = tmp_path_factory.mktemp("trun") / "run"
    r = tiny_recipe("grammar", "model.decoder=transformer", "model.decoder_args={n_layer: 1, n_head: 2, n_prefix: 2}",
                    "data.max_len=16", "data.length_policy=drop", "train.steps=40", "train.eval_every=40",
                    "train.eval_batches=4", "train.lr_decoder=3e-3")
    summary = train(r, run, device="cpu", progress=False)
    return run, summary


def test_transformer_decoder_lowers_validation_reconstruction_nll(transformer_run):
    run, summary = transformer_run
    assert summary["valid_recon_nll_end"] < 0.9 * summary["valid_recon_nll_start"], summary
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["decoder_class"] == "TransformerDecoder" and DECODERS["transformer"] is TransformerDecoder
    assert cfg["decoder"]["n_prefix"] == 2 and cfg["decoder"]["n_embd"] == 16 and cfg["decoder"]["n_layer"] == 1
    assert cfg["decoder"]["n_positions"] == 2 + 16 + 2  # n_prefix + data.max_len + <s>, </s>


def test_save_load_round_trip_gives_identical_samples(transformer_run, tmp_path):
    run, _ = transformer_run
    m = LatentEBMModel.from_pretrained(run).eval()
    assert m.decoder.lm.lm_head.weight is m.decoder.lm.transformer.wte.weight  # tying survives loading
    m.save_pretrained(tmp_path / "copy")
    m2 = LatentEBMModel.from_pretrained(tmp_path / "copy").eval()
    sd, sd2 = m.state_dict(), m2.state_dict()
    assert list(sd) == list(sd2) and all(torch.equal(sd[k], sd2[k]) for k in sd)
    a = m.generate(6, chain=m.prior_chain.replace(n_steps=10), generator=torch.Generator().manual_seed(4), max_len=12)
    b = m2.generate(6, chain=m2.prior_chain.replace(n_steps=10), generator=torch.Generator().manual_seed(4), max_len=12)
    assert a == b and all(isinstance(s, str) for s in a)


def test_cli_samples_from_a_transformer_run(transformer_run):
    run, _ = transformer_run
    p = run_py("-m", "textebm", "sample", str(run), "-n", "3", "--seed", "1")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 3 and all(line.strip() for line in lines)
    vocab = set(json.loads((run / "vocab.json").read_text())["tokens"]) | {"<empty>"}
    assert all(w in vocab for line in lines for w in line.split())


# ---- local pretrained models and bad input ----------------------------------------------------------------
def test_a_directory_that_is_not_a_causal_lm_is_refused(tmp_path):
    from transformers import BertConfig

    bert = tmp_path / "bert"
    BertConfig(vocab_size=V).save_pretrained(bert)
    with pytest.raises(ValueError, match=r"bert.*'bert' model.*not a causal language model"):
        TransformerDecoder(V, D, pretrained=str(bert))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty has no config.json; expected a causal language model"):
        TransformerDecoder(V, D, pretrained=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"'gpt2' is not a local directory.*Nothing is downloaded"):
        TransformerDecoder(V, D, pretrained="gpt2")


def test_a_local_pretrained_gpt2_loads_and_its_run_reloads_without_it(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from textebm.config import Recipe, apply_overrides
    from textebm.data import WordVocab

    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=16, n_layer=1, n_head=2, n_positions=20,
                                    bos_token_id=BOS, eos_token_id=EOS))
    path = tmp_path / "gpt2-tiny"
    lm.save_pretrained(path)
    vocab = WordVocab.build([" ".join(f"w{i}" for i in range(V - 4))])
    assert len(vocab) == V
    r = apply_overrides(Recipe(), ["model.latent_dim=4", "prior.hidden=8", "model.decoder=transformer",
                                   f"model.decoder_args={{pretrained: '{path}', n_prefix: 2}}"])
    m = build_model(r, vocab).eval()
    dec = m.decoder
    assert torch.equal(dec.lm.transformer.wte.weight, lm.transformer.wte.weight)
    assert torch.equal(dec.lm.transformer.h[0].mlp.c_fc.weight, lm.transformer.h[0].mlp.c_fc.weight)
    assert dec.config["pretrained"] == str(path) and dec.config["lm_config"]["n_embd"] == 16
    x, z = batch(), torch.randn(6, D)
    lp = dec.log_prob(x, z)
    assert torch.isfinite(lp).all()
    m.save_pretrained(tmp_path / "saved")
    shutil.rmtree(path)  # the saved run carries the architecture; the weights are its own
    m2 = LatentEBMModel.from_pretrained(tmp_path / "saved").eval()
    assert torch.equal(m2.decoder.log_prob(x, z), lp)
    lm.save_pretrained(path)
    with pytest.raises(ValueError, match=rf"{path.name} has a vocabulary of {V} tokens but the run's tokenizer has "
                                         rf"{V + 1}.*that model's vocabulary"):
        TransformerDecoder(V + 1, D, pretrained=str(path))
    with pytest.raises(ValueError, match="n_embd=32 was given but the pretrained model"):
        TransformerDecoder(V, D, pretrained=str(path), n_embd=32)


def test_other_local_causal_lms_run_through_their_full_forward(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                                 bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)).save_pretrained(tmp_path)
    dec = TransformerDecoder(V, D, pretrained=str(tmp_path), n_prefix=2).eval()
    assert not dec._fused and dec.n_embd == 16
    x, z = batch(), torch.randn(6, D)
    lp = dec.log_prob(x, z)
    for i in range(6):
        L = int((x[i] != PAD).sum())
        assert torch.allclose(lp[i], dec.log_prob(x[i:i + 1, :L], z[i:i + 1])[0], atol=1e-4)
    with torch.no_grad():
        dec.out_bias.copy_(torch.randn(V, generator=torch.Generator().manual_seed(3)) * 2)
        dec.out_bias[EOS] = -5.0
    rows = dec.generate(z, max_len=6, greedy=True)
    assert all(len(r) <= 6 for r in rows)
    with torch.no_grad():
        for i, row in enumerate(rows):
            x1 = torch.tensor([[BOS] + row + [EOS]])
            assert teacher_forced_logits(dec, x1, z[i:i + 1])[0, :len(row)].argmax(-1).tolist() == row


def test_latent_size_mismatch_is_reported():
    dec = tiny_decoder()
    assert dec.latent_dim == D
    with pytest.raises(ValueError, match=f"latent_dim {D} but the prior has latent_dim 7"):
        LatentEBMModel(LatentEBMPrior(7), dec)
    with pytest.raises(ValueError, match=rf"z of shape \(batch, {D}\)"):
        dec.log_prob(batch(), torch.zeros(6, D + 1))
    with pytest.raises(ValueError, match=rf"z of shape \(batch, {D}\)"):
        dec.generate(torch.zeros(2, D + 1))
    with pytest.raises(ValueError, match="must be divisible by n_head"):
        TransformerDecoder(V, D, n_embd=10, n_head=4)
    from textebm.decoders import build_decoder

    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['n_layers'\] for decoder 'transformer'.*n_layer"):
        build_decoder("transformer", vocab_size=V, latent_dim=D, n_layers=2)


def test_transformer_recipes_validate_and_build():
    from textebm.config import load_recipe
    from textebm.data import WordVocab

    vocab = WordVocab.build(["a b c d e f"])
    q = load_recipe(ROOT / "textebm" / "recipes" / "quickstart_transformer.yaml")
    dec = build_model(q, vocab).decoder
    assert isinstance(dec, TransformerDecoder) and dec.n_embd == q.model.embed_dim
    assert dec.config["n_positions"] == q.model.decoder_args["n_prefix"] + max(q.data.max_len, q.generate.max_len) + 2
    p = load_recipe(ROOT / "textebm" / "recipes" / "ptb_transformer.yaml")
    assert p.model.latent_dim == 32 and p.model.decoder == "transformer"
    s = p.sampling
    assert (s.prior_steps, s.prior_step_size, s.posterior_steps) == (60, 0.4, 20)
    for r in (p, q):  # the posterior chain under which the latent is used (docs/latent.md)
        s = r.sampling
        assert (s.posterior_schedule, s.posterior_step_size, s.posterior_step_size_end, s.posterior_noise) == \
            ("linear", 0.8, 0.05, 0.3)


# ---- the custom-decoder example ---------------------------------------------------------------------------
def test_custom_decoder_example_runs_and_learns():
    p = run_py(str(ROOT / "examples" / "custom_decoder.py"))
    assert p.returncode == 0, p.stderr
    nll = {int(s): float(v) for s, v in re.findall(r"step (\d+): recon_nll ([\d.]+)", p.stdout)}
    assert set(nll) == {0, 40} and nll[40] < 0.7 * nll[0], p.stdout
    samples = [line.split()[1:] for line in p.stdout.splitlines() if line.startswith("sample:")]
    assert len(samples) == 8
    slots = [{"the", "a", "my"}, {"cat", "dog", "bird"}, {"sat", "ran", "sang"}]
    # one softmax per slot: after training each slot decodes to a word seen in that slot
    assert all(len(s) == 3 and all(w in slot for w, slot in zip(s, slots)) for s in samples)
