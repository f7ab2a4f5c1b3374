"""SentencePiece subword tokenizer with the same interface and special ids as :class:`~textebm.data.vocab.WordVocab`.

``<pad>`` = 0, ``<unk>`` = 1, ``<s>`` = 2, ``</s>`` = 3; ``encode`` frames a sentence as ``<s> pieces </s>``,
``decode`` drops ``<pad>``, ``<s>`` and ``</s>``. A run directory holds ``spm.model`` (the serialized model)
and ``spm.json`` (kind, size, special ids, training options). Trained with SentencePiece's Python trainer
(Kudo & Richardson 2018; unigram language model of Kudo 2018 by default) from an in-memory iterator.

A literal ``<unk>`` word in the text (PTB keeps one for its out-of-vocabulary words) maps to the ``<unk>`` id
and is left out of the training text, so it never turns into pieces ``< unk >``.
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from ..extras import require
from ..files import MAX_JSON_BYTES, atomic_write, read_json, read_regular
from .specials import BOS, BOS_ID, EOS, EOS_ID, PAD, PAD_ID, UNK, UNK_ID

MODEL_FILE = "spm.model"
META_FILE = "spm.json"


def _import_spm():
    return require("sentencepiece", "the sentencepiece tokenizer", "text")


def _segments(words: Sequence[str]) -> List[Optional[str]]:
    """Split a word list at literal ``<unk>`` words: text runs as strings, each ``<unk>`` as None."""
    out: List[Optional[str]] = []
    run: List[str] = []
    for w in words:
        if w == UNK:
            if run:
                out.append(" ".join(run))
                run = []
            out.append(None)
        else:
            run.append(w)
    if run:
        out.append(" ".join(run))
    return out


class SentencePieceTokenizer:
    """Subword tokenizer: ``<pad>``=0, ``<unk>``=1, ``<s>``=2, ``</s>``=3, then the learned pieces."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes, options: Optional[dict] = None):
        spm = _import_spm()
        self.proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(self.proto)
        except Exception as e:
            raise ValueError(f"not a valid sentencepiece model: {e}") from None
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID
        got = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
        want = (PAD_ID, UNK_ID, BOS_ID, EOS_ID)
        if got != want:
            raise ValueError(f"sentencepiece model has special ids pad/unk/bos/eos = {got}; expected {want} "
                             f"(train it with SentencePieceTokenizer.train)")
        self.options = dict(options or {})

    # ---- training -------------------------------------------------------------------------------------
    @classmethod
    def train(cls, sentences: Iterable[str], vocab_size: int, directory=None, seed: int = 0,
              **options) -> "SentencePieceTokenizer":
        """Train on the training split; deterministic for the same sentences, size, seed and options.

        Defaults: ``model_type="unigram"``, ``character_coverage=1.0``, one thread, no input sampling or
        shuffling; any SentencePiece trainer option can be passed (e.g. ``model_type="bpe"``,
        ``hard_vocab_limit=False``). The model is written to ``directory`` when given.
        """
        spm = _import_spm()
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 8:
            raise ValueError(f"vocab_size must be an integer >= 8, got {vocab_size!r}")
        texts = []
        for s in sentences:
            for seg in _segments(str(s).split()):
                if seg:
                    texts.append(seg)
        if not texts:
            raise ValueError("cannot train a sentencepiece model: the training sentences are empty")
        spec = dict(model_type="unigram", character_coverage=1.0, num_threads=1, input_sentence_size=0,
                    shuffle_input_sentence=False, minloglevel=2)
        spec.update(options)
        spec.update(vocab_size=vocab_size, pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
                    pad_piece=PAD, unk_piece=UNK, bos_piece=BOS, eos_piece=EOS, unk_surface=UNK)
        spm.set_random_generator_seed(int(seed))
        buf = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=buf, **spec)
        except RuntimeError as e:
            msg = str(e).strip().rstrip(".")
            if "Vocabulary size" in msg or "vocab_size" in msg:
                m = re.search(r"<=\s*(\d+)", msg)
                most = f"at most {m.group(1)} pieces fit it" if m else "it cannot fill that many pieces"
                raise ValueError(f"sentencepiece: vocab_size={vocab_size} is too large for this training text "
                                 f"({len(texts)} sentences; {most}). Use a smaller data.spm_vocab_size, or "
                                 f"pass hard_vocab_limit=False to make the size a soft limit "
                                 f"[sentencepiece: {msg}]") from None
            raise ValueError(f"sentencepiece training failed: {msg}") from None
        meta = {k: v for k, v in spec.items() if k not in ("minloglevel",)}
        meta["seed"] = int(seed)
        tok = cls(buf.getvalue(), options=meta)
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
            tok.save(directory)
        return tok

    # ---- the WordVocab interface ----------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.sp.get_piece_size())

    def encode(self, sentence: str) -> List[int]:
        """``[<s>] + piece ids + [</s>]``; a literal ``<unk>`` word becomes the ``<unk>`` id."""
        ids = [self.bos_id]
        words = sentence.split()
        if UNK not in words:
            ids += self.sp.encode(" ".join(words), out_type=int)
        else:
            for seg in _segments(words):
                ids += [self.unk_id] if seg is None else self.sp.encode(seg, out_type=int)
        ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the ids, special tokens dropped; ``<unk>`` ids are rendered as the word ``<unk>``."""
        words: List[str] = []
        run: List[int] = []
        n = len(self)
        for i in ids:
            i = int(i)
            if i in (self.pad_id, self.bos_id, self.eos_id):
                continue
            if i == self.unk_id or not 0 <= i < n:
                if run:
                    words.append(self.sp.decode(run))
                    run = []
                words.append(UNK)
            else:
                run.append(i)
        if run:
            words.append(self.sp.decode(run))
        return " ".join(w for w in words if w)

    def pieces(self, sentence: str) -> List[str]:
        """The subword pieces of a sentence (for inspection)."""
        return self.sp.encode(sentence, out_type=str)

    # ---- files ----------------------------------------------------------------------------------------
    def save(self, directory) -> Path:
        directory = Path(directory)
        path = directory / MODEL_FILE
        atomic_write(path, lambda tmp: tmp.write_bytes(self.proto))
        meta = {"kind": self.kind, "vocab_size": len(self), "pad_id": self.pad_id, "unk_id": self.unk_id,
                "bos_id": self.bos_id, "eos_id": self.eos_id, "options": self.options}
        text = json.dumps(meta, indent=1, sort_keys=True)
        atomic_write(directory / META_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return path

    @classmethod
    def load(cls, directory) -> "SentencePieceTokenizer":
        directory = Path(directory)
        path = directory / MODEL_FILE
        try:
            proto = read_regular(path, "sentencepiece model", MAX_JSON_BYTES)
        except FileNotFoundError:
            raise FileNotFoundError(f"no sentencepiece model at {path}") from None
        options = {}
        meta_path = directory / META_FILE
        if meta_path.exists():
            try:
                options = read_json(meta_path).get("options", {})
            except ValueError as e:
                raise ValueError(f"tokenizer metadata {meta_path} is not valid JSON: {e}") from None
        try:
            return cls(proto, options=options)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
