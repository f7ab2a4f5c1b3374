"""Untrusted files never run code, user data is never silently replaced, and bad input is one line with exit 2."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from textebm.cli import main
from textebm.config import dump_recipe
from textebm.runs import CheckpointError, UnsafeCheckpointError, list_checkpoints, load_checkpoint

from conftest import ROOT, tiny_recipe


def run_main(capsys, *argv):
    """``textebm ARGV`` in this process: (exit status, stderr lines)."""
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse errors
        code = e.code
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    return code, err


def assert_error(capsys, argv, *words, logs=False):
    """Exit status 2 and one error line naming ``words``; with ``logs``, the run's log lines may come first."""
    code, err = run_main(capsys, *argv)
    assert code == 2, err
    assert (logs or len(err) == 1) and not any("Traceback" in l for l in err), err
    assert err[-1].startswith("textebm") and ": error: " in err[-1], err
    for w in words:
        assert w in err[-1], err[-1]
    return err[-1]


class _Hostile:
    """Unpickling this object calls ``open(marker, "w")``: the file appears only if the loader runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def recipe_file(tmp_path, toy_corpus):
    path = tmp_path / "tiny.yaml"
    path.write_text(dump_recipe(tiny_recipe(toy_corpus, "train.steps=4", "train.save_every=2")))
    return path


# ---- checkpoints never run code --------------------------------------------------------------------------
def test_a_hostile_checkpoint_is_refused_everywhere_and_runs_nothing(tmp_path, tiny_run, capsys):
    marker = tmp_path / "pwned"
    genuine = load_checkpoint(list_checkpoints(tiny_run)[-1])
    genuine["payload"] = _Hostile(marker)

    hostile_file = tmp_path / "hostile.pt"
    torch.save(genuine, hostile_file)
    run = tmp_path / "hostile_run"  # a run directory whose newest checkpoint is hostile
    (run / "checkpoints").mkdir(parents=True)
    for name in ("recipe.yaml", "vocab.json"):
        (run / name).write_bytes((tiny_run / name).read_bytes())
    torch.save(genuine, run / "checkpoints" / "ckpt-00000020.pt")

    for argv in (["sample", str(hostile_file), "-n", "2"], ["eval", str(hostile_file), "--recon"],
                 ["sample", str(run), "-n", "2"], ["chain", str(run), "--steps", "2"],
                 ["eval", str(run), "--recon"], ["train", "--resume", str(run), "--no-progress"]):
        assert_error(capsys, argv, "refusing to open", "io.open")
        assert not marker.exists(), argv
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(hostile_file)
    assert not marker.exists()


def test_todays_checkpoints_load_without_pickled_objects(tiny_run):
    path = list_checkpoints(tiny_run)[-1]
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    ck = torch.load(path, weights_only=True)  # PyTorch's own restricted loader accepts it as it is
    assert ck["rng"]["numpy"]["keys"].dtype == torch.int64 and ck["step"] == 20


def test_an_older_checkpoint_with_a_pickled_numpy_state_still_resumes(tmp_path, toy_corpus, capsys):
    from textebm.train import Trainer, train

    r = tiny_recipe(toy_corpus, "train.steps=4", "train.save_every=2")
    run = tmp_path / "run"
    train(r, run, device="cpu", progress=False)
    path = list_checkpoints(run)[-1]
    ck = torch.load(path, weights_only=True)
    rng = ck.pop("rng")  # the layout before: numpy's state as get_state() returns it (an ndarray inside)
    n = rng["numpy"]
    ck.update(numpy_rng=(n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]),
              python_rng=(rng["python"][0], tuple(rng["python"][1]), rng["python"][2]), torch_rng=rng["torch"],
              cuda_rng=None)
    torch.save(ck, path)
    assert "numpy.ndarray" in torch.serialization.get_unsafe_globals_in_checkpoint(path)
    old = load_checkpoint(path)
    assert torch.equal(old["rng"]["numpy"]["keys"], n["keys"]) and old["rng"]["python"] == rng["python"]
    tr = Trainer(r.__class__(**{**r.__dict__}), run, device="cpu", resume=True, progress=False)
    assert tr.step == 4


def test_checkpoint_files_that_are_not_checkpoints(tmp_path, capsys):
    lst = tmp_path / "list.pt"
    torch.save([1, 2, 3], lst)
    assert_error(capsys, ["sample", str(lst)], "is not a textebm checkpoint")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(300))
    assert_error(capsys, ["sample", str(junk)], "unreadable")
    with pytest.raises(CheckpointError):
        load_checkpoint(lst)


# ---- saved models with malformed files -------------------------------------------------------------------
@pytest.mark.parametrize("content", ["[1, 2]", "{}", "{\"prior\": 3}", "not json", "\"text\""])
def test_a_malformed_config_json_is_one_line_naming_the_file(tmp_path, tiny_run, capsys, content):
    from textebm.model import LatentEBMModel

    saved = tmp_path / "saved"
    LatentEBMModel.from_pretrained(tiny_run).save_pretrained(saved)
    (saved / "config.json").write_text(content)
    assert_error(capsys, ["sample", str(saved)], str(saved / "config.json"))


def test_weights_that_do_not_fit_the_config(tmp_path, tiny_run, capsys):
    from textebm.model import LatentEBMModel

    saved = tmp_path / "saved"
    LatentEBMModel.from_pretrained(tiny_run).save_pretrained(saved)
    cfg = json.loads((saved / "config.json").read_text())
    cfg["decoder"]["hidden_dim"] += 1
    (saved / "config.json").write_text(json.dumps(cfg))
    assert_error(capsys, ["sample", str(saved)], "does not fit")


@pytest.mark.parametrize("part, key, value, words", [
    ("prior", "hidden", -1, "hidden = -1 is negative"),
    ("prior", "n_layers", 10 ** 9, "n_layers = 1000000000 is more than"),
    ("decoder", "hidden_dim", 10 ** 12, "hidden_dim = 1000000000000 is more than"),
    ("decoder", "bos_id", 99999, "bos_id = 99999 is not a token id"),
    ("prior", "activation", "nope", "cannot be built"),
])
def test_config_values_that_cannot_describe_the_weights(tmp_path, tiny_run, capsys, part, key, value, words):
    """Caught from the config and the weights file's size, before any module is built (a billion layers would
    take hours to build before failing to fit)."""
    from textebm.model import LatentEBMModel

    saved = tmp_path / "saved"
    LatentEBMModel.from_pretrained(tiny_run).save_pretrained(saved)
    cfg = json.loads((saved / "config.json").read_text())
    cfg[part][key] = value
    (saved / "config.json").write_text(json.dumps(cfg))
    t0 = time.monotonic()
    assert_error(capsys, ["sample", str(saved)], str(saved / "config.json"), words)
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("key, value", [("opt_dec", {"x": 1}), ("rng", {"python": 1}), ("step", "x"),
                                        ("batcher", [1, 2]), ("sampler_gen", torch.zeros(3))])
def test_a_checkpoint_whose_contents_do_not_fit_is_one_line_naming_it(tmp_path, toy_corpus, capsys, key, value):
    from textebm.train import train

    run = tmp_path / "run"
    train(tiny_recipe(toy_corpus, "train.steps=2", "train.save_every=2"), run, device="cpu", progress=False)
    path = list_checkpoints(run)[-1]
    ck = torch.load(path, weights_only=True)
    ck[key] = value
    torch.save(ck, path)
    assert_error(capsys, ["train", "--resume", str(run), "--set", "train.steps=4", "--no-progress"], str(path),
                 logs=True)


@pytest.mark.parametrize("override, words", [
    ("train.num_threads=-1", ["train.num_threads", "[1, 1024]"]),
    ("train.num_threads=100000", ["train.num_threads", "[1, 1024]"]),
    ("seed=-1", ["seed"]),
    ("seed=99999999999999999999999", ["seed"]),
    ("prior.f_clamp=-1", ["prior.f_clamp"]),
    ("sampling.prior_persistent=8", ["sampling.prior_persistent", "train.batch_size"]),
    ("sampling.posterior_sampler=mala", ["sampling.posterior_sampler", "sampling.posterior_noise"]),
])
def test_recipe_values_that_would_fail_later_are_refused_before_the_run(tmp_path, capsys, recipe_file, override,
                                                                        words):
    out = tmp_path / "out"
    assert_error(capsys, ["train", str(recipe_file), "--out", str(out), "--set", override,
                          "--set", "sampling.posterior_noise=0.3"], *words)
    assert not out.exists()


# ---- data arguments are never replaced -------------------------------------------------------------------
def test_a_missing_or_empty_data_dir_is_an_error_not_a_generated_corpus(tmp_path, capsys):
    quick = str(ROOT / "textebm" / "recipes" / "quickstart.yaml")
    out = tmp_path / "out"
    assert_error(capsys, ["train", quick, "--data-dir", str(tmp_path / "nope"), "--out", str(out)],
                 "not found", str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_error(capsys, ["train", quick, "--data-dir", str(empty), "--out", str(out)], "lacks the split")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "train.txt").write_text("a b c\n")
    assert_error(capsys, ["train", quick, "--data-dir", str(partial), "--out", str(out)], "valid")
    assert not out.exists()


def test_data_dir_with_a_path_corpus_is_an_error(tmp_path, toy_corpus, capsys, recipe_file):
    assert_error(capsys, ["train", str(recipe_file), "--data-dir", str(toy_corpus), "--out", str(tmp_path / "o")],
                 "data.data_dir")


# ---- --out never overwrites a saved model ----------------------------------------------------------------
def test_out_refuses_a_saved_model_and_overwrite_replaces_it_only_after_start(tmp_path, tiny_run, capsys,
                                                                               recipe_file, toy_corpus):
    from textebm.model import LatentEBMModel

    saved = tmp_path / "saved"
    LatentEBMModel.from_pretrained(tiny_run).save_pretrained(saved)
    (saved / "metrics.jsonl").write_text('{"step": 1, "old": true}\n')
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    assert_error(capsys, ["train", str(recipe_file), "--out", str(saved), "--no-progress"],
                 "already holds a saved model", "--overwrite")
    bad = tmp_path / "bad.yaml"
    bad.write_text(dump_recipe(tiny_recipe(tmp_path / "no_such_corpus")))
    assert_error(capsys, ["train", str(bad), "--out", str(saved), "--overwrite", "--no-progress"], "no_such_corpus",
                 logs=True)
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before  # a run that did not start touched nothing
    code, err = run_main(capsys, "train", str(recipe_file), "--out", str(saved), "--overwrite", "--no-progress")
    assert code == 0, err
    records = [json.loads(l) for l in (saved / "metrics.jsonl").read_text().splitlines()]
    assert not any(r.get("old") for r in records)  # the new run's metrics are not appended to the old ones


def test_a_run_that_fails_after_starting_leaves_its_directory_reusable(tmp_path, toy_corpus, capsys):
    r = tiny_recipe(toy_corpus, "sampling.prior_step_size=1e6", "prior.sigma0=1e-3", "train.latent_batches=0")
    path = tmp_path / "diverges.yaml"
    path.write_text(dump_recipe(r))
    out = tmp_path / "out"
    assert_error(capsys, ["train", str(path), "--out", str(out), "--no-progress"], "diverged", logs=True)
    assert not out.exists()


def test_overwrite_keeps_the_old_model_when_the_new_run_fails_before_its_first_checkpoint(tmp_path, tiny_run,
                                                                                          capsys, toy_corpus):
    from textebm.model import LatentEBMModel

    saved = tmp_path / "saved"
    LatentEBMModel.from_pretrained(tiny_run).save_pretrained(saved)
    (saved / "metrics.jsonl").write_text('{"step": 1, "old": true}\n')
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    diverges = tmp_path / "diverges.yaml"  # sets up, then diverges in its first step
    diverges.write_text(dump_recipe(tiny_recipe(toy_corpus, "sampling.prior_step_size=1e6", "prior.sigma0=1e-3",
                                                "train.latent_batches=0")))
    assert_error(capsys, ["train", str(diverges), "--out", str(saved), "--overwrite", "--no-progress"], "diverged",
                 logs=True)
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before


def digest(directory):
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_no_output_flag_writes_over_a_file_of_the_run_or_its_input(tmp_path, tiny_run, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ckpt = list_checkpoints(run)[-1]
    before = digest(run)
    for argv, flag in [
        (["chain", str(run), "--steps", "2", "--every", "1", "--json", str(run / "config.json")], "--json"),
        (["chain", str(run), "--steps", "2", "--out", str(run / "model.safetensors")], "--out"),
        (["chain", str(run), "--steps", "2", "--out", str(ckpt)], "--out"),
        (["eval", str(run), "--diversity", "--out", str(run / "recipe.yaml")], "--out"),
        (["eval", str(run), "--diversity", "--save-samples", str(run / "vocab.json")], "--save-samples"),
        (["eval", str(run), "--diversity", "--save-samples", str(run / "metrics.jsonl")], "--save-samples"),
        (["sample", str(run), "--out", str(run / "config.json")], "--out"),
    ]:
        assert_error(capsys, argv, flag, "choose another path")
    assert digest(run) == before
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a b c\nb c d\n" * 50)
    text = corpus.read_bytes()
    assert_error(capsys, ["ngram", "train", "--order", "2", "--input", str(corpus), "--output", str(corpus)],
                 "--output", "input")
    assert corpus.read_bytes() == text


# ---- arguments and recipe values are checked before any work ---------------------------------------------
@pytest.mark.parametrize("argv,words", [
    (["--top-k", "-5"], ["--top-k", "at least 0"]),
    (["--top-p", "2"], ["--top-p", "<= 1"]),
    (["--top-p", "0"], ["--top-p", "> 0"]),
    (["--temperature", "inf"], ["--temperature", "finite"]),
    (["--step-size", "nan"], ["--step-size", "finite"]),
    (["--steps", "-1"], ["--steps"]),
    (["--device", "cudax"], ["unknown device"]),
])
def test_sample_arguments(tiny_run, capsys, argv, words):
    assert_error(capsys, ["sample", str(tiny_run), *argv], *words)


def test_infinite_learning_rate_is_rejected_before_the_run_starts(tmp_path, capsys, recipe_file):
    out = tmp_path / "out"
    assert_error(capsys, ["train", str(recipe_file), "--set", "train.lr_decoder=inf", "--out", str(out)],
                 "train.lr_decoder", "finite")
    assert not out.exists()


def test_resume_refuses_changes_it_cannot_honour(tmp_path, capsys, recipe_file):
    run = tmp_path / "run"
    assert run_main(capsys, "train", str(recipe_file), "--out", str(run), "--no-progress")[0] == 0
    assert_error(capsys, ["train", "--resume", str(run), "--set", "model.hidden_dim=100"],
                 "model.hidden_dim cannot change")
    assert_error(capsys, ["train", "--resume", str(run), "--out", str(tmp_path / "x")], "--resume")
    recipe_before = (run / "recipe.yaml").read_text()
    assert_error(capsys, ["train", "--resume", str(run), "--set", "train.steps=1"], "train.steps=1", "4 steps",
                 logs=True)
    assert (run / "recipe.yaml").read_text() == recipe_before
    code, err = run_main(capsys, "train", "--resume", str(run), "--set", "train.steps=6", "--no-progress")
    assert code == 0, err
    assert max(int(c.stem.split("-")[1]) for c in list_checkpoints(run)) == 6


def test_messages_name_what_is_missing(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for cmd in ("sample", "eval", "chain"):
        msg = assert_error(capsys, [cmd, str(empty)], "no saved model")
        assert "resume" not in msg
    assert_error(capsys, ["train", "--resume", str(empty)], "not a training run")


def test_one_sentence_training_split_warns(tmp_path, capsys):
    from textebm.train import Trainer

    d = tmp_path / "c"
    d.mkdir()
    for split in ("train", "valid", "test"):
        (d / f"{split}.txt").write_text("the dog sees a cat .\n")
    Trainer(tiny_recipe(d), tmp_path / "run", device="cpu", progress=False)
    assert "1 training sentence(s), fewer than one batch" in capsys.readouterr().err


# ---- interrupted runs say so ------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_exits_with_the_signal_status_and_says_how_to_resume(tmp_path, toy_corpus, sig):
    r = tiny_recipe(toy_corpus, "train.steps=100000", "train.save_every=5")
    path = tmp_path / "r.yaml"
    path.write_text(dump_recipe(r))
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "textebm", "train", str(path), "--out", str(out), "--no-progress"],
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list_checkpoints(out) and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert f"textebm train --resume {out}" in err and "saved:" not in err
    assert list_checkpoints(out)
