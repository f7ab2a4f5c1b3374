"""``textebm`` command line: one module per command (``train``, ``sample``, ``encode``, ``reconstruct``,
``interpolate``, ``cluster``, ``eval``, ``chain``, ``ngram``, ``plot``, ``compare``, ``push``, ``recipes``), each
with ``add_parser(subparsers)`` and ``run(args) -> exit status`` (:mod:`.inputs` holds what the latent commands
share).

Every module imports only the standard library at import time, so ``textebm --help`` is fast; torch and the optional
libraries are imported inside ``run``. Errors caused by the input (files, recipes, arguments) print one line
``textebm: error: ...`` on stderr and exit with status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib
import sys

from .common import Parser, UserError

COMMANDS = ("train", "sample", "encode", "reconstruct", "interpolate", "cluster", "eval", "chain", "fit-prior", "ngram",
            "plot", "compare", "push", "recipes")


def _module(name: str):
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}")


def build_parser() -> Parser:
    p = Parser(prog="textebm", description="Latent-space energy-based prior models for text and images.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in COMMANDS:
        _module(name).add_parser(sub)
    return p


def _is_user_error(e: BaseException) -> bool:
    """Errors caused by what the user passed (files, recipes, settings, the environment), as opposed to bugs."""
    from ..config import ConfigError
    from ..extras import MissingExtraError

    kinds = [UserError, ConfigError, MissingExtraError, ValueError, OSError]
    if "torch" in sys.modules:
        from ..sampling.base import SamplerDivergedError

        kinds.append(SamplerDivergedError)
    if "textebm.train" in sys.modules:
        from ..train import TrainingDivergedError

        kinds.append(TrainingDivergedError)
    if "textebm.eval.ngram" in sys.modules:
        from ..eval.ngram import LmplzError

        kinds.append(LmplzError)
    return isinstance(e, tuple(kinds))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] == ["ngram"]:  # its own parser handles everything after the word, --help included
        import argparse

        args = argparse.Namespace(command="ngram", args=argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        return _module(args.command).run(args)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM while a run sets up (textebm.rundir.Interrupted)
        print("textebm: interrupted", file=sys.stderr)
        return 128 + getattr(e, "signum", 2)
    except Exception as e:  # user-facing errors become one line; anything else is a bug and keeps its traceback
        if not _is_user_error(e):
            raise
        lines = str(e).strip().splitlines()
        msg = " ".join(lines[0].split()) if lines else type(e).__name__
        print(f"textebm: error: {msg}", file=sys.stderr)
        return 2


__all__ = ["main", "build_parser", "UserError", "COMMANDS"]
