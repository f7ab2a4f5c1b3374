"""``textebm ngram install | train | ppl``: KenLM n-gram models (its own parser: :mod:`textebm.eval.ngram`)."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    n = sub.add_parser("ngram", help="KenLM n-gram models: install lmplz, train (lmplz or built-in), perplexity",
                       add_help=False)
    n.add_argument("args", nargs=argparse.REMAINDER, help="install | train ... | ppl ARPA TXT (see textebm ngram -h)")


def run(args) -> int:
    from ..eval.ngram import ngram_main

    return ngram_main(args.args) or 0
