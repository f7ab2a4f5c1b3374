"""The options against posterior collapse, and the Gaussian-prior ablation, each against what it claims."""
import math

import pytest
import torch

from textebm.config import ConfigError, apply_overrides
from textebm.sampling import ExampleChains, Langevin, Schedule, run_chain
from textebm.train import Trainer, prior_weight, train

from conftest import tiny_recipe


# ---- step-size schedule and noise scale -------------------------------------------------------------------
def test_schedules_run_from_start_to_end():
    assert Schedule("linear", 0.8, 0.05).values(4) == pytest.approx([0.8, 0.55, 0.3, 0.05])
    g = Schedule("geometric", 0.8, 0.05).values(5)
    assert g[0] == pytest.approx(0.8) and g[-1] == pytest.approx(0.05)
    assert all(b / a == pytest.approx(g[1] / g[0]) for a, b in zip(g, g[1:]))  # a constant ratio
    c = Schedule("cosine", 1.0, 0.0).values(3)
    assert c == pytest.approx([1.0, 0.5, 0.0])
    assert Schedule(start=0.3).values(3) == [0.3, 0.3, 0.3]


@pytest.mark.parametrize("bad, words", [(float("nan"), "finite"), (0.0, "> 0"), (-1.0, "> 0"),
                                        (1e20, r"at most 1e\+18")])
def test_a_step_size_no_chain_can_take_is_refused_before_it_starts(bad, words):
    """1e20 is finite, but s^2 / 2 overflows a float32 state: refused up front, not a RuntimeError mid-chain."""
    with pytest.raises(ValueError, match=words):
        run_chain(Langevin(), lambda z: -0.5 * z.pow(2).sum(-1), torch.zeros(2, 1), 3, bad)


def test_a_chain_takes_the_scheduled_steps():
    """Noise-free Langevin on log pi = -z^2 / 2: z_K = z_0 prod_k (1 - s_k^2 / 2), exactly."""
    z0 = torch.tensor([[2.0], [-1.0]])
    sched = Schedule("linear", 0.8, 0.05)
    out = run_chain(Langevin(noise=False), lambda z: -0.5 * z.pow(2).sum(-1), z0, 20, sched)
    expect = math.prod(1 - s * s / 2 for s in sched.values(20))
    torch.testing.assert_close(out.z, z0 * expect)


def test_the_noise_scale_sets_the_chain_temperature():
    """ULA on N(0, 1) with step s and noise scale c keeps variance c^2 / (1 - s^2 / 4)."""
    g = torch.Generator().manual_seed(0)
    for c in (1.0, 0.3):
        z = run_chain(Langevin(), lambda z: -0.5 * z.pow(2).sum(-1), torch.zeros(20000, 1), 300, 0.5,
                      noise_scale=c, generator=g).z
        assert z.var().item() == pytest.approx(c * c / (1 - 0.25 / 4), rel=0.05)


# ---- warm starts: one chain per example ------------------------------------------------------------------
def test_example_chains_resume_each_example_where_it_stopped():
    store = ExampleChains(10, 2)
    target = lambda z: -0.5 * (z - 3.0).pow(2).sum(-1)  # noqa: E731
    idx = torch.tensor([1, 4, 7])
    first = run_chain(Langevin(noise=False), target, torch.zeros(3, 2), 5, 0.5, warm_start=store, index=idx).z
    again = run_chain(Langevin(noise=False), target, torch.zeros(3, 2), 5, 0.5, warm_start=store,
                      index=torch.tensor([7, 1, 2])).z
    # 7 and 1 continue from where they stopped (ten steps in all), 2 starts fresh at its z0 (five steps)
    ten = run_chain(Langevin(noise=False), target, torch.zeros(1, 2), 10, 0.5).z[0]
    torch.testing.assert_close(again[0], ten)
    torch.testing.assert_close(again[1], ten)
    torch.testing.assert_close(again[2], first[0])
    assert store.seen.sum() == 4
    state = store.state_dict()
    other = ExampleChains(10, 2)
    other.load_state_dict(state)
    torch.testing.assert_close(other.z, store.z)


def test_warm_started_training_keeps_the_chains_in_its_checkpoints(toy_corpus, tmp_path):
    r = tiny_recipe(toy_corpus, "sampling.posterior_warm_start=true", "sampling.prior_persistent=200",
                    "train.steps=4", "train.save_every=2")
    full = tmp_path / "full"
    train(r, full, device="cpu", progress=False)
    cut = tmp_path / "cut"
    tr = Trainer(apply_overrides(r, ["train.steps=2"]), cut, device="cpu", progress=False)
    tr.run()
    assert int(tr.posterior_store.seen.sum()) == 2 * r.train.batch_size
    again = Trainer(r, cut, device="cpu", resume=True, progress=False)
    torch.testing.assert_close(again.posterior_store.z, tr.posterior_store.z)
    torch.testing.assert_close(again.prior_store.buffer, tr.prior_store.buffer)
    again.run()
    from safetensors.torch import load_file

    a, b = load_file(str(full / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # resumed = uninterrupted, chains included


# ---- word dropout -------------------------------------------------------------------------------------------
def test_word_dropout_replaces_the_stated_fraction_of_input_words():
    from textebm.decoders.ops import word_dropout

    torch.manual_seed(0)
    x = torch.randint(4, 50, (400, 30))
    x[:, 0] = 2
    x[:, 25:] = 0  # padding
    out = word_dropout(x, 0.3, unk_id=1, pad_id=0)
    real = torch.zeros_like(x, dtype=torch.bool)
    real[:, 1:25] = True
    frac = (out[real] == 1).float().mean().item()
    n = real.sum().item()
    assert abs(frac - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n)  # within 4 binomial standard errors
    assert torch.equal(out[:, 0], x[:, 0]) and torch.equal(out[:, 25:], x[:, 25:])  # <s> and padding stay
    assert torch.equal(out[(out != 1) & real], x[(out != 1) & real])  # others untouched


def test_word_dropout_acts_only_while_the_decoder_trains(toy_corpus, tmp_path):
    tr = Trainer(tiny_recipe(toy_corpus, "model.word_dropout=0.5"), tmp_path / "r", device="cpu", progress=False)
    dec = tr.model.decoder
    x = tr.data.next().x
    z = torch.randn(x.shape[0], dec.latent_dim)
    dec.eval()
    assert torch.equal(dec.log_prob(x, z), dec.log_prob(x, z))  # deterministic in eval mode
    dec.train()
    torch.manual_seed(1)
    a = dec.log_prob(x, z)
    torch.manual_seed(2)
    assert not torch.equal(a, dec.log_prob(x, z))
    assert tr.model.decoder.config["word_dropout"] == 0.5


# ---- annealing of the prior term, autoencoder pretraining -----------------------------------------------
def test_the_prior_weight_follows_the_schedule():
    t = tiny_recipe("x", "train.steps=100", "train.anneal=linear", "train.anneal_steps=40",
                    "train.anneal_start=0.2").train
    assert [prior_weight(t, k) for k in (0, 20, 40, 90)] == pytest.approx([0.2, 0.6, 1.0, 1.0])
    t = tiny_recipe("x", "train.steps=100", "train.anneal=cyclical", "train.anneal_cycles=2",
                    "train.anneal_ratio=0.5").train
    assert [prior_weight(t, k) for k in (0, 25, 49, 50, 75)] == pytest.approx([0.0, 1.0, 1.0, 0.0, 1.0])
    t = tiny_recipe("x", "train.steps=100", "train.pretrain_steps=10").train
    assert prior_weight(t, 9) == 0.0 and prior_weight(t, 10) == 1.0


def test_the_prior_weight_scales_the_prior_term_of_the_posterior(toy_corpus, tmp_path):
    tr = Trainer(tiny_recipe(toy_corpus), tmp_path / "r", device="cpu", progress=False)
    m = tr.model.eval()
    x = tr.data.next().x
    z = torch.randn(x.shape[0], m.latent_dim)
    full, half, none = (m.posterior_log_prob(x, w)(z) for w in (1.0, 0.5, 0.0))
    prior, dec = m.prior.log_prob_unnormalized(z), m.decoder.log_prob(x, z)
    torch.testing.assert_close(full, prior + dec)
    torch.testing.assert_close(half, 0.5 * prior + dec)
    torch.testing.assert_close(none, dec)


def test_pretraining_ends_by_reinitializing_the_decoder_only(toy_corpus, tmp_path):
    r = tiny_recipe(toy_corpus, "train.steps=3", "train.pretrain_steps=2")
    tr = Trainer(r, tmp_path / "r", device="cpu", progress=False)
    for _ in range(2):
        tr.train_step(tr.data.next())
        tr.step += 1
    prior_before = {k: v.clone() for k, v in tr.model.prior.state_dict().items()}
    dec_before = {k: v.clone() for k, v in tr.model.decoder.state_dict().items()}
    assert tr.opt_dec.state
    tr.reset_decoder()
    assert not tr.opt_dec.state
    for k, v in tr.model.decoder.state_dict().items():
        if v.numel() > 1:
            assert not torch.equal(v, dec_before[k]), k
            assert v.abs().max() <= r.model.init_range  # a fresh uniform(-init_range, init_range) draw
    assert all(torch.equal(v, prior_before[k]) for k, v in tr.model.prior.state_dict().items())
    assert tr.model.decoder.embed.weight[tr.model.decoder.pad_id].abs().max() == 0


def test_pretraining_runs_with_no_prior_term_then_resets(toy_corpus, tmp_path, capsys):
    summary = train(tiny_recipe(toy_corpus, "train.steps=3", "train.pretrain_steps=2", "train.log_every=1"),
                    tmp_path / "r", device="cpu", progress=False)
    assert summary["step"] == 3
    assert "end of pretraining, decoder re-initialized" in capsys.readouterr().err
    import json

    weights = [json.loads(l).get("prior_weight") for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [w for w in weights if w is not None] == [0.0, 0.0, 1.0]


# ---- the Gaussian-prior ablation ------------------------------------------------------------------------------
def test_a_gaussian_prior_trains_samples_and_evaluates(toy_corpus, tmp_path, capsys):
    from textebm.cli import main
    from textebm.model import LatentEBMModel
    from textebm.prior import GaussianPrior

    r = tiny_recipe(toy_corpus, "prior.kind=gaussian", "train.steps=6", "train.lr_decoder=0.01")
    run = tmp_path / "g"
    s = train(r, run, device="cpu", progress=False)
    assert s["valid_recon_nll_end"] < s["valid_recon_nll_start"]
    m = LatentEBMModel.from_pretrained(run)
    assert isinstance(m.prior, GaussianPrior) and not list(m.prior.parameters())
    z = m.sample_prior(5000, generator=torch.Generator().manual_seed(0))  # exact draws, no chain
    assert abs(z.mean().item()) < 0.02 and abs(z.var().item() - 1.0) < 0.02
    assert main(["sample", str(run), "-n", "3"]) == 0
    assert main(["eval", str(run), "--nll", "--max-sentences", "8", "-K", "4", "--chains", "2"]) == 0
    import json

    rep = json.loads((run / "eval-test.json").read_text())
    assert rep["nll"]["log_z"] == 0.0 and rep["nll"]["log_z_se"] == 0.0
    with pytest.raises(ConfigError, match="gaussian"):
        apply_overrides(r, ["sampling.prior_persistent=100"])
