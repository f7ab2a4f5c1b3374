"""``textebm eval RUN``: FPPL, RPPL, NLL, reconstruction and diversity of a text run (image runs: MSE, FID,
anomaly scores); a JSON report and a Markdown table. The work is :func:`textebm.eval.evaluate.evaluate_run`."""
from __future__ import annotations

from pathlib import Path

from ..eval.evaluate import MAX_SENTENCES
from .common import float_in, int_in, log, seed_type, set_threads



def add_parser(sub) -> None:
    e = sub.add_parser("eval", help="evaluate a run: FPPL, RPPL, NLL (importance sampling), reconstruction, "
                                    "diversity; JSON report + Markdown table")
    e.add_argument("run", help="run directory, saved model directory, checkpoint file, or Hub id (org/name)")
    for m, what in (("fppl", "forward perplexity of samples under an n-gram model of the training split"),
                    ("rppl", "reverse perplexity: n-gram model of samples scores the split"),
                    ("nll", "NLL / per-token perplexity by importance sampling"),
                    ("recon", "reconstruction NLL at posterior samples"),
                    ("diversity", "distinct-1/2/3 and self-BLEU of samples"),
                    ("latent", "latent usage: mutual information, active units, shuffled-latent gap, KL, "
                               "reconstruction accuracy and BLEU; and the prior's fit: decodes of prior codes "
                               "against decodes of aggregate-posterior and N(0, I) codes, MMD, f gap")):
        e.add_argument(f"--{m}", action="store_true", help=what)
    e.add_argument("--all", action="store_true", help="every metric (the default when none is chosen)")
    e.add_argument("--n-samples", type=int_in(1, 10 ** 7), default=None,
                   help="generated samples for FPPL/RPPL/diversity (default: as many as the training split)")
    e.add_argument("--samples", default=None, metavar="FILE",
                   help="score these sentences (one per line) instead of generating samples")
    e.add_argument("--save-samples", default=None, metavar="FILE", help="write the generated samples here")
    e.add_argument("--order", type=int_in(1, 6), default=5, help="n-gram order (default 5)")
    e.add_argument("--estimator", choices=("auto", "lmplz", "builtin"), default="auto",
                   help="n-gram estimator (default auto: lmplz when installed, else built-in)")
    e.add_argument("--split", choices=("test", "valid"), default="test", help="real sentences (default test)")
    e.add_argument("--max-sentences", "--max-images", type=int_in(0, 10 ** 7),
                   default=MAX_SENTENCES,
                   help=f"NLL / recon on the first M sentences (images: M images) of the split "
                        f"(default {MAX_SENTENCES}; 0 = all)")
    e.add_argument("--importance-samples", "-K", type=int_in(1, 10 ** 5), default=None,
                   help="importance samples per sentence (default 100)")
    e.add_argument("--chains", type=int_in(2, 10 ** 4), default=None,
                   help="posterior chains per sentence for the NLL proposal (default 16) and the latent "
                        "diagnostics (default 8)")
    e.add_argument("--posterior-steps", type=int_in(0, 10 ** 5), default=None,
                   help="posterior Langevin steps (default: the recipe's K1)")
    e.add_argument("--posterior-step-size", type=float_in(0.0), default=None,
                   help="posterior Langevin step size (default: the recipe's s1)")
    e.add_argument("--inflation", type=float_in(0.0), default=None,
                   help="proposal variance inflation factor (default 1.5)")
    e.add_argument("--covariance", choices=("diag", "full"), default=None, help="proposal covariance (diag)")
    e.add_argument("--log-z-samples", type=int_in(2, 10 ** 9), default=None,
                   help="Monte Carlo samples for log Z (default 100000)")
    e.add_argument("--fit-samples", type=int_in(2, 10 ** 6), default=1000,
                   help="codes per source for the prior-fit diagnostics of --latent (default 1000)")
    d = e.add_mutually_exclusive_group()
    d.add_argument("--temperature", type=float_in(0.0), default=None,
                   help="decode samples at this temperature (default: the recipe's generate settings)")
    d.add_argument("--greedy", action="store_true", help="decode samples by arg-max")
    e.add_argument("--top-k", type=int_in(0), default=None, help="decode from the k most likely tokens (0 = all)")
    e.add_argument("--top-p", type=float_in(0.0, 1.0), default=None, help="nucleus decoding, 0 < P <= 1")
    e.add_argument("--max-len", type=int_in(1, 10 ** 5), default=None, help="longest decode (tokens)")
    e.add_argument("--self-bleu-max", type=int_in(2, 10 ** 5), default=1000,
                   help="subsample size for self-BLEU (default 1000)")
    e.add_argument("--corpus", default=None, help="corpus name or directory (default: the run's recipe)")
    e.add_argument("--inception", default=None, metavar="PATH",
                   help="image runs: FID with the standard Inception features from this TorchScript file "
                        "(inception-2015-12-05.pt; nothing is downloaded). A TorchScript file is a program: "
                        "pass only one you trust")
    e.add_argument("--fid-samples", type=int_in(2, 10 ** 6), default=None,
                   help="image runs: generated images for FID (default: as many as the split's images)")
    e.add_argument("--grids", default=None, metavar="DIR",
                   help="image runs: also write samples/reconstructions/chain PNG grids into DIR")
    e.add_argument("--out", default=None, metavar="report.json",
                   help="JSON report path (default: eval-<split>.json in the run directory; for a Hub id, in the "
                        "current directory)")
    e.add_argument("--seed", type=seed_type, default=0)
    e.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default cpu)")
    e.add_argument("--threads", type=int_in(1, 1024), default=1,
                   help="torch CPU threads (default 1: small models gain nothing from more, and on a busy "
                        "machine extra threads spin against each other)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")


def default_report(run: Path, split: str) -> Path:
    """Where ``eval`` writes its report without ``--out``: ``eval-<split>.json`` in the run or saved-model
    directory; for a checkpoint file, ``eval-<split>-<checkpoint>.json`` beside the run's other reports (a
    checkpoint's report never lands in ``checkpoints/``, whose files all belong to the run)."""
    from ..runs import CKPT_DIR

    if run.is_dir():
        return run / f"eval-{split}.json"
    home = run.parent.parent if run.parent.name == CKPT_DIR else run.parent
    return home / f"eval-{split}-{run.stem}.json"


def run(args) -> int:
    import os

    from ..eval.report import markdown_table, write_json
    from ..eval.evaluate import evaluate_run, read_samples
    from ..runs import check_output, load_model
    from .common import device, resolve_run

    rp, from_hub = resolve_run(args.run)
    if args.samples:
        read_samples(args.samples)
    if args.out:
        out = Path(args.out)
    elif from_hub:  # a model from the Hub: here (its cache is not ours to write)
        out = Path(f"eval-{args.split}.json")
    else:
        out = default_report(rp, args.split)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"cannot write the report: directory {out.parent} does not exist")
    check_output(out, "--out", inputs=(args.samples,))
    check_output(args.save_samples, "--save-samples", inputs=(args.samples,))
    writable = os.access(out.parent, os.W_OK)
    if not writable:
        if args.out:
            raise PermissionError(f"cannot write the report: directory {out.parent} is not writable; pass another "
                                  f"--out")
        log(f"warning: {out.parent} is not writable: the report will be printed but not saved (pass --out PATH "
            f"to save it)")
    set_threads(args.threads)
    model = load_model(rp, device=str(device(args.device)))
    report = evaluate_run(model, args, args.run)
    if from_hub:  # the id, not a path in the cache
        report["run"]["path"] = args.run
    if report.get("kind") == "image":
        from ..eval.image_run import markdown_image_report

        print(markdown_image_report(report), flush=True)
    else:
        print(markdown_table(report), flush=True)
    for m in report["messages"]:
        log(f"warning: {m}")
    try:
        write_json(out, report)
    except OSError as e:  # a read-only run, a full disk: the table above is the result
        if args.out:
            raise
        log(f"warning: could not write the report {out} ({e}); the table above is the result (pass --out PATH "
            f"to save it)")
        return 0
    log(f"report: {out} ({report['timing_s']['total']:.1f} s)")
    return 0
