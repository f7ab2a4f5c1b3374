"""Recipes as input (textebm.config): bounded YAML (aliases, nesting, size), regular files only, bounded sizes,
names that are names, and keys that exist."""
import json
import os
import resource
import subprocess
import sys
import time

import pytest

from textebm.config import ConfigError, Recipe, apply_overrides, dump_recipe, load_recipe

from conftest import FAST, ROOT, one_line_error, run_main, tiny_recipe


def laughs(depth: int) -> str:
    """A recipe whose data.options hold ten aliases nested ``depth`` levels deep: 10^depth values expanded."""
    text = "data:\n  options:\n    a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, depth + 1):
        text += f"    a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n"
    return text


def _child(code: str, timeout: float, memory: int = 2 << 30):
    """Run ``code`` in a child Python with a time and an address-space limit (what failed here hung or ate all
    memory); returns (exit status, stdout + stderr)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout,
                           preexec_fn=limit, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return None, f"did not finish within {timeout} s"
    return p.returncode, p.stdout + p.stderr


LOAD = ("import sys\nfrom textebm.config import load_recipe, apply_overrides\n"
        "try:\n    apply_overrides(load_recipe(sys.argv[1] if len(sys.argv) > 1 else {path!r}), [])\n"
        "except (ValueError, OSError) as e:\n    print('ERROR', ' '.join(str(e).split()))\n    sys.exit(2)\n")


def test_yaml_aliases_expand_to_a_bounded_size(tmp_path):
    """Row 9: aliases nested 9 deep in data.options ("billion laughs") made `train` hang (6 deep took 0.8 s)."""
    path = tmp_path / "laughs.yaml"
    path.write_text(laughs(9))
    t0 = time.monotonic()
    code, out = _child(LOAD.format(path=str(path)), timeout=30)
    assert code == 2 and "expands to more than" in out and "aliases" in out, out
    assert time.monotonic() - t0 < 25
    path.write_text(laughs(3))  # 1,000 values: fine
    assert load_recipe(path).data.options["a3"][0][0][0] == ["x"] * 10


@pytest.mark.parametrize("case", ["recipe nested 5000 deep", "--set nested 3000 deep", "tags", "huge"])
def test_yaml_nesting_tags_and_size_are_bounded(tmp_path, case):
    """Row 17 (YAML nested 5,000 deep; ``--set data.options=[[[...`` 3,000 deep): RecursionError tracebacks."""
    path = tmp_path / "r.yaml"
    if case == "recipe nested 5000 deep":
        path.write_text("data:\n  options:\n    x: " + "[" * 5000 + "]" * 5000 + "\n")
        with pytest.raises(ConfigError, match="nests more than 32 levels"):
            load_recipe(path)
    elif case == "--set nested 3000 deep":
        with pytest.raises(ConfigError, match="override .data.options. nests more than 32"):
            apply_overrides(Recipe(), ["data.options=" + "[" * 3000 + "]" * 3000])
    elif case == "tags":
        path.write_text("data:\n  options: !!python/object/apply:os.system ['touch PWNED']\n")
        with pytest.raises(ConfigError, match="not valid YAML"):
            load_recipe(path)
        assert not (ROOT / "PWNED").exists()
    else:
        path.write_text("name: " + "x" * (2 << 20) + "\n")
        with pytest.raises(ConfigError, match="more than the 1048576 bytes"):
            load_recipe(path)


def test_a_device_as_recipe_or_base_is_refused_before_reading(tmp_path):
    """Row 16: `textebm train /dev/zero`, or `base: /dev/zero`, read until memory ran out."""
    base = tmp_path / "base.yaml"
    base.write_text("base: /dev/zero\n")
    for path in ("/dev/zero", base):
        code, out = _child(LOAD.format(path=str(path)), timeout=30, memory=1 << 30)
        assert code == 2 and "/dev/zero is not a regular file" in out, out


@pytest.mark.parametrize("override, key", [
    ("generate.max_len=1000000000", "generate.max_len"), ("data.max_len=1000000000", "data.max_len"),
    ("model.hidden_dim=1000000", "model.hidden_dim"), ("model.embed_dim=100000000", "model.embed_dim"),
    ("model.latent_dim=10000000", "model.latent_dim"), ("prior.hidden=10000000", "prior.hidden"),
    ("data.max_vocab=10000000000", "data.max_vocab"), ("data.spm_vocab_size=100000000", "data.spm_vocab_size"),
    ("model.decoder_args={n_layer: 100000}", "model.decoder_args.n_layer"),
    ("model.decoder_args={n_positions: 1000000000}", "model.decoder_args.n_positions"),
    ("train.batch_size=100000000", "train.batch_size"), ("prior.sigma0=1e308", "prior.sigma0"),
])
def test_every_size_of_a_recipe_is_bounded_before_any_work(override, key):
    """Row 14: ``generate.max_len: 1e9``, ``data.max_len=1e9`` with a transformer and ``hidden_dim=1e6`` were
    accepted; sampling then asked for 16 GB, training for 64 GB and 16 TB."""
    extra = ["model.decoder=transformer"] if "decoder_args" in override or "data.max_len" in override else []
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        apply_overrides(Recipe(), extra + [override])
    assert "must be in" in str(info.value) and len(str(info.value).splitlines()) == 1


def test_sizes_that_pass_one_by_one_are_bounded_together():
    with pytest.raises(ConfigError, match="parameters"):
        apply_overrides(Recipe(), ["model.hidden_dim=16384", "model.embed_dim=16384"])
    for path in sorted((ROOT / "recipes").rglob("*.yaml")):  # every recipe the project ships stays valid
        load_recipe(path)


@pytest.mark.parametrize("name", ["/abs/dir", "../../escaped", "a/b", "..", ".", "", "x" * 200, "nul\x00byte",
                                  "new\nline"])
def test_a_recipe_name_must_be_a_name(name):
    with pytest.raises(ConfigError, match="is not a run name"):
        apply_overrides(Recipe(), [f"name={json.dumps(name)}"])


def test_names_with_ordinary_characters_are_fine():
    for name in ("cost $\\frac$", "a|b", "ptb_small-2", "mnist anomaly 3", "été", "back\\slash"):
        assert apply_overrides(Recipe(), [f"name={json.dumps(name)}"]).name == name


def test_check_key_names_keys_of_the_schema():
    from textebm.config import check_key

    check_key("prior.kind")
    check_key("prior.objective_args.divergence")  # inside a free-form mapping
    for key, words in (("no.such.key", "has no key 'no'"), ("prior.kindd", "prior has no key 'kindd'"),
                       ("prior", "is a section")):
        with pytest.raises(ConfigError, match=words):
            check_key(key)


def test_the_cli_prints_recipe_errors_as_one_line(tmp_path, capsys, toy_corpus):
    path = tmp_path / "r.yaml"
    path.write_text(laughs(6))
    code, out, err = run_main(capsys, "train", path, "--out", tmp_path / "o")
    one_line_error(code, err, "expands to more than")
    tiny = dump_recipe(tiny_recipe(toy_corpus, "train.steps=1", *FAST))
    path.write_text(tiny.replace("max_len: 40", "max_len: 100000000", 1))
    code, out, err = run_main(capsys, "train", path, "--out", tmp_path / "o")
    one_line_error(code, err, "data.max_len", "must be in")
    assert not (tmp_path / "o").exists()
