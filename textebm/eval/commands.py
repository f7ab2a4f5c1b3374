"""Command-line entry points of the evaluation tools (``textebm eval``, ``textebm chain``).

Kept light: nothing heavy is imported at module level, so ``textebm --help`` stays fast.
"""
from __future__ import annotations


def add_parsers(sub) -> None:
    """Register the evaluation subcommands on the main parser's subparsers."""


COMMANDS: dict = {}
