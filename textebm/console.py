"""What the package says while it works, on stderr (stdout carries a command's results): one-line messages and
progress bars. Standard library only, so every module may use it."""
from __future__ import annotations

import sys


def log(msg: str) -> None:
    """One message on stderr, flushed at once (a run's log interleaves with tracebacks and progress bars)."""
    print(msg, file=sys.stderr, flush=True)


def progress(total: int, desc: str, enabled: bool = True, initial: int = 0, leave: bool = True):
    """A tqdm progress bar on stderr, or None when disabled (or tqdm is missing)."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=leave)
