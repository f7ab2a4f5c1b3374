"""N-gram language models for text evaluation (KenLM compatible).

Forward / reverse perplexity metrics score generated text with a 5-gram
modified Kneser-Ney model (or score held-out text with a model trained on
generated text).  This package provides:

* :func:`install_lmplz` / :func:`find_lmplz` - build KenLM's ``lmplz``
  estimator from the ``kenlm`` source distribution and locate it
  (:mod:`.lmplz`);
* :func:`train_lmplz` - run ``lmplz`` with options that make it robust on
  small or degenerate corpora (:mod:`.lmplz`);
* :func:`train_builtin` / :func:`estimate_builtin` - a numpy
  re-implementation of the estimator ``lmplz`` runs (interpolated modified
  Kneser-Ney, no pruning) that writes the same ARPA lines as lmplz (same
  float32 numbers; :mod:`.estimator`, :mod:`.arpa`, :mod:`.libm`);
* :func:`train` - picks ``lmplz`` when available and falls back to the
  built-in estimator otherwise (:mod:`.dispatch`);
* :func:`perplexity` - scores sentences with :mod:`kenlm`
  (:mod:`.scoring`; kenlm is imported only there, when a model is loaded);
* :func:`ngram_main` - the ``install`` / ``train`` / ``ppl`` sub-commands
  (:mod:`.command`).

Corpus conventions (identical for both estimators, :mod:`.corpus`): one
sentence per line, tokens separated by spaces, tabs, carriage returns or NUL
bytes, an empty line is a sentence with no words, and the literal tokens
``<s>``, ``</s>`` and ``<unk>`` in training text are dropped (``lmplz
--skip_symbols``).  A final line without a trailing newline is still a
sentence (``lmplz`` on its own would drop that sentence's ``</s>``;
:func:`train_lmplz` appends the newline).  Orders 1 to :data:`MAX_ORDER`
(6, KenLM's limit) are accepted.
"""

from __future__ import annotations

from .command import ngram_main
from .corpus import MAX_ORDER
from .dispatch import TrainResult, train
from .estimator import FALLBACK_DISCOUNTS, estimate_builtin, train_builtin
from .lmplz import (DEBIAN_BUILD_DEPS, LmplzError, default_cache_dir, find_lmplz, install_lmplz,
                    lmplz_cache_path, train_lmplz)
from .scoring import ModelFormatError, ModelNotFoundError, perplexity

__all__ = [
    "DEBIAN_BUILD_DEPS",
    "FALLBACK_DISCOUNTS",
    "LmplzError",
    "MAX_ORDER",
    "ModelFormatError",
    "ModelNotFoundError",
    "TrainResult",
    "default_cache_dir",
    "estimate_builtin",
    "find_lmplz",
    "install_lmplz",
    "lmplz_cache_path",
    "ngram_main",
    "perplexity",
    "train",
    "train_builtin",
    "train_lmplz",
]
