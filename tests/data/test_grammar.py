"""Known-answer tests for the probabilistic grammar and the bundled corpus in data/grammar/."""

from __future__ import annotations

import collections
import fnmatch
import itertools
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from textebm.data import grammar as G
from textebm.data import grammar_corpus as GC
from textebm.data.grammar import DEFAULT_GRAMMAR, PCFG, default_grammar

from conftest import ROOT

DATA = ROOT / "data" / "grammar"
SEED = 0


def toks(s: str):
    return s.split()


@pytest.fixture(scope="module")
def g() -> PCFG:
    return default_grammar()


@pytest.fixture(scope="module")
def shipped():
    return {name: G.read_split(DATA / f"{name}.txt") for name in G.SPLITS}


# ---------------------------------------------------------------------------------------------
# construction
# ---------------------------------------------------------------------------------------------


def test_default_rule_probabilities_sum_to_one():
    assert DEFAULT_GRAMMAR, "empty grammar"
    for lhs, alts in DEFAULT_GRAMMAR.items():
        assert math.fsum(p for p, _ in alts) == pytest.approx(1.0, abs=1e-12), lhs
        assert all(p > 0 for p, _ in alts), lhs


def test_open_word_classes_have_zipf_probabilities():
    # rank r (from 0) has probability proportional to 1 / (r + 2); all forms of a noun or verb share it
    for lhs in G.OPEN_CLASSES:
        alts = DEFAULT_GRAMMAR[lhs]
        weights = [1.0 / (r + 2.0) for r in range(len(alts))]
        assert [p for p, _ in alts] == [w / math.fsum(weights) for w in weights], lhs
    assert [p for p, _ in DEFAULT_GRAMMAR["VT_SG"]] == [p for p, _ in DEFAULT_GRAMMAR["VT_PAST"]]
    closed = [a for a, alts in DEFAULT_GRAMMAR.items() if a not in G.OPEN_CLASSES
              and all(len(r.split()) == 1 and r not in DEFAULT_GRAMMAR for _, r in alts)]
    assert closed and set(closed) <= {"DET_SG", "DET_PL", "PRON_SG", "PRON_PL", "REL", "CONJ", "WH_OBJ", "WH_ADV"}


def test_the_shipped_grammar_is_its_data_file():
    assert default_grammar().to_json() == PCFG.load_json(G.DEFAULT_GRAMMAR_FILE).to_json()
    assert default_grammar().start == G.DEFAULT_START


def test_the_grammar_file_is_package_data():
    # a wheel install has no data/grammar/: it regenerates the corpus from this file
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["textebm"]
    name = pathlib.Path(G.DEFAULT_GRAMMAR_FILE).resolve().relative_to(ROOT / "textebm").as_posix()
    assert any(fnmatch.fnmatch(name, pat) for pat in patterns), (name, patterns)


def test_rejects_probabilities_that_do_not_sum_to_one():
    with pytest.raises(ValueError, match="'S'"):
        PCFG.from_rules({"S": [(0.5, "a"), (0.4, "b")]}, "S")
    with pytest.raises(ValueError, match="'NOUN'"):
        PCFG.from_rules({"S": [(1.0, "the NOUN")], "NOUN": [(0.7, "dog"), (0.7, "cat")]}, "S")
    bad = {k: list(v) for k, v in DEFAULT_GRAMMAR.items()}
    bad["VP_PL"] = bad["VP_PL"][1:]
    with pytest.raises(ValueError, match="'VP_PL'"):
        PCFG.from_rules(bad, "S")


def test_rejects_other_malformed_grammars():
    with pytest.raises(ValueError):
        PCFG.from_rules({"S": [(1.0, "")]}, "S")  # empty right-hand side
    with pytest.raises(ValueError):
        PCFG.from_rules({"S": [(1.5, "a"), (-0.5, "b")]}, "S")  # negative probability
    with pytest.raises(ValueError):
        PCFG.from_rules({"S": [(1.0, "a")]}, "X")  # unknown start symbol


# ---------------------------------------------------------------------------------------------
# tiny grammars with hand-computed answers
# ---------------------------------------------------------------------------------------------

TINY = {
    "S": [(0.6, "A B"), (0.4, "A")],
    "A": [(0.5, "a"), (0.3, "a a"), (0.2, "b")],
    "B": [(0.7, "a"), (0.3, "c")],
}
# every string of the language with its probability, summed by hand over derivations;
# "a a" is ambiguous: (A->a)(B->a) gives 0.6*0.5*0.7 = 0.21 and S->A->"a a" gives 0.4*0.3 = 0.12
TINY_LANGUAGE = {
    "a": 0.4 * 0.5,
    "a a": 0.6 * 0.5 * 0.7 + 0.4 * 0.3,
    "a c": 0.6 * 0.5 * 0.3,
    "a a a": 0.6 * 0.3 * 0.7,
    "a a c": 0.6 * 0.3 * 0.3,
    "b a": 0.6 * 0.2 * 0.7,
    "b c": 0.6 * 0.2 * 0.3,
    "b": 0.4 * 0.2,
}


def test_tiny_grammar_hand_computed():
    t = PCFG.from_rules(TINY, "S")
    assert t.vocabulary() == ["a", "b", "c"]
    assert TINY_LANGUAGE["a a"] == pytest.approx(0.33)
    for s, p in TINY_LANGUAGE.items():
        assert t.log_prob(toks(s)) == pytest.approx(math.log(p), abs=1e-12), s
    assert math.fsum(TINY_LANGUAGE.values()) == pytest.approx(1.0, abs=1e-12)
    assert math.fsum(math.exp(t.log_prob(toks(s))) for s in TINY_LANGUAGE) == pytest.approx(1.0, abs=1e-12)
    # everything else up to length 4 has probability zero
    for n in range(0, 5):
        for w in itertools.product("abc", repeat=n):
            s = " ".join(w)
            if s not in TINY_LANGUAGE:
                assert t.log_prob(list(w)) == -math.inf, s
    assert t.log_prob(["a", "d"]) == -math.inf


def _enumerate(rules, sym):
    """Brute force: every (yield, probability) of every derivation from ``sym``."""
    if sym not in rules:
        return [((sym,), 1.0)]
    out = []
    for p, rhs in rules[sym]:
        parts = [_enumerate(rules, s) for s in rhs.split()]
        for combo in itertools.product(*parts):
            y = tuple(w for part, _ in combo for w in part)
            q = p
            for _, pp in combo:
                q *= pp
            out.append((y, q))
    return out


UNARY_TERNARY = {
    "S": [(0.7, "NP VP"), (0.3, "VP")],
    "NP": [(0.6, "N"), (0.4, "D N")],
    "VP": [(0.5, "V"), (0.3, "V NP"), (0.2, "V NP NP")],
    "N": [(0.5, "x"), (0.5, "y")],
    "D": [(1.0, "x")],
    "V": [(1.0, "v")],
}


def test_unary_chains_long_rules_and_ambiguity_match_brute_force():
    t = PCFG.from_rules(UNARY_TERNARY, "S")
    lang = collections.defaultdict(float)
    n_deriv = 0
    for y, p in _enumerate(UNARY_TERNARY, "S"):
        lang[y] += p
        n_deriv += 1
    assert n_deriv == t.count_derivations()
    assert len(lang) < n_deriv  # some strings are ambiguous
    for y, p in lang.items():
        assert t.log_prob(list(y)) == pytest.approx(math.log(p), abs=1e-12), y
    assert math.fsum(math.exp(t.log_prob(list(y))) for y in lang) == pytest.approx(1.0, abs=1e-12)
    assert t.log_prob(toks("x x x v")) == -math.inf  # a noun phrase has at most 2 tokens
    assert t.log_prob(toks("v x y x y x")) == -math.inf  # longer than the longest sentence
    assert t.max_length() == max(len(y) for y in lang)
    assert t.min_length() == min(len(y) for y in lang)
    exp_len = math.fsum(len(y) * p for y, p in _enumerate(UNARY_TERNARY, "S"))
    assert t.expected_length() == pytest.approx(exp_len, abs=1e-12)


def test_unary_cycle_closed_form():
    # S -> A | a, A -> S | b : p(a) = 0.5 / (1 - 0.5*0.4) = 0.625, p(b) = 0.3 / 0.8 = 0.375
    t = PCFG.from_rules({"S": [(0.5, "A"), (0.5, "a")], "A": [(0.4, "S"), (0.6, "b")]}, "S")
    assert t.log_prob(["a"]) == pytest.approx(math.log(0.625), abs=1e-12)
    assert t.log_prob(["b"]) == pytest.approx(math.log(0.375), abs=1e-12)
    assert t.log_prob(["a", "b"]) == -math.inf
    assert t.max_length() == math.inf


def test_tiny_sampler_matches_probabilities():
    t = PCFG.from_rules(TINY, "S")
    rng = np.random.Generator(np.random.PCG64(7))
    n = 20_000
    counts = collections.Counter(" ".join(t.sample(rng)) for _ in range(n))
    assert set(counts) <= set(TINY_LANGUAGE)
    for s, p in TINY_LANGUAGE.items():
        sd = math.sqrt(n * p * (1 - p))
        assert abs(counts[s] - n * p) < 4.5 * sd, (s, counts[s], n * p)


# ---------------------------------------------------------------------------------------------
# the default grammar
# ---------------------------------------------------------------------------------------------


def test_default_grammar_shape(g):
    vocab = g.vocabulary()
    assert vocab == sorted(vocab) == sorted(set(vocab))
    assert 150 <= len(vocab) <= 300
    for w in vocab:
        assert w == w.lower() and w.strip() == w and " " not in w
    # every symbol that looks like a nonterminal is defined (no silent typos)
    assert not [w for w in vocab if any(c.isupper() for c in w) or "_" in w]
    assert g.max_length() <= 30
    assert g.min_length() >= 2
    assert 8.5 <= g.expected_length() <= 11
    assert g.count_derivations() > 10**20


def _rule(lhs, rhs):
    return math.fsum(p for p, r in DEFAULT_GRAMMAR[lhs] if r == rhs)


def _word(lhs, w):
    return _rule(lhs, w)


def test_pp_attachment_ambiguity_known_answer(g):
    # "the dog sees the cat near the house ." has exactly two derivations: the PP attaches to
    # the object noun phrase, or to the verb phrase.
    common = (
        _rule("S", "CL .")
        * _rule("CL", "SUBJ_SG VP_SG")
        * _rule("SUBJ_SG", "NP_SG")
        * _rule("NP_SG", "NB_SG")
        * _rule("DET_SG", "the") ** 3
        * _rule("NOM_SG", "N_SG") ** 3
        * _word("N_SG", "dog")
        * _word("N_SG", "cat")
        * _word("N_SG", "house")
        * _word("VT_SG", "sees")
        * _rule("OBJ", "NP_SG")
        * _rule("PP", "P OBJ1")
        * _word("P", "near")
        * _rule("OBJ1", "NB_SG")
    )
    to_np = _rule("VP_SG", "VT_SG OBJ") * _rule("NP_SG", "NB_SG PP")
    to_vp = _rule("VP_SG", "VT_SG OBJ PP") * _rule("NP_SG", "NB_SG")
    expected = math.log(common * (to_np + to_vp))
    assert g.log_prob(toks("the dog sees the cat near the house .")) == pytest.approx(expected, abs=1e-10)
    # a sentence with a single derivation
    single = (
        _rule("S", "CL .")
        * _rule("CL", "SUBJ_SG VP_SG")
        * _rule("SUBJ_SG", "PRON_SG")
        * _word("PRON_SG", "he")
        * _rule("VP_SG", "VI_SG")
        * _word("VI_SG", "sleeps")
    )
    assert g.log_prob(toks("he sleeps .")) == pytest.approx(math.log(single), abs=1e-12)


def test_out_of_language_is_minus_inf(g):
    assert math.isfinite(g.log_prob(toks("the small dog sees a red ball .")))
    assert g.log_prob(toks("the small zebra sees a red ball .")) == -math.inf  # OOV
    assert g.log_prob(toks("small the dog sees a red ball .")) == -math.inf  # order
    assert g.log_prob(toks("the dog see a red ball .")) == -math.inf  # agreement
    assert g.log_prob(toks("the dog sees a red ball")) == -math.inf  # no punctuation
    assert g.log_prob(toks("the dogs sleeps .")) == -math.inf
    assert g.log_prob([]) == -math.inf


@pytest.fixture(scope="module")
def big_sample(g):
    rng = np.random.Generator(np.random.PCG64(12345))
    return [g.sample(rng) for _ in range(50_000)]


def test_sampler_is_deterministic(g):
    r1 = np.random.Generator(np.random.PCG64(3))
    r2 = np.random.Generator(np.random.PCG64(3))
    r3 = np.random.Generator(np.random.PCG64(4))
    s1 = [g.sample(r1) for _ in range(200)]
    s2 = [g.sample(r2) for _ in range(200)]
    s3 = [g.sample(r3) for _ in range(200)]
    assert s1 == s2 and s1 != s3


def test_empirical_frequencies_match_exact_probabilities(g, big_sample):
    n = len(big_sample)
    counts = collections.Counter(" ".join(s) for s in big_sample)
    top = counts.most_common(20)
    assert top[-1][1] >= 15  # enough counts for a meaningful comparison
    chi2 = 0.0
    for s, c in top:
        p = math.exp(g.log_prob(s.split()))
        sd = math.sqrt(n * p * (1 - p))
        z = (c - n * p) / sd
        assert abs(z) < 4.5, (s, c, n * p)
        chi2 += z * z
    # 20 nearly independent squared z-scores: mean 20, sd ~6.3
    assert chi2 < 20 + 5 * math.sqrt(2 * 20)
    # pooled: the total count of the top sentences against their total exact probability
    p_top = math.fsum(math.exp(g.log_prob(s.split())) for s, _ in top)
    c_top = sum(c for _, c in top)
    assert abs(c_top - n * p_top) < 4 * math.sqrt(n * p_top * (1 - p_top))


def test_samples_are_in_language_and_length_bounded(g, big_sample):
    lengths = np.array([len(s) for s in big_sample])
    assert lengths.max() <= g.max_length() <= 30
    assert 8.5 <= lengths.mean() <= 11
    assert np.mean((lengths >= 4) & (lengths <= 20)) > 0.9
    assert all(math.isfinite(lp) for lp in g.log_probs(big_sample[:2000]))
    # the sample mean of -log p is an unbiased estimate of the entropy; it must match the
    # average over another independent sample
    rng = np.random.Generator(np.random.PCG64(999))
    other = [g.sample(rng) for _ in range(2000)]
    a = -np.array(g.log_probs(big_sample[:2000]))
    b = -np.array(g.log_probs(other))
    se = math.sqrt(a.var() / len(a) + b.var() / len(b))
    assert abs(a.mean() - b.mean()) < 5 * se


# ---------------------------------------------------------------------------------------------
# the shipped corpus
# ---------------------------------------------------------------------------------------------


def test_shipped_files_format(shipped):
    total = sum((DATA / f).stat().st_size for f in ("train.txt", "valid.txt", "test.txt", "README.md", "stats.json"))
    assert total < 2 * 1024 * 1024
    for name, n in G.DEFAULT_COUNTS.items():
        raw = (DATA / f"{name}.txt").read_bytes()
        assert raw.endswith(b"\n") and not raw.endswith(b"\n\n")
        text = raw.decode("utf-8")
        assert text == text.lower()
        assert len(shipped[name]) == n
        for s in shipped[name]:
            assert s and all(s)  # single spaces, no empty tokens


def test_shipped_sentences_have_finite_log_prob(g, shipped):
    for name in G.SPLITS:
        lps = g.log_probs(shipped[name])
        bad = [" ".join(s) for s, lp in zip(shipped[name], lps) if not math.isfinite(lp)]
        assert not bad, bad[:5]


def test_regeneration_is_byte_identical(tmp_path):
    GC.generate_corpus(tmp_path, seed=SEED)
    for f in ("train.txt", "valid.txt", "test.txt", "stats.json", "README.md"):
        assert (tmp_path / f).read_bytes() == (DATA / f).read_bytes(), f


def test_splits_come_from_one_stream_in_fixed_order(g, shipped):
    small = G.sample_splits(g, SEED, {"train": 50, "valid": 0, "test": 0})
    assert small["train"] == shipped["train"][:50]
    rng = np.random.Generator(np.random.PCG64(SEED))
    stream = [g.sample(rng) for _ in range(10_000 + 1_000 + 20)]
    assert stream[10_000:11_000] == shipped["valid"]
    assert stream[11_000:] == shipped["test"][:20]


def test_stats_match_recomputation(g, shipped):
    stats = json.loads((DATA / "stats.json").read_text(encoding="utf-8"))
    assert list(stats) == list(G.SPLITS)
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    for name in G.SPLITS:
        st = stats[name]
        assert set(st) == {"n_sentences", "n_tokens", "total_nll_nats", "mean_nll_nats", "ppl_with_eos"}
        sents = shipped[name]
        n_sent = len(sents)
        n_tok = sum(len(s) for s in sents)
        total = -math.fsum(g.log_prob(s) for s in sents)
        assert st["n_sentences"] == n_sent
        assert st["n_tokens"] == n_tok
        assert st["total_nll_nats"] == pytest.approx(total, abs=2e-6)
        assert st["mean_nll_nats"] == pytest.approx(total / n_sent, abs=2e-6)
        assert st["ppl_with_eos"] == pytest.approx(math.exp(total / (n_tok + n_sent)), abs=2e-6)
        assert f"{st['total_nll_nats']:.6f}" in readme
        assert f"{st['ppl_with_eos']:.6f}" in readme


def test_main_cli(tmp_path):
    out = tmp_path / "small"
    assert GC.main(["--out", str(out), "--seed", "5", "--n-train", "30", "--n-valid", "4", "--n-test", "3"]) == 0
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert [stats[k]["n_sentences"] for k in G.SPLITS] == [30, 4, 3]
    assert len(G.read_split(out / "train.txt")) == 30
    assert "--seed 5 --n-train 30 --n-valid 4 --n-test 3" in (out / "README.md").read_text(encoding="utf-8")


def test_the_documented_regeneration_command_runs(tmp_path):
    out = tmp_path / "small"
    proc = subprocess.run([sys.executable, "-m", "textebm.data.grammar_corpus", "--out", str(out), "--n-train", "5",
                           "--n-valid", "1", "--n-test", "1"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(G.read_split(out / "train.txt")) == 5 and (out / "README.md").is_file()
    assert "python -m textebm.data.grammar_corpus --out data/grammar" in (ROOT / "README.md").read_text()


def test_a_huge_rule_with_a_unary_cycle_is_one_error_not_a_dense_matrix(tmp_path):
    """Row 15: a 60 KB grammar.json with one 15,000-symbol rule and a unary cycle built a dense 15k x 15k matrix
    (MemoryError, a traceback). Long rules are bounded; unary cycles are closed over their own symbols only."""
    import os
    import resource

    path = tmp_path / "grammar.json"
    words = " ".join(f"w{i}" for i in range(15000))
    path.write_text(json.dumps({"start": "S", "rules": {"S": [[0.5, "A"], [0.5, words]], "A": [[0.5, "S"],
                                                                                          [0.5, "a"]]}}))
    code = ("import sys\nfrom textebm.data.grammar import PCFG\ntry:\n    PCFG.load_json(sys.argv[1])\n"
            "except ValueError as e:\n    print('ERROR', e)\n    sys.exit(2)\n")

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    try:
        p = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), preexec_fn=limit)
    except subprocess.TimeoutExpired:
        pytest.fail("loading the grammar did not finish within 60 s")
    assert p.returncode == 2 and "15000 symbols on its right-hand side" in p.stdout, p.stdout + p.stderr
    # a long rule within the bound beside a unary cycle: the closure stays small and exact
    rules = {"S": [[0.5, "A"], [0.5, " ".join(["w"] * 1000)]], "A": [[0.5, "S"], [0.5, "a"]]}
    g = PCFG(rules, "S")
    assert g.log_prob(["a"]) == pytest.approx(math.log(0.25 / 0.75))  # S -> A (-> S -> A)* -> a
    assert len(g._closure_up) > 1000  # one chart symbol per position of the long rule, no dense matrix over them


@pytest.mark.parametrize("rules, start, words", [
    ({"S": [[1.0, "A"]], "A": [[1.0, "S"]]}, "S", "never derives a finite sentence"),
    ({"S": [[0.5, "a"], [0.5, "S S S"]]}, "S", None),  # recursive but terminating: fine
    ({"S": [[1.0, "a B"]], "B": [[1.0, "b B"]]}, "S", "'B'"),
])
def test_termination_is_checked(rules, start, words):
    if words is None:
        assert PCFG(rules, start).log_prob(["a"]) > -math.inf
        return
    with pytest.raises(ValueError, match=words):
        PCFG(rules, start)


def test_grammar_json_nested_deep_is_one_line(tmp_path):
    """Row 17 (grammar.json nested 100k deep): a RecursionError traceback."""
    path = tmp_path / "grammar.json"
    path.write_text('{"start": "S", "rules": {"S": ' + "[" * 100_000 + "]" * 100_000 + "}}")
    with pytest.raises(ValueError, match="nests more than") as info:
        PCFG.load_json(path)
    assert str(path) in str(info.value) and len(str(info.value).splitlines()) == 1
