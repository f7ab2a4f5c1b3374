"""``textebm eval`` as a library call: :func:`evaluate_run` computes the report of a text or image run.

Kept free of argument parsing (that is :mod:`textebm.cli.eval`) and light at import time.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

#: Defaults of ``textebm eval`` (documented in docs/evaluation.md). NLL / reconstruction use the first
#: ``MAX_SENTENCES`` sentences of the split; the sample-based metrics use as many samples as the training split.
MAX_SENTENCES = 200
METRICS = ("fppl", "rppl", "nll", "recon", "diversity")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def corpus_of(model, override, split: str):
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


def read_samples(path: str):
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


def evaluate_run(model, args, run_path) -> dict:
    """Everything ``textebm eval`` computes for ``model``, as a JSON-ready report (see docs/evaluation.md).

    ``args`` carries the options of ``textebm eval`` (see :mod:`textebm.cli.eval`; any object with those
    attributes); ``run_path`` is what the model was loaded from, recorded in the report.
    """
    import torch

    from . import likelihood, text

    chosen = [m for m in METRICS if getattr(args, m, False)]
    if args.all or not chosen:
        chosen = list(METRICS)
    given_samples = read_samples(args.samples) if args.samples else None
    model.eval()
    torch.manual_seed(args.seed)
    if model.is_image:
        from .vision import evaluate_image_run

        t0 = time.perf_counter()
        report = evaluate_image_run(model, split=args.split, max_images=args.max_sentences,
                                    inception=args.inception, fid_samples=args.fid_samples or 0, seed=args.seed,
                                    posterior_steps=args.posterior_steps,
                                    posterior_step_size=args.posterior_step_size, grids_dir=args.grids)
        report["run"] = run_info(model, run_path)
        report["timing_s"] = {"total": time.perf_counter() - t0}
        report["messages"] = []
        return report
    corpus_name, train_s, real = corpus_of(model, args.corpus, args.split)
    report = {"run": run_info(model, run_path), "metrics": chosen,
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
            log(f"generating {n} samples ...")
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
        log(f"FPPL: {args.order}-gram model of the training split ...")
        report["fppl"] = text.forward_perplexity(train_s, samples, order=args.order, estimator=args.estimator)
        report["timing_s"]["fppl"] = time.perf_counter() - t0
    if "rppl" in chosen:
        t0 = time.perf_counter()
        log(f"RPPL: {args.order}-gram model of the samples ...")
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
        log(f"NLL: importance sampling on {len(subset)} {args.split} sentences ...")
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


