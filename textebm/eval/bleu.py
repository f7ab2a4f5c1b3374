"""BLEU (Papineni, Roukos, Ward, Zhu 2002) in the two forms the evaluation uses, on one n-gram counter:

* corpus BLEU of hypotheses against one reference each (:func:`corpus_bleu`; reconstruction of sentences from their
  codes), from additive sufficient statistics (:func:`bleu_stats`, :func:`bleu_from_stats`);
* self-BLEU (Zhu et al. 2018, Texygen): each sample's sentence BLEU against all the other samples
  (:func:`self_bleu`; the diversity of generated text).
"""
from __future__ import annotations

import math
import random
from collections import Counter
from typing import List, Sequence

SELF_BLEU_PROTOCOL = ("self-BLEU: on a seeded subsample of at most {max_samples} non-empty samples, the mean "
                      "over samples of sentence BLEU-{max_order} (uniform weights, clipped n-gram counts, "
                      "brevity penalty against the closest reference length) of each sample against all "
                      "other samples of the subsample as references; a zero n-gram match count is smoothed "
                      "to {eps}/total (NLTK smoothing method1), and samples shorter than {max_order} tokens "
                      "use the orders they have (effective order, as sacreBLEU's sentence BLEU). Depends on "
                      "the subsample size.")


def ngrams(seq: Sequence, n: int) -> Counter:
    """The n-grams of a token sequence, with their counts."""
    return Counter(tuple(seq[i:i + n]) for i in range(len(seq) - n + 1))


def bleu_stats(hypotheses: Sequence[Sequence], references: Sequence[Sequence], max_order: int = 4) -> dict:
    """Sufficient statistics of corpus BLEU: clipped matches and totals per order, hypothesis and reference
    lengths (one reference per hypothesis). Add them over parts of a corpus, then :func:`bleu_from_stats`."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    match, total = [0] * max_order, [0] * max_order
    c = r = 0
    for h, ref in zip(hypotheses, references):
        h, ref = list(h), list(ref)
        c += len(h)
        r += len(ref)
        for n in range(1, max_order + 1):
            hc, rc = ngrams(h, n), ngrams(ref, n)
            match[n - 1] += sum(min(k, rc[g]) for g, k in hc.items())
            total[n - 1] += max(0, len(h) - n + 1)
    return {"match": match, "total": total, "hyp_len": c, "ref_len": r}


def bleu_from_stats(stats: dict) -> float:
    """BLEU = BP * exp(mean_n log p_n), p_n = clipped matches / n-grams, BP = min(1, exp(1 - r / c)); 0 when a
    p_n is 0 or the hypotheses are empty (no smoothing: the corpus-level definition)."""
    c, r = stats["hyp_len"], stats["ref_len"]
    if c == 0 or any(m == 0 for m in stats["match"]):
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(stats["match"], stats["total"])) / len(stats["match"])
    bp = 1.0 if c > r else math.exp(1.0 - r / c)
    return bp * math.exp(log_p)


def corpus_bleu(hypotheses: Sequence[Sequence], references: Sequence[Sequence], max_order: int = 4) -> float:
    """Corpus BLEU-``max_order`` (Papineni, Roukos, Ward, Zhu 2002), one reference per hypothesis.

    p_n = sum over sentences of clipped n-gram matches (each hypothesis n-gram counted at most as often as in
    its reference) / sum of hypothesis n-grams, for n = 1..max_order, combined as a geometric mean with
    uniform weights; brevity penalty BP = 1 if c > r else exp(1 - r / c), c and r the total hypothesis and
    reference lengths. Sequences are lists of tokens (strings or ids). No smoothing: a p_n of 0 gives 0.
    """
    return bleu_from_stats(bleu_stats(hypotheses, references, max_order))


def sentence_bleu_against_pool(counts: List[List[Counter]], lengths: List[int], i: int, top: List[dict],
                               length_count: Counter, max_order: int = 4, eps: float = 0.1) -> float:
    """BLEU of item i of a pool against every other item (helper of :func:`self_bleu`).

    ``top[n-1][g] = (best count, holder, second-best count)`` of n-gram g over the pool, so the largest count
    among the *other* items is best if i does not hold it, else second-best. Clipped precision
    p_n = sum_g min(c_i(g), max_{j != i} c_j(g)) / sum_g c_i(g).
    """
    c = lengths[i]
    if c == 0:
        return 0.0
    log_p = []
    for n in range(1, min(max_order, c) + 1):
        cnt = counts[i][n - 1]
        total = c - n + 1
        clipped = 0
        for g, k in cnt.items():
            best, holder, second = top[n - 1][g]
            ref = second if holder == i else best
            clipped += min(k, ref)
        log_p.append(math.log(clipped / total) if clipped else math.log(eps / total))
    # closest reference length among the others (ties: the shorter), as in NLTK / the original BLEU script
    r, best_diff = None, None
    for L, k in length_count.items():
        if k - (1 if L == c else 0) <= 0:
            continue
        diff = abs(L - c)
        if best_diff is None or diff < best_diff or (diff == best_diff and L < r):
            r, best_diff = L, diff
    bp = 1.0 if c > r else math.exp(1.0 - r / c)
    return bp * math.exp(sum(log_p) / len(log_p))


def self_bleu(samples: Sequence[str], max_samples: int = 1000, max_order: int = 4, seed: int = 0,
              eps: float = 0.1) -> dict:
    """Self-BLEU (Zhu et al. 2018): mean BLEU-``max_order`` of each sample against the others as references.

    Uses a seeded subsample of at most ``max_samples`` non-empty samples for hypotheses and references alike.
    Cost is linear in the subsample (each n-gram keeps its two largest counts), not quadratic.
    """
    proto = SELF_BLEU_PROTOCOL.format(max_samples=max_samples, max_order=max_order, eps=eps)
    pool = [s.split() for s in samples if s.split()]
    out = {"protocol": proto, "max_samples": max_samples, "n_nonempty": len(pool)}
    if len(pool) < 2:
        out.update(value=None, n_used=len(pool),
                   message=f"self-BLEU needs at least 2 non-empty samples, got {len(pool)}")
        return out
    if len(pool) > max_samples:
        pool = random.Random(seed).sample(pool, max_samples)
    counts = [[ngrams(t, n) for n in range(1, max_order + 1)] for t in pool]
    top: List[dict] = []
    for n in range(max_order):
        table: dict = {}
        for j, cs in enumerate(counts):
            for g, k in cs[n].items():
                cur = table.get(g)
                if cur is None:
                    table[g] = (k, j, 0)
                elif k > cur[0]:
                    table[g] = (k, j, cur[0])
                elif k > cur[2]:
                    table[g] = (cur[0], cur[1], k)
        top.append(table)
    lengths = [len(t) for t in pool]
    length_count = Counter(lengths)
    scores = [sentence_bleu_against_pool(counts, lengths, i, top, length_count, max_order, eps)
              for i in range(len(pool))]
    out.update(value=sum(scores) / len(scores), n_used=len(pool), message=None)
    return out
