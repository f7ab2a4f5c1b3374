"""Where a run executes: its device, its seeds, deterministic kernels, and a clock that times work on the device."""
from __future__ import annotations

import os
import random
import time

import numpy as np
import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; anything else is a ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for but CUDA is not available; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: there are only {torch.cuda.device_count()} CUDA device(s)")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def use_deterministic_kernels() -> None:
    """Deterministic algorithms everywhere (cuBLAS workspaces, cuDNN without autotuning), so that the same seed
    gives the same run on a GPU too; ops without a deterministic kernel then raise instead of varying."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


class Elapsed:
    """Seconds between two recorded CUDA events, read only when the value is asked for (``item()``, ``float()``,
    or a metrics record): timing a step on a GPU then costs no host synchronization until it is logged."""

    ndim = 0

    def __init__(self, start, end):
        self.start, self.end = start, end

    def item(self) -> float:
        self.end.synchronize()
        return self.start.elapsed_time(self.end) / 1000.0

    __float__ = item


class StepClock:
    """Time marks on the device's own clock: CUDA events on a GPU (the host clock would time the launches, not
    the work), the host clock elsewhere. ``between(a, b)`` is seconds (an :class:`Elapsed` on a GPU)."""

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def between(self, a, b):
        return Elapsed(a, b) if self.cuda else b - a
