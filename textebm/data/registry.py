"""Named corpora and the one entry point ``load_corpus(name_or_path, data_dir=None, **options)``.

``name_or_path`` is ``grammar`` (the corpus bundled in ``data/grammar``), a benchmark (``ptb``, ``snli``,
``yahoo``; :mod:`.benchmarks`), or a local directory / file (:mod:`.corpus`). Unknown options of a loader are a
:class:`~textebm.data.corpus.CorpusError` that lists the valid ones.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Callable, Dict, Optional

from .benchmarks import load_ptb, load_snli, load_yahoo
from .corpus import SPLITS, Corpus, CorpusError, load_local_dir, load_local_file, repo_data_dir


def load_grammar(data_dir: Optional[str] = None, lower: bool = False, max_words: Optional[int] = None,
                 over_cap: str = "drop", bad_bytes: str = "error") -> Corpus:
    """The grammar corpus: from ``data_dir`` when given (it must hold train/valid/test files), else the bundled copy.

    The bundled copy is ``data/grammar`` beside the package (or ``$TEXTEBM_DATA/grammar``); only when those files
    are absent (an installed package without its data) is it regenerated, byte for byte, from its seed into the
    user cache. A ``data_dir`` is never replaced by anything else: missing, empty or incomplete is an error.
    The other options go to :func:`read_lines`.
    """
    options = dict(lower=lower, max_words=max_words, over_cap=over_cap, bad_bytes=bad_bytes)
    if data_dir:
        directory = Path(data_dir).expanduser()
        if not directory.is_dir():
            what = "is a file, not a directory" if directory.exists() else "not found"
            raise CorpusError(f"grammar corpus: data directory {what}: {directory} (expected train.txt, valid.txt "
                              f"and test.txt in it; leave --data-dir out to use the bundled corpus)")
        return load_local_dir(directory, name="grammar", **options)
    directory = repo_data_dir() / "grammar"
    if not all((directory / f"{split}.txt").is_file() for split in SPLITS):
        from .grammar_corpus import generate_corpus

        cache = Path(os.environ.get("TEXTEBM_CACHE", Path.home() / ".cache" / "textebm")) / "grammar"
        if not all((cache / f"{split}.txt").is_file() for split in SPLITS):
            _regenerate(cache, generate_corpus)
        directory = cache
    return load_local_dir(directory, name="grammar", **options)


def _regenerate(cache: Path, generate_corpus) -> None:
    """The grammar corpus regenerated into ``cache`` (a wheel install has no ``data/``): written into a scratch
    folder, then each file moved into place by the atomic writer, the splits last, so a crash or a second process
    never leaves a half-written split behind."""
    import shutil
    import tempfile

    from ..files import atomic_write

    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".grammar-", dir=cache.parent) as tmp:
        generate_corpus(tmp, seed=0)
        names = sorted(p.name for p in Path(tmp).iterdir())
        for name in sorted(names, key=lambda n: n in {f"{s}.txt" for s in SPLITS}):
            atomic_write(cache / name, lambda dst, src=Path(tmp) / name: shutil.copyfile(src, dst))


#: name -> loader(data_dir=None, **options) -> Corpus
CORPORA: Dict[str, Callable[..., Corpus]] = {"grammar": load_grammar, "ptb": load_ptb, "snli": load_snli,
                                             "yahoo": load_yahoo}


def _call_with_options(loader: Callable[..., Corpus], what: str, *args, **kwargs) -> Corpus:
    """Call a loader, turning unknown options into a CorpusError that lists the valid ones."""
    try:
        sig = inspect.signature(loader)
    except (TypeError, ValueError):
        sig = None
    if sig is not None and not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        try:
            sig.bind(*args, **kwargs)
        except TypeError as e:
            valid = [n for n, p in sig.parameters.items()
                     if n not in ("data_dir", "directory", "path") and p.kind is not p.VAR_POSITIONAL]
            raise CorpusError(f"{what}: {e}; valid data.options are: {', '.join(valid) or '(none)'}") from None
    return loader(*args, **kwargs)


def load_corpus(name_or_path: str, data_dir: Optional[str] = None, **options) -> Corpus:
    """Load a corpus by name (``grammar``, benchmark names in :data:`CORPORA`) or from a local path.

    ``options`` are the loader's keyword options (``data.options`` in a recipe); for a local directory or file
    they are :func:`read_lines` options (``max_words``, ``over_cap``, ``bad_bytes``, ``lower``).
    """
    if name_or_path in CORPORA:
        return _call_with_options(CORPORA[name_or_path], f"corpus {name_or_path!r}", data_dir=data_dir, **options)
    if data_dir:
        raise CorpusError(f"data.data_dir ({data_dir}) is only read for the named corpora {sorted(CORPORA)}; "
                          f"data.corpus {name_or_path!r} is a path already: put the files there, or leave data_dir out")
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return _call_with_options(load_local_dir, f"corpus directory {p}", p, **options)
    if p.is_file():
        return _call_with_options(load_local_file, f"corpus file {p}", p, **options)
    raise CorpusError(f"unknown corpus {name_or_path!r}: not one of {sorted(CORPORA)} and not an existing "
                      f"file or directory")
