"""Word-level vocabulary (the special tokens and their ids are those of :mod:`.specials`)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from ..files import atomic_write, read_json
from .specials import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK, UNK_ID


class WordVocab:
    """Whitespace-token vocabulary with ``<pad>``=0, ``<unk>``=1, ``<s>``=2, ``</s>``=3.

    ``encode`` frames a sentence as ``<s> w1 .. wn </s>``; ``decode`` drops special tokens.
    Built from training sentences with a minimum count and/or a maximum size (most frequent first,
    ties broken alphabetically so the result is deterministic).
    """

    kind = "word"

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tuple(tokens[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}; got {tokens[:4]}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary has duplicate tokens")
        self.itos: List[str] = tokens
        self.stoi = {t: i for i, t in enumerate(tokens)}
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    @classmethod
    def build(cls, sentences: Iterable[str], min_count: int = 1, max_size: Optional[int] = None) -> "WordVocab":
        counts = Counter(w for s in sentences for w in s.split() if w not in SPECIALS)
        items = sorted(((w, c) for w, c in counts.items() if c >= min_count), key=lambda wc: (-wc[1], wc[0]))
        if max_size is not None:
            items = items[: max(0, max_size - len(SPECIALS))]
        if not items:
            raise ValueError("cannot build a vocabulary: no word occurs often enough in the training text")
        return cls(list(SPECIALS) + [w for w, _ in items])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, sentence: str) -> List[int]:
        return [self.bos_id] + [self.stoi.get(w, self.unk_id) for w in sentence.split()] + [self.eos_id]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.itos[i] if i != self.unk_id else UNK for i in ids
                        if i not in (self.pad_id, self.bos_id, self.eos_id))

    def save(self, directory) -> Path:
        path = Path(directory) / "vocab.json"
        text = json.dumps({"kind": self.kind, "tokens": self.itos}, ensure_ascii=False)
        return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, directory) -> "WordVocab":
        path = Path(directory) / "vocab.json"
        tokens = read_json(path).get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError(f"vocabulary file {path} holds no list of tokens")
        try:
            return cls(tokens)
        except ValueError as e:
            raise ValueError(f"vocabulary file {path}: {e}") from None
