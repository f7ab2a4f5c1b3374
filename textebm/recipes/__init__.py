"""The recipes that ship with the package, found by name: ``textebm train quickstart`` works from any directory of
any install (a wheel included), and ``textebm recipes`` lists them.

A recipe's name is its path inside this folder without ``.yaml`` (``quickstart``, ``mnist_anomaly/digit_3``); its
description is the first sentence of the comment block it opens with. :func:`find_recipe` also accepts
``NAME.yaml`` and ``recipes/NAME.yaml`` (the paths of a source checkout before the recipes moved here), so older
commands keep working. Nothing here imports anything beyond the standard library.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional

#: the folder holding the packaged recipes
RECIPES_DIR = Path(__file__).resolve().parent
#: a description longer than this is cut at a word boundary
DESCRIPTION_WIDTH = 110
#: a full stop that ends a sentence (not the one of "et al.", "e.g.", "Sec.", a decimal point or a file name)
_SENTENCE_END = re.compile(r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)(?<!\bSec)(?<!\bvs)\.(\s|$)")


def recipe_names() -> List[str]:
    """Every packaged recipe's name, sorted (``quickstart``, ``mnist_anomaly/digit_3``, ...)."""
    return sorted(p.relative_to(RECIPES_DIR).with_suffix("").as_posix() for p in RECIPES_DIR.rglob("*.yaml"))


def find_recipe(name: str) -> Optional[Path]:
    """The file of the packaged recipe ``name`` (``NAME``, ``NAME.yaml`` or ``recipes/NAME.yaml``), else None."""
    key = str(name).replace("\\", "/").strip()
    if key.startswith("./"):
        key = key[2:]
    if key.startswith("recipes/"):
        key = key[len("recipes/"):]
    if key.endswith(".yaml"):
        key = key[:-len(".yaml")]
    if key in recipe_names():
        return RECIPES_DIR / f"{key}.yaml"
    return None


def describe(path) -> str:
    """The first sentence of the comment block a recipe file opens with (cut to :data:`DESCRIPTION_WIDTH`)."""
    lines = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(l for l in lines if l)
    m = _SENTENCE_END.search(text)
    sentence = text[:m.start() + 1] if m else text
    if len(sentence) > DESCRIPTION_WIDTH:
        sentence = sentence[:DESCRIPTION_WIDTH].rsplit(" ", 1)[0].rstrip(",;:(") + " ..."
    return sentence


def descriptions() -> Dict[str, str]:
    """name -> one-line description, for every packaged recipe."""
    return {name: describe(RECIPES_DIR / f"{name}.yaml") for name in recipe_names()}


__all__ = ["RECIPES_DIR", "recipe_names", "find_recipe", "describe", "descriptions"]
