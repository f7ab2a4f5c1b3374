"""Known-truth checks on a grammar: sentence types (the first rule of the derivation), clusters scored against
them, conditional purity, and the grammaticality of interpolations on a model whose paths are known."""
import math

import numpy as np
import pytest
import torch

from textebm.data.grammar import PCFG, default_grammar
from textebm.eval.clusters import (SentenceTyper, cluster_scores, conditional_purity, interpolation_report,
                                   sentence_types)

EXAMPLES = {"the cats often push bob .": "statement", "did the house run ?": "question",
            "what does alice see ?": "question", "see a dog .": "imperative", "please run .": "imperative",
            "bob runs , but alice sleeps .": "compound", "when bob runs , alice sleeps .": "subordinate",
            "the dog that the cats chase sleeps .": "statement"}


def test_types_of_sentences_by_hand():
    got = sentence_types(list(EXAMPLES) + ["dog the sleeps", "sleeps ."])
    assert got == list(EXAMPLES.values()) + [None, None]


def test_sentences_sampled_from_one_start_rule_get_that_rule_as_their_type():
    """Sampling from a grammar whose start symbol is forced to one rule gives sentences of that type."""
    g = default_grammar()
    typer = SentenceTyper(g)
    rng = np.random.default_rng(0)
    for p, rhs in g.rules[g.start]:
        rules = dict(g.rules)
        rules["TOP"] = [(1.0, rhs)]
        forced = PCFG(rules, "TOP")
        sents = [forced.sample(rng) for _ in range(40)]
        name = typer.names[[r for _, r in g.rules[g.start]].index(rhs)]
        assert set(typer(sents)) == {name}, name


def test_the_bundled_test_split_has_the_grammar_s_type_frequencies():
    from conftest import ROOT

    lines = [l for l in (ROOT / "data" / "grammar" / "test.txt").read_text().split("\n") if l][:400]
    types = sentence_types(lines)
    assert None not in types
    probs = dict(zip(SentenceTyper(default_grammar()).names, [p for p, _ in default_grammar().rules["S"]]))
    for name, p in probs.items():   # binomial: within 4 standard deviations
        assert abs(types.count(name) / 400 - p) < 4 * math.sqrt(p * (1 - p) / 400), name


def test_cluster_scores_of_perfect_renamed_constant_and_independent_clusterings():
    types = ["q", "s", "s", "i", "q", "s", None] * 20
    perfect = [{"q": 5, "s": 2, "i": 0}.get(t, 9) for t in types]          # renamed, untyped rows ignored
    sc = cluster_scores(perfect, types)
    assert sc["nmi"] == pytest.approx(1.0) and sc["ari"] == pytest.approx(1.0)
    assert sc["n_typed"] == 120 and sc["n_clusters"] == 3 and sc["majority"]["5"]["type"] == "q"
    assert cluster_scores([0] * len(types), types)["nmi"] == pytest.approx(0.0)
    g = torch.Generator().manual_seed(0)
    rand = torch.randint(0, 3, (len(types),), generator=g).tolist()
    sc = cluster_scores(rand, types)
    assert sc["nmi"] < 0.1 and abs(sc["ari"]) < 0.1
    with pytest.raises(ValueError, match="no sentence has a type"):
        cluster_scores([0, 1], [None, None])


def test_conditional_purity_counts_the_majority_type_and_ungrammatical_samples():
    typer = SentenceTyper(default_grammar())
    samples = {0: ["did the house run ?", "what does alice see ?", "see a dog .", "dog the"],
               1: ["see a dog .", "please run ."]}
    out = conditional_purity(samples, typer, {0: "question", 1: "statement"})
    per = out["per_symbol"]
    assert per["0"]["purity"] == 0.5 and per["0"]["grammatical"] == 0.75
    assert per["1"]["purity"] == 0.0 and per["1"]["own_majority_type"] == "imperative"
    assert out["purity"] == 0.25


def test_interpolation_grammaticality_on_a_model_whose_paths_are_known(monkeypatch):
    """The copy model of tests/test_latent_tools.py decodes the straight line from "a a" to "c c" in 3 steps as
    "a a", "b b", "c c"; a grammar that derives only the endpoints makes 2 of 3 decodes grammatical, none of the
    interior ones."""
    from test_latent_tools import copy_model

    from textebm.data import WordVocab

    vocab = WordVocab.build(["a b c d e f"])
    model = copy_model(vocab, encoder=True, shift=0.0)
    g = PCFG({"S": [(0.5, "a a"), (0.5, "c c")]}, "S")
    out = interpolation_report(model, ["a a", "c c"], g, n_pairs=4, steps=3)
    assert out["grammatical"] == pytest.approx(2 / 3) and out["grammatical_interior"] == 0.0
    assert out["endpoints_exact"] == 1.0 and out["examples"][0]["path"][1] == "b b"
