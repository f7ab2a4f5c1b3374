"""Property-based fuzzing of the command line (hypothesis): whatever the arguments and file contents, ``textebm``
exits with status 0 or 2, never with a traceback, and changes no file outside the run directory it was given.

Arguments are drawn per command from the real options with values that are often wrong (negative, huge, NaN,
inf, text), paths that are missing, empty, or files with random, hostile or malformed contents (recipes,
config.json, checkpoints, n-gram models, corpora). Costly sizes (steps, widths, sample counts) are drawn from
small ranges so that 500 cases run in well under a minute; what is fuzzed is the checking, not the work.
"""
import contextlib
import io
import os
import shutil
import string
from pathlib import Path

import pytest
import torch
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402

from textebm.cli import main  # noqa: E402
from textebm.config import Recipe, dump_recipe  # noqa: E402

from conftest import ROOT, tiny_recipe  # noqa: E402

N_CASES = int(os.environ.get("TEXTEBM_FUZZ_CASES", "500"))
SEED = os.environ.get("TEXTEBM_FUZZ_SEED")  # set: explore other cases than CI's fixed ones


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_run, toy_corpus):
    """inputs/: files the commands read and must never change; runs/: where runs and outputs may be written."""
    root = tmp_path_factory.mktemp("fuzz")
    inputs, runs = root / "inputs", root / "runs"
    inputs.mkdir()
    runs.mkdir()
    run = runs / "run"
    shutil.copytree(tiny_run, run)
    saved = inputs / "saved"
    from textebm.model import LatentEBMModel

    LatentEBMModel.from_pretrained(tiny_run).save_pretrained(saved)
    ckpt = sorted((tiny_run / "checkpoints").glob("*.pt"))[-1]
    shutil.copy(ckpt, inputs / "good.pt")
    (inputs / "empty_dir").mkdir()
    (inputs / "empty.txt").write_text("")
    (inputs / "text.txt").write_text("the dog sees a cat .\na man likes the ball .\n")
    (inputs / "bytes.bin").write_bytes(bytes(range(256)) * 3)
    torch.save([1, 2, 3], inputs / "list.pt")
    torch.save({"step": "x", "recipe": 3, "model": None}, inputs / "badkeys.pt")
    torch.save({"payload": _Hostile(str(root / "PWNED"))}, inputs / "hostile.pt")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["ngram", "train", "--order", "2", "--input", str(toy_corpus / "train.txt"), "--output",
                     str(inputs / "model.arpa"), "--estimator", "builtin"]) == 0
    recipe = tiny_recipe(toy_corpus, "train.steps=2", "train.save_every=1")
    (inputs / "tiny.yaml").write_text(dump_recipe(recipe))
    return {"root": root, "inputs": inputs, "runs": runs, "run": run, "saved": saved, "corpus": toy_corpus,
            "recipe": yaml.safe_load(dump_recipe(recipe))}


def _tree(path: Path) -> dict:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


# ---- strategies --------------------------------------------------------------------------------------------
WEIRD = st.sampled_from(["-1", "0", "1", "2", "-5", "1e9", "99999999999999999999", "nan", "inf", "-inf", "0.5",
                         "abc", "", " ", "1.5", "-0", "1e-300", "None", "[1, 2]", "{a: 1}", "true"])
TEXT = st.text(alphabet=string.ascii_letters + string.digits + " -_.:/=[]{},'\"\n\t", max_size=30)
VALUE = st.one_of(WEIRD, TEXT)

SMALL = {  # keys whose size decides how long a valid run takes: drawn small, wrong values still allowed
    "train.steps": ["0", "1", "2", "-1", "x"], "train.batch_size": ["1", "4", "0", "-3"],
    "sampling.prior_steps": ["0", "2", "-1"], "sampling.posterior_steps": ["0", "2", "-1"],
    "model.latent_dim": ["1", "2", "0", "-2"], "model.hidden_dim": ["4", "8", "0"], "model.embed_dim": ["4", "0"],
    "prior.hidden": ["4", "0"], "data.max_len": ["1", "3", "0"], "train.eval_batches": ["1", "0", "null"],
    "generate.max_len": ["1", "4", "0"],
}


def _recipe_keys():
    data = yaml.safe_load(dump_recipe(Recipe()))
    return [f"{s}.{k}" for s, v in data.items() if isinstance(v, dict) for k in v] + ["bogus.key", "train.bogus",
                                                                                    "seed", "name"]


RECIPE_KEYS = _recipe_keys()


@st.composite
def override(draw):
    key = draw(st.sampled_from(RECIPE_KEYS))
    if key in SMALL:
        return f"{key}={draw(st.sampled_from(SMALL[key]))}"
    return f"{key}={draw(VALUE)}"


@st.composite
def recipe_file(draw, w):
    """A path to a recipe: the tiny one, a mutated copy, random bytes, or a missing file."""
    kind = draw(st.sampled_from(["tiny", "tiny", "mutated", "mutated", "mutated", "bytes", "missing", "dir",
                                 "yaml-list"]))
    if kind == "tiny":
        return str(w["inputs"] / "tiny.yaml")
    if kind == "missing":
        return str(w["inputs"] / "nope.yaml")
    if kind == "dir":
        return str(w["inputs"] / "empty_dir")
    path = w["root"] / f"recipe-{draw(st.integers(0, 10 ** 9))}.yaml"
    if kind == "bytes":
        path.write_bytes(draw(st.binary(max_size=60)))
    elif kind == "yaml-list":
        path.write_text("- a\n- b\n")
    else:
        data = yaml.safe_load(dump_recipe(Recipe())) if draw(st.booleans()) else dict(w["recipe"])
        data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
        # the default recipe's sizes would make one valid case train for half a minute: small ones, then mutations
        data["train"] = {**data["train"], "steps": 1, "eval_batches": 1, "latent_batches": 1, "latent_chains": 3}
        data["data"] = {**data["data"], "corpus": str(w["corpus"])}
        data["model"] = {**data["model"], "latent_dim": 2, "embed_dim": 8, "hidden_dim": 8}
        data["prior"] = {**data["prior"], "hidden": 8}
        data["sampling"] = {**data["sampling"], "prior_steps": 2, "posterior_steps": 2}
        for item in draw(st.lists(override(), max_size=3)):
            k, v = item.split("=", 1)
            parts = k.split(".")
            try:
                parsed = yaml.safe_load(v)
            except yaml.YAMLError:
                parsed = v
            if len(parts) == 2 and isinstance(data.get(parts[0]), dict):
                data[parts[0]][parts[1]] = parsed
            else:
                data[parts[0]] = parsed
        path.write_text(yaml.safe_dump(data))
    return str(path)


# values that a hostile or damaged file may hold where a genuine one holds a number, a string or a mapping
JSON_VALUE = st.one_of(st.integers(-10 ** 12, 10 ** 12), st.sampled_from([-1, 0, 1, 2, 10 ** 9, 2 ** 63, 99999]),
                       st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6), st.none(),
                       st.booleans(), st.lists(st.integers(-3, 3), max_size=2), st.just({}), st.just({"x": 1}))


def fresh_copy(draw, source: Path, where: Path, prefix: str) -> Path:
    """A new copy of ``source`` under ``where`` (an earlier case's copy of the same name is replaced)."""
    d = where / f"{prefix}-{draw(st.integers(0, 10 ** 9))}"
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(source, d)
    return d


@st.composite
def mutated_config(draw, w):
    """A copy of the saved model whose config.json has one value (top level, prior or decoder) replaced."""
    import json

    d = fresh_copy(draw, w["saved"], w["runs"], "saved")
    cfg = json.loads((d / "config.json").read_text())
    part = draw(st.sampled_from(["prior", "decoder", "top"]))
    node = cfg if part == "top" else cfg[part]
    key = draw(st.sampled_from(sorted(k for k in node if k != "recipe") + ["bogus"]))
    node[key] = draw(JSON_VALUE)
    (d / "config.json").write_text(json.dumps(cfg))
    return str(d)


@st.composite
def mutated_run(draw, w):
    """A copy of the trained run whose newest checkpoint has one top-level entry replaced or removed."""
    d = fresh_copy(draw, w["run"], w["runs"], "run")
    path = sorted((d / "checkpoints").glob("*.pt"))[-1]
    ck = torch.load(path, weights_only=True)
    key = draw(st.sampled_from(sorted(ck)))
    if draw(st.integers(0, 4)) == 0:
        del ck[key]
    else:
        ck[key] = draw(st.one_of(JSON_VALUE, st.just(torch.zeros(3)), st.just([torch.ones(2)])))
    torch.save(ck, path)
    return str(d)


@st.composite
def model_path(draw, w):
    """What sample / eval / chain are pointed at."""
    kind = draw(st.sampled_from(["run", "run", "run", "saved", "saved", "good.pt", "good.pt", "list.pt",
                                 "badkeys.pt", "hostile.pt", "bytes.bin", "empty_dir", "missing", "bad-config",
                                 "mutated-config", "mutated-config", "mutated-run"]))
    if kind == "run":
        return str(w["run"])
    if kind == "saved":
        return str(w["saved"])
    if kind == "missing":
        return str(w["inputs"] / "missing")
    if kind == "bad-config":
        d = w["runs"] / f"saved-{draw(st.integers(0, 10 ** 9))}"
        if not d.exists():
            shutil.copytree(w["saved"], d)
        (d / "config.json").write_text(draw(st.sampled_from(["[1, 2]", "{}", "null", "{\"prior\": {}}", "x"])))
        return str(d)
    if kind == "mutated-config":
        return draw(mutated_config(w))
    if kind == "mutated-run":
        return draw(mutated_run(w))
    return str(w["inputs"] / kind)


def protected(w, name):
    """A file of the saved model in inputs/: an output flag pointed at it must be refused."""
    return str(w["saved"] / name)


def _options(draw, spec):
    """A random subset of (option, values) pairs from ``spec``; a value comes from the option's own list four
    times in five, otherwise from the wrong-looking ones."""
    out = []
    for opt, values in spec:
        if draw(st.integers(0, 3)) == 0:
            if values is None:
                out.append(opt)
            else:
                out += [opt, draw(WEIRD if draw(st.integers(0, 4)) == 0 else st.sampled_from(values))]
    return out


@st.composite
def argv(draw, w):
    cmd = draw(st.sampled_from(["train", "sample", "eval", "chain", "ngram", "garbage"]))
    out_dir = str(w["runs"] / f"out-{draw(st.integers(0, 10 ** 9))}")
    if cmd == "train":
        args = ["train"]
        if draw(st.integers(0, 4)) == 0:
            target = draw(st.sampled_from(["run", "empty", "out", "mutated", "mutated"]))
            args += ["--resume", draw(mutated_run(w)) if target == "mutated" else
                     {"run": str(w["run"]), "empty": str(w["inputs"] / "empty_dir"), "out": out_dir}[target]]
        else:
            args += [draw(recipe_file(w)), "--out", out_dir]
        for item in draw(st.lists(override(), max_size=2)):
            args += ["--set", item]
        args += _options(draw, [("--device", ["cpu", "cuda", "auto", "tpu"]), ("--overwrite", None),
                                ("--data-dir", [str(w["corpus"]), str(w["inputs"] / "empty_dir")])])
        return args + ["--no-progress"]
    if cmd == "sample":
        return ["sample", draw(model_path(w))] + _options(draw, [
            ("-n", ["1", "3"]), ("--steps", ["0", "2"]), ("--step-size", ["0.1", "1"]),
            ("--temperature", ["0.5", "2"]), ("--greedy", None), ("--top-k", ["0", "3"]),
            ("--top-p", ["0.5", "1"]), ("--max-len", ["1", "5"]), ("--batch-size", ["1", "2"]),
            ("--seed", ["0", "7"]), ("--device", ["cpu", "cuda"]),
            ("--out", [str(w["runs"] / "grid.png"), protected(w, "config.json")])])
    if cmd == "eval":
        return ["eval", draw(model_path(w)), "--max-sentences", draw(st.sampled_from(["1", "2", "-1", "x"])),
                "--n-samples", draw(st.sampled_from(["2", "3", "0"])), "-K", "2", "--chains", "2",
                "--log-z-samples", "64", "--out",
                draw(st.sampled_from([str(w["runs"] / "report.json")] * 4 + [protected(w, "recipe.yaml")]))
                ] + _options(draw, [
            ("--fppl", None), ("--rppl", None), ("--nll", None), ("--recon", None), ("--diversity", None),
            ("--order", ["2", "3", "9"]), ("--split", ["valid", "test", "train"]),
            ("--posterior-steps", ["0", "2"]), ("--posterior-step-size", ["0.1"]), ("--inflation", ["1.5"]),
            ("--covariance", ["diag", "full"]), ("--samples", [str(w["inputs"] / "text.txt"),
                                                             str(w["inputs"] / "empty.txt")]),
            ("--seed", ["1"]), ("--threads", ["1", "0"]),
            ("--save-samples", [str(w["runs"] / "s.txt"), protected(w, "vocab.json")])])
    if cmd == "chain":
        return ["chain", draw(model_path(w)), "--steps", draw(st.sampled_from(["1", "3", "0"]))] + _options(draw, [
            ("--every", ["1", "2"]), ("--step-size", ["0.1"]), ("--max-len", ["3"]), ("--seed", ["2"]),
            ("--json", [str(w["runs"] / "chain.json"), "/nonexistent/dir/c.json", protected(w, "config.json")]),
            ("--out", [str(w["runs"] / "chain.png"), "/nonexistent/dir/c.png", protected(w, "model.safetensors")])])
    if cmd == "ngram":
        sub = draw(st.sampled_from(["train", "train", "ppl", "ppl", "bogus", "--help"]))
        files = [str(w["inputs"] / n) for n in ("text.txt", "text.txt", "empty.txt", "bytes.bin", "missing",
                                                  "empty_dir")]
        if sub == "train":
            source = draw(st.sampled_from(files))
            output = draw(st.sampled_from([str(w["runs"] / "m.arpa"), "/nonexistent/m.arpa", "the input"]))
            return ["ngram", "train", "--order", draw(st.sampled_from(["2", "3", "0", "99", "x"])),
                    "--input", source, "--output", source if output == "the input" else output] + \
                _options(draw, [("--estimator", ["builtin", "auto"])])
        if sub == "ppl":
            models = [str(w["inputs"] / "model.arpa")] * 2 + files
            return ["ngram", "ppl", draw(st.sampled_from(models)), draw(st.sampled_from(files))]
        return ["ngram", sub]
    return [draw(TEXT)] + draw(st.lists(TEXT, max_size=3))


# ---- the property ------------------------------------------------------------------------------------------
def test_cli_never_crashes_and_touches_only_run_directories(world, monkeypatch):
    w = world
    before = _tree(w["inputs"])
    repo_before = sorted(p.name for p in ROOT.iterdir())
    # Hypothesis caches data (e.g. its character tables) under a home directory fixed at import time as
    # ./.hypothesis; keep it in this test's scratch area so the checkout's listing stays comparable.
    set_hypothesis_home_dir(w["root"] / ".hypothesis")
    monkeypatch.chdir(w["runs"])  # relative output paths (e.g. --out -1) land in the run area

    @settings(max_examples=N_CASES, deadline=None, derandomize=SEED is None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(args=argv(w))
    @hypothesis.seed(int(SEED or 0))
    def check(args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as e:  # argparse: --help (0) and bad arguments (2)
                code = e.code
        text = err.getvalue()
        assert code in (0, 2), (args, code, text[-2000:])
        assert "Traceback" not in text, (args, text[-2000:])
        if code == 2:
            assert text.strip().splitlines()[-1].split(": error: ", 1)[1], (args, text)
        assert not (w["root"] / "PWNED").exists(), args
        assert _tree(w["inputs"]) == before, args

    try:
        check()
    finally:
        set_hypothesis_home_dir(None)
    assert sorted(p.name for p in ROOT.iterdir()) == repo_before
