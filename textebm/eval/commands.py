"""Command-line entry points of the evaluation tools (``textebm eval``, ``textebm chain``).

Kept light: nothing heavy is imported at module level, so ``textebm --help`` stays fast.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

#: Defaults of ``textebm eval`` (documented in docs/evaluation.md). NLL / reconstruction use the first
#: ``MAX_SENTENCES`` sentences of the split; the sample-based metrics use as many samples as the training split.
MAX_SENTENCES = 200
METRICS = ("fppl", "rppl", "nll", "recon", "diversity")


def _int_at_least(name, low):
    def parse(v):
        try:
            i = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {v!r}")
        if i < low:
            raise argparse.ArgumentTypeError(f"{name} must be at least {low}, got {i}")
        return i
    return parse


def _float_above(name, low):
    def parse(v):
        try:
            f = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {v!r}")
        if not f > low:
            raise argparse.ArgumentTypeError(f"{name} must be > {low}, got {f}")
        return f
    return parse


def add_parsers(sub) -> None:
    """Register the evaluation subcommands on the main parser's subparsers."""
    e = sub.add_parser("eval", help="evaluate a run: FPPL, RPPL, NLL (importance sampling), reconstruction, "
                                    "diversity; JSON report + Markdown table")
    e.add_argument("run", help="run directory, saved model directory, or checkpoint file")
    for m, what in (("fppl", "forward perplexity of samples under an n-gram model of the training split"),
                    ("rppl", "reverse perplexity: n-gram model of samples scores the split"),
                    ("nll", "NLL / per-token perplexity by importance sampling"),
                    ("recon", "reconstruction NLL at posterior samples"),
                    ("diversity", "distinct-1/2/3 and self-BLEU of samples")):
        e.add_argument(f"--{m}", action="store_true", help=what)
    e.add_argument("--all", action="store_true", help="every metric (the default when none is chosen)")
    e.add_argument("--n-samples", type=_int_at_least("--n-samples", 1), default=None,
                   help="generated samples for FPPL/RPPL/diversity (default: as many as the training split)")
    e.add_argument("--samples", default=None, metavar="FILE",
                   help="score these sentences (one per line) instead of generating samples")
    e.add_argument("--save-samples", default=None, metavar="FILE", help="write the generated samples here")
    e.add_argument("--order", type=_int_at_least("--order", 1), default=5, help="n-gram order (default 5)")
    e.add_argument("--estimator", choices=("auto", "lmplz", "builtin"), default="auto",
                   help="n-gram estimator (default auto: lmplz when installed, else built-in)")
    e.add_argument("--split", choices=("test", "valid"), default="test", help="real sentences (default test)")
    e.add_argument("--max-sentences", "--max-images", type=_int_at_least("--max-sentences", 0),
                   default=MAX_SENTENCES,
                   help=f"NLL / recon on the first M sentences (images: M images) of the split "
                        f"(default {MAX_SENTENCES}; 0 = all)")
    e.add_argument("--importance-samples", "-K", type=_int_at_least("--importance-samples", 1), default=None,
                   help="importance samples per sentence (default 100)")
    e.add_argument("--chains", type=_int_at_least("--chains", 2), default=None,
                   help="posterior chains per sentence for the proposal (default 16)")
    e.add_argument("--posterior-steps", type=_int_at_least("--posterior-steps", 0), default=None,
                   help="posterior Langevin steps (default: the recipe's K1)")
    e.add_argument("--posterior-step-size", type=_float_above("--posterior-step-size", 0), default=None,
                   help="posterior Langevin step size (default: the recipe's s1)")
    e.add_argument("--inflation", type=_float_above("--inflation", 0), default=None,
                   help="proposal variance inflation factor (default 1.5)")
    e.add_argument("--covariance", choices=("diag", "full"), default=None, help="proposal covariance (diag)")
    e.add_argument("--log-z-samples", type=_int_at_least("--log-z-samples", 2), default=None,
                   help="Monte Carlo samples for log Z (default 100000)")
    e.add_argument("--self-bleu-max", type=_int_at_least("--self-bleu-max", 2), default=1000,
                   help="subsample size for self-BLEU (default 1000)")
    e.add_argument("--corpus", default=None, help="corpus name or directory (default: the run's recipe)")
    e.add_argument("--inception", default=None, metavar="PATH",
                   help="image runs: FID with the standard Inception features from this TorchScript file "
                        "(inception-2015-12-05.pt; nothing is downloaded)")
    e.add_argument("--fid-samples", type=_int_at_least("--fid-samples", 2), default=None,
                   help="image runs: generated images for FID (default: as many as the split's images)")
    e.add_argument("--grids", default=None, metavar="DIR",
                   help="image runs: also write samples/reconstructions/chain PNG grids into DIR")
    e.add_argument("--out", default=None, metavar="report.json",
                   help="JSON report path (default: eval-<split>.json in the run directory)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default cpu)")
    e.add_argument("--threads", type=_int_at_least("--threads", 1), default=1,
                   help="torch CPU threads (default 1: small models gain nothing from more, and on a busy "
                        "machine extra threads spin against each other)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")

    c = sub.add_parser("chain", help="decode z along one long prior Langevin chain (Pang et al. 2020, Table 3)")
    c.add_argument("run", help="run directory, saved model directory, or checkpoint file")
    c.add_argument("--steps", type=_int_at_least("--steps", 1), default=100, help="Langevin steps (default 100)")
    c.add_argument("--every", type=_int_at_least("--every", 1), default=20,
                   help="decode every this many steps (default 20)")
    c.add_argument("--step-size", type=_float_above("--step-size", 0), default=None,
                   help="Langevin step size (default: the recipe's s0)")
    c.add_argument("--max-len", type=_int_at_least("--max-len", 1), default=None)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", default=None, metavar="plot.png",
                   help="write a PNG plot of log-density over steps (image models: the chain as a PNG grid, "
                        "default chain.png)")
    c.add_argument("--json", default=None, metavar="FILE", help="also write the chain as JSON")
    c.add_argument("--device", default="cpu")
    c.add_argument("--threads", type=_int_at_least("--threads", 1), default=1, help="torch CPU threads (default 1)")


# ---- helpers --------------------------------------------------------------------------------------------
def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _load(run: str, device: str, threads: int = 1):
    import torch

    from ..cli import load_model_for_sampling
    from ..train import resolve_device

    torch.set_num_threads(threads)
    dev = resolve_device(device)
    return load_model_for_sampling(run, device=str(dev))


def _corpus(model, override, split: str):
    """(corpus name, training sentences, sentences of ``split``) of the run's recipe (or ``override``)."""
    from ..data import load_corpus

    r = model.recipe
    if override is None and r is None:
        raise ValueError("the model carries no recipe, so its corpus is unknown; pass --corpus")
    name = override if override is not None else r.data.corpus
    try:
        if override is not None:
            corpus = load_corpus(name)
        else:
            corpus = load_corpus(name, data_dir=r.data.data_dir, **r.data.options)
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"cannot load the corpus {name!r} ({str(e).splitlines()[0]}); "
                         f"pass --corpus NAME_OR_DIR") from None
    lower = bool(r.data.lowercase) if r is not None else False
    prep = (lambda xs: [s.lower() for s in xs]) if lower else list
    return corpus.name, prep(corpus.train), prep(corpus.split(split))


def _read_samples(path: str):
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"sample file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"sample file {p} is not UTF-8 text") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not any(l.strip() for l in lines):
        raise ValueError(f"sample file {p} is empty (expected one sentence per line)")
    return [" ".join(l.split()) for l in lines]


def run_info(model, run: str) -> dict:
    from ..config import to_dict

    r = model.recipe
    info = {"path": str(Path(run).resolve()), "latent_dim": model.latent_dim,
            "decoder": type(model.decoder).__name__,
            "vocab_size": len(model.tokenizer) if model.tokenizer is not None else None,
            "parameters": sum(p.numel() for p in model.parameters())}
    if r is not None:
        info.update(recipe_name=r.name, corpus=r.data.corpus, train_steps=r.train.steps, recipe=to_dict(r))
    return info


# ---- textebm eval ---------------------------------------------------------------------------------------
def evaluate_run(args) -> dict:
    """Everything ``textebm eval`` computes, as a JSON-ready report (see docs/evaluation.md)."""
    import torch

    from . import likelihood, text

    chosen = [m for m in METRICS if getattr(args, m, False)]
    if args.all or not chosen:
        chosen = list(METRICS)
    given_samples = _read_samples(args.samples) if args.samples else None
    model = _load(args.run, args.device, args.threads)
    model.eval()
    torch.manual_seed(args.seed)
    if model.is_image:
        from .vision import evaluate_image_run

        t0 = time.perf_counter()
        report = evaluate_image_run(model, split=args.split, max_images=args.max_sentences,
                                    inception=args.inception, fid_samples=args.fid_samples or 0, seed=args.seed,
                                    posterior_steps=args.posterior_steps,
                                    posterior_step_size=args.posterior_step_size, grids_dir=args.grids)
        report["run"] = run_info(model, args.run)
        report["timing_s"] = {"total": time.perf_counter() - t0}
        report["messages"] = []
        return report
    corpus_name, train_s, real = _corpus(model, args.corpus, args.split)
    report = {"run": run_info(model, args.run), "metrics": chosen,
              "data": {"corpus": corpus_name, "split": args.split, "train_sentences": len(train_s),
                       "split_sentences": len(real)},
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                           if k not in ("command",)},
              "timing_s": {}}
    t_all = time.perf_counter()

    samples = None
    if any(m in chosen for m in ("fppl", "rppl", "diversity")):
        t0 = time.perf_counter()
        if given_samples is not None:
            samples = given_samples
            report["samples"] = {"source": str(args.samples), "n": len(samples)}
        else:
            n = args.n_samples or len(train_s)
            _log(f"generating {n} samples ...")
            samples, dec = text.generate_samples(model, n, seed=args.seed, batch_size=1000)
            report["samples"] = {"source": "generated", "n": len(samples), **dec,
                                 "protocol": (f"{n} samples: z from {dec['prior_steps']} prior Langevin steps of "
                                              f"size {dec['prior_step_size']} from N(0, sigma0^2 I), decoded "
                                              + ("greedily" if dec["greedy"] else
                                                 f"by sampling (temperature {dec['temperature']}, top-k "
                                                 f"{dec['top_k']}, top-p {dec['top_p']})")
                                              + f", max_len {dec['max_len']}, seed {args.seed}")}
            if args.save_samples:
                Path(args.save_samples).write_text("".join(s + "\n" for s in samples), encoding="utf-8")
        report["samples"]["n_empty"] = sum(1 for s in samples if not s.split())
        report["timing_s"]["samples"] = time.perf_counter() - t0

    if "fppl" in chosen:
        t0 = time.perf_counter()
        _log(f"FPPL: {args.order}-gram model of the training split ...")
        report["fppl"] = text.forward_perplexity(train_s, samples, order=args.order, estimator=args.estimator)
        report["timing_s"]["fppl"] = time.perf_counter() - t0
    if "rppl" in chosen:
        t0 = time.perf_counter()
        _log(f"RPPL: {args.order}-gram model of the samples ...")
        ref = {w for s in train_s + real for w in s.split()}
        report["rppl"] = text.reverse_perplexity(samples, real, order=args.order, estimator=args.estimator,
                                                 split=args.split, reference_vocab=ref)
        report["timing_s"]["rppl"] = time.perf_counter() - t0
    if "diversity" in chosen:
        t0 = time.perf_counter()
        report["diversity"] = text.diversity(samples, self_bleu_max=args.self_bleu_max, seed=args.seed)
        report["timing_s"]["diversity"] = time.perf_counter() - t0
    subset = real[:args.max_sentences] if args.max_sentences else list(real)
    if "nll" in chosen:
        t0 = time.perf_counter()
        _log(f"NLL: importance sampling on {len(subset)} {args.split} sentences ...")
        kw = {k: v for k, v in dict(n_importance=args.importance_samples, n_chains=args.chains,
                                    n_steps=args.posterior_steps, step_size=args.posterior_step_size,
                                    inflation=args.inflation, covariance=args.covariance,
                                    log_z_samples=args.log_z_samples).items() if v is not None}
        report["nll"] = likelihood.evaluate_nll(model, subset, seed=args.seed,
                                                progress=not args.no_progress, **kw)
        report["timing_s"]["nll"] = time.perf_counter() - t0
    if "recon" in chosen:
        t0 = time.perf_counter()
        report["recon"] = likelihood.evaluate_reconstruction(model, subset, n_steps=args.posterior_steps,
                                                             step_size=args.posterior_step_size, seed=args.seed)
        report["timing_s"]["recon"] = time.perf_counter() - t0
    report["timing_s"]["total"] = time.perf_counter() - t_all
    report["messages"] = [f"{m}: {report[m]['message']}" for m in METRICS
                          if m in report and report[m].get("message")]
    for m in ("fppl", "rppl"):
        if m in report and report[m].get("fallback_reason"):
            report["messages"].append(f"{m}: built-in n-gram estimator used: {report[m]['fallback_reason']}")
    report["protocol"] = {m: report[m]["protocol"] for m in METRICS if m in report}
    if "samples" in report and "protocol" in report["samples"]:
        report["protocol"]["samples"] = report["samples"]["protocol"]
    return report


def _check_run_path(run: str) -> None:
    """Fail fast (before torch is imported) on a run path that does not exist."""
    if not Path(run).exists():
        raise FileNotFoundError(f"no such run directory or checkpoint: {run}")


def cmd_eval(args) -> int:
    from .report import markdown_table, write_json

    _check_run_path(args.run)
    if args.samples:
        _read_samples(args.samples)
    out = Path(args.out) if args.out else None
    if out is None:
        rp = Path(args.run)
        out = (rp if rp.is_dir() else rp.parent) / f"eval-{args.split}.json"
    if not out.parent.is_dir():
        raise FileNotFoundError(f"cannot write the report: directory {out.parent} does not exist")
    report = evaluate_run(args)
    write_json(out, report)
    if report.get("kind") == "image":
        from .vision import markdown_image_report

        print(markdown_image_report(report))
    else:
        print(markdown_table(report))
    for m in report["messages"]:
        _log(f"warning: {m}")
    _log(f"report: {out} ({report['timing_s']['total']:.1f} s)")
    return 0


# ---- textebm chain --------------------------------------------------------------------------------------
def cmd_chain(args) -> int:
    from .report import markdown_chain, write_json, write_line_plot_png
    from .text import long_run_chain

    _check_run_path(args.run)
    for p in (args.out, args.json):
        if p and not Path(p).resolve().parent.is_dir():
            raise FileNotFoundError(f"cannot write {p}: its directory does not exist")
    model = _load(args.run, args.device, args.threads)
    if model.is_image:  # the chain as a PNG grid
        import torch

        from .vision import chain_grid

        gen = torch.Generator(device=model.device)
        gen.manual_seed(args.seed)
        s = model.recipe.sampling if model.recipe is not None else None
        step_size = args.step_size or (s.prior_step_size if s else 0.4)
        res = chain_grid(model, args.out or "chain.png", args.steps, args.every, step_size, generator=gen)
        print("| step | mean log density |\n|---|---|")
        for k, lp in zip(res["steps"], res["mean_log_density"]):
            print(f"| {k} | {lp:.3f} |")
        _log(f"chain grid: {res['path']}")
        if args.json:
            write_json(args.json, res)
        return 0
    res = long_run_chain(model, steps=args.steps, every=args.every, step_size=args.step_size, seed=args.seed,
                         max_len=args.max_len)
    print(markdown_chain(res["rows"]))
    if args.out:
        write_line_plot_png(args.out, res["trace"], xlabel="step", ylabel="log density")
        _log(f"plot: {args.out}")
    if args.json:
        write_json(args.json, res)
    return 0


COMMANDS: dict = {"eval": cmd_eval, "chain": cmd_chain}
