"""Metrics against a known grammar (textebm.eval.truth) and the PCFG's JSON files (textebm.data.grammar)."""
import json
import math

import numpy as np
import pytest

from textebm.data.corpus import repo_data_dir
from textebm.data.grammar import PCFG, default_grammar, read_split
from textebm.eval.truth import exact_kl, grammar_for_corpus, sample_truth

TOY = {"S": [(0.6, "NP VP"), (0.4, "VP")], "NP": [(0.5, "the dog"), (0.5, "a cat")],
       "VP": [(0.7, "runs"), (0.3, "sleeps .")]}


def test_json_round_trip_gives_identical_log_probs(tmp_path):
    g = default_grammar()
    sents = read_split(repo_data_dir() / "grammar" / "test.txt")[:300] + [["not", "a", "sentence"], []]
    path = tmp_path / "grammar.json"
    g.save_json(path)
    data = json.loads(path.read_text())
    assert set(data) == {"start", "rules"} and data["start"] == g.start
    assert data["rules"]["S"][0][1] == " ".join(g.rules["S"][0][1])
    g2 = PCFG.load_json(path)
    assert g2.rules == g.rules and g2.start == g.start
    assert g2.log_probs(sents) == g.log_probs(sents)  # bit for bit
    assert PCFG.from_json(g.to_json()).log_probs(sents) == g.log_probs(sents)
    # a hand-written file with list right-hand sides reads too
    toy = PCFG.from_json(json.dumps({"start": "S", "rules": {k: [[p, r.split()] for p, r in v]
                                                             for k, v in TOY.items()}}))
    assert toy.log_prob("the dog runs".split()) == pytest.approx(math.log(0.6 * 0.5 * 0.7))


@pytest.mark.parametrize("text, words", [
    ("{not json", "not valid JSON"),
    ('["S"]', "not a grammar file"),
    ('{"start": "S"}', "not a grammar file"),
    ('{"start": "S", "rules": {"S": [[0.5, "a"]]}}', "sum to"),
    ('{"start": "S", "rules": {"S": [[true, "a"]]}}', "not [probability"),
    ('{"start": "S", "rules": {"S": [["1.0", "a"]]}}', "not [probability"),
    ('{"start": "S", "rules": {"S": [[1.0, ""]]}}', "empty right-hand side"),
    ('{"start": "X", "rules": {"S": [[1.0, "a"]]}}', "start symbol"),
    ('{"start": "S", "rules": {"S": [[1.0, "a"]], "S": [[1.0, "b"]]}}', "repeated key"),
    ('{"start": "S", "rules": {"S": [[NaN, "a"]]}}', "invalid probability"),
])
def test_malformed_grammar_file_is_a_value_error_naming_it(tmp_path, text, words):
    path = tmp_path / "grammar.json"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        PCFG.load_json(path)
    assert str(path) in str(e.value) and words in str(e.value)


def test_grammar_file_not_utf8(tmp_path):
    path = tmp_path / "grammar.json"
    path.write_bytes(b'{"start": "\xff"}')
    with pytest.raises(ValueError, match="not UTF-8"):
        PCFG.load_json(path)


def test_sample_truth_exact_fractions():
    g = default_grammar()
    train = [" ".join(s) for s in read_split(repo_data_dir() / "grammar" / "train.txt")]
    train_set = set(train)
    rng = np.random.Generator(np.random.PCG64(123))
    novel = []
    while len(novel) < 3:  # derivable sentences that are not in the training split
        s = " ".join(g.sample(rng))
        if s not in train_set and s not in novel:
            novel.append(s)
    copied = train[:2]
    bad = ["dog the the", "", "zzz unknownword ."]
    samples = copied + novel + bad + ["  " + copied[0] + " "]  # whitespace is normalized
    out = sample_truth(g, samples, train)
    assert out["n_samples"] == 9 and out["n_derivable"] == 6 and out["n_in_train"] == 3
    assert out["n_novel_derivable"] == 3 and out["n_empty"] == 1
    assert out["frac_derivable"] == 6 / 9 and out["frac_in_train"] == 3 / 9 and out["frac_novel_derivable"] == 3 / 9
    lps = g.log_probs([s.split() for s in copied + novel + [copied[0]]])
    assert out["mean_log_prob_derivable"] == pytest.approx(sum(lps) / 6, rel=1e-12)
    assert out["mean_log_prob_all"] is None  # -inf: some samples are not derivable
    good = sample_truth(g, copied + novel, train)
    assert good["frac_derivable"] == 1.0 and good["mean_log_prob_all"] == pytest.approx(
        good["mean_log_prob_derivable"])
    none = sample_truth(g, bad, train)
    assert none["frac_derivable"] == 0.0 and none["mean_log_prob_derivable"] is None
    empty = sample_truth(g, [], train)
    assert empty["n_samples"] == 0 and empty["frac_derivable"] is None
    json.dumps(out, allow_nan=False)


def test_exact_kl_of_the_true_model_is_zero_and_entropy_matches_stats():
    g = default_grammar()
    test = read_split(repo_data_dir() / "grammar" / "test.txt")
    lps = g.log_probs(test)
    true_nll = -math.fsum(lps) / len(lps)
    out = exact_kl(g, [" ".join(s) for s in test], true_nll, model_nll_se=0.25)
    assert out["kl_per_sentence"] == 0.0 and out["kl_per_token"] == 0.0 and out["message"] is None
    stats = json.loads((repo_data_dir() / "grammar" / "stats.json").read_text())["test"]
    assert out["n_sentences"] == stats["n_sentences"]
    assert out["n_tokens"] == stats["n_tokens"] + stats["n_sentences"]  # one </s> per sentence
    assert out["entropy_per_sentence"] == pytest.approx(stats["mean_nll_nats"], abs=1e-6)
    assert out["ppl_true"] == pytest.approx(stats["ppl_with_eos"], abs=1e-5)
    assert out["kl_se"] == 0.25 and out["kl_per_token_se"] == pytest.approx(0.25 * 1000 / out["n_tokens"])
    worse = exact_kl(g, test, true_nll + 2.0)
    assert worse["kl_per_sentence"] == pytest.approx(2.0) and worse["kl_se"] is None
    assert worse["kl_per_token"] == pytest.approx(2.0 * 1000 / out["n_tokens"])
    low = exact_kl(g, test, true_nll - 1.0, model_nll_se=0.1)
    assert low["kl_per_sentence"] < 0 and "biased low" in low["message"]
    with pytest.raises(ValueError, match="cannot be derived"):
        exact_kl(g, ["the the the"], 10.0)
    json.dumps(out, allow_nan=False)


def test_grammar_for_corpus(tmp_path, monkeypatch):
    assert grammar_for_corpus("grammar") is default_grammar()
    assert grammar_for_corpus("grammar", str(repo_data_dir() / "grammar")) is default_grammar()
    corpus = tmp_path / "mycorpus"
    corpus.mkdir()
    for split in ("train", "valid", "test"):
        (corpus / f"{split}.txt").write_text("the dog runs\n")
    assert grammar_for_corpus(str(corpus)) is None           # no grammar.json: unknown
    assert grammar_for_corpus("grammar", str(corpus)) is None  # a user data_dir is not the bundled corpus
    PCFG(TOY, "S").save_json(corpus / "grammar.json")
    for found in (grammar_for_corpus(str(corpus)), grammar_for_corpus("grammar", str(corpus))):
        assert found is not None and found.rules == PCFG(TOY, "S").rules
        assert found.log_prob("a cat sleeps .".split()) == pytest.approx(math.log(0.6 * 0.5 * 0.3))
    assert grammar_for_corpus("ptb") is None
    assert grammar_for_corpus(str(tmp_path / "missing")) is None
    (corpus / "grammar.json").write_text("{}")
    with pytest.raises(ValueError, match="grammar.json"):
        grammar_for_corpus(str(corpus))


@pytest.mark.parametrize("rules, start, words", [
    ({"S": [[1.0, "A"]], "A": [[1.0, "S"]]}, "S", "never derives a finite sentence"),
    ({"S": [[1.5, "a"], [-0.5, "b"]]}, "S", "invalid probability"),
    ({"S": [[float("nan"), "a"]]}, "S", "invalid probability"),
    ({"S": [[1.0, "a"]]}, "X", "start symbol"),
    ({"S": [[1.0, "no such words"]]}, "S", "does not derive"),
])
def test_a_bad_grammar_stops_eval_before_any_metric(tmp_path, tiny_run, toy_corpus, capsys, rules, start, words):
    """Row 12: with a bad grammar.json, `eval --nll --recon --latent` failed only after computing every metric
    (hours on a real run), and wrote no report."""
    import shutil

    from conftest import one_line_error, run_main

    corpus = tmp_path / "corpus"
    shutil.copytree(toy_corpus, corpus)
    (corpus / "grammar.json").write_text(json.dumps({"start": start, "rules": rules}))
    code, out, err = run_main(capsys, "eval", tiny_run, "--corpus", corpus, "--nll", "--recon", "--latent",
                              "-K", "2", "--chains", "2", "--log-z-samples", "64", "--max-sentences", "3",
                              "--out", tmp_path / "report.json", "--no-progress")
    one_line_error(code, err, words)
    assert not any(line.startswith(("NLL:", "latent diagnostics")) for line in err), err
    assert out == ""
