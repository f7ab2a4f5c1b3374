"""``textebm chain RUN``: decode z along one long prior Langevin chain (Pang et al. 2020, Table 3); image runs
write the chains as a PNG grid."""
from __future__ import annotations

from pathlib import Path

from .common import float_in, int_in, log, seed_type, set_threads


def add_parser(sub) -> None:
    c = sub.add_parser("chain", help="decode z along one long prior Langevin chain (Pang et al. 2020, Table 3)")
    c.add_argument("run", help="run directory, saved model directory, checkpoint file, or Hub id (org/name)")
    c.add_argument("--steps", type=int_in(1, 10 ** 6), default=100, help="Langevin steps (default 100)")
    c.add_argument("--every", type=int_in(1), default=20,
                   help="decode every this many steps (default 20)")
    c.add_argument("--step-size", type=float_in(0.0), default=None,
                   help="Langevin step size (default: the recipe's s0)")
    c.add_argument("--max-len", type=int_in(1, 10 ** 5), default=None)
    c.add_argument("--seed", type=seed_type, default=0)
    c.add_argument("--out", default=None, metavar="plot.png",
                   help="write a PNG plot of log-density over steps (image models: the chain as a PNG grid, "
                        "default chain.png)")
    c.add_argument("--json", default=None, metavar="FILE", help="also write the chain as JSON")
    c.add_argument("--device", default="cpu")
    c.add_argument("--threads", type=int_in(1, 1024), default=1, help="torch CPU threads (default 1)")


def run(args) -> int:
    from ..eval.plots import plot_chain
    from ..eval.report import markdown_chain, write_json
    from ..eval.text import long_run_chain
    from ..runs import check_output, load_model
    from .common import device, resolve_run

    run_path, _ = resolve_run(args.run)
    for flag, p in (("--out", args.out), ("--json", args.json)):
        if p and not Path(p).resolve().parent.is_dir():
            raise FileNotFoundError(f"cannot write {p}: its directory does not exist")
        check_output(p, flag)
    set_threads(args.threads)
    model = load_model(run_path, device=str(device(args.device)))
    if model.is_image:  # the chain as a PNG grid
        import torch

        from ..eval.image_run import chain_grid

        gen = torch.Generator(device=model.device)
        gen.manual_seed(args.seed)
        chain = model.prior_chain.replace(n_steps=args.steps, step_size=args.step_size)
        res = chain_grid(model, args.out or "chain.png", chain, args.every, generator=gen)
        print("| step | mean log density |\n|---|---|")
        for k, lp in zip(res["steps"], res["mean_log_density"]):
            print(f"| {k} | {lp:.3f} |")
        log(f"chain grid: {res['path']}")
        if args.json:
            write_json(args.json, res)
        return 0
    res = long_run_chain(model, steps=args.steps, every=args.every, step_size=args.step_size, seed=args.seed,
                         max_len=args.max_len)
    print(markdown_chain(res["rows"]))
    if args.out:
        plot_chain(res["trace"], args.out,
                   title=f"prior Langevin chain of {Path(args.run).resolve().name}, seed {args.seed}")
        log(f"plot: {args.out}")
    if args.json:
        write_json(args.json, res)
    return 0


