"""Tokenizers as a run uses them: build one from a recipe, load the one a run directory holds, encode sentences.

Two kinds share one interface and the special ids of :mod:`.specials`: :class:`~textebm.data.vocab.WordVocab`
(whitespace words) and :class:`~textebm.data.spm.SentencePieceTokenizer` (subwords; needs the ``[text]`` extra).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

from .vocab import WordVocab


def build_tokenizer(recipe, train_sentences: Sequence[str]):
    """The recipe's tokenizer (``data.tokenizer``: ``word`` or ``sentencepiece``), fitted to the training split.
    Nothing is written: a run saves it with ``tokenizer.save(run_dir)`` once it has started."""
    d = recipe.data
    if d.tokenizer == "word":
        return WordVocab.build(train_sentences, min_count=d.min_count, max_size=d.max_vocab)
    from .spm import SentencePieceTokenizer

    return SentencePieceTokenizer.train(list(train_sentences), vocab_size=d.spm_vocab_size)


def load_tokenizer(directory):
    """Load whichever tokenizer a run directory holds (word vocabulary or sentencepiece)."""
    directory = Path(directory)
    if (directory / "vocab.json").exists():
        return WordVocab.load(directory)
    if (directory / "spm.model").exists():
        from .spm import SentencePieceTokenizer

        return SentencePieceTokenizer.load(directory)
    raise FileNotFoundError(f"no tokenizer (vocab.json or spm.model) in {directory}")


def encode_sentences(sentences: Sequence[str], tokenizer, max_len: int, policy: str):
    """Token ids with <s> ... </s>; sentences over ``max_len`` tokens are truncated or dropped (and counted), as
    are sentences with nothing between <s> and </s>. Returns (ids, {"truncated": n, "dropped": n})."""
    out: List[List[int]] = []
    truncated = dropped = 0
    for s in sentences:
        ids = tokenizer.encode(s)
        body = ids[1:-1]
        if len(body) > max_len:
            if policy == "drop":
                dropped += 1
                continue
            truncated += 1
            ids = ids[:1] + body[:max_len] + ids[-1:]
        if len(ids) <= 2:
            dropped += 1
            continue
        out.append(ids)
    return out, {"truncated": truncated, "dropped": dropped}
