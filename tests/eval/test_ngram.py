"""Tests for textebm.eval.ngram (KenLM-compatible n-gram models)."""

from __future__ import annotations

import ctypes
import json
import math
import os
import platform
import shutil
import stat

import numpy as np
import pytest

kenlm = pytest.importorskip("kenlm")

from textebm.eval.ngram import (  # noqa: E402
    MAX_ORDER,
    LmplzError,
    ModelFormatError,
    TrainResult,
    find_lmplz,
    install_lmplz,
    ngram_main,
    perplexity,
    train,
    train_builtin,
    train_lmplz,
)
from textebm.eval.ngram.arpa import format_f32  # noqa: E402
from textebm.eval.ngram.libm import log10f  # noqa: E402


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def synthetic_corpus(n_sent: int, seed: int, vocab: int = 1500, n_phrases: int = 3000) -> list[str]:
    """Sentences made of Zipf-distributed phrases (fixed word sequences)
    over Zipf-distributed words, plus some random single words, so that
    the corpus has real n-gram structure and a long tail."""
    rng = np.random.default_rng(1234)  # the "language" is fixed ...
    zipf_w = 1.0 / np.arange(1, vocab + 1) ** 1.05
    zipf_w /= zipf_w.sum()
    lens = rng.integers(1, 5, size=n_phrases)
    words = rng.choice(vocab, size=int(lens.sum()), p=zipf_w)
    cuts = np.cumsum(lens)[:-1]
    phrases = [" ".join(f"w{w}" for w in p) for p in np.split(words, cuts)]
    zipf_p = 1.0 / np.arange(1, n_phrases + 1) ** 0.9
    zipf_p /= zipf_p.sum()
    rng = np.random.default_rng(seed)  # ... the sample depends on the seed
    n_parts = rng.integers(1, 7, size=n_sent)
    picks = rng.choice(n_phrases, size=int(n_parts.sum()), p=zipf_p)
    noise = rng.random(len(picks)) < 0.15
    noise_words = rng.choice(vocab, size=len(picks), p=zipf_w)
    parts = [f"w{noise_words[i]}" if noise[i] else phrases[p] for i, p in enumerate(picks.tolist())]
    ends = np.cumsum(n_parts)
    starts = ends - n_parts
    return [" ".join(parts[s:e]) for s, e in zip(starts.tolist(), ends.tolist())]


def write_lines(path, lines, trailing_newline=True):
    path.write_text("\n".join(lines) + ("\n" if trailing_newline else ""), encoding="utf-8")
    return path


def read_arpa(path) -> tuple[dict[int, int], dict[int, dict[str, tuple[float, float | None]]]]:
    """(header counts, {order: {ngram: (log10 prob, log10 backoff or None)}})."""
    counts: dict[int, int] = {}
    grams: dict[int, dict[str, tuple[float, float | None]]] = {}
    order = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line or line == "\\data\\" or line == "\\end\\":
                continue
            if line.startswith("ngram "):
                n, c = line[6:].split("=")
                counts[int(n)] = int(c)
            elif line.startswith("\\") and line.endswith("-grams:"):
                order = int(line[1:-7])
                grams[order] = {}
            else:
                fields = line.split("\t")
                bo = float(fields[2]) if len(fields) > 2 else None
                grams[order][fields[1]] = (float(fields[0]), bo)
    return counts, grams


def assert_arpa_close(path_a, path_b, tol=1e-4) -> float:
    """Same n-gram sets and values within ``tol`` (log10); returns max diff."""
    ca, ga = read_arpa(path_a)
    cb, gb = read_arpa(path_b)
    assert ca == cb
    worst = 0.0
    for n in ga:
        assert set(ga[n]) == set(gb[n]), f"order {n}: n-gram sets differ"
        for key, (pa, ba) in ga[n].items():
            pb, bb = gb[n][key]
            worst = max(worst, abs(pa - pb))
            assert abs(pa - pb) <= tol, (n, key, pa, pb)
            assert (ba is None) == (bb is None), (n, key)
            if ba is not None:
                worst = max(worst, abs(ba - bb))
                assert abs(ba - bb) <= tol, (n, key, ba, bb)
    return worst


def lmplz_or_skip():
    path = find_lmplz()
    if path is None:
        pytest.skip("lmplz not found: run `python -c 'from textebm.eval.ngram import "
                    "install_lmplz; install_lmplz()'` or set TEXTEBM_LMPLZ")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("ngram_corpus")
    train_path = write_lines(d / "train.txt", synthetic_corpus(3000, seed=1))
    held_out = synthetic_corpus(300, seed=2) + ["unseenword w1 w2 anotherunseen", "w3 zzz", ""]
    test_path = write_lines(d / "test.txt", held_out)
    return train_path, test_path


# ---------------------------------------------------------------------------
# hand-checked model (independent of lmplz)
# ---------------------------------------------------------------------------


def test_hand_computed_bigram_model(tmp_path):
    text = write_lines(tmp_path / "tiny.txt", ["a b c", "b c d", "a b"])
    arpa = train_builtin(2, text, tmp_path / "tiny.arpa")
    counts, grams = read_arpa(arpa)
    assert counts == {1: 7, 2: 8}

    # Unigram adjusted counts = number of distinct left neighbours:
    #   a {<s>} = 1, b {a, <s>} = 2, c {b} = 1, d {c} = 1, </s> {c, d, b} = 3
    # counts-of-counts n1 = 3, n2 = 1, n3 = 1, n4 = 0
    y = 3 / (3 + 2 * 1)
    d1 = 1 - 2 * y * 1 / 3
    d2 = 2 - 3 * y * 1 / 1
    d3 = 3 - 4 * y * 0 / 1
    disc1 = {1: d1, 2: d2, 3: d3}
    adj = {"a": 1, "b": 2, "c": 1, "d": 1, "</s>": 3}
    total = sum(adj.values())  # 8
    gamma1 = (d1 * 3 + d2 * 1 + d3 * 1) / total
    uniform = 1 / 6  # <unk>, </s>, a, b, c, d (<s> excluded)
    p1 = {w: (c - disc1[min(c, 3)]) / total + gamma1 * uniform for w, c in adj.items()}
    p1["<unk>"] = gamma1 * uniform

    # Bigram raw counts; n1 = 5, n2 = 3, n3 = 0 -> fallback discounts.
    big = {("<s>", "a"): 2, ("<s>", "b"): 1, ("a", "b"): 2, ("b", "c"): 2, ("b", "</s>"): 1,
           ("c", "d"): 1, ("c", "</s>"): 1, ("d", "</s>"): 1}
    disc2 = {1: 0.5, 2: 1.0, 3: 1.5}
    ctx_total: dict[str, int] = {}
    ctx_gamma: dict[str, float] = {}
    for (h, _), c in big.items():
        ctx_total[h] = ctx_total.get(h, 0) + c
        ctx_gamma[h] = ctx_gamma.get(h, 0.0) + disc2[min(c, 3)]
    ctx_gamma = {h: g / ctx_total[h] for h, g in ctx_gamma.items()}
    p2 = {hw: (c - disc2[min(c, 3)]) / ctx_total[hw[0]] + ctx_gamma[hw[0]] * p1[hw[1]]
          for hw, c in big.items()}

    for w in ["<unk>", "</s>", "a", "b", "c", "d"]:
        assert grams[1][w][0] == pytest.approx(math.log10(p1[w]), abs=1e-6), w
    assert grams[1]["<s>"][0] == 0.0
    for h in ["<s>", "a", "b", "c", "d"]:
        assert grams[1][h][1] == pytest.approx(math.log10(ctx_gamma[h]), abs=1e-6), h
    for w in ["<unk>", "</s>"]:
        assert grams[1][w][1] == 0.0
    for (h, w), p in p2.items():
        got = grams[2][f"{h} {w}"]
        assert got[1] is None
        assert got[0] == pytest.approx(math.log10(p), abs=1e-6), (h, w)

    # kenlm reads it and applies the same numbers, including backoff to <unk>.
    model = kenlm.Model(str(arpa))
    lp = math.log10
    expect_ab = lp(p2[("<s>", "a")]) + lp(p2[("a", "b")]) + lp(p2[("b", "</s>")])
    assert model.score("a b", bos=True, eos=True) == pytest.approx(expect_ab, abs=1e-5)
    expect_oov = lp(p2[("<s>", "a")]) + lp(ctx_gamma["a"]) + lp(p1["<unk>"]) + lp(p1["</s>"])
    assert model.score("a zzz", bos=True, eos=True) == pytest.approx(expect_oov, abs=1e-5)

    res = perplexity(arpa, ["a b", "a zzz"])
    total_lp = expect_ab + expect_oov
    assert res["words"] == 4 and res["sentences"] == 2 and res["oov"] == 1
    assert res["total_log10prob"] == pytest.approx(total_lp, abs=1e-5)
    assert res["ppl"] == pytest.approx(10 ** (-total_lp / 6), rel=1e-5)
    eos = lp(p2[("b", "</s>")]) + lp(p1["</s>"])
    assert res["ppl_no_eos"] == pytest.approx(10 ** (-(total_lp - eos) / 4), rel=1e-5)


def test_perplexity_matches_full_scores(tmp_path, corpus):
    train_path, test_path = corpus
    arpa = train_builtin(3, train_path, tmp_path / "m3.arpa")
    model = kenlm.Model(str(arpa))
    lines = test_path.read_text().split("\n")[:-1]
    total = eos_total = 0.0
    words = oov = 0
    for line in lines:
        scores = list(model.full_scores(line))
        total += sum(s[0] for s in scores)
        eos_total += scores[-1][0]
        words += len(scores) - 1
        oov += sum(1 for s in scores if s[2])
    res_file = perplexity(arpa, test_path)
    res_list = perplexity(model, lines)
    assert res_file == res_list
    assert res_file["sentences"] == len(lines)
    assert res_file["words"] == words and res_file["oov"] == oov > 0
    assert res_file["ppl"] == pytest.approx(10 ** (-total / (words + len(lines))))
    assert res_file["ppl_no_eos"] == pytest.approx(10 ** (-(total - eos_total) / words))


# ---------------------------------------------------------------------------
# degenerate corpora and errors
# ---------------------------------------------------------------------------

DEGENERATE = {
    "one_sentence": ["hello"],
    "one_word_repeated": ["a a a a a a a a"] * 3,
    "tiny_vocab": ["a b", "b a", "a a b"] * 50,
    "empty_lines": ["", "x", "", "x y"],
    "special_tokens": ["<s> a </s> b <unk>", "a\tb\rc", "<unk>"],
    "all_distinct": ["w%d" % i for i in range(6)],
}


@pytest.mark.parametrize("name", sorted(DEGENERATE))
def test_degenerate_corpora(tmp_path, name):
    text = write_lines(tmp_path / f"{name}.txt", DEGENERATE[name])
    for order in (1, 2, 3, 5):
        arpa = train_builtin(order, text, tmp_path / f"{name}{order}.arpa")
        counts, grams = read_arpa(arpa)
        assert all(np.isfinite(p) for g in grams.values() for p, _ in g.values())
        if order == 1:
            continue  # kenlm only loads models of order >= 2
        res = perplexity(arpa, ["a b zz", "hello", "", "x y"])
        assert math.isfinite(res["ppl"]) and res["ppl"] > 1
        assert math.isfinite(res["ppl_no_eos"])


def test_unterminated_last_line_and_list_input(tmp_path):
    lines = ["a b c", "b c", "c a b"]
    a = train_builtin(3, write_lines(tmp_path / "a.txt", lines, trailing_newline=False),
                      tmp_path / "a.arpa")
    b = train_builtin(3, lines, tmp_path / "b.arpa")
    assert a.read_bytes() == b.read_bytes()
    assert "c </s>" in read_arpa(a)[1][2]


def test_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n<s> </s>\n")
    missing = tmp_path / "missing.txt"
    out = tmp_path / "out.arpa"
    for estimator in ("builtin", "auto"):
        with pytest.raises(ValueError, match="empty"):
            train(3, empty, out, estimator=estimator)
        with pytest.raises(ValueError, match="empty"):
            train(3, blank, out, estimator=estimator)
        with pytest.raises(FileNotFoundError, match="missing.txt"):
            train(3, missing, out, estimator=estimator)
    with pytest.raises(ValueError, match="empty"):
        train_builtin(2, [], out)
    with pytest.raises(ValueError, match="order"):
        train_builtin(0, ["a b"], out)
    with pytest.raises(ValueError, match="order"):
        train(-1, ["a b"], out)
    with pytest.raises(ValueError, match="estimator"):
        train(2, ["a b"], out, estimator="srilm")
    with pytest.raises(FileNotFoundError):
        find_lmplz(tmp_path / "no-such-lmplz")

    arpa = train_builtin(2, ["a b", "b a"], tmp_path / "ok.arpa")
    with pytest.raises(ValueError, match="empty.txt"):
        perplexity(arpa, empty)
    with pytest.raises(ValueError, match="no sentences"):
        perplexity(arpa, [])
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        perplexity(arpa, missing)
    with pytest.raises(FileNotFoundError):
        perplexity(tmp_path / "nope.arpa", ["a"])
    assert not out.exists()


def test_auto_falls_back_without_lmplz(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTEBM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TEXTEBM_LMPLZ", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert find_lmplz() is None
    res = train(2, ["a b", "b c"], tmp_path / "m.arpa")
    assert isinstance(res, TrainResult)
    assert res.estimator_used == "builtin" and "not found" in res.fallback_reason
    assert res.path.is_file()
    with pytest.raises(FileNotFoundError, match="lmplz"):
        train(2, ["a b"], tmp_path / "m2.arpa", estimator="lmplz")


def test_auto_falls_back_when_lmplz_fails(tmp_path):
    fake = tmp_path / "lmplz"
    fake.write_text("#!/bin/sh\necho 'simulated crash' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    res = train(2, ["a b", "b c"], tmp_path / "m.arpa", lmplz=fake)
    assert res.estimator_used == "builtin"
    assert "failed" in res.fallback_reason and "simulated crash" in res.fallback_reason
    with pytest.raises(LmplzError, match="simulated crash"):
        train(2, ["a b"], tmp_path / "m2.arpa", estimator="lmplz", lmplz=fake)


def test_install_lmplz_is_idempotent_and_reports_missing_deps(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(LmplzError, match="libboost-program-options-dev"):
        install_lmplz(cache_dir=cache)
    fake = cache / "bin" / "lmplz"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\necho 'Builds unpruned language models with modified Kneser-Ney'\nexit 1\n")
    fake.chmod(0o755)
    assert install_lmplz(cache_dir=cache) == fake  # present and runs: no build
    assert str(fake) in capsys.readouterr().out
    monkeypatch.setenv("TEXTEBM_CACHE", str(cache))
    monkeypatch.delenv("TEXTEBM_LMPLZ", raising=False)
    assert find_lmplz() == fake


def test_float_formatting_round_trips():
    rng = np.random.default_rng(0)
    x = (-rng.random(20000) * rng.choice([1e-5, 1e-2, 1.0, 10.0, 300.0], 20000)).astype(np.float32)
    x = np.concatenate([x, np.float32([0, -1, -0.30103, -12.5, -120, -1e-7, -99])])
    texts = format_f32(x)
    assert format_f32(np.float32([-2.5885976e-7, 1500, 0, -0.000003])) == [
        b"-2.5885976e-7", b"1500", b"0", b"-0.000003"]  # lmplz's style
    assert np.array_equal(np.array([float(t) for t in texts], dtype=np.float32), x)
    for v, t in zip(x.tolist()[:3000], texts):  # shortest, as numpy's repr
        ref = str(np.float32(v))
        if "e" not in ref:
            assert t.decode() == (ref[:-2] if ref.endswith(".0") else ref)


def test_cli(tmp_path, capsys):
    text = write_lines(tmp_path / "t.txt", ["a b c", "b c d", "a b"])
    out = tmp_path / "cli.arpa"
    assert ngram_main(["train", "--order", "2", "--input", str(text), "--output", str(out),
                       "--estimator", "builtin"]) == 0
    assert out.is_file() and "builtin" in capsys.readouterr().out
    assert ngram_main(["ppl", str(out), str(text), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["sentences"] == 3 and res["words"] == 8
    assert ngram_main(["ppl", str(out), str(text)]) == 0
    assert "ppl_no_eos" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError):
        ngram_main(["train", "--order", "2", "--input", str(tmp_path / "x.txt"),
                    "--output", str(out)])


def test_ppl_rejects_files_that_are_not_models(tmp_path):
    text = write_lines(tmp_path / "t.txt", ["a b", "b a"])
    rand = tmp_path / "random.bin"
    rand.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.arpa"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.arpa"
    truncated.write_text("\\data\\\nngram 1=3\n\n\\1-grams:\n-1\ta\n")
    folder = tmp_path / "folder.arpa"
    folder.mkdir()
    for bad in (text, rand, empty, truncated, folder):
        for call in (lambda: perplexity(bad, ["a b"]),
                     lambda: ngram_main(["ppl", str(bad), str(text)])):
            with pytest.raises(ModelFormatError) as info:
                call()
            assert isinstance(info.value, ValueError)
            line = str(info.value).splitlines()[0]
            assert str(bad) in line and "not an ARPA or KenLM binary model" in line, line
    missing = tmp_path / "missing.arpa"
    with pytest.raises(ValueError, match="language model not found: .*missing.arpa") as info:
        ngram_main(["ppl", str(missing), str(text)])
    assert isinstance(info.value, FileNotFoundError)


def test_ppl_text_errors(tmp_path):
    arpa = train_builtin(2, ["a b", "b a"], tmp_path / "ok.arpa")
    missing = tmp_path / "missing.txt"
    with pytest.raises(FileNotFoundError, match="evaluation text not found: .*missing.txt"):
        ngram_main(["ppl", str(arpa), str(missing)])
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="no sentences to score: .*empty.txt"):
        ngram_main(["ppl", str(arpa), str(empty)])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9 b\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8: .*latin1.txt") as info:
        ngram_main(["ppl", str(arpa), str(latin1)])
    assert len(str(info.value).splitlines()) == 1
    out = tmp_path / "latin1.arpa"  # training takes the same text as scoring does
    with pytest.raises(ValueError, match="training text is not UTF-8: .*latin1.txt"):
        ngram_main(["train", "--order", "2", "--input", str(latin1), "--output", str(out), "--estimator", "builtin"])
    assert not out.exists()


def test_train_errors(tmp_path):
    text = write_lines(tmp_path / "t.txt", ["a b c", "b c d"])
    out = tmp_path / "m.arpa"
    with pytest.raises(FileNotFoundError, match="training text not found: .*nope.txt"):
        ngram_main(["train", "--order", "2", "--input", str(tmp_path / "nope.txt"),
                    "--output", str(out)])
    with pytest.raises(FileNotFoundError, match="output directory does not exist: .*no-dir"):
        ngram_main(["train", "--order", "2", "--input", str(text),
                    "--output", str(tmp_path / "no-dir" / "m.arpa")])
    with pytest.raises(ValueError, match="output is a directory"):
        ngram_main(["train", "--order", "2", "--input", str(text), "--output", str(tmp_path)])
    assert not (tmp_path / "no-dir").exists() and not out.exists()
    for order in (0, MAX_ORDER + 1):  # the library rejects the order too
        for estimator in ("builtin", "auto"):
            with pytest.raises(ValueError, match="order"):
                train(order, text, out, estimator=estimator)


def _argparse_error(capsys, argv) -> str:
    """Run ``ngram_main(argv)``, expect exit status 2 and one stderr line; return it."""
    with pytest.raises(SystemExit) as info:
        ngram_main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and captured.out == "", captured
    assert lines[0].startswith("textebm ngram: error: "), lines[0]
    return lines[0]


def test_cli_argument_errors_are_one_line(tmp_path, capsys):
    text = str(write_lines(tmp_path / "t.txt", ["a b"]))
    out = str(tmp_path / "m.arpa")
    train_args = ["--input", text, "--output", out]
    assert "required" in _argparse_error(capsys, [])
    assert "invalid choice" in _argparse_error(capsys, ["bogus"])
    assert "--input" in _argparse_error(capsys, ["train", "--order", "2"])
    line = _argparse_error(capsys, ["train", "--order", "0"] + train_args)
    assert line.startswith("textebm ngram: error: train: argument --order") and ">= 1" in line
    too_high = ["train", "--order", str(MAX_ORDER + 1)] + train_args
    assert f"<= {MAX_ORDER}" in _argparse_error(capsys, too_high)
    assert "expected an integer" in _argparse_error(capsys, ["train", "--order", "x"] + train_args)
    bad_estimator = ["train", "--order", "2", "--estimator", "srilm"] + train_args
    assert "invalid choice" in _argparse_error(capsys, bad_estimator)
    assert "text" in _argparse_error(capsys, ["ppl", "model.arpa"])
    assert "unrecognized" in _argparse_error(capsys, ["ppl", "m", "t", "--bogus"])
    assert not os.path.exists(out)
    for argv in (["--help"], ["train", "--help"], ["ppl", "-h"]):
        with pytest.raises(SystemExit) as info:
            ngram_main(argv)
        assert info.value.code == 0
        assert "usage: textebm ngram" in capsys.readouterr().out


# ---------------------------------------------------------------------------
# glibc's log10f (what lmplz writes), emulated bit for bit
# ---------------------------------------------------------------------------


def _libm_log10f():
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not a glibc system")
    try:
        libm = ctypes.CDLL("libm.so.6")
    except OSError as exc:
        pytest.skip(f"cannot load libm: {exc}")
    fn = libm.log10f
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return fn


def test_log10f_matches_glibc_bit_for_bit():
    libm_log10f = _libm_log10f()
    rng = np.random.default_rng(7)
    specials = np.float32([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 0.1, 0.5, 2.0, 10.0,
                           np.finfo(np.float32).max, np.finfo(np.float32).tiny])
    one = np.float32(1.0)
    near_one = np.concatenate([np.nextafter(np.full(300, one), np.float32(0)),
                               np.nextafter(np.full(300, one), np.float32(2))])
    near_one = one + (near_one - one) * np.arange(1, 601, dtype=np.float32)  # k ulps from 1
    powers = np.ldexp(np.float32(1.0), np.arange(-149, 128)).astype(np.float32)
    subnormal = rng.integers(1, 1 << 23, 1000).astype(np.uint32).view(np.float32)
    any_bits = rng.integers(0, 1 << 32, 3000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    unit = rng.random(15000, dtype=np.float32)  # probabilities and backoffs
    x = np.concatenate([specials, near_one, powers, subnormal, any_bits, unit]).astype(np.float32)
    want = np.array([libm_log10f(float(v)) for v in x.tolist()], dtype=np.float32)
    got = log10f(x)
    bad = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
    assert len(bad) == 0, [(float(x[i]), float(got[i]), float(want[i])) for i in bad[:5]]
    assert got.dtype == np.float32 and log10f(x.reshape(2, -1)).shape == (2, len(x) // 2)


# ---------------------------------------------------------------------------
# agreement with lmplz (skipped only when lmplz is not installed)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("order", [3, 5])
def test_builtin_matches_lmplz(tmp_path, corpus, order):
    exe = lmplz_or_skip()
    train_path, test_path = corpus
    ref = train_lmplz(order, train_path, tmp_path / "lmplz.arpa", lmplz=exe)
    mine = train_builtin(order, train_path, tmp_path / "builtin.arpa")
    worst = assert_arpa_close(ref, mine, tol=1e-4)
    assert worst <= 1e-6  # same float32 numbers
    a = perplexity(ref, test_path)
    b = perplexity(mine, test_path)
    assert a["oov"] == b["oov"] > 0
    for key in ("ppl", "ppl_no_eos"):
        rel = abs(a[key] - b[key]) / a[key]
        assert rel < 5e-3, (key, a[key], b[key])
        assert rel < 1e-6, (key, a[key], b[key])


@pytest.mark.parametrize("name", sorted(DEGENERATE))
def test_degenerate_corpora_match_lmplz(tmp_path, name):
    exe = lmplz_or_skip()
    text = write_lines(tmp_path / "t.txt", DEGENERATE[name], trailing_newline=False)
    for order in (2, 3, 5):
        ref = train_lmplz(order, text, tmp_path / f"l{order}.arpa", lmplz=exe)
        mine = train_builtin(order, text, tmp_path / f"b{order}.arpa")
        assert sorted(ref.read_text().splitlines()) == sorted(mine.read_text().splitlines())


def test_train_auto_uses_lmplz(tmp_path, monkeypatch):
    exe = lmplz_or_skip()
    monkeypatch.setenv("TEXTEBM_LMPLZ", str(exe))
    res = train(3, ["a b c", "a b", "c b a"], tmp_path / "m.arpa")
    assert res.estimator_used == "lmplz" and res.fallback_reason is None
    assert os.path.getsize(res.path) > 0


# ---- ARPA headers are checked before kenlm sees them ----------------------------------------------------------
@pytest.mark.parametrize("header, words", [
    ("ngram 2=-5", "non-negative integer"), ("ngram 2=99999999999", "more than its"),
    ("ngram 3=6", "the orders must be 1, 2"), ("ngram 2=abc", "non-negative integer")])
def test_a_bad_arpa_header_is_one_line_not_a_crash(tmp_path, header, words):
    """Row 13: ``ngram 2=-5`` in the header made `textebm ngram ppl` die of a segmentation fault (exit 139), and a
    huge count makes KenLM allocate whatever it asks for."""
    import subprocess
    import sys

    from conftest import ROOT, assert_one_line_error

    good = train_builtin(2, ["a b", "b a"], tmp_path / "ok.arpa")
    bad = tmp_path / "bad.arpa"
    bad.write_text(good.read_text().replace("ngram 2=6", header))
    text = write_lines(tmp_path / "t.txt", ["a b"])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "textebm", "ngram", "ppl", str(bad), str(text)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert_one_line_error(p, str(bad), words)


def test_kenlms_whole_reason_is_kept_on_the_one_line(tmp_path):
    """Row 18: only the first line of the error reached the user, without kenlm's reason."""
    good = train_builtin(2, ["a b", "b a"], tmp_path / "ok.arpa")
    bad = tmp_path / "bad.arpa"
    bad.write_text(good.read_text().replace("ngram 2=6", "ngram 2=5"))
    text = write_lines(tmp_path / "t.txt", ["a b"])
    with pytest.raises(ModelFormatError) as info:
        ngram_main(["ppl", str(bad), str(text)])
    first = str(info.value).splitlines()[0]
    assert "not an ARPA or KenLM binary model" in first and "kenlm:" in first and "\\end\\" in first, first
