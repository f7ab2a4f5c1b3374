"""Scoring text with KenLM: :func:`perplexity` (kenlm is imported only when a model is loaded)."""

from __future__ import annotations

from pathlib import Path

from ...extras import require
from .corpus import PathLike, is_sentence_list, require_file


class ModelFormatError(ValueError):
    """A language model file that is not an ARPA or KenLM binary model kenlm can read."""


class ModelNotFoundError(ModelFormatError, FileNotFoundError):
    """A language model path that does not exist (both a ValueError and a FileNotFoundError)."""


_NOT_A_MODEL = "not an ARPA or KenLM binary model"


def load_model(path: PathLike):
    """``kenlm.Model`` of an ARPA (possibly compressed) or KenLM binary file.

    Raises :class:`ModelNotFoundError` (``language model not found: PATH``)
    when ``path`` does not exist and :class:`ModelFormatError` (one line:
    ``not an ARPA or KenLM binary model: PATH (kenlm: its whole reason)``)
    when it is a directory, a device, an empty file, an ARPA file whose
    header kenlm must not see (:func:`.arpa.check_arpa_header`: a negative or
    impossible count crashes or exhausts KenLM) or anything kenlm fails to read.
    """
    import stat

    from .arpa import ArpaHeaderError, check_arpa_header

    path = Path(path)
    if path.is_dir():
        raise ModelFormatError(f"{_NOT_A_MODEL}: {path} (it is a directory)")
    if not path.exists():
        raise ModelNotFoundError(f"language model not found: {path}")
    if not stat.S_ISREG(path.stat().st_mode):
        raise ModelFormatError(f"{_NOT_A_MODEL}: {path} (not a regular file: a device, a pipe or a socket)")
    if path.stat().st_size == 0:
        raise ModelFormatError(f"{_NOT_A_MODEL}: {path} (empty file)")
    try:
        check_arpa_header(path)
    except ArpaHeaderError as exc:
        msg = str(exc)
        raise ModelFormatError(msg if msg.startswith(_NOT_A_MODEL) else f"{_NOT_A_MODEL}: {path} ({msg})") from None
    kenlm = require("kenlm", "n-gram perplexity (textebm ngram ppl, FPPL, RPPL)", "text")
    try:
        return kenlm.Model(str(path))
    except (OSError, RuntimeError, ValueError) as exc:  # kenlm's errors; bytes it cannot decode
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ModelFormatError(f"{_NOT_A_MODEL}: {path} (kenlm: {reason})") from exc


def read_eval_sentences(sentences) -> tuple[list[str], str]:
    """Sentences to score and a name for messages.

    ``sentences`` is a list of strings or a UTF-8 text file, one sentence per
    line (a final newline does not start another sentence).  A missing file
    raises FileNotFoundError; a file that is not UTF-8, ValueError.
    """
    if is_sentence_list(sentences):
        return [str(s) for s in sentences], "<sentences>"
    from ...files import read_regular

    path = require_file(sentences, "evaluation text")
    try:
        text = read_regular(path, "evaluation text").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"evaluation text is not UTF-8: {path} (byte offset {exc.start})") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines, str(path)


def perplexity(arpa_or_model, sentences) -> dict:
    """Score sentences with a KenLM model, as KenLM's ``query`` does.

    ``arpa_or_model`` is an ARPA / KenLM binary path or a loaded
    ``kenlm.Model``; ``sentences`` is a list of strings or a text file with
    one sentence per line (an empty line is a sentence with only ``</s>``).

    Each sentence is scored with ``<s>`` as context and ``</s>`` predicted
    (``Model.full_scores``); OOV words get ``<unk>``'s probability.  With
    ``total`` the sum of log10 probabilities of all predicted tokens:

    * ``ppl`` = 10 ** (-total / (words + sentences))  (``</s>`` included;
      KenLM query's "Perplexity including OOVs");
    * ``ppl_no_eos`` = 10 ** (-(total - total_eos) / words)  (``</s>`` terms
      removed; NaN when there are no words);
    * ``ppl_excluding_oov`` = 10 ** (-(total - total_oov) / (words +
      sentences - oov))  (query's "Perplexity excluding OOVs").

    Returns a dict with those and ``words``, ``sentences``, ``oov``,
    ``total_log10prob``.  Raises FileNotFoundError for a missing text,
    :class:`ModelNotFoundError` for a missing model, :class:`ModelFormatError`
    for a model kenlm cannot read and ValueError for a text that is empty or
    not UTF-8.
    """
    lines, name = read_eval_sentences(sentences)
    if not lines:
        raise ValueError(f"no sentences to score: {name}")
    model = arpa_or_model if hasattr(arpa_or_model, "full_scores") else load_model(arpa_or_model)
    total = 0.0
    total_eos = 0.0
    total_oov = 0.0
    words = 0
    oov = 0
    for line in lines:
        scores = list(model.full_scores(line, bos=True, eos=True))
        for logp, _, is_oov in scores[:-1]:
            total += logp
            if is_oov:
                oov += 1
                total_oov += logp
        total += scores[-1][0]
        total_eos += scores[-1][0]
        words += len(scores) - 1
    n = len(lines)
    ppl = 10.0 ** (-total / (words + n))
    ppl_no_eos = 10.0 ** (-(total - total_eos) / words) if words else float("nan")
    kept = words + n - oov
    ppl_ex_oov = 10.0 ** (-(total - total_oov) / kept) if kept else float("nan")
    return {
        "ppl": ppl,
        "ppl_no_eos": ppl_no_eos,
        "ppl_excluding_oov": ppl_ex_oov,
        "words": words,
        "sentences": n,
        "oov": oov,
        "total_log10prob": total,
    }
