"""``textebm eval`` as a library call: :func:`evaluate_run` computes the report of a text or image run.

Kept free of argument parsing (that is :mod:`textebm.cli.eval`) and light at import time.
"""
from __future__ import annotations

import time
from pathlib import Path
from ..console import log

#: Defaults of ``textebm eval`` (documented in docs/evaluation.md). NLL / reconstruction use the first
#: ``MAX_SENTENCES`` sentences of the split; the sample-based metrics use as many samples as the training split.
MAX_SENTENCES = 200
METRICS = ("fppl", "rppl", "nll", "recon", "diversity", "latent")


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
    from ..files import read_regular

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"sample file not found: {p}")
    try:
        text = read_regular(p, "sample file").decode("utf-8")
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


LATENT_PROTOCOL = (
    "Latent diagnostics (textebm.eval.latent): C posterior chains per sentence (the recipe's posterior chain from "
    "N(0, sigma0^2 I)); mutual information I(x; z) by the aggregate-posterior estimator of He et al. (2019) over "
    "diagonal Gaussian fits to the chains, corrected for the fits' noise; active units (Burda et al. 2016): "
    "dimensions with Cov_x(E[z|x]) > 0.01 (chain-mean noise removed, F-test at 1e-3); shuffled-latent gap "
    "E[log p(x|z+(x))] - E[log p(x|z+(x'))] in nats/sentence with x' another sentence of the batch; KL = IS-NLL - "
    "reconstruction NLL (nats/sentence); reconstruction: greedy decoding from z+ against the input (token "
    "accuracy by position incl. </s>, corpus BLEU-4). A decoder that ignores z reads about 0 on all of them."
)


def ngram_units_note(model) -> str | None:
    """For a model whose tokenizer is not word-level: the n-gram metrics (FPPL, RPPL, distinct-n, self-BLEU)
    count words, not the tokenizer's subword tokens; the sentence that says so in their protocols."""
    kind = getattr(model.tokenizer, "kind", "word")
    if kind == "word":
        return None
    return (f"Units: words, not tokens. This model's tokenizer ({kind}) splits text into subword tokens; its "
            f"samples are decoded to text and split on whitespace, as the corpus is, so every n-gram here is an "
            f"n-gram of words and the numbers compare with word-level runs.")


def truth_grammar(model, args, subset):
    """The grammar that generated the run's corpus (the bundled one, or a grammar.json beside the corpus), read
    and checked before any metric is computed: a malformed grammar, or one that does not derive the sentences
    the metrics are computed on, is a ValueError now rather than after hours of evaluation. None when the
    corpus has no grammar."""
    from .truth import check_derives, grammar_for_corpus

    r = model.recipe
    if r is None and args.corpus is None:
        return None
    name = args.corpus if args.corpus is not None else r.data.corpus
    pcfg = grammar_for_corpus(name, None if args.corpus is not None else r.data.data_dir)
    if pcfg is not None:
        check_derives(pcfg, subset, f"the {args.split} split of {name}")
    return pcfg


def grammar_truth(model, args, samples, train_s, subset, nll, pcfg=None) -> dict | None:
    """Known-truth metrics when the corpus was generated by a grammar (``pcfg``, from :func:`truth_grammar`):
    the generated samples as the grammar sees them, and KL(data || model) from the NLL."""
    from .truth import exact_kl, sample_truth

    if pcfg is None:
        return None
    out = {"protocol": "Against the grammar that generated the corpus (exact probabilities, inside algorithm)."}
    if samples is not None:
        out["samples"] = sample_truth(pcfg, samples, train_s)
    if nll is not None and nll.get("nll_per_sentence") is not None:
        n = nll["n_sentences"]
        if n == len(subset):
            out["kl"] = exact_kl(pcfg, subset, nll["nll_per_sentence"], nll["nll_total_se_is"] / n)
        else:
            out["kl"] = {"message": f"the NLL covers {n} of the {len(subset)} sentences (the length policy dropped "
                                    f"some), so it is not compared with their exact entropy"}
    return out


def prior_fit_report(model, args, train_s, pcfg=None) -> dict:
    """:func:`textebm.eval.prior_fit.prior_fit` on ``--fit-samples`` codes per source, the aggregate posterior
    drawn from the training sentences, judged by the corpus's grammar (when it has one) and by forward perplexity
    under an ``--order``-gram model of the training split (when kenlm is installed)."""
    import importlib.util
    import tempfile

    from ..data.tokenizers import encode_sentences
    from . import ngram
    from .prior_fit import grammar_judge, ngram_judge, prior_fit

    r = model.recipe
    judges, notes = [], []
    if pcfg is not None:  # the corpus's grammar, checked by truth_grammar
        judges.append(grammar_judge(pcfg))
    ids, _ = encode_sentences(train_s, model.tokenizer, r.data.max_len if r is not None else 10 ** 9,
                              r.data.length_policy if r is not None else "truncate")
    with tempfile.TemporaryDirectory(prefix="textebm-fit-") as tmp:
        if importlib.util.find_spec("kenlm") is not None:
            res = ngram.train(args.order, train_s, Path(tmp) / "train.arpa", estimator=args.estimator)
            judges.append(ngram_judge(res.path))
        else:
            notes.append("kenlm is not installed: no FPPL of the decodes")
        log(f"prior fit: {args.fit_samples} codes per source ...")
        fit = prior_fit(model, ids, n=args.fit_samples, judges=judges, seed=args.seed,
                        decoding=_decoding(model, args))
    if notes:
        fit["message"] = "; ".join(notes)
    return fit


def latent_tools_report(model, args, subset, pcfg) -> dict:
    """What the latent does on a corpus with a grammar (:mod:`textebm.eval.clusters`): reconstruction from each
    sentence's code (greedy), the grammaticality of decodes along paths between 100 random pairs of the split's
    sentences, and for a symbol-vector prior the clusters' NMI / ARI against the sentence types and the purity
    of 100 conditional samples per symbol."""
    from ..latent_tools import reconstruct_all
    from .clusters import interpolation_report, symbol_report

    log(f"latent tools: reconstruction and interpolation of {len(subset)} {args.split} sentences ...")
    chains = args.chains or 8
    _, _, rec = reconstruct_all(model, subset, n_chains=chains, seed=args.seed)
    code = "the amortized posterior's mean" if model.encoder is not None else f"the mean of {chains} posterior chains"
    out = {"reconstruction": {**rec, "protocol": f"each sentence decoded greedily from its code ({code})"},
           "interpolation": interpolation_report(model, subset, pcfg, n_pairs=100, n_chains=chains,
                                                 seed=args.seed, split=args.split)}
    if hasattr(model.prior, "symbol_log_probs"):
        log(f"latent tools: clusters of {len(subset)} {args.split} sentences and samples of each symbol ...")
        out["symbols"] = symbol_report(model, subset, pcfg, n_per_symbol=100, n_chains=chains, seed=args.seed,
                                       decoding=decoding_args(args), split=args.split)
    return out


def _decoding(model, args) -> dict:
    from ..model import recipe_decoding

    return recipe_decoding(model.recipe, **decoding_args(args))


def decoding_args(args) -> dict:
    """The decoding rule's overrides given on ``textebm eval``'s command line (None: the recipe's)."""
    return dict(max_len=getattr(args, "max_len", None), greedy=True if getattr(args, "greedy", False) else None,
                temperature=getattr(args, "temperature", None), top_k=getattr(args, "top_k", None),
                top_p=getattr(args, "top_p", None))


def evaluate_run(model, args, run_path) -> dict:
    """Everything ``textebm eval`` computes for ``model``, as a JSON-ready report (see docs/evaluation.md).

    ``args`` carries the options of ``textebm eval`` (see :mod:`textebm.cli.eval`; any object with those
    attributes); ``run_path`` is what the model was loaded from, recorded in the report.
    """
    import torch

    from . import likelihood, text
    from .text import chain_words

    chosen = [m for m in METRICS if getattr(args, m, False)]
    if args.all or not chosen:
        chosen = list(METRICS)
    given_samples = read_samples(args.samples) if args.samples else None
    model.eval()
    torch.manual_seed(args.seed)
    if model.is_image:
        from .image_run import evaluate_image_run

        t0 = time.perf_counter()
        report = evaluate_image_run(model, split=args.split, max_images=args.max_sentences,
                                    inception=args.inception, fid_samples=args.fid_samples or 0, seed=args.seed,
                                    posterior_chain=model.posterior_chain.replace(
                                        n_steps=args.posterior_steps, step_size=args.posterior_step_size),
                                    grids_dir=args.grids)
        report["run"] = run_info(model, run_path)
        report["timing_s"] = {"total": time.perf_counter() - t0}
        report["messages"] = []
        return report
    corpus_name, train_s, real = corpus_of(model, args.corpus, args.split)
    subset = real[:args.max_sentences] if args.max_sentences else list(real)
    pcfg = truth_grammar(model, args, subset)  # checked before any work
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
            samples, dec = text.generate_samples(model, n, seed=args.seed, batch_size=1000, **decoding_args(args))
            report["samples"] = {"source": "generated", "n": len(samples), **dec,
                                 "protocol": (f"{n} samples: z from the prior chain ({chain_words(dec['prior_chain'])}) "
                                              f"from N(0, sigma0^2 I), decoded by {dec['decoding']}, seed {args.seed}")}
            if args.save_samples:
                from ..files import write_file

                write_file(args.save_samples, "".join(s + "\n" for s in samples))
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
    chain = model.posterior_chain.replace(n_steps=args.posterior_steps, step_size=args.posterior_step_size)
    if "nll" in chosen:
        t0 = time.perf_counter()
        log(f"NLL: importance sampling on {len(subset)} {args.split} sentences ...")
        kw = {k: v for k, v in dict(n_importance=args.importance_samples, n_chains=args.chains, chain=chain,
                                    inflation=args.inflation, covariance=args.covariance,
                                    log_z_samples=args.log_z_samples).items() if v is not None}
        report["nll"] = likelihood.evaluate_nll(model, subset, seed=args.seed,
                                                progress=not args.no_progress, **kw)
        report["timing_s"]["nll"] = time.perf_counter() - t0
    if "recon" in chosen:
        t0 = time.perf_counter()
        report["recon"] = likelihood.evaluate_reconstruction(model, subset, chain=chain, seed=args.seed)
        report["timing_s"]["recon"] = time.perf_counter() - t0
    if "latent" in chosen:
        t0 = time.perf_counter()
        from .latent import latent_diagnostics_for_sentences

        log(f"latent diagnostics on {len(subset)} {args.split} sentences ...")
        kw = {k: v for k, v in dict(n_chains=args.chains, chain=chain).items() if v is not None}
        report["latent"] = latent_diagnostics_for_sentences(model, subset, max_sentences=None, seed=args.seed, **kw)
        report["latent"]["protocol"] = LATENT_PROTOCOL
        report["timing_s"]["latent"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        report["prior_fit"] = prior_fit_report(model, args, train_s, pcfg)
        report["timing_s"]["prior_fit"] = time.perf_counter() - t0
        if pcfg is not None:
            t0 = time.perf_counter()
            report["latent_tools"] = latent_tools_report(model, args, subset, pcfg)
            report["timing_s"]["latent_tools"] = time.perf_counter() - t0
    truth = grammar_truth(model, args, samples, train_s, subset, report.get("nll"), pcfg)
    if truth is not None:
        report["truth"] = truth
    report["timing_s"]["total"] = time.perf_counter() - t_all
    report["messages"] = [f"{m}: {report[m]['message']}" for m in METRICS
                          if m in report and report[m].get("message")]
    for m in ("fppl", "rppl"):
        if m in report and report[m].get("fallback_reason"):
            report["messages"].append(f"{m}: built-in n-gram estimator used: {report[m]['fallback_reason']}")
    note = ngram_units_note(model)
    for m in ("fppl", "rppl", "diversity"):
        if m in report:
            report[m]["units"] = "words"
            report[m]["protocol"] = f"{report[m]['protocol']} {note}" if note else report[m]["protocol"]
    report["protocol"] = {m: report[m]["protocol"] for m in METRICS if m in report}
    if "samples" in report and "protocol" in report["samples"]:
        report["protocol"]["samples"] = report["samples"]["protocol"]
    return report


