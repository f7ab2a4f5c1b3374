"""Corpora (PTB, SNLI, Yahoo; local files and the Hub path), tokenizers, padding and bad input.

Everything runs offline on small files written here; the Hub path is exercised with offline mode forced (the
error a user sees) and with ``datasets.load_dataset`` replaced by in-memory ``datasets.Dataset`` objects (the
preprocessing of each benchmark).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from textebm.data import CORPORA, CorpusError, WordVocab, load_corpus, load_tokenizer, pad_batch
from textebm.data import benchmarks as B
from textebm.data.corpus import read_lines
from textebm.data import encode_sentences

from conftest import ROOT


WORDS = ("the market fell N points as investors sold shares of the company <unk> said on monday "
         "a new plan for the bank was approved by the board").split()


def ptb_lines(n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [" " + " ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) + " " for _ in range(n)]


def write_split_files(directory: Path, prefix: str, splits: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split, lines in splits.items():
        (directory / f"{prefix}{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


@pytest.fixture
def ptb_dir(tmp_path) -> Path:
    return write_split_files(tmp_path / "ptb", "ptb.", {"train": ptb_lines(60, 0), "valid": ptb_lines(12, 1),
                                                        "test": ptb_lines(12, 2)})


@pytest.fixture
def no_default_data(tmp_path, monkeypatch):
    """No bundled copy of any benchmark: the default data directory is empty."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("TEXTEBM_DATA", str(empty))
    return empty


@pytest.fixture
def offline(monkeypatch):
    """Hub offline mode, also when ``datasets`` was imported before the variables were set."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True, raising=False)
    return datasets


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace ``datasets.load_dataset`` with in-memory splits; returns the dict to fill and the call log."""
    datasets = pytest.importorskip("datasets")
    tables, calls = {}, []

    def load_dataset(name, config=None, **kwargs):
        calls.append((name, config))
        return datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in tables.items()})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return tables, calls


# ---- registry -------------------------------------------------------------------------------------------
def test_benchmarks_are_registered():
    assert {"grammar", "ptb", "snli", "yahoo"} <= set(CORPORA)


def test_unknown_option_lists_valid_ones(ptb_dir):
    with pytest.raises(CorpusError, match="valid data.options are: .*source"):
        load_corpus("ptb", data_dir=str(ptb_dir), no_such_option=1)


# ---- PTB ------------------------------------------------------------------------------------------------
def test_ptb_local_kept_as_distributed(ptb_dir):
    c = load_corpus("ptb", data_dir=str(ptb_dir))
    assert (len(c.train), len(c.valid), len(c.test)) == (60, 12, 12)
    assert c.train[0] == " ".join(ptb_lines(60, 0)[0].split())  # only the outer spaces go
    assert any("<unk>" in s.split() for s in c.train) and any("N" in s.split() for s in c.train)
    vocab = WordVocab.build(c.train)
    ids = vocab.encode("the <unk> said N")
    assert ids[2] == vocab.unk_id and vocab.itos[ids[4]] == "N"
    assert vocab.decode(ids) == "the <unk> said N"


def test_ptb_plain_split_names(tmp_path):
    d = write_split_files(tmp_path / "p", "", {"train": ptb_lines(10, 0), "valid": ptb_lines(3, 1),
                                               "test": ptb_lines(3, 2)})
    c = load_corpus("ptb", data_dir=str(d))
    assert (len(c.train), len(c.valid), len(c.test)) == (10, 3, 3)


def test_ptb_default_dir_is_used_without_data_dir(tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_split_files(root / "ptb", "ptb.", {"train": ptb_lines(5, 0), "valid": ptb_lines(2, 1),
                                             "test": ptb_lines(2, 2)})
    monkeypatch.setenv("TEXTEBM_DATA", str(root))
    assert len(load_corpus("ptb").train) == 5


def test_ptb_hub_path(fake_hub, no_default_data):
    tables, calls = fake_hub
    tables.update(train={"sentence": [" a b <unk> ", " c N d ", "   "]}, validation={"sentence": [" a c "]},
                  test={"sentence": [" d <unk> "]})
    c = load_corpus("ptb")
    assert calls == [("ptb_text_only", None)]
    assert c.train == ["a b <unk>", "c N d"] and c.valid == ["a c"] and c.test == ["d <unk>"]
    assert c.stats["blank_lines:ptb.train"] == 1


# ---- SNLI -----------------------------------------------------------------------------------------------
def test_snli_local_cap_counted(tmp_path):
    long = " ".join(["word"] * 16)
    d = write_split_files(tmp_path / "snli", "snli.", {
        "train": ["a man is playing a guitar .", long, "two dogs run ."],
        "valid": ["a woman sleeps ."], "test": ["kids play outside ."]})
    c = load_corpus("snli", data_dir=str(d))
    assert c.train == ["a man is playing a guitar .", "two dogs run ."]
    assert c.stats["over_cap:snli.train.txt"] == 1
    assert len(load_corpus("snli", data_dir=str(d), max_words=None).train) == 3


def test_simple_tokenizer():
    assert B.simple_tokenize("A man's dog, running (fast)!") == ["a", "man's", "dog", ",", "running", "(",
                                                                 "fast", ")", "!"]
    assert B.simple_tokenize("An X-ray.", lower=False) == ["An", "X-ray", "."]


def test_snli_hub_path(fake_hub, no_default_data):
    tables, calls = fake_hub
    prem = "A man, in a red shirt, is playing."
    long = "One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen."
    tables.update(
        train={"premise": [prem, prem, prem], "hypothesis": ["A man plays.", "Nobody is playing.", long],
               "label": [0, 2, 1]},
        validation={"premise": ["Dogs run."], "hypothesis": ["Animals move."], "label": [0]},
        test={"premise": ["Kids eat."], "hypothesis": [""], "label": [-1]})
    c = load_corpus("snli")
    assert calls == [("stanfordnlp/snli", None)]
    assert c.train == ["a man , in a red shirt , is playing .", "a man plays .", "nobody is playing ."]
    assert c.stats["duplicates:snli.train"] == 2 and c.stats["over_cap:snli.train"] == 1
    assert c.valid == ["dogs run .", "animals move ."] and c.test == ["kids eat ."]
    assert c.stats["empty:snli.test"] == 1


# ---- Yahoo ----------------------------------------------------------------------------------------------
def test_yahoo_local_truncates_and_counts(tmp_path):
    d = write_split_files(tmp_path / "yahoo", "yahoo.", {
        "train": [" ".join(f"w{i}" for i in range(210)), "short document here ."],
        "valid": ["another one ."], "test": ["last one ."]})
    c = load_corpus("yahoo", data_dir=str(d))
    assert len(c.train[0].split()) == 200 and c.train[0].split()[-1] == "w199"
    assert c.stats["over_cap:yahoo.train.txt"] == 1


def test_yahoo_hub_path_reproducible_sample(fake_hub, no_default_data):
    tables, calls = fake_hub
    n = 50
    train_answers = [f"Answer number {i} &amp; more<br />text\\nhere" for i in range(n)]
    train_answers[3] = ""
    train_answers[7] = " ".join(["long"] * 30)
    tables.update(train={"question_title": ["q"] * n, "question_content": [""] * n, "best_answer": train_answers},
                  test={"question_title": ["q"] * 20, "question_content": [""] * 20,
                        "best_answer": [f"Test answer {i}" for i in range(20)]})
    opts = dict(n_train=30, n_valid=10, n_test=5, max_words=20, seed=3)
    c1 = load_corpus("yahoo", **opts)
    c2 = load_corpus("yahoo", **opts)
    assert calls[0] == ("community-datasets/yahoo_answers_topics", None)
    assert (len(c1.train), len(c1.valid), len(c1.test)) == (30, 10, 5)
    assert (c1.train, c1.valid, c1.test) == (c2.train, c2.valid, c2.test)
    assert not set(c1.train) & set(c1.valid)
    doc = next(s for s in c1.train + c1.valid if s.startswith("answer number"))
    assert doc.split()[3:] == ["&", "more", "text", "here"]  # HTML unescaped, tags and "\n" removed
    assert c1.train != load_corpus("yahoo", **{**opts, "seed": 4}).train
    with pytest.raises(CorpusError, match="too few"):
        load_corpus("yahoo", n_train=100, n_valid=10, n_test=5)


# ---- Hub unreachable / datasets missing -----------------------------------------------------------------
@pytest.mark.parametrize("name,files", [("ptb", "ptb.train.txt, ptb.valid.txt, ptb.test.txt"),
                                        ("snli", "snli.train.txt"), ("yahoo", "yahoo.train.txt")])
def test_offline_without_local_copy_says_what_to_put_where(name, files, offline, no_default_data):
    with pytest.raises(CorpusError) as e:
        load_corpus(name)
    msg = str(e.value)
    assert "no local copy" in msg and "offline" in msg
    assert files in msg and "--data-dir DIR" in msg and str(no_default_data / name) in msg


def test_missing_datasets_package(monkeypatch, no_default_data):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(CorpusError, match=r"datasets, which is not installed.*textebm\[text\].*ptb.train.txt"):
        load_corpus("ptb")


def test_bad_source_option(ptb_dir):
    with pytest.raises(CorpusError, match="source must be"):
        load_corpus("ptb", data_dir=str(ptb_dir), source="ftp")


# ---- bad input ------------------------------------------------------------------------------------------
def test_missing_split_is_named(tmp_path):
    d = write_split_files(tmp_path / "ptb", "ptb.", {"train": ptb_lines(5, 0), "test": ptb_lines(2, 1)})
    with pytest.raises(CorpusError, match=r"PTB: .* lacks the split\(s\): valid \(a file named ptb.valid.txt"):
        load_corpus("ptb", data_dir=str(d))


def test_missing_data_dir(tmp_path):
    with pytest.raises(CorpusError, match="PTB: corpus directory not found.*ptb.train.txt"):
        load_corpus("ptb", data_dir=str(tmp_path / "nowhere"))


def test_empty_and_blank_only_files(ptb_dir):
    (ptb_dir / "ptb.valid.txt").write_text("")
    with pytest.raises(CorpusError, match="ptb.valid.txt holds no sentences"):
        load_corpus("ptb", data_dir=str(ptb_dir))
    (ptb_dir / "ptb.valid.txt").write_text("\n   \n\t\n")
    with pytest.raises(CorpusError, match="ptb.valid.txt holds no sentences .*only blank lines"):
        load_corpus("ptb", data_dir=str(ptb_dir))


def test_blank_lines_counted(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("\ufeffone two\n\n  \nthree\n", encoding="utf-8")  # a byte-order mark is ignored
    stats = {}
    assert read_lines(p, stats) == ["one two", "three"]
    assert stats == {"blank_lines:a.txt": 2}


def test_non_utf8_error_names_line_or_skips(ptb_dir):
    (ptb_dir / "ptb.test.txt").write_bytes(b"good line\nbad \xff\xfe line\nanother good one\n")
    with pytest.raises(CorpusError, match=r"ptb.test.txt is not UTF-8 text \(line 2"):
        load_corpus("ptb", data_dir=str(ptb_dir))
    c = load_corpus("ptb", data_dir=str(ptb_dir), bad_bytes="skip")
    assert c.test == ["good line", "another good one"]
    assert c.stats["undecodable_lines:ptb.test.txt"] == 1


def test_all_lines_over_cap(tmp_path):
    d = write_split_files(tmp_path / "s", "", {"train": ["a b c"], "valid": [" ".join("x" * 20)],
                                               "test": ["a"]})
    with pytest.raises(CorpusError, match="all 1 sentence.*longer than max_words=15"):
        load_corpus("snli", data_dir=str(d))


def test_local_path_options(tmp_path):
    d = write_split_files(tmp_path / "mine", "", {"train": ["a b c d", "a b"], "valid": ["a"], "test": ["b"]})
    c = load_corpus(str(d), max_words=3)
    assert c.train == ["a b"] and c.stats["over_cap:train.txt"] == 1
    with pytest.raises(CorpusError, match="valid data.options are"):
        load_corpus(str(d), nope=True)


# ---- tokenizers -----------------------------------------------------------------------------------------
def test_wordvocab_round_trip_and_unknowns(tmp_path):
    train = ["the cat sat", "the dog ran", "a cat ran"]
    v = WordVocab.build(train)
    for s in train:
        ids = v.encode(s)
        assert ids[0] == v.bos_id and ids[-1] == v.eos_id and v.decode(ids) == s
    assert v.encode("the zebra sat")[2] == v.unk_id
    assert v.decode(v.encode("the zebra sat")) == "the <unk> sat"
    v.save(tmp_path)
    assert load_tokenizer(tmp_path).itos == v.itos


@pytest.fixture(scope="module")
def spm_train():
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) for _ in range(300)]


def test_sentencepiece_round_trip(spm_train, tmp_path):
    from textebm.data.spm import SentencePieceTokenizer

    tok = SentencePieceTokenizer.train(spm_train, vocab_size=40)
    assert len(tok) == 40 and tok.kind == "sentencepiece"
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    for s in spm_train[:50]:
        ids = tok.encode(s)
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and tok.pad_id not in ids
        assert tok.decode(ids) == s
    assert tok.decode([0, 0] + tok.encode("the market") + [0]) == "the market"
    # a literal <unk> word and unseen characters map to <unk>
    ids = tok.encode("the <unk> fell")
    assert ids.count(tok.unk_id) == 1 and tok.decode(ids) == "the <unk> fell"
    assert tok.unk_id in tok.encode("the \u00e9\u00e9\u00e9")
    # saved and loaded through the run-directory dispatcher
    tok.save(tmp_path)
    assert (tmp_path / "spm.model").exists() and (tmp_path / "spm.json").exists()
    back = load_tokenizer(tmp_path)
    assert type(back) is SentencePieceTokenizer and back.encode(spm_train[0]) == tok.encode(spm_train[0])


def test_sentencepiece_deterministic_and_size_error(spm_train, tmp_path):
    from textebm.data.spm import SentencePieceTokenizer

    a = SentencePieceTokenizer.train(spm_train, vocab_size=36, directory=tmp_path / "a")
    b = SentencePieceTokenizer.train(spm_train, vocab_size=36)
    assert a.proto == b.proto and (tmp_path / "a" / "spm.model").read_bytes() == a.proto
    with pytest.raises(ValueError, match="too large .*hard_vocab_limit=False"):
        SentencePieceTokenizer.train(spm_train, vocab_size=5000)
    soft = SentencePieceTokenizer.train(spm_train, vocab_size=5000, hard_vocab_limit=False)
    assert 4 < len(soft) < 5000


def test_recipe_builds_a_sentencepiece_tokenizer(spm_train, tmp_path):
    from textebm.config import Recipe, apply_overrides
    from textebm.data.spm import SentencePieceTokenizer
    from textebm.data import build_tokenizer

    r = apply_overrides(Recipe(), ["data.tokenizer=sentencepiece", "data.spm_vocab_size=36"])
    tok = build_tokenizer(r, spm_train)
    assert isinstance(tok, SentencePieceTokenizer) and len(tok) == 36
    assert not any(tmp_path.iterdir())  # nothing is written until the run saves it
    tok.save(tmp_path)
    assert load_tokenizer(tmp_path).encode(spm_train[1]) == tok.encode(spm_train[1])
    ids, st = encode_sentences(spm_train[:20], tok, max_len=5, policy="truncate")
    assert all(len(x) <= 7 for x in ids) and st["truncated"] > 0


# ---- batching and length handling -----------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["fused", "unrolled"])
def test_padding_never_enters_the_likelihood(impl):
    from textebm.decoders import LSTMDecoder

    torch.manual_seed(0)
    dec = LSTMDecoder(vocab_size=30, latent_dim=6, embed_dim=12, hidden_dim=20, impl=impl).eval()
    g = torch.Generator().manual_seed(1)
    seqs = [[2] + torch.randint(4, 30, (n,), generator=g).tolist() + [3] for n in (1, 5, 11, 3)]
    x = pad_batch(seqs, pad_id=dec.pad_id)
    assert (x == dec.pad_id).any()
    z = torch.randn(len(seqs), 6, generator=g)
    with torch.no_grad():
        batched = dec.log_prob(x, z)
        single = torch.stack([dec.log_prob(torch.tensor([s]), z[i:i + 1])[0] for i, s in enumerate(seqs)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    assert bool((batched < 0).all())


def test_encode_sentences_truncates_or_drops_and_counts():
    v = WordVocab.build(["a b c d e f"])
    sents = ["a b", "a b c d e f", "a b c"]
    ids, st = encode_sentences(sents, v, max_len=3, policy="truncate")
    assert st == {"truncated": 1, "dropped": 0}
    assert [len(s) for s in ids] == [4, 5, 5] and v.decode(ids[1]) == "a b c"
    ids, st = encode_sentences(sents, v, max_len=3, policy="drop")
    assert st == {"truncated": 0, "dropped": 1} and [v.decode(s) for s in ids] == ["a b", "a b c"]


# ---- the recipes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ptb", "snli", "yahoo"])
def test_recipes_load_with_paper_sizes(name):
    from textebm.config import load_recipe

    r = load_recipe(ROOT / "textebm" / "recipes" / f"{name}.yaml")
    sizes = {"ptb": (128, 512), "snli": (256, 256), "yahoo": (512, 1024)}[name]
    assert (r.model.embed_dim, r.model.hidden_dim) == sizes and r.model.latent_dim == 32
    assert (r.sampling.prior_steps, r.sampling.prior_step_size) == (60, 0.4)
    s = r.sampling  # the paper's K1, with the step-size schedule and noise of docs/latent.md
    assert (s.posterior_steps, s.posterior_schedule, s.posterior_step_size, s.posterior_step_size_end,
            s.posterior_noise) == (20, "linear", 0.8, 0.05, 0.3)
    assert (r.prior.hidden, r.prior.n_layers, r.prior.negative_slope) == (200, 2, 0.2)
    assert r.train.steps == 40000 and r.train.batch_size == 32 and r.data.corpus == name


def test_ptb_recipe_trains_from_data_dir(ptb_dir, tmp_path, capsys):
    from textebm.cli import main

    out = tmp_path / "run"
    rc = main(["train", "ptb", "--data-dir", str(ptb_dir), "--out", str(out),
               "--no-progress", "--device", "cpu", "--set", "train.steps=2", "--set", "train.batch_size=8",
               "--set", "train.eval_every=2", "--set", "train.eval_batches=1", "--set", "train.save_every=2",
               "--set", "sampling.prior_steps=3", "--set", "sampling.posterior_steps=3"])
    assert rc == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert '"corpus": "ptb"' in err and '"train_truncated": 0' in err
    assert (out / "vocab.json").exists() and (out / "metrics.jsonl").exists()


def test_train_reports_missing_data_dir_cleanly(tmp_path, capsys):
    from textebm.cli import main

    rc = main(["train", "ptb", "--data-dir", str(tmp_path / "nope"),
               "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 2
    assert "textebm: error: PTB: corpus directory not found" in capsys.readouterr().err


def test_lines_end_at_newline_only_in_training_and_in_ngram_ppl(tmp_path):
    """Row 21: lines holding ``\\f``, ``\\x85`` or U+2028 were split by ``str.splitlines``: 20 lines became 80
    training sentences, while `ngram ppl` counted 20."""
    pytest.importorskip("kenlm")
    from textebm.data.corpus import load_local_dir
    from textebm.eval.ngram import perplexity, train_builtin

    lines = [f"w{i} a\fb c\x85d e\u2028f g" for i in range(20)]
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    corpus = load_local_dir(tmp_path)
    assert len(corpus.train) == len(corpus.test) == 20
    arpa = train_builtin(2, corpus.train, tmp_path / "m.arpa")
    assert perplexity(arpa, tmp_path / "test.txt")["sentences"] == len(corpus.test)
