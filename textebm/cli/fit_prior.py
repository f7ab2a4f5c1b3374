"""``textebm fit-prior RUN --out DIR``: refit a trained model's prior alone on the codes of its training sentences
(:mod:`textebm.train.fit_prior`) and save the model with the refitted prior as a new saved model."""
from __future__ import annotations

from pathlib import Path

from .common import float_in, int_in, log, seed_type, set_threads


def add_parser(sub) -> None:
    f = sub.add_parser("fit-prior", help="refit the prior alone on the frozen codes of the training sentences "
                                         "(decoder untouched); writes a new saved model")
    f.add_argument("run", help="run directory, saved model directory, checkpoint file or Hub id")
    f.add_argument("--out", required=True, help="directory for the saved model with the refitted prior (new or "
                                                "empty)")
    f.add_argument("--steps", type=int_in(1, 10 ** 7), default=2000, help="prior updates (default 2000)")
    f.add_argument("--lr", type=float_in(0.0), default=None, help="Adam learning rate (default: train.lr_prior)")
    f.add_argument("--sentences", type=int_in(2, 10 ** 7), default=10_000,
                   help="training sentences whose codes the prior is fitted to (default 10000)")
    f.add_argument("--batch-size", type=int_in(2, 10 ** 6), default=256)
    f.add_argument("--prior-noise", type=float_in(0.0, low_open=False), default=None,
                   help="noise scale of the prior chain while refitting and afterwards (default: the recipe's)")
    f.add_argument("--fit-samples", type=int_in(2, 10 ** 6), default=500,
                   help="codes per source of the prior-fit diagnostics printed before and after (default 500)")
    f.add_argument("--seed", type=seed_type, default=0)
    f.add_argument("--threads", type=int_in(1, 1024), default=1)


def run(args) -> int:
    from ..config import apply_overrides
    from ..data.tokenizers import encode_sentences
    from ..eval.evaluate import corpus_of
    from ..eval.prior_fit import grammar_judge, prior_fit
    from ..eval.truth import grammar_for_corpus
    from ..runs import check_out_dir, load_model
    from ..train.fit_prior import fit_prior
    from ..train.report import prior_fit_line
    from .common import resolve_run

    rp, _ = resolve_run(args.run)
    out = Path(args.out)
    check_out_dir(out, overwrite=False)
    set_threads(args.threads)
    model = load_model(rp)
    if model.recipe is None or model.tokenizer is None:
        raise ValueError(f"{args.run} carries no recipe or tokenizer: fit-prior refits text models trained by textebm")
    if args.prior_noise is not None:
        model.recipe = apply_overrides(model.recipe, [f"sampling.prior_noise={args.prior_noise}"])
    r = model.recipe
    _, train_s, _ = corpus_of(model, None, "test")
    ids, _ = encode_sentences(train_s[:args.sentences], model.tokenizer, r.data.max_len, r.data.length_policy)
    pcfg = grammar_for_corpus(r.data.corpus, r.data.data_dir)
    judges = [grammar_judge(pcfg)] if pcfg is not None else []

    def report(when: str) -> None:
        fit = prior_fit(model, ids, n=args.fit_samples, judges=judges, seed=args.seed, permutations=100)
        log(f"{when}: {prior_fit_line(fit)}")

    report("before")
    log(f"refitting the prior on the codes of {len(ids)} training sentences, {args.steps} updates ...")
    fit_prior(model, ids, steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
              log_every=max(1, args.steps // 10))
    report("after")
    model.save_pretrained(out)
    log(f"saved: {out} (the decoder of {args.run}, the refitted prior)")
    return 0
