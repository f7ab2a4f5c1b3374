"""Text metrics of generated samples: forward / reverse perplexity, distinct-n and self-BLEU.

* FPPL (forward perplexity): an n-gram model (modified Kneser-Ney, default order 5) trained on the training
  split scores the generated samples: are the samples fluent by the data's statistics?
* RPPL (reverse perplexity; Zhao et al. 2018, Cifka et al. 2018): an n-gram model trained on the generated
  samples scores the real test split: do the samples cover the data?
* distinct-n (Li et al. 2016): unique n-grams / total n-grams over all samples, n = 1, 2, 3.
* self-BLEU (Zhu et al. 2018, Texygen): mean sentence BLEU-4 of each sample against the other samples as
  references; 1 = every sample repeats the others, near 0 = no shared n-grams.

N-gram models come from :func:`textebm.eval.ngram.train` (lmplz when it is installed, else the built-in
estimator that writes the same ARPA model; the one used and the reason for a fallback go into the result) and
are scored with :func:`textebm.eval.ngram.perplexity` (KenLM). Degenerate sample sets (none, empty, a tiny
vocabulary, no word in common with the scoring model) never raise: the result carries ``value = None`` or a
finite value together with a ``message`` saying what is wrong.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .bleu import self_bleu

PPL_PROTOCOL = (
    "Perplexity counts one </s> per sentence (kenlm's 'perplexity including OOVs': "
    "10^(-sum log10 p / (words + sentences)), <s> is context only and is not predicted); words unknown to "
    "the n-gram model get its <unk> probability and are counted (their number is reported as oov). "
    "Text is split on whitespace; the literal tokens <s>, </s>, <unk> are dropped from n-gram training text "
    "(lmplz --skip_symbols), and a literal <unk> in scored text counts as an OOV word. Models are "
    "interpolated modified Kneser-Ney without pruning (lmplz -o ORDER --discount_fallback --skip_symbols, or "
    "the built-in estimator that writes the same ARPA)."
)
FPPL_PROTOCOL = ("FPPL: a {order}-gram model trained on the {train_n} sentences of the training split scores "
                 "the {n} generated samples (empty samples count as sentences with only </s>). " + PPL_PROTOCOL)
RPPL_PROTOCOL = ("RPPL: a {order}-gram model trained on the {n} generated samples (empty samples are "
                 "sentences without words) scores the {test_n} sentences of the {split} split. RPPL depends "
                 "on the number of samples; compare runs only at equal numbers. A {split} word the samples "
                 "lack gets the whole <unk> probability, which flatters samples with a small vocabulary: "
                 "ppl_oov_spread divides that probability evenly among the U training+{split} words the "
                 "samples lack, and an OOV rate over 5% is flagged. " + PPL_PROTOCOL)
DISTINCT_PROTOCOL = ("distinct-n: number of unique n-grams / total number of n-grams over all samples "
                     "(whitespace tokens, n-grams do not cross sentence boundaries, no <s>/</s>); "
                     "empty samples contribute no n-grams.")
#: Fewer samples than this give an RPPL dominated by smoothing; the result says so.
FEW_SAMPLES = 100
#: An RPPL whose test text has more OOV words (for the samples' n-gram model) than this rate is flagged.
OOV_WARN = 0.05


def tokens(sentence: str) -> List[str]:
    return sentence.split()


# ---- generation ------------------------------------------------------------------------------------------
def generate_samples(model, n: int, seed: int = 0, chain=None, batch_size: int = 500, **decoding) -> tuple:
    """n sentences from the model: z by the prior chain ``chain`` (default: the model's,
    :attr:`~textebm.model.LatentEBMModel.prior_chain`), then decoding with the recipe's ``generate`` rule
    overridden by ``decoding`` (:func:`~textebm.model.recipe_decoding`). Returns (samples, settings): the chain
    (``prior_chain``), the decoding rule, its description (``decoding``) and the seed."""
    import torch

    from ..model import describe_decoding, recipe_decoding

    if n < 1:
        raise ValueError(f"number of samples must be >= 1, got {n}")
    chain = chain or model.prior_chain
    rule = recipe_decoding(model.recipe, **decoding)
    was = model.training
    model.eval()
    gen = torch.Generator(device=model.device)
    gen.manual_seed(seed)
    out: List[str] = []
    try:
        left = n
        while left > 0:
            m = min(left, batch_size)
            out += model.generate(m, chain=chain, generator=gen, **rule)
            left -= m
    finally:
        model.train(was)
    settings = dict(prior_chain=chain.replace(start="reference").describe(), **rule, decoding=describe_decoding(rule), seed=seed)
    return [" ".join(tokens(x)) for x in out], settings


# ---- perplexities ----------------------------------------------------------------------------------------
class _quiet_stderr:
    """Silence file descriptor 2 (kenlm prints its loading progress there) for the duration of a block."""

    def __enter__(self):
        import os
        import sys

        try:
            sys.stderr.flush()
            self.saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:
            self.saved = None
        return self

    def __exit__(self, *exc):
        import os

        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)
        return False


def _ngram_ppl(order: int, train_text: Sequence[str], score_text: Sequence[str], estimator: str,
               workdir: Optional[Path]) -> dict:
    """Train on ``train_text`` and score ``score_text``; ``error`` instead of raising for unusable text."""
    from . import ngram

    with tempfile.TemporaryDirectory(prefix="textebm-eval-", dir=workdir) as tmp:
        arpa = Path(tmp) / "model.arpa"
        try:
            res = ngram.train(order, list(train_text), arpa, estimator=estimator)
        except (ValueError, ngram.LmplzError) as e:
            return {"error": f"could not train the {order}-gram model: {str(e).splitlines()[0]}"}
        with _quiet_stderr():
            scores = ngram.perplexity(res.path, list(score_text))
    scores.update(estimator=res.estimator_used, fallback_reason=res.fallback_reason)
    return scores


def _vocab(sentences: Sequence[str]) -> set:
    return {w for s in sentences for w in tokens(s)} - {"<s>", "</s>", "<unk>"}


def _finish(out: dict, scores: dict, problems: List[str]) -> dict:
    if "error" in scores:
        problems.append(scores["error"])
        out["value"] = None
    else:
        out.update({k: scores[k] for k in ("ppl", "ppl_no_eos", "ppl_excluding_oov", "words", "sentences", "oov",
                                           "total_log10prob", "estimator", "fallback_reason")})
        out["oov_rate"] = scores["oov"] / scores["words"] if scores["words"] else None
        v = scores["ppl"]
        if not math.isfinite(v):
            problems.append("the perplexity overflowed (not finite)")
            out["value"] = None
        else:
            out["value"] = v
    out["message"] = "; ".join(problems) if problems else None
    for k in ("ppl_no_eos", "ppl_excluding_oov"):  # JSON has no NaN
        if isinstance(out.get(k), float) and not math.isfinite(out[k]):
            out[k] = None
    return out


def forward_perplexity(train_sentences: Sequence[str], samples: Sequence[str], order: int = 5,
                       estimator: str = "auto", workdir: Optional[Path] = None) -> dict:
    """FPPL: perplexity of ``samples`` under an ``order``-gram model of ``train_sentences``.

    ``value`` is kenlm's perplexity including </s> and OOV words (see :data:`PPL_PROTOCOL`); ``message`` names
    anything that makes the number meaningless (no samples, only empty samples, no shared words).
    """
    out = {"metric": "fppl", "order": order, "n_samples": len(samples), "train_sentences": len(train_sentences),
           "protocol": FPPL_PROTOCOL.format(order=order, train_n=len(train_sentences), n=len(samples))}
    problems: List[str] = []
    if not samples:
        out.update(value=None, message="no samples to score")
        return out
    sample_vocab = _vocab(samples)
    if not sample_vocab:
        problems.append("every sample is empty: FPPL scores only </s>")
    elif not sample_vocab & _vocab(train_sentences):
        problems.append("no sample word occurs in the training text: every word is OOV and FPPL reflects "
                        "only the n-gram model's <unk> probability")
    scores = _ngram_ppl(order, train_sentences, samples, estimator, workdir)
    return _finish(out, scores, problems)


def reverse_perplexity(samples: Sequence[str], test_sentences: Sequence[str], order: int = 5,
                       estimator: str = "auto", workdir: Optional[Path] = None, split: str = "test",
                       reference_vocab: Optional[set] = None) -> dict:
    """RPPL: perplexity of the real ``test_sentences`` under an ``order``-gram model trained on ``samples``.

    ``value`` follows kenlm: every test word the samples lack gets the whole <unk> probability, which
    flatters sample sets with a small vocabulary. ``ppl_oov_spread`` also reports the perplexity with that
    probability divided evenly among the U words of ``reference_vocab`` (default: the test vocabulary; pass
    training + test) that the samples lack: log10 p(w) = log10 p(<unk>) - log10 U for each OOV word.
    """
    out = {"metric": "rppl", "order": order, "n_samples": len(samples), "test_sentences": len(test_sentences),
           "protocol": RPPL_PROTOCOL.format(order=order, n=len(samples), test_n=len(test_sentences), split=split)}
    problems: List[str] = []
    sample_vocab = _vocab(samples)
    if not samples or not sample_vocab:
        out.update(value=None, message="cannot train an n-gram model on the samples: "
                                       + ("there are none" if not samples else "they contain no words"))
        return out
    if not test_sentences:
        out.update(value=None, message=f"the {split} split is empty")
        return out
    out["sample_vocab_size"] = len(sample_vocab)
    if len(samples) < FEW_SAMPLES:
        problems.append(f"only {len(samples)} samples: the n-gram model is mostly smoothing, RPPL is not "
                        f"comparable to runs with more samples")
    if not sample_vocab & _vocab(test_sentences):
        problems.append(f"the samples share no word with the {split} split: every {split} word is OOV and RPPL "
                        f"reflects only the <unk> probability")
    scores = _ngram_ppl(order, samples, test_sentences, estimator, workdir)
    out = _finish(out, scores, problems)
    if "error" not in scores:
        ref = set(reference_vocab) if reference_vocab is not None else set()
        ref = (ref | _vocab(test_sentences)) - {"<s>", "</s>", "<unk>"}
        unseen = len(ref - sample_vocab)
        n = scores["words"] + scores["sentences"]
        spread = scores["total_log10prob"] - scores["oov"] * math.log10(max(1, unseen))
        out["ppl_oov_spread"] = 10.0 ** (-spread / n) if -spread / n < 300 else None
        out["unseen_vocab"] = unseen
        rate = out.get("oov_rate")
        if rate is not None and rate > OOV_WARN:
            extra = (f"{100 * rate:.1f}% of the {split} words are not in the samples' vocabulary; kenlm gives each "
                     f"the whole <unk> probability, which flatters RPPL (see ppl_oov_spread)")
            out["message"] = f"{out['message']}; {extra}" if out["message"] else extra
    return out


# ---- diversity -------------------------------------------------------------------------------------------
def distinct_n(samples: Sequence[str], ns: Sequence[int] = (1, 2, 3)) -> Dict[str, Optional[float]]:
    """distinct-n = |unique n-grams| / |n-grams| over all samples (Li et al. 2016); None when there are none."""
    toks = [tokens(s) for s in samples]
    out: Dict[str, Optional[float]] = {}
    for n in ns:
        seen, total = set(), 0
        for t in toks:
            for i in range(len(t) - n + 1):
                seen.add(tuple(t[i:i + n]))
                total += 1
        out[f"distinct_{n}"] = len(seen) / total if total else None
    return out


def diversity(samples: Sequence[str], self_bleu_max: int = 1000, seed: int = 0) -> dict:
    """distinct-1/2/3 and self-BLEU-4 of the samples, with their protocol and a message for degenerate sets."""
    out: dict = {"n_samples": len(samples), "n_empty": sum(1 for s in samples if not tokens(s))}
    out.update(distinct_n(samples))
    sb = self_bleu(samples, max_samples=self_bleu_max, seed=seed)
    out["self_bleu"] = sb["value"]
    out["self_bleu_n_used"] = sb["n_used"]
    msgs = []
    if not samples:
        msgs.append("no samples")
    elif out["distinct_1"] is None:
        msgs.append("every sample is empty: distinct-n is undefined")
    if sb["message"]:
        msgs.append(sb["message"])
    out["message"] = "; ".join(msgs) if msgs else None
    out["protocol"] = DISTINCT_PROTOCOL + " " + sb["protocol"]
    return out


# ---- long-run prior chain (Pang et al. 2020, Table 3) ------------------------------------------------------
CHAIN_PROTOCOL = ("One long prior chain: {chain}, from z_0 ~ N(0, sigma0^2 I), seed {seed}; every {every} steps z_k "
                  "is decoded greedily (max_len {max_len}) and log p_alpha(z_k) is reported unnormalized "
                  "(f_alpha(z) - |z|^2 / (2 sigma0^2), i.e. without -log Z and the Gaussian constant).")


def long_run_chain(model, steps: int = 100, every: int = 20, step_size: Optional[float] = None, seed: int = 0,
                   max_len: Optional[int] = None) -> dict:
    """Run one long prior chain (the model's prior chain with ``steps`` steps, and ``step_size`` if given) and
    decode z along it (the paper's Table 3 shows such chains).

    Returns ``rows`` (step, log_density, sentence) at steps 0, every, 2*every, ... and the last step, and
    ``trace``: the unnormalized log-density ``prior.log_prob_unnormalized(z_k)`` at every step k = 0..steps.
    """
    import torch

    from ..model import recipe_decoding

    if steps < 0:
        raise ValueError(f"--steps must be >= 0, got {steps}")
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    if step_size is not None and not step_size > 0:
        raise ValueError(f"--step-size must be > 0, got {step_size}")
    chain = model.prior_chain.replace(n_steps=steps, step_size=step_size, start="reference",
                                      name="prior chain (long run)")
    max_len = recipe_decoding(model.recipe, max_len=max_len)["max_len"]
    was = model.training
    model.eval()
    try:
        gen = torch.Generator(device=model.device)
        gen.manual_seed(seed)
        out = model.sample_prior(1, chain, generator=gen, trace=True, snapshot_every=every, return_samples=True)
        zs = torch.cat([z for _, z in out.snapshots])
        with torch.no_grad():
            sents = model.generate(z=zs, greedy=True, max_len=max_len)
        if model.tokenizer is None:
            sents = [" ".join(map(str, s)) for s in sents]
    finally:
        model.train(was)
    rows = [{"step": k, "log_density": out.trace[k], "sentence": s, "z": z[0].tolist()}
            for (k, z), s in zip(out.snapshots, sents)]
    described = chain.describe()
    return {"rows": rows, "trace": out.trace,
            "settings": dict(steps=steps, every=every, step_size=described["step_size"], seed=seed,
                             max_len=max_len, chain=described),
            "protocol": CHAIN_PROTOCOL.format(chain=chain_words(described), every=every, seed=seed,
                                              max_len=max_len)}


def chain_words(d: dict) -> str:
    return f"{d['n_steps']} {d['sampler']} steps of size {d['step_size']} (noise scale {d['noise_scale']})"
