"""The file-system contract of every command, as a property (hypothesis; textebm.rundir, textebm.files).

Whatever is planted in and around a run directory (links from the run's files to files outside it, files and
folders where outputs go, read-only folders, a run an earlier ``--overwrite`` left set aside) and whenever the
command is killed (SIGINT, SIGTERM or SIGKILL at a random moment) during ``train`` (new, ``--overwrite``,
``--resume``), ``eval``, ``sample``, ``plot``, ``compare`` and ``ngram``:

* nothing outside the run directory and the named output changes (the files links point to included);
* a run replaced with ``--overwrite`` is afterwards intact, or replaced by a new run that trained at least one step
  and saved a checkpoint; after a SIGKILL, the next command that touches the directory (here ``textebm sample``)
  puts it back;
* a command that is not killed exits with 0 or 2 (or 130 / 143 after SIGINT / SIGTERM), never with a traceback.

Each example runs one command as a process. ``TEXTEBM_FS_CASES`` sets how many drawn examples the fast suite runs
(default 2, beside two fixed ones: a SIGKILL of ``train --overwrite`` while a killed one's run is still set aside,
and a SIGTERM of ``eval`` among planted links); ``-m slow`` runs ``TEXTEBM_FS_CASES_SLOW`` (default 25).
``TEXTEBM_FS_VERBOSE=1`` prints each case and its outcome.
"""
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from textebm.config import dump_recipe  # noqa: E402

from conftest import FAST, ROOT, tiny_recipe, tree  # noqa: E402

N_CASES = int(os.environ.get("TEXTEBM_FS_CASES", "2"))
COMMANDS = ("train-new", "train-overwrite", "train-resume", "eval", "sample", "plot", "compare", "ngram-train",
            "ngram-ppl")
HAZARDS = ("link metrics.jsonl", "link recipe.yaml", "link checkpoints", "link eval-test.json",
           "link eval-test.json.tmp", "link plots", "file at the output", "folder at the output",
           "read-only run", "left set aside")
KILLS = (None, signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_run, toy_corpus):
    root = tmp_path_factory.mktemp("fs")
    inputs = root / "inputs"
    inputs.mkdir()
    shutil.copytree(toy_corpus, inputs / "corpus")
    (inputs / "recipe.yaml").write_text(dump_recipe(tiny_recipe(inputs / "corpus", "train.steps=40",
                                                                "train.save_every=2", *FAST)))
    from textebm.eval.ngram import train_builtin

    train_builtin(2, inputs / "corpus" / "train.txt", inputs / "model.arpa")
    return {"root": root, "inputs": inputs, "run": tiny_run}


def _plant(case_dir: Path, run: Path, outside: Path, hazards):
    """Put the links and the files at the output in place; returns the command's named output."""
    outside.mkdir()
    for h in hazards:
        if h.startswith("link ") and run.exists():
            name = h[5:]
            target = outside / name
            src = run / name
            if src.is_dir() and not src.is_symlink():
                shutil.copytree(src, target)
                shutil.rmtree(src)
            elif src.exists():
                shutil.copy(src, target)
                src.unlink()
            elif name == "plots":
                target.mkdir()
            else:
                target.write_text(f"outside {name}\n")
            src.symlink_to(target, target_is_directory=target.is_dir())
    out = case_dir / "out"
    if "file at the output" in hazards:
        out.write_text("an earlier output\n")
    elif "folder at the output" in hazards:
        out.mkdir()
        (out / "keep.txt").write_text("keep\n")
    return out


def _set_aside(run: Path):
    """What a `kill -9` of an earlier `train --out RUN --overwrite` left: the run in .replaced-PID, a new start."""
    aside = run / ".replaced-999999"
    aside.mkdir()
    for child in list(run.iterdir()):
        if child != aside:
            os.replace(child, aside / child.name)
    (run / "recipe.yaml").write_text("name: half-started\n")


def _argv(command, w, run: Path, out: Path):
    inputs = w["inputs"]
    if command == "train-new":
        return ["train", inputs / "recipe.yaml", "--out", run, "--no-progress"]
    if command == "train-overwrite":
        return ["train", inputs / "recipe.yaml", "--out", run, "--overwrite", "--no-progress"]
    if command == "train-resume":
        return ["train", "--resume", run, "--set", "train.steps=30", "--set", "train.eval_batches=1", "--no-progress"]
    if command == "eval":
        return ["eval", run, "--recon", "--diversity", "--n-samples", "4", "--max-sentences", "2", "--no-progress",
                "--save-samples", out]
    if command == "sample":
        return ["sample", run, "-n", "3"]
    if command == "plot":
        return ["plot", run, "--chain-steps", "3"]
    if command == "compare":
        return ["compare", run]
    if command == "ngram-train":
        return ["ngram", "train", "--order", "2", "--input", inputs / "corpus" / "train.txt", "--output", out,
                "--estimator", "builtin"]
    return ["ngram", "ppl", inputs / "model.arpa", inputs / "corpus" / "test.txt"]


def _next_command(run: Path) -> None:
    """``textebm sample RUN -n 1``, in this process (its output is not what is checked)."""
    import contextlib
    import io

    from textebm.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(["sample", str(run), "-n", "1"])


def _checkpoint_steps(run: Path):
    d = run / "checkpoints"
    if not d.is_dir() or d.is_symlink():
        return []
    return sorted(int(p.stem.split("-")[1]) for p in d.glob("ckpt-*.pt"))


def _allowed(rel: str, out_name: str) -> bool:
    """A path (relative to the example's folder) the command may create or change: the run, the named output,
    or the writer's temporary file beside the output (left only by a SIGKILL in the middle of a write)."""
    first = rel.split(os.sep)[0]
    return first in ("run", out_name) or (first.startswith(f".{out_name}.") and first.endswith(".tmp"))


@st.composite
def cases(draw):
    command = draw(st.sampled_from(COMMANDS))
    hazards = draw(st.lists(st.sampled_from(HAZARDS), max_size=3, unique=True))
    kill = draw(st.sampled_from(KILLS))
    delay = draw(st.floats(0.5, 7.0)) if kill is not None else None
    return command, tuple(sorted(hazards)), kill, delay


def check_contract(w, tmp_root: Path, command, hazards, kill, delay):
    case_dir = tmp_root / f"case-{len(list(tmp_root.iterdir()))}"
    case_dir.mkdir()
    run = case_dir / "run"
    if command != "train-new":
        shutil.copytree(w["run"], run)
        if command == "compare":
            (run / "eval-test.json").write_text('{"fppl": {"value": 3.5}, "run": {"recipe": {}}}\n')
    outside = case_dir / "outside"
    out = _plant(case_dir, run, outside, hazards)
    old_run = tree(run) if run.exists() else None  # what a replaced run must come back as
    if "left set aside" in hazards and run.exists():
        _set_aside(run)
    if "read-only run" in hazards and run.exists():
        os.chmod(run, 0o555)
    before_outside, before_inputs = tree(outside), tree(w["inputs"])
    before_case = {k: v for k, v in tree(case_dir).items() if not _allowed(k, out.name)}
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    argv = [sys.executable, "-m", "textebm", *map(str, _argv(command, w, run, out))]
    proc = subprocess.Popen(argv, cwd=case_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if kill is not None:
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(kill)
        try:
            stdout, stderr = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            pytest.fail(f"{argv} did not stop after {kill}")
    finally:
        if run.exists():
            os.chmod(run, 0o755)
    code = proc.returncode
    where = (command, hazards, kill, delay, code, stderr[-3000:])
    if os.environ.get("TEXTEBM_FS_VERBOSE"):
        print(command, hazards, kill, delay, code, stderr.strip().splitlines()[-1:], file=sys.stderr)

    # 1. nothing outside the run and the named output changed; the inputs are untouched
    assert tree(outside) == before_outside, where
    assert tree(w["inputs"]) == before_inputs, where
    after_case = {k: v for k, v in tree(case_dir).items() if not _allowed(k, out.name)}
    assert after_case == before_case, where
    if "folder at the output" in hazards:
        assert (out / "keep.txt").read_text() == "keep\n", where

    # 2. a command that was not killed says what happened in one line
    killed = code < 0
    if not killed:
        assert code in (0, 2, 130, 143), where
        if code in (0, 2) and (kill is None or kill == signal.SIGKILL):
            assert "Traceback" not in stderr, where
        if code == 2:
            assert ": error: " in stderr.strip().splitlines()[-1], where

    # 3. the run that --overwrite replaces: intact, or replaced by a run that trained and saved, or put back by
    # the next command
    if command == "train-overwrite" and old_run is not None:
        _next_command(run)  # the next command that touches the directory puts a replaced run back
        left = [n for n in os.listdir(run) if n.startswith((".aside-", ".replaced-", ".restoring-"))]
        assert not left, (where, os.listdir(run))
        now = tree(run)
        committed = any(s >= 1 for s in _checkpoint_steps(run)) and "name: tiny" in \
            (run / "recipe.yaml").read_text()
        assert now == old_run or committed, (where, sorted(now), sorted(old_run))
    if command == "train-resume" and old_run is not None:
        steps = _checkpoint_steps(run)
        assert not steps or max(steps) >= 20, where
        if any(h.startswith("link ") for h in hazards):
            assert tree(run) == old_run, where  # refused: links inside a run are never followed
    if command == "train-new" and run.exists():
        recipe = run / "recipe.yaml"
        assert not recipe.exists() or yaml.safe_load(recipe.read_text())["name"] == "tiny", where


def _run_examples(world, tmp_path_factory, n):
    tmp_root = tmp_path_factory.mktemp("fs-cases")

    @settings(max_examples=n, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(case=cases())
    @example(case=("train-overwrite", ("left set aside",), signal.SIGKILL, 4.5))
    @example(case=("eval", ("link eval-test.json.tmp", "link metrics.jsonl"), signal.SIGTERM, 3.0))
    def check(case):
        check_contract(world, tmp_root, *case)

    check()


def test_no_command_writes_outside_its_run_or_loses_the_run_it_replaces(world, tmp_path_factory):
    _run_examples(world, tmp_path_factory, N_CASES)


@pytest.mark.slow
def test_the_file_system_contract_over_many_cases(world, tmp_path_factory):
    _run_examples(world, tmp_path_factory, int(os.environ.get("TEXTEBM_FS_CASES_SLOW", "25")))
