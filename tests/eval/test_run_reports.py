"""What a run reports: the end-of-training printout and metrics.jsonl (latent diagnostics at every validation),
the start of a resumed run's curve, `textebm compare` on known reports, and `textebm eval` on a corpus with a
user-supplied grammar (the grammar's verdict and the exact KL)."""
import json
import math
import random
import re
import signal

import pytest
import yaml

from textebm.config import dump_recipe
from textebm.train import Trainer, report_lines as _report_lines

from conftest import assert_one_line_error, run_cli, tiny_recipe

LATENT_KEYS = ("valid_mi", "valid_active_units", "valid_shuffle_gap", "valid_kl", "valid_recon_token_acc",
               "valid_recon_bleu")


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_prints_the_latent_diagnostics_it_logged_at_every_validation(toy_corpus, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(dump_recipe(tiny_recipe(toy_corpus, "train.steps=6", "train.eval_every=2")))
    p = run_cli("train", str(recipe), "--out", str(tmp_path / "run"), "--no-progress")
    assert p.returncode == 0, p.stderr
    valid = [r for r in records(tmp_path / "run") if "valid_recon_nll" in r]
    assert [r["step"] for r in valid] == [0, 2, 4, 6]
    for r in valid[1:]:
        assert all(k in r for k in LATENT_KEYS), sorted(r)
    assert not any(k in valid[0] for k in LATENT_KEYS)  # the untrained model's are not computed
    m = re.search(r"latent usage at the end: mutual information (-?[\d.]+) nats, active units (\d+) of 4, "
                  r"shuffled-latent gap (-?[\d.]+) nats/sentence, KL (-?[\d.]+) nats/sentence", p.stdout + p.stderr)
    assert m, p.stdout + p.stderr
    last = valid[-1]
    assert float(m[1]) == pytest.approx(last["valid_mi"], abs=0.005)
    assert int(m[2]) == last["valid_active_units"]
    assert float(m[3]) == pytest.approx(last["valid_shuffle_gap"], abs=0.005)
    assert float(m[4]) == pytest.approx(last["valid_kl"], abs=0.005)


def test_a_resumed_run_reports_its_curve_from_the_first_validation(toy_corpus, tmp_path):
    extra = ("train.steps=6", "train.eval_every=3", "train.save_every=100")
    cut = Trainer(tiny_recipe(toy_corpus, *extra), tmp_path / "run", device="cpu", progress=False)
    step = cut.train_step

    def stop_after_the_fourth(batch):
        out = step(batch)
        if cut.step == 3:
            cut.stop_signal = signal.SIGTERM
        return out

    cut.train_step = stop_after_the_fourth
    cut.run()
    first = records(tmp_path / "run")[0]
    assert first["step"] == 0 and "valid_recon_nll" in first
    summary = Trainer(tiny_recipe(toy_corpus, *extra), tmp_path / "run", device="cpu", resume=True,
                      progress=False).run()
    assert summary["valid_recon_nll_start"] == first["valid_recon_nll"]
    assert _report_lines(summary)[0].startswith(f"validation reconstruction NLL (nats/sentence): start "
                                                f"{first['valid_recon_nll']:.3f} -> end ")


def fake_report(run_dir, kind, fppl, mi):
    run_dir.mkdir(parents=True)
    (run_dir / "eval-test.json").write_text(json.dumps({
        "run": {"recipe": {"prior": {"kind": kind}}}, "fppl": {"value": fppl},
        "latent": {"mi": mi, "active_units": 16}}))
    return str(run_dir)


def test_compare_puts_runs_side_by_side_and_groups_them_with_mean_and_sd(tmp_path):
    runs = [fake_report(tmp_path / "e0", "ebm", 30.0, 4.0), fake_report(tmp_path / "e1", "ebm", 34.0, 5.0),
            fake_report(tmp_path / "g0", "gaussian", 41.0, 6.5)]
    p = run_cli("compare", *runs)
    assert p.returncode == 0, p.stderr
    rows = [line for line in p.stdout.splitlines() if line.startswith("| e") or line.startswith("| g")]
    assert rows[0].startswith("| e0 | 1 | 30.00 | n/a |") and "| 4.00 | 16 |" in rows[0]
    assert len(rows) == 3
    p = run_cli("compare", *runs, "--by", "prior.kind")
    assert p.returncode == 0, p.stderr
    ebm = next(line for line in p.stdout.splitlines() if line.startswith("| ebm "))
    sd = math.sqrt(((30 - 32) ** 2 + (34 - 32) ** 2) / 1)  # sample sd of 30 and 34
    assert ebm.startswith(f"| ebm | 2 | 32.00 ± {sd:.2f} |") and f"4.50 ± {math.sqrt(0.5):.2f}" in ebm
    assert next(line for line in p.stdout.splitlines() if line.startswith("| gaussian ")).startswith(
        "| gaussian | 1 | 41.00 |")
    # a report file names its run directory; a run without a report says what to run
    p = run_cli("compare", str(tmp_path / "e0" / "eval-test.json"))
    assert "| e0 | 1 | 30.00 |" in p.stdout
    assert_one_line_error(run_cli("compare", str(tmp_path / "nothing")), "textebm eval")


# sentences of a small grammar and their exact probabilities
TOY = {"S": [[0.6, "NP VP"], [0.4, "VP"]], "NP": [[0.5, "the dog"], [0.5, "a cat"]],
       "VP": [[0.7, "runs"], [0.3, "sleeps ."]]}
P = {"the dog runs": 0.21, "a cat runs": 0.21, "the dog sleeps .": 0.09, "a cat sleeps .": 0.09, "runs": 0.28,
     "sleeps .": 0.12}


def test_eval_on_a_corpus_with_its_grammar_reports_the_grammar_verdict_and_the_exact_kl(tmp_path):
    corpus = tmp_path / "toygrammar"
    corpus.mkdir()
    (corpus / "grammar.json").write_text(json.dumps({"start": "S", "rules": TOY}))
    rng = random.Random(0)
    sentences, weights = zip(*P.items())
    splits = {s: rng.choices(sentences, weights, k=n) for s, n in (("train", 400), ("valid", 40), ("test", 60))}
    for split, lines in splits.items():
        (corpus / f"{split}.txt").write_text("\n".join(lines) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(dump_recipe(tiny_recipe(corpus, "train.steps=4", "train.eval_every=1000")))
    run = tmp_path / "run"
    p = run_cli("train", str(recipe), "--out", str(run), "--no-progress")
    assert p.returncode == 0, p.stderr
    out = tmp_path / "report.json"
    p = run_cli("eval", str(run), "--nll", "--diversity", "--n-samples", "50", "--importance-samples", "10",
                "--chains", "4", "--max-sentences", "0", "--no-progress", "--out", str(out))
    assert p.returncode == 0, p.stderr
    truth = json.loads(out.read_text())["truth"]
    entropy = -sum(math.log(P[s]) for s in splits["test"]) / len(splits["test"])
    kl = truth["kl"]
    assert kl["entropy_per_sentence"] == pytest.approx(entropy, rel=1e-9)
    nll = json.loads(out.read_text())["nll"]["nll_per_sentence"]
    assert kl["kl_per_sentence"] == pytest.approx(nll - entropy, rel=1e-9)
    samples = truth["samples"]
    assert samples["n_samples"] == 50 and 0.0 <= samples["frac_derivable"] <= 1.0
    assert yaml.safe_load((run / "recipe.yaml").read_text())["data"]["corpus"] == str(corpus)
