"""The training loop's guards and chain starts: a prior whose energy runs away is stopped with a message naming
it; prior chains started from posterior samples start where those samples are."""
import pytest
import torch

from conftest import run_cli, tiny_recipe
from textebm.sampling import CodeReplay
from textebm.train import Trainer, TrainingDivergedError, train

#: a prior that runs away: the posterior chain carries z far from N(0, I) (large falling steps, little noise), the
#: prior chain (2 steps of 0.01) cannot follow, so f rises at z+ and falls at z- without bound (f(z+) is about
#: 86 by step 30, 1,444 by step 50 and 292,000 by step 140 without the guard)
RUNAWAY = ["train.steps=150", "train.lr_prior=0.01", "train.latent_batches=0", "train.prior_fit_samples=0",
           "sampling.posterior_steps=10", "sampling.posterior_step_size=0.8", "sampling.posterior_schedule=linear",
           "sampling.posterior_step_size_end=0.05", "sampling.posterior_noise=0.3", "sampling.prior_steps=2",
           "sampling.prior_step_size=0.01"]


def test_the_energy_guard_stops_a_run_whose_prior_runs_away(toy_corpus, tmp_path):
    with pytest.raises(TrainingDivergedError, match=r"prior's energy diverged at step (\d+): f\(z\+\) - f\(z-\) = "
                                                    r".* exceeds train.max_f_gap = 100.*lr_prior.*grad_penalty"):
        train(tiny_recipe(toy_corpus, *RUNAWAY), tmp_path / "run", device="cpu", progress=False)
    # without the guard the same run reaches its last step with an energy of hundreds of thousands of nats
    t = Trainer(tiny_recipe(toy_corpus, *RUNAWAY, "train.max_f_gap=null", "train.max_abs_f=null"),
                tmp_path / "unguarded", device="cpu", progress=False)
    for _ in range(60):
        stats = t.train_step(t.data.next())
        t.step += 1
    assert float(stats["f_pos"] - stats["f_neg"]) > 1000


def test_the_guard_is_one_line_on_the_command_line(toy_corpus, tmp_path):
    from textebm.config import dump_recipe

    recipe = tmp_path / "runaway.yaml"
    recipe.write_text(dump_recipe(tiny_recipe(toy_corpus, *RUNAWAY)))
    proc = run_cli("train", str(recipe), "--out", str(tmp_path / "run"), "--no-progress")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # after the run's own progress lines: one line of error
    assert last.startswith("textebm: error: the prior's energy diverged") and "train.max_f_gap" in last


def test_prior_chains_start_from_posterior_samples_with_the_given_fraction():
    replay = CodeReplay(capacity=8, fraction=0.25)
    z0 = torch.zeros(4000, 2)
    start, handle = replay.begin(z0)
    assert handle is None and start is z0  # nothing stored yet: every chain starts fresh
    replay.add(torch.full((5, 2), 7.0))
    replay.add(torch.full((5, 2), 9.0))  # the ring keeps the newest 8: three 7s, five 9s
    assert replay.filled == 8 and sorted(replay.buffer[:, 0].tolist()) == [7.0] * 3 + [9.0] * 5
    start, handle = replay.begin(z0, generator=torch.Generator().manual_seed(0))
    replayed = start[:, 0] != 0
    assert torch.equal(replayed, handle)
    assert replayed.float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert (start[replayed, 0] == 9.0).float().mean().item() == pytest.approx(5 / 8, abs=0.05)
    again = CodeReplay(capacity=8, fraction=0.25)
    again.load_state_dict(replay.state_dict())
    torch.testing.assert_close(again.buffer, replay.buffer)
    assert (again.filled, again.head) == (replay.filled, replay.head)


def test_the_trainer_feeds_its_prior_chain_the_latest_posterior_samples(toy_corpus, tmp_path):
    t = Trainer(tiny_recipe(toy_corpus, "sampling.prior_start=posterior", "sampling.prior_start_fraction=1.0",
                            "sampling.prior_steps=0", "sampling.prior_replay=32", "train.batch_size=32"),
                tmp_path / "run", device="cpu", progress=False)
    assert isinstance(t.prior_store, CodeReplay) and t.prior_chain.start == "posterior"
    batch = t.data.next()
    z_pos = t.sample_posterior(batch.x, batch.index)
    t.prior_store.add(z_pos)
    z_neg = t.sample_prior(32)  # 0 steps: the starts themselves, every one a stored posterior sample
    stored = {tuple(r) for r in z_pos.tolist()}
    assert all(tuple(r) in stored for r in z_neg.tolist())


def test_more_prior_updates_step_the_prior_that_many_times_and_nothing_else(toy_corpus, tmp_path):
    t = Trainer(tiny_recipe(toy_corpus, "train.prior_updates=3"), tmp_path / "run", device="cpu", progress=False)
    dec_before = [p.detach().clone() for p in t.model.decoder.parameters()]
    t.train_step(t.data.next())
    steps = {name: max(int(s["step"]) for s in opt.state.values()) for name, opt in t.optimizers.items()}
    assert steps == {"decoder": 1, "prior": 3}
    assert any(not torch.equal(a, b) for a, b in zip(dec_before, t.model.decoder.parameters()))


def test_the_prior_has_its_own_learning_rate_schedule(toy_corpus, tmp_path):
    t = Trainer(tiny_recipe(toy_corpus, "train.steps=10", "train.lr_prior_schedule=linear"), tmp_path / "run",
                device="cpu", progress=False)
    for _ in range(5):
        t.train_step(t.data.next())
        t.step += 1
    lr = {name: opt.param_groups[0]["lr"] for name, opt in t.optimizers.items()}
    assert lr["prior"] == pytest.approx(t.recipe.train.lr_prior * 0.5) and lr["decoder"] == t.recipe.train.lr_decoder


def test_refitting_the_prior_moves_it_onto_the_frozen_codes():
    """The sign model whose every sentence is ``a a a a``, with a prior N(0, I) and a linear f(z) = a.z (so p_alpha
    is N(a, I), an exponential family in a): maximum likelihood on the codes drawn once under the old prior has the
    known optimum a = the codes' mean (the moments of z under p_alpha match the data's). Before: N(0, I), whose
    codes decode to the data 1/16 of the time."""
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "tests" / "eval"))
    from test_prior_fit import _sign_model

    from textebm.config import Recipe, apply_overrides
    from textebm.eval.prior_fit import aggregate_posterior
    from textebm.train.fit_prior import fit_prior

    from textebm.sampling import ChainConfig, Langevin

    model = _sign_model(0.0)
    model.recipe = apply_overrides(Recipe(), ["train.lr_prior=0.05", "train.betas_prior=[0.9, 0.999]"])
    model.posterior_chain = ChainConfig(Langevin(), 100, 0.3)  # converges here (setting the recipe rebuilt it)
    data = [[2, 4, 4, 4, 4, 3]] * 300
    codes = aggregate_posterior(model, data, generator=torch.Generator().manual_seed(0))  # what fit_prior draws
    share = lambda z: (z > 0).all(1).float().mean().item()  # noqa: E731  decodes to "a a a a"
    draw = lambda: model.sample_prior(2000, generator=torch.Generator().manual_seed(1))  # noqa: E731
    assert share(draw()) == pytest.approx(1 / 16, abs=0.02)
    fit_prior(model, data, steps=300, batch_size=150, seed=0)
    z = draw()
    torch.testing.assert_close(model.prior.net[0].weight[0], codes.mean(0), atol=0.08, rtol=0)
    torch.testing.assert_close(z.mean(0), codes.mean(0), atol=0.1, rtol=0)
    assert share(z) > 0.25  # from 1/16


def test_the_run_reports_what_share_of_its_wall_time_validation_took(toy_corpus, tmp_path, monkeypatch):
    """Each validation record carries its time; the summary's share is their sum over the run's wall time."""
    import json
    import time

    from textebm.train import validation

    slow = validation.Validator.__call__

    def validate_slowly(self, *a, **kw):  # a known validation cost: at least 0.2 s each
        time.sleep(0.2)
        return slow(self, *a, **kw)

    monkeypatch.setattr(validation.Validator, "__call__", validate_slowly)
    summary = train(tiny_recipe(toy_corpus, "train.steps=4", "train.eval_every=2"), tmp_path / "run", device="cpu",
                    progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    times = [r["time_validation"] for r in records if "time_validation" in r]
    assert len(times) == 3 and min(times) >= 0.2  # steps 0, 2 and 4
    assert summary["validation_fraction"] == pytest.approx(sum(times) / summary["time_wall_s"])
    assert 0 < summary["validation_fraction"] < 1
    assert any(line.startswith("validation took ") for line in summary["report_lines"])


def test_the_latent_diagnostics_do_not_replace_the_validation_nll(toy_corpus, tmp_path):
    """The validation NLL is the one over the validation batches, whether or not the latent diagnostics run (they
    compute their own on latent_batches sentences, kept as valid_latent_recon_nll)."""
    from textebm.train import Validator

    t = Trainer(tiny_recipe(toy_corpus, "train.steps=3", "train.latent_batches=1"), tmp_path / "run", device="cpu",
                progress=False)
    for _ in range(3):
        t.train_step(t.data.next())
        t.step += 1
    with_diag = t.evaluate()
    plain = Validator(tiny_recipe(toy_corpus, "train.steps=3", "train.latent_batches=0",
                                  "train.prior_fit_samples=0"), t.data, t.device)(t.model, t.step)
    assert "valid_mi" in with_diag and "valid_latent_recon_nll" in with_diag and "valid_mi" not in plain
    assert with_diag["valid_recon_nll"] == pytest.approx(plain["valid_recon_nll"], rel=1e-6)
    assert with_diag["valid_latent_recon_nll"] != pytest.approx(plain["valid_recon_nll"], rel=1e-3)
