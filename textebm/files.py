"""Files a run or a saved model keeps: written atomically, read without running code, with one-line errors naming
the file (JSON objects, state dicts that must fit a model); and the progress bar long operations show."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable


class FileFormatError(ValueError):
    """A file the package reads is malformed or does not fit what reads it; the message names the file."""


def read_json(path) -> dict:
    """A JSON object from ``path``; errors name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FileFormatError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise FileFormatError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def load_state(module, state, what: str) -> None:
    """``module.load_state_dict(state)`` with a one-line error naming ``what`` when the shapes or names differ."""
    if not isinstance(state, dict):
        raise FileFormatError(f"{what}: the weights are not a mapping of names to tensors")
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise FileFormatError(f"{what} does not fit the model its recipe builds ({msg[:300]})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` into a temporary file beside ``path``, then rename it into place: a crash never leaves a
    half-written file. Parent directories are created; the temporary file is removed if ``write`` fails. The file
    gets the permissions a plain ``open`` would give it (some writers create private 0600 files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def progress(total: int, desc: str, enabled: bool = True, initial: int = 0, leave: bool = True):
    """A tqdm progress bar on stderr, or None when disabled (or tqdm is missing)."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=leave)
