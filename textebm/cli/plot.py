"""``textebm plot RUN``: the training curves and latent diagnostics of a run, from its metrics.jsonl, as PNGs."""
from __future__ import annotations

from .common import int_in, log


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="draw training curves and latent diagnostics of a run from its metrics.jsonl "
                                    "as PNGs")
    p.add_argument("run", help="run directory (the one holding metrics.jsonl), or Hub id (org/name) of a model "
                               "pushed with its metrics")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="directory for the PNGs (default RUN/plots; for a Hub id, plots/ here)")
    p.add_argument("--chain-steps", type=int_in(0, 10 ** 5), default=200,
                   help="also draw the energy profile of the run's prior chain over this many steps "
                        "(energy_profile.png; default 200, 0 = none)")


def run(args) -> int:
    from ..eval.plots import plot_run
    from .common import resolve_run

    run_path, from_hub = resolve_run(args.run, must_exist=False)
    if from_hub and args.out is None:  # a model from the Hub: its cache is not ours to write
        args.out = "plots"
    paths = plot_run(run_path, args.out)
    for path in paths:
        log(str(path))
    if not paths:
        log(f"no known metric with data in {args.run}: no curves drawn")
    if args.chain_steps:
        from ..eval.plots import plot_prior_chain

        path, why = plot_prior_chain(run_path, args.out, steps=args.chain_steps)
        log(str(path) if path is not None else why)
    return 0
