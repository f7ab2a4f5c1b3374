"""``textebm recipes [NAME]``: the recipes that ship with the package, one per line with its description; with a
NAME, that recipe's YAML (to start one of your own: ``textebm recipes quickstart > mine.yaml``)."""
from __future__ import annotations

import sys

from .common import UserError


def add_parser(sub) -> None:
    r = sub.add_parser("recipes", help="list the recipes that ship with the package (textebm train NAME runs one); "
                                       "with a NAME, print its YAML")
    r.add_argument("name", nargs="?", help="print this recipe's YAML instead of the list")


def run(args) -> int:
    from ..recipes import descriptions, find_recipe

    if args.name:
        path = find_recipe(args.name)
        if path is None:
            raise UserError(f"no packaged recipe named {args.name!r}; `textebm recipes` lists them")
        sys.stdout.write(path.read_text(encoding="utf-8"))
        return 0
    table = descriptions()
    width = max(len(n) for n in table)
    for name, text in table.items():
        print(f"{name:<{width}}  {text}")
    print("\ntextebm train NAME [--set section.key=value ...] trains one; textebm recipes NAME prints its YAML",
          file=sys.stderr)
    return 0
