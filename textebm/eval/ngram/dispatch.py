"""The :func:`train` dispatcher: lmplz when it is available, else the built-in estimator."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from .corpus import (PathLike, SentencesOrPath, check_order, has_words, is_sentence_list,
                     read_training_bytes, require_file)
from .estimator import train_builtin
from .lmplz import LmplzError, find_lmplz, train_lmplz


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    ``estimator_used`` is ``"lmplz"`` or ``"builtin"``; ``fallback_reason``
    says why the built-in estimator was used when ``estimator="auto"`` could
    not use lmplz (``None`` otherwise).
    """

    estimator_used: str
    path: Path
    fallback_reason: str | None = None


def train(order: int, input: SentencesOrPath, output: PathLike, estimator: str = "auto",
          lmplz: PathLike | None = None) -> TrainResult:
    """Train an ARPA model with lmplz or the built-in estimator.

    ``estimator="auto"`` uses lmplz when it is found and succeeds, else the
    built-in estimator, recording why in ``fallback_reason``.  ``input`` is a
    text file (one sentence per line) or a list of sentences.  Raises
    ValueError for a bad ``order`` or ``estimator`` or a corpus without
    words, FileNotFoundError for a missing input (or a missing lmplz with
    ``estimator="lmplz"``) and :class:`LmplzError` when lmplz fails with
    ``estimator="lmplz"``.
    """
    order = check_order(order)
    if estimator not in ("auto", "lmplz", "builtin"):
        raise ValueError(f"estimator must be 'auto', 'lmplz' or 'builtin', got {estimator!r}")
    output = Path(output)
    if estimator == "builtin":
        return TrainResult("builtin", train_builtin(order, input, output), None)

    # Validate the input once, so user errors are not reported as lmplz failures.
    with tempfile.TemporaryDirectory(prefix="textebm-ngram-") as tmp:
        if is_sentence_list(input):
            data, label = read_training_bytes(input)
            text_path = Path(tmp) / "train.txt"
            text_path.write_bytes(data)
        else:
            text_path = require_file(input, "training text")
            data = text_path.read_bytes()
            label = str(text_path)
        if not has_words(data):
            raise ValueError(f"training corpus is empty (no words): {label}")
        del data

        if estimator == "lmplz":
            return TrainResult("lmplz", train_lmplz(order, text_path, output, lmplz=lmplz), None)

        exe = find_lmplz(lmplz)
        if exe is None:
            reason = "lmplz not found (install it with `textebm ngram install`)"
        else:
            try:
                return TrainResult("lmplz", train_lmplz(order, text_path, output, lmplz=exe), None)
            except LmplzError as exc:
                first = str(exc).strip().splitlines()
                reason = f"lmplz at {exe} failed: " + (first[-1] if first else "unknown error")
        return TrainResult("builtin", train_builtin(order, text_path, output), reason)
