"""Metrics against a known grammar: for corpora sampled from a PCFG, the true p(x) of every sentence is exact.

The bundled corpus ``data/grammar`` is sampled from :func:`textebm.data.grammar.default_grammar`; a user corpus
directory may carry its own grammar as ``grammar.json`` (the format of :meth:`PCFG.to_json`, read as data only).
With the true distribution known,

* :func:`sample_truth` scores generated samples: the fraction the grammar derives at all (p_true(x) > 0),
  their mean exact log-probability, and the fraction copied verbatim from the training split;
* :func:`exact_kl` turns a model's NLL into KL(p_data || p_model) = E_data[-log p_model(x)] - H(p_data), with
  H(p_data) estimated without model error by the mean exact -log p_true(x) over the split's sentences.

Grammar probabilities have no end-of-sentence event (a sentence ends when its derivation ends); per-token
numbers count one end-of-sentence token per sentence, as ``data/grammar/stats.json`` and the models do.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence, Union

from ..data.grammar import PCFG, default_grammar

#: The file a corpus directory holds its grammar in.
GRAMMAR_FILE = "grammar.json"


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.expanduser().resolve() == b.expanduser().resolve()
    except OSError:
        return False


def grammar_for_corpus(name_or_path: str, data_dir: Optional[str] = None) -> Optional[PCFG]:
    """The grammar that generated a corpus, when it is known; else None.

    * the bundled corpus name ``grammar`` without a ``data_dir`` (or with ``data_dir`` pointing at the bundled
      ``data/grammar``, or at the cache copy regenerated from it): :func:`default_grammar`;
    * otherwise the ``grammar.json`` of the corpus directory (``data_dir`` for a named corpus, the path itself
      for a corpus given as a directory), read with :meth:`PCFG.load_json` (a malformed file is a ValueError
      naming it);
    * None when there is no such file (e.g. a benchmark, a corpus given as a single text file).
    """
    import os

    from ..data.corpus import repo_data_dir
    from ..data.registry import CORPORA

    if name_or_path in CORPORA:
        if name_or_path == "grammar":
            bundled = [repo_data_dir() / "grammar",
                       Path(os.environ.get("TEXTEBM_CACHE", Path.home() / ".cache" / "textebm")) / "grammar"]
            if not data_dir or any(_same_dir(Path(data_dir), b) for b in bundled):
                return default_grammar()
        directory = Path(data_dir).expanduser() if data_dir else None
    else:
        directory = Path(name_or_path).expanduser()
    if directory is not None and (directory / GRAMMAR_FILE).is_file():
        return PCFG.load_json(directory / GRAMMAR_FILE)
    return None


def check_derives(pcfg: PCFG, sentences: Sequence[str], what: str) -> None:
    """A ValueError unless the grammar derives every sentence (p_true > 0): a grammar that did not generate the
    corpus, found before any metric is computed (:func:`exact_kl` would find it only at the end)."""
    toks = [_tokens(s) for s in sentences]
    bad = [i for i, lp in enumerate(pcfg.log_probs(toks)) if lp == -math.inf]
    if bad:
        raise ValueError(f"the grammar does not derive {len(bad)} of the {len(toks)} sentences of {what} (first: "
                         f"line {bad[0] + 1}: {' '.join(toks[bad[0]])[:80]!r}); it is not the grammar that "
                         f"generated this corpus: fix or remove its {GRAMMAR_FILE}")


def _tokens(s: Union[str, Sequence[str]]):
    return s.split() if isinstance(s, str) else list(s)


def _mean(values) -> Optional[float]:
    values = list(values)
    return math.fsum(values) / len(values) if values else None


def sample_truth(pcfg: PCFG, samples: Sequence[str], train_sentences: Sequence[str]) -> dict:
    """How generated samples look to the true grammar.

    Samples and training sentences are split on whitespace and compared as given (no lowercasing).

    * ``frac_derivable`` = #{x : p_true(x) > 0} / n (log-probability > -inf; an empty sample is not derivable);
    * ``mean_log_prob_derivable`` = mean of log p_true(x) (nats) over the derivable samples (None if none);
    * ``mean_log_prob_all`` = mean over all samples: None when some sample is not derivable (the mean is then
      -inf, which JSON cannot hold) or there are no samples;
    * ``frac_in_train`` = fraction of samples that occur verbatim in the training split (memorisation);
      ``frac_novel_derivable`` = derivable and not in the training split;
    * the counts ``n_samples``, ``n_derivable``, ``n_in_train``, ``n_novel_derivable``, ``n_empty``.
    """
    toks = [_tokens(s) for s in samples]
    lps = pcfg.log_probs(toks)
    n = len(toks)
    train = {" ".join(_tokens(s)) for s in train_sentences}
    derivable = [lp for lp in lps if lp > -math.inf]
    in_train = [" ".join(t) in train for t in toks]
    novel = sum(1 for lp, c in zip(lps, in_train) if lp > -math.inf and not c)
    frac = (lambda k: k / n) if n else (lambda k: None)
    return {
        "n_samples": n,
        "n_derivable": len(derivable),
        "n_in_train": sum(in_train),
        "n_novel_derivable": novel,
        "n_empty": sum(1 for t in toks if not t),
        "frac_derivable": frac(len(derivable)),
        "frac_in_train": frac(sum(in_train)),
        "frac_novel_derivable": frac(novel),
        "mean_log_prob_derivable": _mean(derivable),
        "mean_log_prob_all": _mean(lps) if n and len(derivable) == n else None,
    }


def exact_kl(pcfg: PCFG, sentences: Sequence[str], model_nll_per_sentence: float,
             model_nll_se: Optional[float] = None) -> dict:
    """KL(p_data || p_model) per sentence and per token from a model's NLL and the exact entropy of a split.

    * ``entropy_per_sentence`` = -(1/N) sum_n log p_true(x_n): the exact mean NLL of the split under the true
      grammar, an unbiased estimate of H(p_data) with no model error (it matches ``mean_nll_nats`` of
      ``data/grammar/stats.json`` for the bundled splits);
    * ``kl_per_sentence`` = ``model_nll_per_sentence`` - ``entropy_per_sentence`` (nats), the same split's
      estimate of E_data[log p_data(x) - log p_model(x)] = KL(p_data || p_model) >= 0;
    * per token: the totals divided by ``n_tokens`` = words + one end-of-sentence per sentence
      (``entropy_per_token``, ``model_nll_per_token``, ``kl_per_token``; ``ppl_true`` = exp(entropy per token)
      is ``ppl_with_eos`` of stats.json);
    * ``kl_se`` (and ``kl_per_token_se``): ``model_nll_se``, the Monte Carlo standard error of the model's mean
      NLL per sentence (e.g. ``nll_total_se_is / n_sentences`` of :func:`~textebm.eval.likelihood.evaluate_nll`),
      carried over unchanged: the entropy term is exact given the split. It does not include the error of
      log Z(alpha), which shifts the model NLL (see ``nll_total_se_log_z``), nor the split's sampling error.

    ``model_nll_per_sentence`` must be the model's NLL of the same sentences, counted as whole sentences
    (a model that maps words to <unk> scores different strings). A negative KL is impossible for the true
    quantity: it means the model's NLL estimate is biased low (an under-estimated log Z(alpha), an IS estimate
    that is not an upper bound, a mismatched tokenization); ``message`` says so. A sentence the grammar cannot
    derive (p_true = 0) is a ValueError: the split was not sampled from this grammar.
    """
    toks = [_tokens(s) for s in sentences]
    if not toks:
        raise ValueError("exact_kl needs at least one sentence")
    if model_nll_per_sentence is None or not math.isfinite(float(model_nll_per_sentence)):
        raise ValueError(f"model_nll_per_sentence must be a finite number, got {model_nll_per_sentence!r}")
    lps = pcfg.log_probs(toks)
    bad = [i for i, lp in enumerate(lps) if lp == -math.inf]
    if bad:
        raise ValueError(f"{len(bad)} of {len(toks)} sentences cannot be derived by the grammar (first: line "
                         f"{bad[0] + 1}: {' '.join(toks[bad[0]])!r}); they were not sampled from it")
    N = len(toks)
    n_tok = sum(len(t) for t in toks) + N
    entropy = -math.fsum(lps) / N
    model = float(model_nll_per_sentence)
    kl = model - entropy
    se = None if model_nll_se is None else float(model_nll_se)
    out = {
        "n_sentences": N,
        "n_tokens": n_tok,
        "entropy_per_sentence": entropy,
        "entropy_per_token": entropy * N / n_tok,
        "ppl_true": math.exp(entropy * N / n_tok),
        "model_nll_per_sentence": model,
        "model_nll_per_token": model * N / n_tok,
        "kl_per_sentence": kl,
        "kl_per_token": kl * N / n_tok,
        "kl_se": se,
        "kl_per_token_se": None if se is None else se * N / n_tok,
        "message": None,
    }
    if kl < 0:
        sig = f" ({-kl / se:.1f} standard errors)" if se else ""
        out["message"] = (f"KL is negative{sig}: the true KL is >= 0, so the model's NLL estimate is biased low "
                          f"(log Z(alpha) under-estimated, too few importance samples, or a tokenization that "
                          f"does not score the sentences as given)")
    return out
