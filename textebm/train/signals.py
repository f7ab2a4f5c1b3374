"""Stopping a run cleanly: SIGINT / SIGTERM finish the current step, then the run writes a checkpoint and stops; a
second signal stops at once."""
from __future__ import annotations

import contextlib
import signal
import sys
from typing import Callable, Optional


class StopOnSignals:
    """A context manager that hands the first SIGINT or SIGTERM to ``on_signal(signum)`` (the training loop then
    stops after its step) and turns a second one into KeyboardInterrupt. Handlers are restored on exit."""

    def __init__(self, on_signal: Callable[[int], None]):
        self.on_signal = on_signal
        self.signum: Optional[int] = None
        self._old = {}

    def _handle(self, signum, frame):
        if self.signum is not None:  # a second signal: stop now, without a new checkpoint
            raise KeyboardInterrupt
        self.signum = signum
        self.on_signal(signum)
        print(f"received {signal.Signals(signum).name}: finishing this step, writing a checkpoint and stopping "
              f"(send it again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopOnSignals":
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: nothing to install
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False
