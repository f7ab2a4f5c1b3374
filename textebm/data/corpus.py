"""Corpora: named benchmarks and local text files, each as train / valid / test lists of sentences.

A sentence is one line of whitespace-separated tokens. ``load_corpus(name_or_path, data_dir=None)`` resolves
``grammar`` (the corpus bundled in ``data/grammar``), a named benchmark (see :data:`CORPORA`), or any local
directory holding ``train.txt``, ``valid.txt``, ``test.txt`` (or a single file, split deterministically).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

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


def read_lines(path, stats: Optional[dict] = None, lower: bool = False) -> List[str]:
    """Read one sentence per line (UTF-8); blank lines are skipped and counted in ``stats['blank_lines']``."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"file not found: {path}")
    if path.is_dir():
        raise CorpusError(f"expected a text file, got a directory: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 4]!r}); "
                          f"convert it with iconv or save it as UTF-8") from None
    lines, blank = [], 0
    for line in text.splitlines():
        s = " ".join(line.split())
        if not s:
            blank += 1
            continue
        lines.append(s.lower() if lower else s)
    if stats is not None:
        stats[f"blank_lines:{path.name}"] = blank
    if not lines:
        raise CorpusError(f"{path} holds no sentences (the file is empty or has only blank lines)")
    return lines


def repo_data_dir() -> Path:
    """The bundled data directory: $TEXTEBM_DATA, else ``data/`` beside the package in a source checkout."""
    env = os.environ.get("TEXTEBM_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def _find_split(directory: Path, split: str, exts=(".txt",), prefixes=("",)) -> Optional[Path]:
    for alias in SPLIT_ALIASES[split]:
        for pre in prefixes:
            for ext in exts:
                p = directory / f"{pre}{alias}{ext}"
                if p.exists():
                    return p
    return None


def load_local_dir(directory, name: Optional[str] = None, prefixes=("",), lower: bool = False) -> Corpus:
    """train/valid/test text files in one directory (``valid`` may also be ``validation``, ``val``, ``dev``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CorpusError(f"corpus directory not found: {directory}")
    stats: dict = {}
    parts = {}
    for split in SPLITS:
        p = _find_split(directory, split, prefixes=prefixes)
        if p is None:
            want = " or ".join(f"{pre}{a}.txt" for pre in prefixes for a in SPLIT_ALIASES[split])
            raise CorpusError(f"{directory} has no {split} split: expected a file named {want}")
        parts[split] = read_lines(p, stats, lower=lower)
    return Corpus(name or directory.name, parts["train"], parts["valid"], parts["test"], stats)


def load_local_file(path, valid_fraction: float = 0.05, test_fraction: float = 0.05, seed: int = 0) -> Corpus:
    """One text file, split into train/valid/test by a seeded permutation."""
    import numpy as np

    lines = read_lines(path)
    n = len(lines)
    if n < 3:
        raise CorpusError(f"{path} has {n} sentence(s); at least 3 are needed to make train/valid/test splits")
    perm = np.random.default_rng(seed).permutation(n)
    n_valid = max(1, int(round(valid_fraction * n)))
    n_test = max(1, int(round(test_fraction * n)))
    pick = lambda idx: [lines[i] for i in sorted(idx)]
    return Corpus(Path(path).stem, pick(perm[n_valid + n_test:]), pick(perm[:n_valid]),
                  pick(perm[n_valid:n_valid + n_test]))


def load_grammar(data_dir: Optional[str] = None, **_) -> Corpus:
    """The bundled grammar corpus (``data/grammar``); regenerated from its seed if the files are absent."""
    directory = Path(data_dir) if data_dir else repo_data_dir() / "grammar"
    if not (directory / "train.txt").exists():
        from .grammar import generate_corpus

        cache = Path(os.environ.get("TEXTEBM_CACHE", Path.home() / ".cache" / "textebm")) / "grammar"
        if not (cache / "train.txt").exists():
            cache.mkdir(parents=True, exist_ok=True)
            generate_corpus(cache, seed=0)
        directory = cache
    return load_local_dir(directory, name="grammar")


#: name -> loader(data_dir=None, **options) -> Corpus
CORPORA: Dict[str, Callable[..., Corpus]] = {"grammar": load_grammar}


def load_corpus(name_or_path: str, data_dir: Optional[str] = None, **options) -> Corpus:
    """Load a corpus by name (``grammar``, benchmark names in :data:`CORPORA`) or from a local path."""
    if name_or_path in CORPORA:
        return CORPORA[name_or_path](data_dir=data_dir, **options)
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return load_local_dir(p)
    if p.is_file():
        return load_local_file(p)
    raise CorpusError(f"unknown corpus {name_or_path!r}: not one of {sorted(CORPORA)} and not an existing "
                      f"file or directory")
