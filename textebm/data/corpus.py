"""Corpora as files: train / valid / test lists of sentences read from local text files.

A sentence is one line of whitespace-separated tokens. :func:`load_local_dir` reads a directory holding
``train.txt``, ``valid.txt``, ``test.txt``; :func:`load_local_file` splits a single file deterministically. Named
corpora (``grammar``, ``ptb``, ...) and :func:`~textebm.data.registry.load_corpus` are in :mod:`.registry`.

Bad input never reaches training: a missing file or split, an empty file, a file with only blank lines and
non-UTF-8 text raise :class:`CorpusError` naming the file and what was expected; blank lines, lines over a
word cap and (with ``bad_bytes="skip"``) undecodable lines are skipped and counted in ``Corpus.stats``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from ..files import read_regular

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"train": ("train",), "valid": ("valid", "validation", "val", "dev"), "test": ("test",)}


class CorpusError(ValueError):
    """A corpus could not be loaded; the message says what to put where."""


@dataclass
class Corpus:
    name: str
    train: List[str]
    valid: List[str]
    test: List[str]
    stats: Dict[str, int] = field(default_factory=dict)

    def split(self, name: str) -> List[str]:
        if name not in SPLITS:
            raise CorpusError(f"unknown split {name!r}; choose one of {SPLITS}")
        return getattr(self, name)


def read_lines(path, stats: Optional[dict] = None, lower: bool = False, max_words: Optional[int] = None,
               over_cap: str = "drop", bad_bytes: str = "error") -> List[str]:
    """Read one sentence per line (UTF-8, an optional byte-order mark is ignored), whitespace normalized.

    Blank lines are skipped and counted in ``stats['blank_lines:<file>']``. With ``max_words``, lines of more
    words are dropped (``over_cap="drop"``) or cut to ``max_words`` words (``"truncate"``) and counted in
    ``stats['over_cap:<file>']``. Bytes that are not UTF-8 raise :class:`CorpusError` naming the line
    (``bad_bytes="error"``), or the lines holding them are skipped and counted in
    ``stats['undecodable_lines:<file>']`` (``bad_bytes="skip"``).
    """
    if over_cap not in ("drop", "truncate"):
        raise CorpusError(f"over_cap must be 'drop' or 'truncate', got {over_cap!r}")
    if bad_bytes not in ("error", "skip"):
        raise CorpusError(f"bad_bytes must be 'error' or 'skip', got {bad_bytes!r}")
    if max_words is not None and (isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1):
        raise CorpusError(f"max_words must be a positive integer or null, got {max_words!r}")
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"file not found: {path}")
    if path.is_dir():
        raise CorpusError(f"expected a text file, got a directory: {path}")
    raw = read_regular(path, "corpus file")
    undecodable = 0
    try:
        raw_lines = _lines(raw.decode("utf-8-sig"), "\n")
    except UnicodeDecodeError as e:
        if bad_bytes == "error":
            line_no = raw[:e.start].count(b"\n") + 1
            raise CorpusError(f"{path} is not UTF-8 text (line {line_no}, byte {e.start}: "
                              f"{raw[e.start:e.start + 4]!r}); convert it with iconv, save it as UTF-8, or pass "
                              f"bad_bytes='skip' (data.options) to skip such lines") from None
        raw_lines = []
        for i, chunk in enumerate(_lines(raw, b"\n")):
            if i == 0 and chunk.startswith(b"\xef\xbb\xbf"):
                chunk = chunk[3:]
            try:
                raw_lines.append(chunk.decode("utf-8"))
            except UnicodeDecodeError:
                undecodable += 1
    lines, blank, capped = [], 0, 0
    for line in raw_lines:
        words = line.split()
        if not words:
            blank += 1
            continue
        if max_words is not None and len(words) > max_words:
            capped += 1
            if over_cap == "drop":
                continue
            words = words[:max_words]
        s = " ".join(words)
        lines.append(s.lower() if lower else s)
    if stats is not None:
        stats[f"blank_lines:{path.name}"] = blank
        if max_words is not None:
            stats[f"over_cap:{path.name}"] = capped
        if bad_bytes == "skip":
            stats[f"undecodable_lines:{path.name}"] = undecodable
    if not lines:
        if capped:
            raise CorpusError(f"{path}: all {capped} sentence(s) are longer than max_words={max_words} words "
                              f"(over_cap={over_cap!r}); raise max_words or set it to null")
        if undecodable:
            raise CorpusError(f"{path} holds no UTF-8 sentences ({undecodable} undecodable line(s) skipped)")
        raise CorpusError(f"{path} holds no sentences (the file is empty or has only blank lines)")
    return lines


def _lines(text, newline):
    """Lines end at ``\\n`` only (``str.splitlines`` would also end them at ``\\f``, ``\\x85``, U+2028 and more,
    turning one line into several sentences, unlike the n-gram tools): a final newline starts no line."""
    lines = text.split(newline)
    if lines and not lines[-1]:
        lines.pop()
    return lines


def repo_data_dir() -> Path:
    """The bundled data directory: $TEXTEBM_DATA, else ``data/`` beside the package in a source checkout."""
    env = os.environ.get("TEXTEBM_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def find_split(directory: Path, split: str, exts=(".txt",), prefixes=("",)) -> Optional[Path]:
    for alias in SPLIT_ALIASES[split]:
        for pre in prefixes:
            for ext in exts:
                p = directory / f"{pre}{alias}{ext}"
                if p.exists():
                    return p
    return None


def load_local_dir(directory, name: Optional[str] = None, prefixes=("",), lower: bool = False,
                   max_words: Optional[int] = None, over_cap: str = "drop", bad_bytes: str = "error") -> Corpus:
    """train/valid/test text files in one directory (``valid`` may also be ``validation``, ``val``, ``dev``).

    ``max_words``, ``over_cap`` and ``bad_bytes`` go to :func:`read_lines` for every split; the counts it
    keeps (blank lines, lines over the cap, undecodable lines) end up in ``Corpus.stats``.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        what = "is a file, not a directory" if directory.exists() else "not found"
        raise CorpusError(f"corpus directory {what}: {directory}")
    stats: dict = {}
    parts = {}
    missing = []
    for split in SPLITS:
        p = find_split(directory, split, prefixes=prefixes)
        if p is None:
            want = " or ".join(f"{pre}{a}.txt" for pre in prefixes for a in SPLIT_ALIASES[split])
            missing.append(f"{split} (a file named {want})")
            continue
        parts[split] = p
    if missing:
        raise CorpusError(f"{directory} lacks the split(s): {'; '.join(missing)}")
    for split, p in parts.items():
        parts[split] = read_lines(p, stats, lower=lower, max_words=max_words, over_cap=over_cap,
                                  bad_bytes=bad_bytes)
    return Corpus(name or directory.name, parts["train"], parts["valid"], parts["test"], stats)


def load_local_file(path, valid_fraction: float = 0.05, test_fraction: float = 0.05, seed: int = 0,
                    lower: bool = False, max_words: Optional[int] = None, over_cap: str = "drop",
                    bad_bytes: str = "error") -> Corpus:
    """One text file, split into train/valid/test by a seeded permutation (options as in :func:`read_lines`)."""
    import numpy as np

    stats: dict = {}
    lines = read_lines(path, stats, lower=lower, max_words=max_words, over_cap=over_cap, bad_bytes=bad_bytes)
    n = len(lines)
    if n < 3:
        raise CorpusError(f"{path} has {n} sentence(s); at least 3 are needed to make train/valid/test splits")
    perm = np.random.default_rng(seed).permutation(n)
    n_valid = max(1, int(round(valid_fraction * n)))
    n_test = max(1, int(round(test_fraction * n)))
    pick = lambda idx: [lines[i] for i in sorted(idx)]
    return Corpus(Path(path).stem, pick(perm[n_valid + n_test:]), pick(perm[:n_valid]),
                  pick(perm[n_valid:n_valid + n_test]), stats)
