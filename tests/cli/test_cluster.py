"""``textebm cluster``: the most probable symbol of each sentence of a symbol-vector run; other runs are refused
with one line."""
import json

import pytest

from conftest import one_line_error, run_main

SENTS = ["the dog sees a fish .", "a cat eats the car .", "my friend likes the house .", "the man finds a tree ."]


def test_each_sentence_gets_its_most_probable_symbol(symbol_run, capsys):
    code, out, err = run_main(capsys, "cluster", symbol_run, *SENTS, "--chains", "2")
    assert code == 0, err
    labels = [int(v) for v in out.split()]
    assert len(labels) == 4 and all(0 <= k < 3 for k in labels)
    code, out, err = run_main(capsys, "cluster", symbol_run, *SENTS, "--chains", "2", "--jsonl")
    recs = [json.loads(line) for line in out.splitlines()]
    assert [r["symbol"] for r in recs] == labels
    for r in recs:
        assert sum(r["probs"]) == pytest.approx(1.0, abs=1e-4) and r["probs"].index(max(r["probs"])) == r["symbol"]


def test_runs_without_symbols_and_corpora_without_a_grammar_are_refused(tiny_run, symbol_run, capsys):
    code, _, err = run_main(capsys, "cluster", tiny_run, *SENTS)
    one_line_error(code, err, "symbol_vector")
    code, _, err = run_main(capsys, "cluster", symbol_run, *SENTS, "--scores")
    one_line_error(code, err, "grammar")
