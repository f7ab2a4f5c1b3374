"""``textebm ngram {install,train,ppl}``: the n-gram command line (:func:`ngram_main`)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Sequence

from ...runs import check_output
from .corpus import MAX_ORDER, check_order
from .dispatch import train
from .lmplz import install_lmplz
from .scoring import perplexity

PROG = "textebm ngram"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line ``textebm ngram: error:
    MESSAGE`` on stderr (MESSAGE starts with the sub-command, if any) and
    exit status 2."""

    def error(self, message):
        command = self.prog[len(PROG):].strip()
        text = " ".join(message.split())
        self.exit(2, f"{PROG}: error: {command + ': ' if command else ''}{text}\n")


def _order(value: str) -> int:
    """argparse type of ``--order``: an integer in [1, MAX_ORDER]."""
    try:
        order = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    try:
        return check_order(order)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="KenLM-compatible n-gram language models")
    sub = p.add_subparsers(dest="command", required=True)
    pi = sub.add_parser("install", help="build lmplz from the kenlm source distribution")
    pi.add_argument("--cache-dir", default=None,
                    help="cache root (default: $TEXTEBM_CACHE or ~/.cache/textebm)")
    pi.add_argument("--force", action="store_true", help="rebuild even if present")
    pt = sub.add_parser("train", help="estimate an ARPA model")
    pt.add_argument("--order", type=_order, required=True, help=f"n-gram order, 1 to {MAX_ORDER}")
    pt.add_argument("--input", required=True, help="text file, one sentence per line")
    pt.add_argument("--output", required=True, help="ARPA file to write (its directory must exist)")
    pt.add_argument("--estimator", choices=("auto", "lmplz", "builtin"), default="auto")
    pt.add_argument("--lmplz", default=None, help="path to the lmplz binary")
    pp = sub.add_parser("ppl", help="perplexity of a text under a model")
    pp.add_argument("model", help="ARPA or KenLM binary file")
    pp.add_argument("text", help="text file, one sentence per line")
    pp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _check_output(path: Path) -> None:
    """ValueError if ``path`` is a directory, FileNotFoundError if its
    directory does not exist."""
    if path.is_dir():
        raise ValueError(f"output is a directory, not a file: {path}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory does not exist: {path.parent}")


def ngram_main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``textebm ngram {install,train,ppl}``; returns 0.

    Bad arguments exit with status 2 after one line ``textebm ngram: error:
    ...`` on stderr; bad files raise ValueError, FileNotFoundError or
    :class:`~.lmplz.LmplzError` with a one-line first message line.
    """
    args = _parser().parse_args(list(argv) if argv is not None else None)
    if args.command == "install":
        install_lmplz(cache_dir=args.cache_dir, force=args.force)
    elif args.command == "train":
        output = Path(args.output)
        _check_output(output)
        check_output(output, "--output", inputs=(args.input,))
        res = train(args.order, args.input, output, estimator=args.estimator, lmplz=args.lmplz)
        msg = f"wrote {res.path} (estimator: {res.estimator_used})"
        if res.fallback_reason:
            msg += f"; fell back to the built-in estimator: {res.fallback_reason}"
        print(msg)
    elif args.command == "ppl":
        res = perplexity(args.model, args.text)
        if args.json:
            print(json.dumps(res))
        else:
            width = max(len(k) for k in res)
            for k, v in res.items():
                val = f"{v:.4f}" if isinstance(v, float) and math.isfinite(v) else str(v)
                print(f"{k:<{width}}  {val}")
    return 0
