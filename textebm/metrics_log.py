"""Training metrics, one record (a dict with a ``step``) at a time, to ``metrics.jsonl`` and optionally TensorBoard.

``train.report_to`` names the backends: ``jsonl`` appends each record as one JSON line to ``RUN/metrics.jsonl``
(what ``textebm plot`` reads; append mode, so a resumed run continues the file), ``tensorboard`` writes every
numeric value as a scalar to ``RUN/tensorboard`` (the optional ``[tensorboard]`` extra).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from .eval.report import jsonable
from .extras import require

BACKENDS = ("jsonl", "tensorboard")
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricsLogger:
    """Writes metric records of a run to the backends in ``report_to``; a context manager.

    Values that are 0-d torch tensors or numpy scalars become Python numbers, NaN and infinities become null
    (JSON) and are left out (TensorBoard). With ``enabled=False`` (the non-main ranks of a distributed run)
    nothing is opened or written. An unknown backend is a ValueError.
    """

    def __init__(self, run_dir, report_to: Iterable[str] = ("jsonl",), enabled: bool = True):
        report_to = (report_to,) if isinstance(report_to, str) else tuple(report_to)
        unknown = [b for b in report_to if b not in BACKENDS]
        if unknown:
            raise ValueError(f"unknown metrics backend(s) {', '.join(map(repr, unknown))}; "
                             f"choose from {', '.join(BACKENDS)}")
        self.run_dir = Path(run_dir)
        self.report_to = report_to
        self.enabled = enabled
        self._jsonl = None
        self._tensorboard = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if "tensorboard" in report_to:  # first, so that a missing extra fails before any file is opened
            tb = require("torch.utils.tensorboard", "train.report_to: tensorboard", "tensorboard")
            self._tensorboard = tb.SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR))
        if "jsonl" in report_to:
            self._jsonl = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")

    def log(self, record: dict) -> None:
        """Write one record: a JSON line (flushed at once) and, for TensorBoard, every numeric value as a scalar
        at ``global_step=record["step"]`` (records without a step go to the JSON file only)."""
        if not self.enabled:
            return
        record = jsonable(record)
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")
            self._jsonl.flush()
        step = record.get("step")
        if self._tensorboard is not None and step is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tensorboard.add_scalar(key, value, global_step=step)

    def close(self) -> None:
        """Flush and close the backends (more calls do nothing)."""
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def first_record_with(run_dir, key: str):
    """The first record of ``RUN/metrics.jsonl`` that has ``key`` (None if there is none or no file); lines that
    do not parse are passed over."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and key in record:
                return record
    return None
