"""The built-in estimator: interpolated modified Kneser-Ney as lmplz computes it.

:func:`estimate_builtin` is a numpy re-implementation of the estimator
``lmplz`` runs (KenLM ``lm/builder``, no pruning, ``--discount_fallback
--skip_symbols``) in the same float32 arithmetic, including glibc's
``log10f`` (:func:`.libm.log10f`); :func:`train_builtin` writes its model
with :func:`.arpa.write_arpa`, giving the same ARPA lines as lmplz.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .arpa import write_arpa
from .corpus import (BOS, EOS, UNK, PathLike, SentencesOrPath, check_order, encode,
                     read_training_bytes)
from .libm import log10f

#: Discounts lmplz substitutes (``--discount_fallback`` default) when the
#: closed-form estimate is undefined or out of range, for counts 0, 1, 2, 3+.
FALLBACK_DISCOUNTS = (0.0, 0.5, 1.0, 1.5)


def _discounts(adjusted: np.ndarray) -> tuple[np.ndarray, bool]:
    """Modified KN discounts [0, D1, D2, D3+] (float32) as lmplz computes
    them (Chen & Goodman eq. 26), with lmplz's fallback when undefined or out
    of range.  Returns (discounts, used_fallback)."""
    n = np.bincount(np.minimum(adjusted, 5), minlength=6)[:5].astype(np.int64)
    f32 = np.float32
    if n[1] == 0 or n[2] == 0 or n[3] == 0:
        return np.array(FALLBACK_DISCOUNTS, dtype=np.float32), True
    y = f32(n[1]) / f32(float(n[1]) + 2.0 * float(n[2]))
    out = np.zeros(4, dtype=np.float32)
    for j in (1, 2, 3):
        d = f32(j) - f32(j + 1) * y * f32(n[j + 1]) / f32(n[j])
        if d < 0 or d > j:
            return np.array(FALLBACK_DISCOUNTS, dtype=np.float32), True
        out[j] = d
    return out, False


def _gamma_and_probs(ctx: np.ndarray, adjusted: np.ndarray, n_ctx: int, disc: np.ndarray):
    """Per-context gamma (float32) and uninterpolated probabilities.

    Mirrors lmplz's float32 arithmetic: denominators are integer sums cast
    to float, gamma accumulates D_k * N_k(context) for k = 1, 2, 3+.
    """
    denom = np.bincount(ctx, weights=adjusted, minlength=n_ctx).astype(np.float32)
    capped = np.minimum(adjusted, 3)
    gamma = np.zeros(n_ctx, dtype=np.float32)
    for k in (1, 2, 3):
        nk = np.bincount(ctx[capped == k], minlength=n_ctx).astype(np.float32)
        gamma = gamma + disc[k] * nk
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = gamma / denom
        uninterp = (adjusted.astype(np.float32) - disc[capped]) / denom[ctx]
    return gamma, uninterp


@dataclasses.dataclass
class _Order:
    ctx: np.ndarray        # id of the (n-1)-gram prefix (sorted, grouped)
    last: np.ndarray       # last word id
    suffix: np.ndarray     # id of the (n-1)-gram suffix
    first: np.ndarray      # first word id
    raw: np.ndarray        # raw count in the corpus


def _count_ngrams(seq: np.ndarray, sid: np.ndarray, order: int, vocab_size: int,
                  track: int = -1) -> tuple[list[_Order | None], list[int]]:
    """Unique n-grams of each order of the sentence-padded sequence.

    ``seq`` holds ``<s> w1 .. wk </s>`` for every sentence; the n-grams of
    order n are all windows of length n inside a sentence (a single ``<s>``,
    as in lmplz's output).  Entry 0 (unigrams) is ``None``: unigram ids are
    word ids.  Also returns, for each order n, the id of the n-gram ending at
    position ``track`` (-1 where that window leaves the sentence).
    """
    L = len(seq)
    levels: list[_Order | None] = [None]
    tracked = [int(seq[track]) if 0 <= track < L else -1]
    prev_ids = seq  # ids of the (n-1)-gram starting at each position
    for n in range(2, order + 1):
        m = L - n + 1
        if m <= 0:
            levels.append(_empty_order())
            tracked.append(-1)
            prev_ids = np.zeros(0, dtype=np.int64)
            continue
        starts = np.flatnonzero(sid[:m] == sid[n - 1:n - 1 + m])
        pid = prev_ids[starts]
        key = pid * vocab_size + seq[starts + n - 1]
        uniq, inv, raw = np.unique(key, return_inverse=True, return_counts=True)
        inv = inv.reshape(-1)
        rep = np.empty(len(uniq), dtype=np.int64)
        rep[inv] = starts
        ids = np.full(m, -1, dtype=np.int64)
        ids[starts] = inv
        levels.append(_Order(
            ctx=uniq // vocab_size,
            last=uniq % vocab_size,
            suffix=prev_ids[rep + 1],
            first=seq[rep],
            raw=raw.astype(np.int64),
        ))
        start = track - n + 1
        tracked.append(int(ids[start]) if 0 <= start < m else -1)
        prev_ids = ids
    return levels, tracked


def _last_suffix_position(seq: np.ndarray, sid: np.ndarray, order: int) -> tuple[int, int]:
    """End position of the highest-order n-gram that lmplz visits last, and
    how many of its suffixes are lower-order n-grams.

    lmplz's ``AdjustCounts`` walks the ``<s>``-padded order-N n-grams in
    suffix order (last word first, ids by first appearance) and, when it
    flushes the lower-order n-grams still open at the end, it adds their raw
    counts (not their adjusted counts) to the counts-of-counts used for the
    discounts.  Those n-grams are the suffixes of the last n-gram in that
    order, of lengths 1..K (K stops at a ``<s>``).  Reproducing this keeps
    the discounts identical on small corpora.
    """
    cand = np.flatnonzero(seq != BOS)
    vals = seq[cand]
    cand = cand[vals == vals.max()]
    words = [int(seq[cand[0]])]
    for k in range(1, order):
        prev = cand - k
        inside = (prev >= 0) & (sid[np.maximum(prev, 0)] == sid[cand])
        v = np.where(inside, seq[np.maximum(prev, 0)], BOS)
        best = v.max()
        cand = cand[v == best]
        words.append(int(best))
    padded = words[::-1]  # the order-N n-gram, <s>-padded on the left
    bos_at = [i for i in range(1, order) if padded[i] == BOS]
    k_open = order - max(bos_at) if bos_at else order - 1
    return int(cand[0]), k_open


def _empty_order() -> _Order:
    z = np.zeros(0, dtype=np.int64)
    return _Order(z, z, z, z, z)


def _build_sequence(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Insert ``<s>`` before every sentence; returns (seq, sentence id, #sentences)."""
    eos_pos = np.flatnonzero(ids == EOS)
    n_sent = len(eos_pos)
    sent_starts = np.concatenate(([0], eos_pos[:-1] + 1)) if n_sent else np.zeros(0, np.int64)
    L = len(ids) + n_sent
    is_bos = np.zeros(L, dtype=bool)
    is_bos[sent_starts + np.arange(n_sent)] = True
    seq = np.empty(L, dtype=np.int64)
    seq[is_bos] = BOS
    seq[~is_bos] = ids
    sid = np.cumsum(is_bos) - 1
    return seq, sid, n_sent


def estimate_builtin(order: int, sentences_or_path: SentencesOrPath):
    """Estimate the model :func:`train_builtin` describes; returns (words, levels, info).

    ``words`` are the corpus words (bytes) in order of first appearance.
    ``levels[n-1]`` describes the n-grams of order n: float32 ``logprob``,
    ``logbackoff`` (all but the highest order) and, for n > 1, ``ctx`` (index
    of the (n-1)-gram prefix in the previous level) and ``last`` (word id;
    ids 0, 1, 2 are ``<unk>``, ``<s>``, ``</s>``, then ``words``).  ``info``
    has the corpus size (``sentences``, ``tokens``, ``types``), the discounts
    D1, D2, D3+ of each order and the orders that used the fallback ones.
    """
    order = check_order(order)
    data, name = read_training_bytes(sentences_or_path)
    ids, words = encode(data)
    n_words = int(np.count_nonzero(ids != EOS))
    if n_words == 0:
        raise ValueError(f"training corpus is empty (no words): {name}")
    V = len(words) + 3
    seq, sid, n_sent = _build_sequence(ids)
    last_pos, k_open = _last_suffix_position(seq, sid, order) if order > 1 else (-1, 0)
    levels, tracked = _count_ngrams(seq, sid, order, V, track=last_pos)

    # Adjusted counts: raw counts at the highest order and for n-grams that
    # start with <s>; otherwise the number of distinct left extensions.
    raw1 = np.bincount(seq, minlength=V).astype(np.int64)
    adjusted: list[np.ndarray] = []
    for n in range(1, order + 1):
        if n == 1:
            if order == 1:
                a = raw1.copy()
            else:
                a = np.bincount(levels[1].suffix, minlength=V).astype(np.int64)
            a[UNK] = 0
            a[BOS] = 0
        else:
            lv = levels[n - 1]
            if n == order:
                a = lv.raw.copy()
            else:
                a = np.bincount(levels[n].suffix, minlength=len(lv.raw)).astype(np.int64)
                bos = lv.first == BOS
                a[bos] = lv.raw[bos]
        adjusted.append(a)

    discounts, fallback_orders = [], []
    for n, a in enumerate(adjusted, start=1):
        if n <= k_open and n < order and tracked[n - 1] >= 0:
            # lmplz's counts-of-counts see this n-gram's raw count.
            j = tracked[n - 1]
            a = a.copy()
            a[j] = raw1[j] if n == 1 else levels[n - 1].raw[j]
        d, fb = _discounts(a)
        discounts.append(d)
        if fb:
            fallback_orders.append(n)

    # Uninterpolated probabilities, gammas, then interpolation (float32).
    uniform = np.float32(1.0 / float(V - 1))  # vocabulary incl. <unk>, excl. <s>
    probs: list[np.ndarray] = []
    gammas: list[np.ndarray | None] = []
    a1 = adjusted[0]
    g1, u1 = _gamma_and_probs(np.zeros(V, dtype=np.int64), a1, 1, discounts[0])
    p1 = u1 + g1[0] * uniform
    p1[BOS] = np.float32(1.0)
    probs.append(p1.astype(np.float32))
    gammas.append(None)
    for n in range(2, order + 1):
        lv = levels[n - 1]
        n_ctx = len(probs[-1])
        g, u = _gamma_and_probs(lv.ctx, adjusted[n - 1], n_ctx, discounts[n - 1])
        p = u + g[lv.ctx] * probs[-1][lv.suffix]
        probs.append(p.astype(np.float32))
        gammas.append(g)

    out = []
    for n in range(1, order + 1):
        entry = {"logprob": np.minimum(np.float32(0.0), log10f(probs[n - 1]))}
        if n < order:
            size = len(probs[n - 1])
            bo = np.ones(size, dtype=np.float32)
            nxt = levels[n]
            is_ctx = np.bincount(nxt.ctx, minlength=size) > 0
            bo[is_ctx] = gammas[n][is_ctx]
            entry["logbackoff"] = log10f(bo)
        if n > 1:
            entry["ctx"] = levels[n - 1].ctx
            entry["last"] = levels[n - 1].last
        out.append(entry)
    info = {
        "source": name,
        "sentences": n_sent,
        "tokens": n_words,
        "types": V,
        "discounts": [d[1:].tolist() for d in discounts],
        "fallback_orders": fallback_orders,
    }
    return words, out, info


def train_builtin(order: int, sentences_or_path: SentencesOrPath, arpa_path: PathLike) -> Path:
    """Estimate an interpolated modified Kneser-Ney model like ``lmplz``.

    Reproduces lmplz (KenLM ``lm/builder``, no pruning, default options plus
    ``--discount_fallback --skip_symbols``):

    * every sentence is ``<s> w1 .. wk </s>``; ``<s>`` is only a context,
      ``</s>`` is predicted;
    * adjusted counts: raw counts for the highest order and for n-grams
      starting with ``<s>``, otherwise the number of distinct words seen to
      the left (``<s>`` included); unigrams ``<s>`` and ``<unk>`` get 0;
    * per order, counts-of-counts n1..n4 give
      ``Y = n1 / (n1 + 2 n2)`` and ``D_k = k - (k+1) Y n_{k+1} / n_k``
      (k = 1, 2, 3+); if some n_k (k <= 3) is 0 or a D_k falls outside
      [0, k] the fallback discounts 0.5, 1, 1.5 are used.  As in lmplz,
      the lower-order n-grams that are suffixes of the last n-gram in its
      suffix-sorted walk enter n1..n4 with their raw count (see
      :func:`_last_suffix_position`);
    * ``p(w|h) = (a(hw) - D(a(hw))) / sum_x a(hx) + gamma(h) p(w|h')`` with
      ``gamma(h) = (D1 N1(h) + D2 N2(h) + D3 N3+(h)) / sum_x a(hx)``;
      unigrams interpolate with the uniform distribution over the vocabulary
      including ``<unk>`` but excluding ``<s>``; ``<unk>`` gets only the
      interpolated mass, ``<s>`` gets probability 1 (log10 0);
    * the ARPA backoff of an n-gram is log10 gamma of it as a context (0 if
      it is not one); the highest order has no backoff column.

    Arithmetic is float32 in the same order as lmplz, log10 is glibc's
    ``log10f`` bit for bit (:func:`.libm.log10f`), and numbers are written
    in the shortest form that reads back as the same float32, so the ARPA
    file has the same lines as lmplz's (possibly in another order).  Orders
    1 to :data:`~.corpus.MAX_ORDER` are supported; KenLM can only load models
    of order >= 2.
    """
    words, levels, _ = estimate_builtin(order, sentences_or_path)
    arpa_path = Path(arpa_path)
    write_arpa(arpa_path, words, levels)
    return arpa_path
