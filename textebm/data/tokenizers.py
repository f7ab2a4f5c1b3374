"""Tokenizers as a run uses them: build one from a recipe, load the one a run directory holds, encode sentences.

Three kinds share one interface (``encode``, ``decode``, ``len``, ``save``, ``pad_id``/``unk_id``/``bos_id``/
``eos_id``): :class:`~textebm.data.vocab.WordVocab` (whitespace words) and
:class:`~textebm.data.spm.SentencePieceTokenizer` (subwords; needs the ``[text]`` extra), both trained on the run's
corpus with the special ids of :mod:`.specials`, and :class:`~textebm.data.hf_tokenizer.HFTokenizer`, a pretrained
model's own tokenizer with that model's ids (needs the ``[transformer]`` extra).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

from .vocab import WordVocab


def build_tokenizer(recipe, train_sentences: Sequence[str]):
    """The recipe's tokenizer (``data.tokenizer``): ``word`` or ``sentencepiece`` fitted to the training split, or
    ``hf``, the tokenizer saved in ``data.tokenizer_path`` (default: the pretrained decoder's directory,
    ``model.decoder_args.pretrained``). Nothing is written: a run saves it with ``tokenizer.save(run_dir)`` once
    it has started."""
    d = recipe.data
    if d.tokenizer == "word":
        return WordVocab.build(train_sentences, min_count=d.min_count, max_size=d.max_vocab)
    if d.tokenizer == "hf":
        from .hf_tokenizer import HFTokenizer

        return HFTokenizer.from_pretrained(hf_tokenizer_path(recipe))
    from .spm import SentencePieceTokenizer

    return SentencePieceTokenizer.train(list(train_sentences), vocab_size=d.spm_vocab_size)


def hf_tokenizer_path(recipe) -> str:
    """Where a ``data.tokenizer: hf`` run reads its tokenizer: ``data.tokenizer_path``, else the pretrained
    decoder's directory."""
    path = recipe.data.tokenizer_path or recipe.model.decoder_args.get("pretrained")
    if not path:
        raise ValueError("data.tokenizer: hf needs a tokenizer directory: set data.tokenizer_path, or "
                         "model.decoder_args.pretrained to a model directory that holds its tokenizer")
    return str(path)


def load_tokenizer(directory):
    """Load whichever tokenizer a run directory holds (word vocabulary, sentencepiece, or a pretrained model's
    tokenizer)."""
    directory = Path(directory)
    if (directory / "tokenizer.json").exists():
        from .hf_tokenizer import HFTokenizer

        return HFTokenizer.load(directory)
    if (directory / "vocab.json").exists():
        return WordVocab.load(directory)
    if (directory / "spm.model").exists():
        from .spm import SentencePieceTokenizer

        return SentencePieceTokenizer.load(directory)
    raise FileNotFoundError(f"no tokenizer (vocab.json, spm.model or tokenizer.json) in {directory}")


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
