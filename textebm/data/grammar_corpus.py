"""Writing the bundled grammar corpus and its README: ``data/grammar/`` is sampled from the shipped grammar
(:func:`textebm.data.grammar.default_grammar`) and carries each split's exact likelihood statistics.

Regenerate the bundled files (byte for byte) with::

    python -m textebm.data.grammar_corpus --out data/grammar --seed 0

This module depends on the Python standard library, :mod:`textebm.data.grammar` and :mod:`textebm.files`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

from .grammar import (DEFAULT_COUNTS, OPEN_CLASSES, PCFG, SPLITS, default_grammar, sample_splits,
                      split_stats)

__all__ = ["generate_corpus", "main"]


def _round_stats(st: Mapping[str, float]) -> Dict[str, Union[int, float]]:
    return {
        "n_sentences": int(st["n_sentences"]),
        "n_tokens": int(st["n_tokens"]),
        "total_nll_nats": round(float(st["total_nll_nats"]), 6),
        "mean_nll_nats": round(float(st["mean_nll_nats"]), 6),
        "ppl_with_eos": round(float(st["ppl_with_eos"]), 6),
    }


def _readme(grammar: PCFG, seed: int, splits: Mapping[str, List[List[str]]],
            stats: Mapping[str, Mapping[str, float]]) -> str:
    vocab = grammar.vocabulary()
    lex_cats = [
        a
        for a in grammar.nonterminals
        if all(len(rhs) == 1 and rhs[0] not in grammar.rules for _, rhs in grammar.rules[a])
    ]
    struct = [a for a in grammar.nonterminals if a not in lex_cats]
    lengths = [len(s) for name in SPLITS for s in splits[name]]
    n_deriv = grammar.count_derivations()
    train_set = {" ".join(s) for s in splits["train"]}
    overlap = {
        name: sum(" ".join(s) in train_set for s in splits[name]) for name in SPLITS if name != "train"
    }
    out = []
    w = out.append
    w("# Grammar corpus")
    w("")
    w("Sentences sampled from the probabilistic context-free grammar in")
    w("`textebm/data/grammar_default.json`: an English-like toy language with subject-verb agreement,")
    w("present and past tense, adjectives, adverbs, prepositional phrases, relative clauses")
    w("(one level of embedding), negation, questions, imperatives and compound sentences.")
    w("Because the generating distribution is known, the exact probability of every sentence")
    w("can be computed (`PCFG.log_prob`, the inside algorithm summed over all derivations), so")
    w("the numbers below are the true entropy that models trained on this corpus are compared")
    w("against.")
    w("")
    w("Regenerate (byte-identical) with:")
    w("")
    w("```")
    extra = "".join(
        f" --n-{name} {len(splits[name])}"
        for name in SPLITS
        if len(splits[name]) != DEFAULT_COUNTS[name]
    )
    w(f"python -m textebm.data.grammar_corpus --out data/grammar --seed {seed}{extra}")
    w("```")
    w("")
    w("## Files")
    w("")
    w("- `train.txt`, `valid.txt`, `test.txt`: one sentence per line, lowercase tokens joined by")
    w("  single spaces, UTF-8, no begin/end markers.")
    w("- `stats.json`: the per-split numbers of the table below.")
    w("")
    w(f"Seed: {seed} (numpy `Generator(PCG64({seed}))`; the splits are drawn from this one stream")
    w("in the order train, valid, test).  Sentences are i.i.d. samples, so frequent short")
    w("sentences occur several times and also across splits (sentences also found in train:")
    w(f"{overlap['valid']} of valid, {overlap['test']} of test).")
    w("")
    w("## Grammar")
    w("")
    w(f"- vocabulary: {len(vocab)} terminals (words and the punctuation `.` `?` `,`)")
    w(f"- nonterminals: {len(grammar.nonterminals)} ({len(struct)} structural, "
      f"{len(lex_cats)} word classes)")
    w(f"- sentence length: {grammar.min_length()} to {grammar.max_length()} tokens, "
      f"expected {grammar.expected_length():.4f}")
    w(f"- distinct derivations: {float(n_deriv):.3e} (the grammar has no recursion; embedding")
    w("  depth is bounded by the depth-1 copies `CL1`, `VP1_*`, `SUBJ1_*`, `OBJ1`)")
    w("- ambiguity: some sentences have several derivations, e.g. a prepositional phrase or")
    w("  adverb after an object can attach to the object's noun phrase or relative clause, or")
    w("  to the main verb phrase; `log_prob` sums over all derivations.")
    w(f"- observed lengths in the corpus: mean {sum(lengths) / len(lengths):.3f}, "
      f"min {min(lengths)}, max {max(lengths)}")
    w("")
    w("## Exact negative log-likelihood (nats)")
    w("")
    w("`p(x)` is the probability that the grammar derives exactly `x`; a sentence ends when its")
    w("derivation ends, so there is no separate end-of-sentence probability.  `n_tokens` counts")
    w("words and punctuation, without end-of-sentence.  The perplexity counts one")
    w("end-of-sentence event per sentence: `ppl_with_eos = exp(total_nll / (n_tokens + n_sentences))`.")
    w("")
    w("| split | n_sentences | n_tokens | total_nll_nats | mean_nll_nats | ppl_with_eos |")
    w("|---|---:|---:|---:|---:|---:|")
    for name in SPLITS:
        st = stats[name]
        w(f"| {name} | {st['n_sentences']} | {st['n_tokens']} | {st['total_nll_nats']:.6f} | "
          f"{st['mean_nll_nats']:.6f} | {st['ppl_with_eos']:.6f} |")
    w("")
    w("## Structural rules")
    w("")
    w("```")
    w(grammar.format_rules(struct))
    w("```")
    w("")
    w("## Word classes")
    w("")
    w("Open classes (`N_*`, `ADJ`, `VI_*`, `VT_*`, `ADV`, `P`, `NAME`, `SUB`) have Zipf-like")
    w("probabilities proportional to 1/(rank + 2), in the order listed.")
    w("")
    for a in lex_cats:
        alts = grammar.rules[a]
        if a not in OPEN_CLASSES:
            words = ", ".join(f"{rhs[0]} ({p:.2f})" for p, rhs in alts)
        else:
            words = ", ".join(rhs[0] for _, rhs in alts)
        w(f"- `{a}` ({len(alts)}): {words}")
    w("")
    return "\n".join(out)


def _write_lines(path: str, sentences: Iterable[Sequence[str]]) -> None:
    from ..files import write_file

    write_file(path, "".join(" ".join(s).lower() + "\n" for s in sentences))


def generate_corpus(
    out_dir: Union[str, os.PathLike],
    seed: int = 0,
    n_train: int = DEFAULT_COUNTS["train"],
    n_valid: int = DEFAULT_COUNTS["valid"],
    n_test: int = DEFAULT_COUNTS["test"],
    grammar: Optional[PCFG] = None,
) -> Dict[str, Dict[str, Union[int, float]]]:
    """Sample the corpus and write ``train/valid/test.txt``, ``README.md`` and ``stats.json``.

    Returns the statistics written to ``stats.json``.
    """
    grammar = default_grammar() if grammar is None else grammar
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    splits = sample_splits(grammar, seed, {"train": n_train, "valid": n_valid, "test": n_test})
    stats = {name: _round_stats(split_stats(grammar, splits[name])) for name in SPLITS}
    for name in SPLITS:
        _write_lines(os.path.join(out_dir, f"{name}.txt"), splits[name])
    from ..files import write_file

    write_file(os.path.join(out_dir, "stats.json"), json.dumps(stats, indent=2) + "\n")
    write_file(os.path.join(out_dir, "README.md"), _readme(grammar, seed, splits, stats))
    return stats


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m textebm.data.grammar_corpus",
        description="Sample the grammar corpus and write its exact likelihood statistics.",
    )
    ap.add_argument("--out", default=os.path.join("data", "grammar"), help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=DEFAULT_COUNTS["train"])
    ap.add_argument("--n-valid", type=int, default=DEFAULT_COUNTS["valid"])
    ap.add_argument("--n-test", type=int, default=DEFAULT_COUNTS["test"])
    args = ap.parse_args(argv)
    stats = generate_corpus(args.out, args.seed, args.n_train, args.n_valid, args.n_test)
    for name in SPLITS:
        st = stats[name]
        print(
            f"{name}: {st['n_sentences']} sentences, {st['n_tokens']} tokens, "
            f"nll {st['total_nll_nats']:.3f} nats ({st['mean_nll_nats']:.4f}/sentence), "
            f"ppl(with eos) {st['ppl_with_eos']:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
