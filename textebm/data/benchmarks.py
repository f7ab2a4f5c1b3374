"""The text benchmarks of Pang et al. (2020, Table 2): PTB, SNLI and Yahoo, from local files or the Hugging Face Hub.

Each loader returns a :class:`~textebm.data.corpus.Corpus` with ``train`` / ``valid`` / ``test`` lists of
whitespace-tokenized sentences (documents, for Yahoo) and counts of everything it skipped in ``stats``.

Where the data comes from (``source``):

* ``"local"``: a directory of plain-text files, one sentence (or document) per line, in the format the
  text-VAE literature distributes (``<name>.train.txt`` / ``<name>.valid.txt`` / ``<name>.test.txt`` or
  ``train.txt`` / ``valid.txt`` / ``test.txt``). The directory is ``data_dir`` (``--data-dir``), else
  ``data/<name>`` beside the package (or ``$TEXTEBM_DATA/<name>``).
* ``"hub"``: built from a Hugging Face Hub dataset with :func:`datasets.load_dataset` (downloaded once, then
  read from the ``datasets`` cache, which also works offline).
* ``"auto"`` (default): local when ``data_dir`` is given or the default directory holds the files, else the Hub.

With no local copy and no reachable Hub the loaders raise :class:`CorpusError` saying which files to put where.
``datasets`` is imported only when the Hub is used.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .corpus import SPLITS, Corpus, CorpusError, find_split, load_local_dir, repo_data_dir
from .hub import HUB_SPLITS, column, hub_split, load_hub

#: a word is a run of letters/digits, possibly joined by internal apostrophes or hyphens ("don't", "x-ray");
#: every other non-space character (punctuation, symbols) is a token of its own.
TOKEN_PATTERN = re.compile(r"\w+(?:['\-]\w+)*|[^\w\s]")
_TAG = re.compile(r"<[^>]{0,200}>")


def simple_tokenize(text: str, lower: bool = True) -> List[str]:
    """Regex tokenizer for raw Hub text: words (with internal ``'`` or ``-``) and single punctuation marks.

    ``"A man's dog, running."`` -> ``["a", "man's", "dog", ",", "running", "."]``. Deterministic and dependency-free;
    it is a simplification of PTB-style tokenization (clitics such as ``'s`` stay attached to their word).
    """
    if lower:
        text = text.lower()
    return TOKEN_PATTERN.findall(text)


# ---- where the files are --------------------------------------------------------------------------------
def _local_dir(name: str, data_dir) -> Path:
    return Path(data_dir).expanduser() if data_dir else repo_data_dir() / name


def _has_local_copy(directory: Path, prefixes: Sequence[str]) -> bool:
    return directory.is_dir() and find_split(directory, "train", prefixes=tuple(prefixes)) is not None


def _file_hint(files: str, directory: Path) -> str:
    return f"Put {files} in a directory DIR and pass --data-dir DIR (or put them in {directory})"


def _check_source(source: str) -> None:
    if source not in ("auto", "local", "hub"):
        raise CorpusError(f"source must be 'auto', 'local' or 'hub', got {source!r}")


def _dispatch(name: str, label: str, data_dir, source: str, prefixes: Sequence[str], files: str,
              local_options: dict, build_from_hub) -> Corpus:
    _check_source(source)
    directory = _local_dir(name, data_dir)
    if source == "local" or (source == "auto" and (data_dir or _has_local_copy(directory, prefixes))):
        if not directory.is_dir():
            raise CorpusError(f"{label}: corpus directory not found: {directory}. {_file_hint(files, directory)}")
        try:
            corpus = load_local_dir(directory, name=name, prefixes=tuple(prefixes), **local_options)
        except CorpusError as e:
            raise CorpusError(f"{label}: {e}. Expected {files}") from None
        corpus.stats["source_local"] = 1
        return corpus
    return build_from_hub(_file_hint(files, directory))


def _hub_corpus(name: str, label: str, hub_name: str, hub_config: Optional[str], hint: str,
                sentences: Callable[[object, str, Dict[str, int]], List[str]], after: str) -> Corpus:
    """A corpus from a Hub data set with the three splits: ``sentences(split_data, split, stats)`` reads each one.

    A split left with no sentence is an error (``after`` says what removed them, e.g. a length cap).
    """
    ds = load_hub(label, hub_name, hub_config, hint)
    parts: Dict[str, List[str]] = {}
    stats: Dict[str, int] = {}
    for split in SPLITS:
        parts[split] = sentences(hub_split(ds, split, label, hub_name), split, stats)
        if not parts[split]:
            raise CorpusError(f"{label}: the Hub {HUB_SPLITS[split]!r} split holds no sentences{after}")
    return Corpus(name, parts["train"], parts["valid"], parts["test"], stats)


# ---- PTB ------------------------------------------------------------------------------------------------
def load_ptb(data_dir=None, source: str = "auto", hub_name: str = "ptb_text_only",
             hub_config: Optional[str] = None, max_words: Optional[int] = None, bad_bytes: str = "error") -> Corpus:
    """Penn Treebank, Mikolov et al. (2010) preprocessing: 10k-word vocabulary, ``<unk>`` and ``N`` in the text.

    Local: ``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt`` (or ``train.txt`` / ``valid.txt`` /
    ``test.txt``), one sentence per line as distributed (lines such as ``" aer banknote ... <unk> ... N "``).
    The text is kept as it is: ``<unk>`` stays a word, which every tokenizer maps to its own ``<unk>`` id.

    Hub: ``datasets.load_dataset("ptb_text_only")`` (the dataset now lives at ``ptb-text-only/ptb_text_only``,
    config ``penn_treebank``): field ``sentence``; splits ``train`` (42,068 sentences), ``validation`` (3,370),
    ``test`` (3,761), the same text as Mikolov's files. ``hub_name`` / ``hub_config`` select another copy with
    the same field and splits (e.g. a Parquet mirror when the installed ``datasets`` no longer runs the
    original loading script).

    ``max_words`` (default none) drops longer sentences, counted in ``stats``.
    """
    label = "PTB"
    files = "ptb.train.txt, ptb.valid.txt, ptb.test.txt"

    def sentences(d, split: str, stats: Dict[str, int]) -> List[str]:
        kept, blank, capped = [], 0, 0
        for text in column(d, "sentence", label):
            words = str(text or "").split()
            if not words:
                blank += 1
            elif max_words is not None and len(words) > max_words:
                capped += 1
            else:
                kept.append(" ".join(words))
        stats[f"blank_lines:ptb.{split}"] = blank
        if max_words is not None:
            stats[f"over_cap:ptb.{split}"] = capped
        return kept

    def from_hub(hint: str) -> Corpus:
        return _hub_corpus("ptb", label, hub_name, hub_config, hint, sentences, "")

    return _dispatch("ptb", label, data_dir, source, ("ptb.", ""), files,
                     dict(max_words=max_words, over_cap="drop", bad_bytes=bad_bytes), from_hub)


# ---- SNLI -----------------------------------------------------------------------------------------------
def snli_sentences(pairs: Iterable[Tuple[str, str]], max_words: Optional[int], stats: Dict[str, int],
                   split: str) -> List[str]:
    """Premises and hypotheses of one split as sentences: tokenized, lowercased, de-duplicated, capped.

    Order: premise, hypothesis, next premise, ... with only the first occurrence of each sentence kept (each
    SNLI premise comes with about three hypotheses). Distinct sentences of more than ``max_words`` tokens are
    dropped. Counts go to ``stats``: ``empty:snli.<split>``, ``duplicates:snli.<split>`` (repeats),
    ``over_cap:snli.<split>`` (distinct sentences over the cap).
    """
    seen, out = set(), []
    empty = capped = dup = 0
    for pair in pairs:
        for text in pair:
            words = simple_tokenize(str(text or ""))
            if not words:
                empty += 1
                continue
            s = " ".join(words)
            if s in seen:
                dup += 1
                continue
            seen.add(s)
            if max_words is not None and len(words) > max_words:
                capped += 1
                continue
            out.append(s)
    stats[f"empty:snli.{split}"] = empty
    stats[f"over_cap:snli.{split}"] = capped
    stats[f"duplicates:snli.{split}"] = dup
    return out


def load_snli(data_dir=None, source: str = "auto", max_words: Optional[int] = 15,
              hub_name: str = "stanfordnlp/snli", hub_config: Optional[str] = None,
              bad_bytes: str = "error") -> Corpus:
    """SNLI sentences (Bowman et al. 2015) as a language-modeling corpus.

    Local: ``snli.train.txt`` / ``snli.valid.txt`` / ``snli.test.txt`` (or ``train.txt`` ...), one lowercased,
    tokenized sentence per line, as in the text-VAE literature; ``max_words`` applies to them as well
    (set it to null to keep the files exactly as distributed).

    Hub: ``datasets.load_dataset("stanfordnlp/snli")`` (config ``plain_text``): fields ``premise``,
    ``hypothesis``, ``label`` (0 entailment, 1 neutral, 2 contradiction, -1 no gold label); splits ``train``
    (550,152 pairs), ``validation`` (10,000), ``test`` (10,000). Both premises and hypotheses are used whatever
    the label; each is lowercased and tokenized with :func:`simple_tokenize`, de-duplicated within its split
    (see :func:`snli_sentences`), and sentences of more than ``max_words`` tokens are dropped.

    ``max_words = 15``: the length limit of ARAE's SNLI language-modeling setup (Zhao et al. 2018, sentences
    of at most 15 words), which later SNLI text-generation comparisons commonly reuse; it is this package's
    choice, not a number taken from Pang et al. (2020). SNLI hypotheses average about 8 tokens and premises
    about 14 (Bowman et al. 2015), so the cap keeps nearly all hypotheses and drops the longer premises,
    keeping the LSTM's sequences short. How many were dropped is in ``stats``; change it with
    ``data.options.max_words``.
    """
    label = "SNLI"
    files = "snli.train.txt, snli.valid.txt, snli.test.txt (one sentence per line)"

    def sentences(d, split: str, stats: Dict[str, int]) -> List[str]:
        pairs = zip(column(d, "premise", label), column(d, "hypothesis", label))
        return snli_sentences(pairs, max_words, stats, split)

    def from_hub(hint: str) -> Corpus:
        return _hub_corpus("snli", label, hub_name, hub_config, hint, sentences,
                           f" after the {max_words}-word cap" if max_words is not None else "")

    return _dispatch("snli", label, data_dir, source, ("snli.", ""), files,
                     dict(max_words=max_words, over_cap="drop", bad_bytes=bad_bytes), from_hub)


# ---- Yahoo ----------------------------------------------------------------------------------------------
def clean_yahoo_text(text: str) -> str:
    """Undo the HTML escaping of Yahoo! Answers text and turn tags and literal ``\\n`` into spaces."""
    text = html.unescape(str(text or ""))
    text = text.replace("\\n", " ")
    return _TAG.sub(" ", text)


def sample_documents(n_available: int, fetch, n: int, rng, max_words: Optional[int], stats: Dict[str, int],
                     key: str, chunk: int = 4096) -> List[str]:
    """``n`` documents drawn without replacement in the order of ``rng.permutation(n_available)``.

    ``fetch(indices) -> list of raw texts`` reads them a chunk at a time (a 1.4M-row Hub split is never
    materialized). Each text is cleaned (:func:`clean_yahoo_text`), lowercased, tokenized and cut to
    ``max_words`` tokens (counted in ``stats['over_cap:<key>']``); empty documents are skipped (counted in
    ``stats['empty:<key>']``).
    """
    out, empty, capped = [], 0, 0
    perm = rng.permutation(n_available)
    for start in range(0, n_available, chunk):
        if len(out) >= n:
            break
        for text in fetch([int(i) for i in perm[start:start + chunk]]):
            if len(out) >= n:
                break
            words = simple_tokenize(clean_yahoo_text(text))
            if not words:
                empty += 1
                continue
            if max_words is not None and len(words) > max_words:
                capped += 1
                words = words[:max_words]
            out.append(" ".join(words))
    stats[f"empty:{key}"] = empty
    stats[f"over_cap:{key}"] = capped
    return out


def load_yahoo(data_dir=None, source: str = "auto", max_words: Optional[int] = 200, n_train: int = 100_000,
               n_valid: int = 10_000, n_test: int = 10_000, seed: int = 0,
               fields: Sequence[str] = ("best_answer",),
               hub_name: str = "community-datasets/yahoo_answers_topics", hub_config: Optional[str] = None,
               bad_bytes: str = "error") -> Corpus:
    """Yahoo! Answers documents in the setup of Yang et al. (2017): 100k / 10k / 10k documents of at most 200 tokens.

    Local: ``yahoo.train.txt`` / ``yahoo.valid.txt`` / ``yahoo.test.txt`` (or ``train.txt`` ...), one
    tokenized document per line as Yang et al. (2017) distribute them; documents over ``max_words`` tokens are
    cut to ``max_words`` (counted). The 20k-word vocabulary is the recipe's ``data.max_vocab: 20000``.

    Hub: ``datasets.load_dataset("community-datasets/yahoo_answers_topics")`` (config
    ``yahoo_answers_topics``): fields ``id``, ``topic``, ``question_title``, ``question_content``,
    ``best_answer``; splits ``train`` (1,400,000) and ``test`` (60,000), no validation split. A document is
    the ``best_answer`` text (``fields`` lists the fields joined, in order, into a document; default only
    ``best_answer``): the answers are the running prose of the corpus, while titles and question bodies are
    short and often empty. Text is
    HTML-unescaped, lowercased, tokenized with :func:`simple_tokenize` and cut to ``max_words`` tokens.
    ``n_train + n_valid`` documents are drawn without replacement from ``train`` and ``n_test`` from ``test``,
    in the order of ``numpy.random.default_rng(seed)`` permutations, so the sample is reproducible.
    """
    label = "Yahoo"
    files = "yahoo.train.txt, yahoo.valid.txt, yahoo.test.txt (one document per line)"
    if isinstance(fields, str):
        fields = (fields,)
    for k, v in (("n_train", n_train), ("n_valid", n_valid), ("n_test", n_test)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise CorpusError(f"{label}: {k} must be a positive integer, got {v!r}")

    def from_hub(hint: str) -> Corpus:
        import numpy as np

        ds = load_hub(label, hub_name, hub_config, hint)
        train_ds = hub_split(ds, "train", label, hub_name)
        test_ds = hub_split(ds, "test", label, hub_name)

        for d in (train_ds, test_ds):
            missing = [f for f in fields if f not in getattr(d, "column_names", fields)]
            if missing:
                raise CorpusError(f"{label}: the Hub data has no field {missing[0]!r} "
                                  f"(fields: {d.column_names})")

        def fetcher(d):
            def fetch(indices: List[int]) -> List[str]:
                rows = d[indices]  # a mapping field -> list of values
                if len(fields) == 1:
                    return [str(t or "") for t in rows[fields[0]]]
                return [" ".join(str(c or "") for c in row) for row in zip(*(rows[f] for f in fields))]
            return fetch

        stats: Dict[str, int] = {}
        rng = np.random.default_rng(seed)
        train_valid = sample_documents(len(train_ds), fetcher(train_ds), n_train + n_valid, rng, max_words,
                                       stats, "yahoo.train")
        test = sample_documents(len(test_ds), fetcher(test_ds), n_test, rng, max_words, stats, "yahoo.test")
        if len(train_valid) < n_train + n_valid or len(test) < n_test:
            raise CorpusError(f"{label}: the Hub data has too few non-empty documents for "
                              f"n_train={n_train}, n_valid={n_valid}, n_test={n_test} "
                              f"(found {len(train_valid)} and {len(test)}); lower them in data.options")
        return Corpus("yahoo", train_valid[:n_train], train_valid[n_train:], test, stats)

    return _dispatch("yahoo", label, data_dir, source, ("yahoo.", ""), files,
                     dict(max_words=max_words, over_cap="truncate", bad_bytes=bad_bytes), from_hub)
