"""Pieces every command module shares: the one-line-error parser, argument types, the user-error class.

Argument types check what they can before any work starts (finite numbers, ranges) so that a bad value is one line
``textebm: error: ...`` and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import math
from ..console import log  # noqa: F401  (the commands import it from here)


class UserError(Exception):
    """An error caused by the user's input; printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line ``PROG: error: MESSAGE`` and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def int_in(low: int | None = None, high: int | None = None):
    """An argparse type: an integer in [low, high] (either bound may be None). argparse names the option."""
    def parse(v):
        try:
            i = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {v!r}") from None
        if low is not None and i < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {i}")
        if high is not None and i > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {i}")
        return i
    return parse


def float_in(low: float | None = None, high: float | None = None, low_open: bool = True):
    """An argparse type: a finite number above ``low`` (or at least it with ``low_open=False``), at most ``high``."""
    def parse(v):
        try:
            f = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {v!r}") from None
        if not math.isfinite(f):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {v!r}")
        if low is not None and (f <= low if low_open else f < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low:g}, got {f:g}")
        if high is not None and f > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {f:g}")
        return f
    return parse


#: seeds go to torch.Generator.manual_seed, which takes 64-bit values
seed_type = int_in(-(2 ** 63), 2 ** 64 - 1)


def device(name: str):
    """A ``torch.device`` for ``--device`` (``auto`` picks CUDA when present); bad names are a user error."""
    from ..train import resolve_device

    return resolve_device(name)


def set_threads(n) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def resolve_run(run: str, must_exist: bool = True):
    """(local path, whether ``run`` was a Hub id): a Hub id (``org/name``) as its snapshot in the local Hugging Face
    cache (:func:`textebm.hub.download`), anything else as the local path it names (which must exist, unless
    ``must_exist`` is false and the command reports a missing path its own way)."""
    from pathlib import Path

    from ..hub import download, is_hub_id

    if is_hub_id(run):
        return download(run), True
    p = Path(run)
    if must_exist and not p.exists():
        raise FileNotFoundError(f"no such run directory or checkpoint: {run}")
    return p, False
