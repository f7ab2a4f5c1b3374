"""A pretrained model's own tokenizer (``data.tokenizer: hf``) behind the interface of the run tokenizers.

The tokenizer comes from a local directory written by ``save_pretrained`` (``data.tokenizer_path``, by default the
pretrained decoder's directory ``model.decoder_args.pretrained``), loaded once with ``AutoTokenizer`` from local
files only and never with remote code. What a run needs from it is its ``tokenizers`` object (the fast
tokenizer's ``tokenizer.json``) and four ids, mapped as follows:

* ``eos_id``: the tokenizer's end-of-sequence token; a tokenizer without one gets ``</s>`` added.
* ``bos_id``: its beginning-of-sequence token; without one, the end-of-sequence token starts sentences too (as
  GPT-2's ``<|endoftext|>`` does).
* ``pad_id``: its padding token when it has one that is none of the three others; else ``<pad>`` is added.
  Padding must be a token of its own: a batch masks every position that holds it, and GPT-2 or Qwen, which pad
  with their end-of-text token, would then never learn to stop.
* ``unk_id``: its unknown token when it has one of its own; else (none, or GPT-2's, which is its end-of-text token)
  the padding id, so that word dropout blanks a word (the Transformer masks the position, the LSTM's padding
  embedding is zero) and the evaluation's count of unknown tokens does not count every sentence's ``</s>``.

Each token added is a new row of the model's embeddings (:class:`~textebm.decoders.TransformerDecoder` resizes
them); :attr:`HFTokenizer.note` says what was added, and a training run prints it with its data statistics.
``encode`` frames a sentence as ``<s> ids </s>`` with the tokenizer's own special-token template switched off
(the run adds ``<s>`` and ``</s>`` itself), and ``decode`` drops padding, ``<s>`` and ``</s>`` and returns the
text with single spaces.

A run directory stores ``tokenizer.json`` (the ``tokenizers`` serialization, read back as data by the Rust
library) and ``tokenizer_config.json`` (the special tokens, in the layout ``AutoTokenizer`` reads), so it reloads
without the original directory and ``AutoTokenizer.from_pretrained(run_dir)`` opens it as well.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence

from ..extras import require
from ..files import FileFormatError, atomic_write, read_json

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
#: the files of a tokenizer directory any one of which AutoTokenizer can start from
SOURCE_FILES = (TOKENIZER_FILE, CONFIG_FILE, "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")
#: the key of tokenizer_config.json that lists the tokens the run added to the tokenizer
ADDED_KEY = "textebm_added_tokens"


class HFTokenizer:
    """A ``tokenizers`` tokenizer with the run's special ids (see the module docstring)."""

    kind = "hf"

    def __init__(self, backend, bos_token: str, eos_token: str, pad_token: str, unk_token: Optional[str] = None,
                 added: Sequence[str] = (), source: Optional[str] = None, where: str = "the tokenizer"):
        self.backend = backend
        self.bos_token, self.eos_token, self.pad_token, self.unk_token = bos_token, eos_token, pad_token, unk_token
        #: tokens this run added to the tokenizer (each one a new embedding row of the model)
        self.added = list(added)
        self.source = source
        #: what loading the tokenizer added or reused for a missing special token (None: nothing)
        self.note: Optional[str] = None
        ids = {}
        for role, token in (("bos", bos_token), ("eos", eos_token), ("pad", pad_token), ("unk", unk_token)):
            if token is None and role == "unk":
                continue
            i = backend.token_to_id(token) if isinstance(token, str) else None
            if i is None:
                raise FileFormatError(f"{where}: its {role} token {token!r} is not in its vocabulary")
            ids[role] = i
        if ids["pad"] in (ids["bos"], ids["eos"], ids.get("unk")):
            raise FileFormatError(f"{where}: the padding token {pad_token!r} is also its bos, eos or unk token; "
                                  f"padding must be a token of its own")
        self.bos_id, self.eos_id, self.pad_id = ids["bos"], ids["eos"], ids["pad"]
        unk = ids.get("unk")
        self.unk_id = unk if unk is not None and unk not in (self.bos_id, self.eos_id) else self.pad_id
        self._size = int(backend.get_vocab_size(with_added_tokens=True))

    # ---- from a model's directory ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path) -> "HFTokenizer":
        """The tokenizer saved in the local directory ``path`` (``AutoTokenizer``, local files only, no remote
        code), with bos/eos/pad mapped and what it lacks added; :attr:`note` says what was added or reused (a
        training run prints it with its data statistics)."""
        require("transformers", "data.tokenizer: hf", "transformer")
        from transformers import AutoTokenizer

        p = Path(str(path)).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"data.tokenizer_path: {path} is not a local directory; expected a tokenizer "
                                    f"saved with save_pretrained (tokenizer.json). Nothing is downloaded")
        if not any((p / f).is_file() for f in SOURCE_FILES):
            raise FileNotFoundError(f"data.tokenizer_path: {p} holds no tokenizer (none of "
                                    f"{', '.join(SOURCE_FILES)}); expected a directory written by save_pretrained")
        try:
            tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True, trust_remote_code=False,
                                                use_fast=True)
        except Exception as e:  # transformers raises many types for directories it cannot use
            msg = " ".join(str(e).split())[:200]
            raise ValueError(f"data.tokenizer_path: could not load the tokenizer in {p} ({type(e).__name__}: "
                             f"{msg})") from None
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is None:
            raise ValueError(f"data.tokenizer_path: the tokenizer in {p} ({type(tok).__name__}) has no fast "
                             f"tokenizer (tokenizer.json); save one with a fast tokenizer's save_pretrained")
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(backend.to_str())  # a copy: tokens added below stay out of tok
        special = {r: getattr(tok, f"{r}_token", None) for r in ("bos", "eos", "pad", "unk")}
        special = {r: (str(t) if t is not None else None) for r, t in special.items()}
        notes: List[str] = []
        added: List[str] = []

        def add(candidates, role):
            for c in candidates:
                if backend.token_to_id(c) is None:
                    from tokenizers import AddedToken

                    backend.add_special_tokens([AddedToken(c, special=True, normalized=False)])
                    added.append(c)
                    notes.append(f"no {role} token: added {c} as id {backend.token_to_id(c)}")
                    return c
            raise ValueError(f"data.tokenizer_path: {p} has no {role} token and every name tried for one "
                             f"({', '.join(candidates)}) is taken")

        if special["eos"] is None or backend.token_to_id(special["eos"]) is None:
            special["eos"] = add(("</s>", "<|eos|>", "<eos>"), "end-of-sequence")
        if special["bos"] is None or backend.token_to_id(special["bos"]) is None:
            special["bos"] = special["eos"]
            notes.append(f"no beginning-of-sequence token: {special['eos']} starts sentences too")
        if special["unk"] is not None and backend.token_to_id(special["unk"]) is None:
            special["unk"] = None
        pad = special["pad"]
        taken = {backend.token_to_id(special[r]) for r in ("bos", "eos", "unk") if special[r] is not None}
        if pad is None or backend.token_to_id(pad) is None or backend.token_to_id(pad) in taken:
            why = "no padding token" if pad is None else f"its padding token {pad} is also bos, eos or unk"
            special["pad"] = add(("<pad>", "<|pad|>", "[PAD]"), "padding")
            notes[-1] = notes[-1].replace("no padding token", why)
        out = cls(backend, special["bos"], special["eos"], special["pad"], special["unk"], added, source=str(p),
                  where=f"the tokenizer in {p}")
        if notes:
            grow = (f"; the model's embeddings grow by {len(added)} row(s)" if added else "")
            out.note = "; ".join(notes) + grow
        return out

    # ---- the run-tokenizer interface ------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._size

    @property
    def n_added(self) -> int:
        """How many tokens the run added to the tokenizer (they are the last ids)."""
        return len(self.added)

    def encode(self, sentence: str) -> List[int]:
        """``[<s>] + the tokenizer's ids (its own special-token template off) + [</s>]``."""
        return [self.bos_id] + list(self.backend.encode(sentence, add_special_tokens=False).ids) + [self.eos_id]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids`` without padding, ``<s>`` and ``</s>`` (and ids beyond the tokenizer, which a model
        with a padded embedding matrix can produce), whitespace collapsed to single spaces."""
        skip = {self.pad_id, self.bos_id, self.eos_id}
        keep = [int(i) for i in ids if int(i) not in skip and 0 <= int(i) < self._size]
        return " ".join(self.backend.decode(keep, skip_special_tokens=False).split())

    def tokens(self, sentence: str) -> List[str]:
        """The subword tokens of a sentence (for inspection)."""
        return list(self.backend.encode(sentence, add_special_tokens=False).tokens)

    # ---- files --------------------------------------------------------------------------------------------
    def save(self, directory) -> Path:
        directory = Path(directory)
        text = self.backend.to_str()
        path = atomic_write(directory / TOKENIZER_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": self.bos_token,
               "eos_token": self.eos_token, "pad_token": self.pad_token, "unk_token": self.unk_token,
               "clean_up_tokenization_spaces": False, ADDED_KEY: self.added}
        if self.source is not None:
            cfg["textebm_source"] = self.source
        cfg_text = json.dumps(cfg, indent=2, ensure_ascii=False)
        atomic_write(directory / CONFIG_FILE, lambda tmp: tmp.write_text(cfg_text, encoding="utf-8"))
        return path

    @classmethod
    def load(cls, directory) -> "HFTokenizer":
        """The tokenizer a run directory holds: ``tokenizer.json`` read by ``tokenizers`` (data, no code) and
        the special tokens from ``tokenizer_config.json``."""
        require("tokenizers", "the run's hf tokenizer", "transformer")
        from tokenizers import Tokenizer

        directory = Path(directory)
        path, cfg_path = directory / TOKENIZER_FILE, directory / CONFIG_FILE
        cfg = read_json(cfg_path)
        roles = {r: cfg.get(f"{r}_token") for r in ("bos", "eos", "pad", "unk")}
        roles = {r: (t.get("content") if isinstance(t, dict) else t) for r, t in roles.items()}
        added = cfg.get(ADDED_KEY, [])
        if not all(isinstance(roles[r], str) for r in ("bos", "eos", "pad")) or \
                not (roles["unk"] is None or isinstance(roles["unk"], str)) or \
                not isinstance(added, list) or not all(isinstance(a, str) for a in added):
            raise FileFormatError(f"{cfg_path}: expected bos_token, eos_token and pad_token (strings), unk_token "
                                  f"(a string or null) and {ADDED_KEY} (a list of strings)")
        try:
            backend = Tokenizer.from_file(str(path))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} not found (a run with data.tokenizer: hf keeps it)") from None
        except Exception as e:  # the Rust library reports malformed files as a plain Exception
            raise FileFormatError(f"{path} is not a tokenizers file ({' '.join(str(e).split())[:200]})") from None
        return cls(backend, roles["bos"], roles["eos"], roles["pad"], roles["unk"], added,
                   source=cfg.get("textebm_source"), where=str(cfg_path))
