"""``textebm plot RUN``: the training curves and latent diagnostics of a run, from its metrics.jsonl, as PNGs."""
from __future__ import annotations

from .common import log


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="draw training curves and latent diagnostics of a run from its metrics.jsonl "
                                    "as PNGs")
    p.add_argument("run", help="run directory (the one holding metrics.jsonl)")
    p.add_argument("--out", default=None, metavar="DIR", help="directory for the PNGs (default RUN/plots)")


def run(args) -> int:
    from ..eval.plots import plot_run

    paths = plot_run(args.run, args.out)
    for path in paths:
        log(str(path))
    if not paths:
        log(f"no known metric with data in {args.run}: nothing drawn")
    return 0
