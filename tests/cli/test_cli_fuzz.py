"""Property-based fuzzing of the command line (hypothesis): whatever the arguments and file contents, ``textebm``
exits with status 0 or 2, never with a traceback, and changes no file outside the run directory it was given.

Arguments are drawn per command from the real options with values that are often wrong (negative, huge, NaN,
inf, text), paths that are missing, empty, or files with random, hostile or malformed contents (recipes,
config.json, checkpoints, n-gram models, corpora). Costly sizes (steps, widths, sample counts) are drawn from
small ranges so that 500 cases run in well under a minute; what is fuzzed is the checking, not the work.
"""
import contextlib
import io
import json
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


# ---- recipes, grammar files and ARPA headers as hostile or careless users write them ------------------------
N_FILE_CASES = int(os.environ.get("TEXTEBM_FUZZ_FILE_CASES", "40"))


def _fuzz_settings(n):
    return settings(max_examples=n, deadline=None, derandomize=SEED is None, database=None,
                    suppress_health_check=list(HealthCheck))


def _run_quietly(args):
    """``main(args)`` with stdout and stderr captured: (exit status, stderr text, seconds)."""
    import time

    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
    return code, err.getvalue(), time.monotonic() - t0


def _assert_clean(code, text, args):
    assert code in (0, 2), (args, code, text[-2000:])
    assert "Traceback" not in text, (args, text[-2000:])
    if code == 2:
        assert text.strip().splitlines()[-1].split(": error: ", 1)[1], (args, text)


@st.composite
def yaml_fragment(draw):
    """A YAML value in flow style as a careless or hostile recipe holds it: aliases nested some levels deep (up to
    a "billion laughs"), merges, deep nesting, tags that would run code or build other types, huge or odd sizes."""
    kind = draw(st.sampled_from(["aliases", "merge", "nested", "tag", "number", "text"]))
    if kind == "aliases":
        depth, fan = draw(st.integers(1, 9)), draw(st.integers(2, 10))
        items = ["a0: &a0 [x, y]"] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]"
                                      for i in range(1, depth + 1)]
        return "{" + ", ".join(items) + "}"
    if kind == "merge":
        return "{base: &b {steps: 1, batch_size: 4}, more: {<<: *b, steps: 2}}"
    if kind == "nested":
        d = draw(st.sampled_from([1, 5, 31, 33, 200, 5000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}")]))
        return opener * d + "1" + closer * d
    if kind == "tag":
        return draw(st.sampled_from([
            f"!!python/object/apply:os.system ['touch {PWNED_NAME}']", "!!python/name:os.system", "!!binary aGVsbG8=",
            "!!set {a, b}", "!custom x", "!!timestamp 2001-12-14", "!!float nan", "!!int 0x7fffffff",
            "!!str 12", "!!omap [{a: 1}]"]))
    if kind == "number":
        return draw(st.sampled_from(["1e308", "-1e308", ".inf", ".nan", "1000000000", "9" * 400, "-1", "0",
                                     "1.5", "0x10", "0o17", "1_000", "true", "null", "[]", "{}"]))
    return draw(st.sampled_from(['""', "'x'", '"' + "y" * 5000 + '"', "&anchor z", "*undefined_alias", "[*a]"]))


PWNED_NAME = "PWNED_BY_YAML"
PLACES = ["data.options.x", "model.decoder_args.n_layer", "model.hidden_dim", "generate.max_len", "data.max_len",
          "prior.objective_args.x", "sampling.prior_steps", "train.steps", "train.batch_size", "name", "seed",
          "prior.sigma0", "data.corpus", "top"]


def test_hostile_recipes_are_refused_in_one_line(world, monkeypatch):
    """Whatever the YAML of a recipe holds, `textebm train` exits 0 or 2 quickly, never hangs or runs code."""
    w = world
    monkeypatch.chdir(w["runs"])
    base = dict(w["recipe"])
    base["train"] = {**base["train"], "steps": 1, "eval_batches": 1, "latent_batches": 0}

    @_fuzz_settings(N_FILE_CASES)
    @given(place=st.sampled_from(PLACES), fragment=yaml_fragment(), n=st.integers(0, 10 ** 9))
    def check(place, fragment, n):
        data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
        parts = place.split(".")
        if place == "top":
            data["extra"] = "@X@"
        elif len(parts) == 1:
            data[parts[0]] = "@X@"
        elif len(parts) == 2:
            data[parts[0]][parts[1]] = "@X@"
        else:
            data[parts[0]][parts[1]] = {parts[2]: "@X@"}
        path = w["root"] / f"hostile-{n}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False).replace("'@X@'", fragment))
        out = w["runs"] / f"hostile-out-{n}"
        code, text, seconds = _run_quietly(["train", path, "--out", out, "--no-progress"])
        _assert_clean(code, text, (place, fragment))
        assert seconds < 60, (place, fragment, seconds)
        assert not (w["runs"] / PWNED_NAME).exists() and not (w["root"] / PWNED_NAME).exists()
        if out.exists():
            shutil.rmtree(out)

    check()


GRAMMAR_SYMBOLS = ["S", "A", "B", "NP", "the", "dog", "a", "cat", "sees", ".", "", " ", "x y", "S S", "A A A"]
PROBS = [1.0, 0.5, 0.0, -0.5, 1.5, 1e308, 1e-308, float("nan"), float("inf"), "0.5", None, True, 2]


@st.composite
def grammar_text(draw):
    kind = draw(st.sampled_from(["rules", "rules", "rules", "nested", "bytes", "not an object"]))
    if kind == "nested":
        d = draw(st.sampled_from([10, 1000, 100_000]))
        return '{"start": "S", "rules": {"S": ' + "[" * d + "]" * d + "}}"
    if kind == "bytes":
        return draw(st.binary(max_size=40)).decode("latin-1")
    if kind == "not an object":
        return draw(st.sampled_from(["[]", "null", "3", '"S"', "{}", '{"start": "S"}']))
    lhs = draw(st.lists(st.sampled_from(["S", "A", "B", "NP"]), min_size=1, max_size=4, unique=True))
    rules = {}
    for name in lhs:
        alts = draw(st.lists(st.tuples(st.sampled_from(PROBS), st.lists(st.sampled_from(GRAMMAR_SYMBOLS), min_size=1,
                                                                        max_size=3)), min_size=1, max_size=3))
        rules[name] = [[p, " ".join(rhs)] for p, rhs in alts]
    if draw(st.booleans()):  # a long rule
        rules.setdefault("S", []).append([0.0, " ".join(["w"] * draw(st.sampled_from([10, 2000])))])
    start = draw(st.sampled_from(["S", "S", "X", ""]))
    return json.dumps({"start": start, "rules": rules}, allow_nan=True)


def test_hostile_grammar_files_stop_eval_in_one_line_before_any_metric(world):
    """Whatever a corpus's grammar.json holds, `textebm eval` uses it or refuses it in one line, quickly."""
    w = world
    corpus = w["root"] / "grammar-corpus"
    if not corpus.exists():
        shutil.copytree(w["corpus"], corpus)

    @_fuzz_settings(N_FILE_CASES)
    @given(text=grammar_text())
    def check(text):
        (corpus / "grammar.json").write_text(text, encoding="utf-8", errors="surrogateescape")
        code, err, seconds = _run_quietly(["eval", w["run"], "--corpus", corpus, "--nll", "-K", "2", "--chains", "2",
                                           "--log-z-samples", "64", "--max-sentences", "2", "--out",
                                           w["runs"] / "grammar-report.json", "--no-progress"])
        _assert_clean(code, err, text[:300])
        if code == 2:  # refused before any metric was computed
            assert "NLL: importance sampling" not in err, (text[:300], err[-1000:])
        assert seconds < 30, (text[:300], seconds)

    check()


ARPA_COUNTS = ["5", "6", "0", "1", "-5", "-1", "99999999999", "18446744073709551615", "abc", "1.5", "0x10", "",
               " 7", "+3"]


@st.composite
def arpa_text(draw, good: str):
    """The good model's text with its header mutated: counts, orders, spacing, lines dropped or repeated."""
    lines = good.split("\n")
    head = [i for i, line in enumerate(lines) if line.startswith("ngram ")]
    for n, i in enumerate(head, start=1):
        how = draw(st.integers(0, 5))
        if how <= 1:  # the count only (a negative one crashed KenLM)
            lines[i] = f"ngram {n}={draw(st.sampled_from(ARPA_COUNTS))}"
        elif how == 2:
            order = draw(st.sampled_from(["1", "2", "3", "7", "0", "-1", "x"]))
            lines[i] = f"ngram {order}={draw(st.sampled_from(ARPA_COUNTS))}"
    if draw(st.integers(0, 4)) == 0:
        del lines[draw(st.sampled_from(head))]
    if draw(st.integers(0, 4)) == 0:
        lines.insert(draw(st.sampled_from(head)), draw(st.sampled_from(["ngram 2=6", "ngram 1=5", "junk"])))
    if draw(st.integers(0, 5)) == 0:
        lines = [line for line in lines if line != "\\data\\"]
    if draw(st.integers(0, 4)) == 0:
        lines = lines[:draw(st.integers(0, len(lines)))]  # truncated
    return "\n".join(lines)


def test_hostile_arpa_headers_never_crash_ngram_ppl(world):
    """Whatever the header of an ARPA file says, `textebm ngram ppl` scores it or refuses it in one line: KenLM,
    which crashes on a negative count, never sees a header that was not checked (each case runs in a forked
    child, so that a crash shows as a failure here rather than ending the test run)."""
    import sys
    import tempfile

    w = world
    good, text = w["inputs"] / "model.arpa", w["inputs"] / "text.txt"

    @_fuzz_settings(N_FILE_CASES)
    @given(body=arpa_text(good.read_text()))
    def check(body):
        bad = w["runs"] / "fuzz.arpa"
        bad.write_text(body)
        with tempfile.TemporaryFile() as log:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the child: run the command, report its exit status
                code = 3
                try:
                    os.dup2(log.fileno(), 1)
                    os.dup2(log.fileno(), 2)
                    code, err, _ = _run_quietly(["ngram", "ppl", bad, text])
                    os.write(2, err.encode())
                    code = code if code in (0, 2) and "Traceback" not in err else 3
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            log.seek(0)
            output = log.read().decode(errors="replace")
        assert not os.WIFSIGNALED(status), (body[:400], f"killed by signal {os.WTERMSIG(status)}", output[-1000:])
        assert os.WEXITSTATUS(status) in (0, 2), (body[:400], output[-1000:])

    check()
