"""Time the built-in modified Kneser-Ney estimator against KenLM's lmplz.

Usage: python bench/ngram_bench.py [--sentences 30000] [--order 5] [--repeats 3]

Trains both estimators on the same synthetic corpus (Zipfian phrases over a
Zipfian vocabulary), scores a held-out text with each model through kenlm,
and prints JSON: wall seconds per run and their median, the ratio
builtin / lmplz, the perplexities, and whether both ARPA files hold the same
lines.  Wall time includes reading the text and writing the ARPA file for
both (lmplz also pays process start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textebm.eval.ngram import find_lmplz, perplexity, train_builtin, train_lmplz  # noqa: E402


def synthetic_corpus(n_sent: int, seed: int, vocab: int = 5000, n_phrases: int = 20000) -> list[str]:
    """Sentences of 1-8 Zipf-drawn phrases (fixed 1-4 word sequences) with
    15% random single words; the phrase inventory is fixed, the sample
    depends on ``seed``."""
    rng = np.random.default_rng(1234)
    zipf_w = 1.0 / np.arange(1, vocab + 1) ** 1.05
    zipf_w /= zipf_w.sum()
    lens = rng.integers(1, 5, size=n_phrases)
    words = rng.choice(vocab, size=int(lens.sum()), p=zipf_w)
    phrases = [" ".join(f"w{w}" for w in p) for p in np.split(words, np.cumsum(lens)[:-1])]
    zipf_p = 1.0 / np.arange(1, n_phrases + 1) ** 0.9
    zipf_p /= zipf_p.sum()
    rng = np.random.default_rng(seed)
    n_parts = rng.integers(1, 9, size=n_sent)
    picks = rng.choice(n_phrases, size=int(n_parts.sum()), p=zipf_p)
    noise = rng.random(len(picks)) < 0.15
    noise_words = rng.choice(vocab, size=len(picks), p=zipf_w)
    parts = [f"w{noise_words[i]}" if noise[i] else phrases[p] for i, p in enumerate(picks.tolist())]
    ends = np.cumsum(n_parts)
    return [" ".join(parts[s:e]) for s, e in zip((ends - n_parts).tolist(), ends.tolist())]


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=30000)
    ap.add_argument("--heldout", type=int, default=2000)
    ap.add_argument("--order", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lmplz", default=None, help="lmplz binary (default: find_lmplz())")
    ap.add_argument("--memory", default=None, help="lmplz -S (default: sized from the corpus)")
    args = ap.parse_args(argv)

    exe = find_lmplz(args.lmplz)
    with tempfile.TemporaryDirectory(prefix="ngram-bench-") as tmp:
        tmp = Path(tmp)
        train_txt = tmp / "train.txt"
        test_txt = tmp / "heldout.txt"
        train_txt.write_text("\n".join(synthetic_corpus(args.sentences, seed=1)) + "\n")
        test_txt.write_text("\n".join(synthetic_corpus(args.heldout, seed=2)) + "\n")
        tokens = sum(len(line.split()) for line in train_txt.read_text().splitlines())

        result = {
            "sentences": args.sentences,
            "tokens": tokens,
            "order": args.order,
            "cpus": os.cpu_count(),
            "load_avg_1min": os.getloadavg()[0],
        }
        b_arpa, l_arpa = tmp / "builtin.arpa", tmp / "lmplz.arpa"
        b_times, l_times = [], []
        # Interleave the runs so that both see the same machine load.
        for _ in range(args.repeats):
            b_times.append(_timed(lambda: train_builtin(args.order, train_txt, b_arpa)))
            if exe is not None:
                l_times.append(_timed(lambda: train_lmplz(args.order, train_txt, l_arpa,
                                                          lmplz=exe, memory=args.memory)))
        with open(b_arpa, "rb") as fh:
            head = [fh.readline() for _ in range(args.order + 2)]
        result["ngrams_per_order"] = [int(h.split(b"=")[1]) for h in head if h.startswith(b"ngram ")]
        result["builtin_seconds"] = [round(t, 3) for t in b_times]
        result["builtin_median_s"] = round(statistics.median(b_times), 3)
        pb = perplexity(b_arpa, test_txt)
        result["builtin_ppl"] = pb["ppl"]
        result["builtin_ppl_no_eos"] = pb["ppl_no_eos"]
        result["heldout_oov"] = pb["oov"]
        if exe is None:
            result["lmplz"] = None
            result["note"] = "lmplz not found; only the built-in estimator was timed"
        else:
            result["lmplz"] = str(exe)
            result["lmplz_seconds"] = [round(t, 3) for t in l_times]
            result["lmplz_median_s"] = round(statistics.median(l_times), 3)
            result["ratio_builtin_over_lmplz"] = round(
                statistics.median(b_times) / statistics.median(l_times), 3)
            pl = perplexity(l_arpa, test_txt)
            result["lmplz_ppl"] = pl["ppl"]
            result["lmplz_ppl_no_eos"] = pl["ppl_no_eos"]
            result["ppl_rel_diff"] = abs(pb["ppl"] - pl["ppl"]) / pl["ppl"]
            result["arpa_same_lines"] = (sorted(b_arpa.read_bytes().splitlines())
                                         == sorted(l_arpa.read_bytes().splitlines()))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
