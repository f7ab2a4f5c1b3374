"""The recipes that ship with the package: found by name from any directory, listed by ``textebm recipes``, every
one a valid recipe, all of them package data (so a wheel carries them; CI installs one and trains by name)."""
import fnmatch

import pytest

from conftest import ROOT


def test_every_packaged_recipe_loads_by_name_and_by_its_old_path(tmp_path, monkeypatch):
    from textebm.config import load_recipe, to_dict
    from textebm.recipes import RECIPES_DIR, find_recipe, recipe_names

    names = recipe_names()
    assert {"quickstart", "quickstart_transformer", "ptb", "pretrained_lm", "mnist_anomaly/digit_3"} <= set(names)
    assert not (ROOT / "recipes").exists()  # one copy: the recipes live in the package
    monkeypatch.chdir(tmp_path)  # a directory with no recipes in it
    for name in names:
        by_name = load_recipe(name)
        assert to_dict(by_name) == to_dict(load_recipe(RECIPES_DIR / f"{name}.yaml")), name
    for spelled in ("quickstart.yaml", "recipes/quickstart.yaml", "./recipes/quickstart.yaml"):
        assert find_recipe(spelled) == RECIPES_DIR / "quickstart.yaml"
    assert load_recipe("mnist_anomaly/digit_3").data.held_out_class == 3  # base: ../mnist_anomaly.yaml
    (tmp_path / "quickstart").write_text("name: mine\n")  # a file of that name wins over the packaged recipe
    assert load_recipe("quickstart").name == "mine"
    r = load_recipe("pretrained_lm")
    assert r.data.tokenizer == "hf" and r.model.decoder_args["pretrained"] is None


def test_the_recipes_are_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    from textebm.recipes import RECIPES_DIR

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = cfg["tool"]["setuptools"]["package-data"]["textebm"]
    files = [p.relative_to(RECIPES_DIR.parent).as_posix() for p in RECIPES_DIR.rglob("*") if p.is_file()
             and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files), (files, patterns)


def test_textebm_recipes_lists_them_and_prints_one(capsys):
    from textebm.cli import main
    from textebm.recipes import RECIPES_DIR, recipe_names

    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(recipe_names())
    table = dict(line.split(None, 1) for line in lines)
    assert table["quickstart"] == ("Quickstart: a small latent-EBM LSTM model on the bundled grammar corpus "
                                   "(data/grammar).")
    assert table["ptb"].startswith("Penn Treebank (Mikolov et al. 2010 preprocessing), the PTB row of Pang et al.")
    assert table["pretrained_lm"].startswith("A pretrained causal language model with its own tokenizer")
    assert all(len(text) <= 115 for text in table.values())
    assert main(["recipes", "quickstart"]) == 0
    assert capsys.readouterr().out == (RECIPES_DIR / "quickstart.yaml").read_text()
    assert main(["recipes", "nope"]) == 2
    assert "no packaged recipe named 'nope'" in capsys.readouterr().err


def test_train_with_a_name_that_is_neither_a_file_nor_a_recipe_is_a_one_line_error(tmp_path, capsys):
    from textebm.cli import main

    assert main(["train", "quickstrat", "--out", str(tmp_path / "run")]) == 2
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(lines) == 1 and not (tmp_path / "run").exists()
    for words in ("recipe file not found: quickstrat is neither a file nor a packaged recipe", "quickstart, ",
                  "`textebm recipes` lists them"):
        assert words in lines[0]


@pytest.mark.parametrize("text", ["", "# just a comment\n"])
def test_an_empty_recipe_file_is_still_an_error(tmp_path, text):
    from textebm.config import ConfigError, load_recipe

    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(ConfigError, match="is empty"):
        load_recipe(tmp_path / "r.yaml")
