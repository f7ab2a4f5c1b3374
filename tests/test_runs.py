"""Run directories (textebm.runs, textebm.rundir): the lock, what --overwrite keeps and puts back (on an early
exit, a signal, a kill), names that are never paths, outputs that never land in a run or an input, links that
are refused, resume that holds recipe.yaml to the checkpoint's recipe, and reports of checkpoints."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from textebm.config import dump_recipe
from textebm.runs import list_checkpoints

from conftest import FAST, ROOT, one_line_error, run_main, tiny_recipe, tree


def copy_run(tiny_run, where):
    shutil.copytree(tiny_run, where)
    return where


def write_recipe(path, recipe, **top):
    """``recipe`` as YAML, with top-level keys replaced as given (values the schema would refuse included)."""
    data = yaml.safe_load(dump_recipe(recipe))
    data.update(top)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def set_aside_by_hand(run, pid=999999):
    """What `kill -9` of `textebm train --out RUN --overwrite` leaves during its first checkpoint: the old run
    in RUN/.replaced-PID, beside the new run's first files and a half-written temporary checkpoint."""
    aside = run / f".replaced-{pid}"
    aside.mkdir()
    for child in list(run.iterdir()):
        if child != aside:
            os.replace(child, aside / child.name)
    (run / "recipe.yaml").write_text("name: new\n")
    (run / "vocab.json").write_text('{"kind": "word", "tokens": ["<pad>", "<unk>", "<s>", "</s>", "x"]}')
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / ".ckpt-00000000.pt.k3j2.tmp").write_bytes(b"half")
    return aside


# ---- names are names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ABSOLUTE", "../../escaped"])
def test_a_recipe_name_is_a_name_never_a_path(tmp_path, toy_corpus, capsys, monkeypatch, name):
    """Row 2: ``name: /some/dir`` or ``name: ../../escaped`` and ``train R --overwrite`` without ``--out``."""
    work = tmp_path / "work"
    work.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    name = str(victim) if name == "ABSOLUTE" else name
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(toy_corpus, "train.steps=1", *FAST), name=name)
    monkeypatch.chdir(work)
    code, out, err = run_main(capsys, "train", recipe, "--overwrite", "--no-progress")
    one_line_error(code, err, "name:", "not a run name", "--out")
    assert tree(victim) == {"keep.txt": b"keep"}
    assert not (tmp_path / "escaped").exists() and not (work / "runs").exists()


# ---- --overwrite keeps the replaced run until the new one has trained and saved -----------------------------
def test_sigint_during_the_first_validation_puts_the_replaced_run_back(tmp_path, tiny_run, recipe_file, capsys,
                                                                       monkeypatch):
    """Row 3: SIGINT during the step-0 validation used to save an untrained step-0 checkpoint over the old run."""
    from textebm.train import Trainer

    run = copy_run(tiny_run, tmp_path / "run")
    before = tree(run)
    evaluate = Trainer.evaluate

    def interrupted(self, *a, **kw):
        if self.step == 0:
            signal.raise_signal(signal.SIGINT)  # the trainer's own handler: finish, save, stop
        return evaluate(self, *a, **kw)

    monkeypatch.setattr(Trainer, "evaluate", interrupted)
    code, out, err = run_main(capsys, "train", recipe_file, "--out", run, "--overwrite", "--no-progress")
    assert code == 130, err
    assert "before the first training step" in err[-1] and "put back" in err[-1], err
    assert not any("checkpoint saved" in line for line in err), err
    assert tree(run) == before


def test_a_run_left_set_aside_by_a_killed_overwrite_comes_back_at_the_next_command(tmp_path, tiny_run, capsys,
                                                                                    toy_corpus):
    """Row 4: after `kill -9` the old run sat in .replaced-PID with no hint, `sample` said the directory held no
    model, and the natural retry `train ... --overwrite` deleted it for good."""
    run = copy_run(tiny_run, tmp_path / "run")
    before = tree(run)
    set_aside_by_hand(run)
    code, out, err = run_main(capsys, "sample", run, "-n", "2")
    assert code == 0, err
    assert len(out.splitlines()) == 2 and any("put back the run" in line for line in err), err
    assert tree(run) == before

    set_aside_by_hand(run)  # killed again; the retry itself fails before its first step: nothing is lost
    diverges = write_recipe(tmp_path / "d.yaml", tiny_recipe(toy_corpus, "sampling.prior_step_size=1e6",
                                                             "prior.sigma0=1e-3", *FAST))
    code, out, err = run_main(capsys, "train", diverges, "--out", run, "--overwrite", "--no-progress")
    one_line_error(code, err, "diverged")
    assert tree(run) == before


def test_a_set_aside_run_that_cannot_be_put_back_now_names_the_command_that_does(tmp_path, tiny_run, capsys):
    from textebm.rundir import RunLock

    run = copy_run(tiny_run, tmp_path / "run")
    before = tree(run)
    set_aside_by_hand(run)
    with RunLock(run, "a test holding the lock"):
        code, out, err = run_main(capsys, "sample", run, "-n", "1")
    assert code == 2
    assert any(f"put it back with: textebm train --restore {run}" in line for line in err), err
    code, out, err = run_main(capsys, "train", "--restore", run)
    assert code == 0 and "put back the run" in err[-1], err
    assert tree(run) == before


def test_a_full_disk_during_the_first_checkpoint_is_one_line_and_keeps_the_replaced_run(tmp_path, tiny_run,
                                                                                         recipe_file):
    """Row 17 (disk full): torch reported it as a RuntimeError, a traceback ("unexpected pos")."""
    run = copy_run(tiny_run, tmp_path / "run")
    before = tree(run)

    def small_files():  # a file may not grow past 40 kB: a checkpoint does, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "textebm", "train", str(recipe_file), "--out", str(run),
                        "--overwrite", "--no-progress"], capture_output=True, text=True, env=env,
                       preexec_fn=small_files, timeout=300)
    err = [line for line in p.stderr.splitlines() if line.strip()]
    one_line_error(p.returncode, err, "could not write", "ckpt-00000002.pt", "disk full")
    assert tree(run) == before


# ---- a directory that holds the command's inputs, and the lock -----------------------------------------------
def test_out_holding_the_recipe_or_the_corpus_is_refused(tmp_path, toy_corpus, capsys):
    """Row 5: ``--set data.corpus=DIR --out DIR --overwrite`` deleted the recipe and the corpus."""
    d = tmp_path / "d"
    shutil.copytree(toy_corpus, d)
    inside = write_recipe(d / "r.yaml", tiny_recipe(d, "train.steps=1", *FAST))
    outside = write_recipe(tmp_path / "r.yaml", tiny_recipe(toy_corpus, "train.steps=1", *FAST))
    before = tree(d)
    for argv in ([inside, "--set", f"data.corpus={d}"], [outside, "--set", f"data.corpus={d}"], [inside],
                 [outside, "--set", f"data.corpus={toy_corpus}", "--data-dir", d]):
        code, out, err = run_main(capsys, "train", *argv, "--out", d, "--overwrite", "--no-progress")
        one_line_error(code, err, "holds this command's input", "--out")
    assert tree(d) == before


def test_a_second_train_on_the_same_directory_fails_at_once(tmp_path, toy_corpus, capsys):
    """Row 6: two trainings on one --out mixed one run's recipe with the other's weights."""
    long = write_recipe(tmp_path / "long.yaml", tiny_recipe(toy_corpus, "train.steps=100000",
                                                            "train.save_every=100000", *FAST))
    other = write_recipe(tmp_path / "other.yaml", tiny_recipe(toy_corpus, "train.steps=1", "seed=5", *FAST))
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    first = subprocess.Popen([sys.executable, "-m", "textebm", "train", str(long), "--out", str(run),
                              "--no-progress"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        while not (run / "recipe.yaml").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None
        t0 = time.monotonic()
        code, out, err = run_main(capsys, "train", other, "--out", run, "--overwrite", "--no-progress")
        one_line_error(code, err, str(run), "in use by another textebm command", f"pid {first.pid}")
        assert time.monotonic() - t0 < 10
        code, out, err = run_main(capsys, "train", "--resume", run, "--no-progress")
        one_line_error(code, err, "in use by another textebm command")
    finally:
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, stderr
    assert yaml.safe_load((run / "recipe.yaml").read_text())["seed"] == 0  # the first run's, whole
    assert not (run / ".lock").exists()


# ---- outputs never land in a run, a saved model or an input -------------------------------------------------
def test_an_output_link_into_another_run_is_refused(tmp_path, tiny_run, capsys, toy_corpus):
    """Row 7: the guard compared ``absolute()`` paths, so a link to another run's weights was written through."""
    other = copy_run(tiny_run, tmp_path / "other")
    ckpt = list_checkpoints(other)[-1]
    links = {}
    for name, target in (("samples.txt", other / "model.safetensors"), ("grid.png", other / "config.json"),
                         ("chain.json", ckpt), ("model.arpa", other / "vocab.json")):
        links[name] = tmp_path / name
        links[name].symlink_to(target)
    before = tree(other)
    for argv, flag in (
            (["eval", tiny_run, "--diversity", "--n-samples", "2", "--out", tmp_path / "r.json", "--save-samples",
              links["samples.txt"]], "--save-samples"),
            (["sample", tiny_run, "--out", links["grid.png"]], "--out"),
            (["chain", tiny_run, "--steps", "2", "--json", links["chain.json"]], "--json"),
            (["ngram", "train", "--order", "2", "--input", toy_corpus / "train.txt", "--output",
              links["model.arpa"]], "--output")):
        code, out, err = run_main(capsys, *argv)
        one_line_error(code, err, flag, "choose another path")
    assert tree(other) == before


@pytest.mark.parametrize("name", ["metrics.jsonl", "recipe.yaml", "checkpoints"])
def test_resume_refuses_a_run_whose_files_are_links(tmp_path, tiny_run, capsys, name):
    """Row 8: records were appended to an outside file, an outside recipe rewritten, and (keep_checkpoints=1)
    another run's checkpoints deleted."""
    run = copy_run(tiny_run, tmp_path / "run")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.replace(run / name, outside / name)
    (run / name).symlink_to(outside / name)
    before = tree(outside)
    code, out, err = run_main(capsys, "train", "--resume", run, "--set", "train.steps=21", "--set",
                              "train.keep_checkpoints=1", "--set", "train.eval_batches=1", "--no-progress")
    one_line_error(code, err, str(run / name), "symbolic link")
    assert tree(outside) == before


# ---- resume holds recipe.yaml to the checkpoint's recipe ---------------------------------------------------
@pytest.mark.parametrize("key, value", [("seed", 7), ("sampling.prior_steps", 3), ("train.lr_decoder", 0.5)])
def test_resume_refuses_an_edited_recipe_as_set_does(tmp_path, tiny_run, capsys, key, value):
    """Row 10: an edited recipe.yaml was accepted (the optimizer kept the old rate, the checkpoint recorded the
    new one), though ``--set`` refused the same change."""
    run = copy_run(tiny_run, tmp_path / "run")
    data = yaml.safe_load((run / "recipe.yaml").read_text())
    node, *rest = key.split(".")
    if rest:
        data[node][rest[0]] = value
    else:
        data[node] = value
    (run / "recipe.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    ckpts = tree(run / "checkpoints")
    code, out, err = run_main(capsys, "train", "--resume", run, "--set", "train.steps=21", "--no-progress")
    one_line_error(code, err, "recipe.yaml was edited", key, "cannot change")
    assert tree(run / "checkpoints") == ckpts


def test_resume_accepts_an_edit_of_a_resumable_key_and_uses_it(tmp_path, tiny_run, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    data = yaml.safe_load((run / "recipe.yaml").read_text())
    data["train"]["steps"], data["train"]["eval_batches"] = 21, 1
    (run / "recipe.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    code, out, err = run_main(capsys, "train", "--resume", run, "--no-progress")
    assert code == 0, err
    assert list_checkpoints(run)[-1].name == "ckpt-00000021.pt"


# ---- reports of a checkpoint, and a run that cannot be written -----------------------------------------------
def test_eval_of_a_checkpoint_file_writes_its_report_beside_the_runs_reports(tmp_path, tiny_run, capsys):
    """Row 19: ``textebm eval RUN/checkpoints/ckpt-N.pt`` (a documented input) failed: "--out ... would replace
    a file of the run", though no --out was given."""
    run = copy_run(tiny_run, tmp_path / "run")
    ckpt = list_checkpoints(run)[-1]
    code, out, err = run_main(capsys, "eval", ckpt, "--recon", "--max-sentences", "2", "--no-progress")
    assert code == 0, err
    report = run / f"eval-test-{ckpt.stem}.json"
    assert json.loads(report.read_text())["recon"]["n_sentences"] == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [c.name for c in list_checkpoints(tiny_run)]


def test_eval_of_a_read_only_run_prints_its_table_and_says_it_could_not_write(tmp_path, tiny_run, capsys,
                                                                              monkeypatch):
    """Row 20: eval computed everything, then failed writing the report, without printing the table."""
    run = copy_run(tiny_run, tmp_path / "run")
    if os.geteuid() != 0:
        os.chmod(run, 0o555)
    else:  # root writes anywhere: the directory refuses the report's rename as a read-only one would
        real = os.replace

        def refuse(src, dst, *a, **kw):
            if os.path.dirname(os.fspath(dst)) == str(run):
                raise PermissionError(13, "Permission denied", os.fspath(dst))
            return real(src, dst, *a, **kw)

        monkeypatch.setattr(os, "replace", refuse)
    try:
        code, out, err = run_main(capsys, "eval", run, "--recon", "--max-sentences", "2", "--no-progress")
    finally:
        os.chmod(run, 0o755)
    assert code == 0, err
    assert "| recon NLL (nats/sentence) |" in out
    assert any("could not write the report" in line and "--out" in line for line in err), err
    assert not (run / "eval-test.json").exists()


# ---- checkpoints -------------------------------------------------------------------------------------------
def test_the_final_checkpoint_is_written_once(tmp_path, toy_corpus, monkeypatch):
    """Row 24: with train.steps a multiple of save_every the last checkpoint was written twice."""
    import textebm.runs
    from textebm.train import train

    written = []
    save = textebm.runs.atomic_save

    def counting(obj, path, *a, **kw):
        written.append(path.name)
        return save(obj, path, *a, **kw)

    monkeypatch.setattr(textebm.runs, "atomic_save", counting)
    train(tiny_recipe(toy_corpus, "train.steps=4", "train.save_every=2", *FAST), tmp_path / "run", device="cpu",
          progress=False)
    assert written == ["ckpt-00000002.pt", "ckpt-00000004.pt"]


# ---- saved models whose files would break a command ---------------------------------------------------------
def saved_copy(tiny_run, where):
    where.mkdir()
    for name in ("config.json", "model.safetensors", "vocab.json"):
        shutil.copy(tiny_run / name, where / name)
    return where


@pytest.mark.parametrize("case", ["config nested 100k deep", "sigma0 1e308", "vocab shorter than vocab_size"])
def test_saved_model_files_that_would_break_sample_are_one_line(tmp_path, tiny_run, capsys, case):
    """Row 17 (config.json nested 100k deep, ``sigma0: 1e308``, vocab.json shorter than vocab_size): tracebacks
    (RecursionError, OverflowError, IndexError)."""
    saved = saved_copy(tiny_run, tmp_path / "saved")
    cfg = json.loads((saved / "config.json").read_text())
    if case == "config nested 100k deep":
        cfg["prior"]["kind"] = "@DEEP@"
        (saved / "config.json").write_text(json.dumps(cfg).replace('"@DEEP@"', "[" * 100_000 + "]" * 100_000))
        words = ["config.json", "nests more than"]
    elif case == "sigma0 1e308":
        cfg["prior"]["sigma0"] = 1e308
        (saved / "config.json").write_text(json.dumps(cfg))
        words = ["config.json", "sigma0"]
    else:
        vocab = json.loads((saved / "vocab.json").read_text())
        vocab["tokens"] = vocab["tokens"][:6]
        (saved / "vocab.json").write_text(json.dumps(vocab))
        words = ["6 tokens", "vocab_size"]
    code, out, err = run_main(capsys, "sample", saved, "-n", "3", "--max-len", "30", "--temperature", "3")
    one_line_error(code, err, *words)


# ---- divergence messages -----------------------------------------------------------------------------------
def test_a_huge_learning_rate_is_named_not_the_step_size(tmp_path, toy_corpus, capsys):
    """Row 18 (lr 1e6): the divergence message blamed "step size 0.1", the posterior chain's."""
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(toy_corpus, "train.lr_decoder=1e6",
                                                           "train.lr_prior=1e6", "train.steps=20", *FAST))
    code, out, err = run_main(capsys, "train", recipe, "--out", tmp_path / "run", "--no-progress")
    msg = one_line_error(code, err, "train.lr_decoder=1e+06", "learning rates")
    assert "step size 0.1" not in msg and "Try a smaller step size" not in msg
    assert not (tmp_path / "run").exists()


def test_recovery_finishes_every_stage_of_a_replacement(tmp_path):
    """A kill can land at any stage of textebm.rundir's replacement; each leaves a folder that says how to finish."""
    from textebm.rundir import pending, recover

    def fresh(name):
        d = tmp_path / name
        d.mkdir()
        return d

    old = {"recipe.yaml": b"old", "vocab.json": b"v"}
    # killed while moving out: some old files still in place, the rest in .aside-N
    d = fresh("aside")
    (d / "recipe.yaml").write_bytes(b"old")
    (d / ".aside-7").mkdir()
    (d / ".aside-7" / "vocab.json").write_bytes(b"v")
    # killed while moving back: some old files back, the new run's already removed
    r = fresh("restoring")
    (r / "vocab.json").write_bytes(b"v")
    (r / ".restoring-7").mkdir()
    (r / ".restoring-7" / "recipe.yaml").write_bytes(b"old")
    # killed while removing a committed replacement: the new run stays
    c = fresh("discard")
    (c / "recipe.yaml").write_bytes(b"new")
    (c / ".discard-7").mkdir()
    (c / ".discard-7" / "recipe.yaml").write_bytes(b"old")
    for directory, want in ((d, old), (r, old), (c, {"recipe.yaml": b"new"})):
        recover(directory, quiet=True)
        assert tree(directory) == want and not pending(directory)
