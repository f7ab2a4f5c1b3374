"""Corpus conventions shared by both estimators and the scorer.

One sentence per line, tokens separated by spaces, tabs, carriage returns or
NUL bytes, an empty line is a sentence with no words, and the literal tokens
``<s>``, ``</s>`` and ``<unk>`` in training text are dropped (``lmplz
--skip_symbols``).  A final line without a trailing newline is still a
sentence.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]
SentencesOrPath = Union[PathLike, Sequence[str]]

#: Highest n-gram order KenLM loads (its default ``KENLM_MAX_ORDER``, which
#: the ``kenlm`` module and :func:`install_lmplz`'s build use).
MAX_ORDER = 6

#: Word ids of the special tokens; other words follow in order of first appearance.
UNK, BOS, EOS = 0, 1, 2
SPECIAL_WORDS = ("<unk>", "<s>", "</s>")

_DELIMS = bytes.maketrans(b"\t\r\x00", b"   ")


def is_sentence_list(x) -> bool:
    """True for an iterable of sentences, False for a path."""
    return not isinstance(x, (str, bytes, os.PathLike)) and isinstance(x, Iterable)


def check_order(order) -> int:
    """``order`` as an int; ValueError unless it is an integer in [1, MAX_ORDER]."""
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
        raise ValueError(f"n-gram order must be an integer, got {order!r}")
    if order < 1:
        raise ValueError(f"n-gram order must be >= 1, got {order}")
    if order > MAX_ORDER:
        raise ValueError(f"n-gram order must be <= {MAX_ORDER} (the highest order KenLM "
                         f"supports), got {order}")
    return int(order)


def require_file(path: PathLike, what: str) -> Path:
    """``path`` as a Path; FileNotFoundError ``"<what> not found: <path>"``
    unless it is an existing regular file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_training_bytes(source: SentencesOrPath) -> tuple[bytes, str]:
    """Corpus as newline-terminated bytes, plus a name for messages."""
    if is_sentence_list(source):
        lines = [str(s).replace("\n", " ") for s in source]
        data = "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")
        name = "<sentences>"
    else:
        from ...files import read_regular

        path = require_file(source, "training text")
        data = read_regular(path, "training text")
        name = str(path)
        try:  # the n-gram model is scored on UTF-8 text (perplexity); so is it trained
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"training text is not UTF-8: {path} (byte offset {exc.start})") from None
        if data and not data.endswith(b"\n"):
            data += b"\n"
    return data, name


def has_words(data: bytes) -> bool:
    """True if the corpus has at least one token other than the specials."""
    specials = (b"<s>", b"</s>", b"<unk>")
    return any(w not in specials for w in data.translate(_DELIMS).split())


def encode(data: bytes) -> tuple[np.ndarray, list[bytes]]:
    """Token ids (with ``</s>`` = 2 ending each line) and the word list.

    Ids: 0 ``<unk>``, 1 ``<s>``, 2 ``</s>``, then words in order of first
    appearance.  Literal special tokens are dropped (``--skip_symbols``).
    """
    parts = data.translate(_DELIMS).replace(b"\n", b" \n ").split(b" ")
    types = dict.fromkeys(filter(None, parts))  # unique tokens, first-seen order
    mapping = {b"\n": EOS, b"<s>": -1, b"</s>": -1, b"<unk>": -1}
    words = [t for t in types if t not in mapping]
    mapping.update(zip(words, range(3, 3 + len(words))))
    ids = np.fromiter(map(mapping.__getitem__, filter(None, parts)), dtype=np.int64)
    return ids[ids >= 0], words
