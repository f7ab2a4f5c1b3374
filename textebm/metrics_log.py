"""Training metrics, one record (a dict with a ``step``) at a time, to ``metrics.jsonl`` and optionally TensorBoard.

``train.report_to`` names the backends: ``jsonl`` appends each record as one JSON line to ``RUN/metrics.jsonl``
(what ``textebm plot`` reads; append mode, so a resumed run continues the file), ``tensorboard`` writes every
numeric value as a scalar to ``RUN/tensorboard`` (the optional ``[tensorboard]`` extra).

A kill or a full disk can leave the file's last line cut short (a torn record). Readers (:func:`read_records`)
skip a torn last line with a warning; a logger that continues the file (a resumed run) first turns the torn
tail into a record of its own, ``{"torn_record": "<the bytes>"}``, so its records start on a fresh line and no
byte is lost. ``metrics.jsonl`` is opened without following links (:func:`textebm.files.open_append`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, List, Optional

from .eval.report import jsonable
from .extras import require
from .files import open_append, read_regular, refuse_link, write_file
from .console import log as _warn

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
            path = self.run_dir / METRICS_FILE
            mend_torn_tail(path)
            self._jsonl = open_append(path)

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


def _torn_tail(data: bytes) -> Optional[int]:
    """Where the torn last line of a JSONL file starts (None when the file ends with a newline or is empty)."""
    if not data or data.endswith(b"\n"):
        return None
    return data.rfind(b"\n") + 1


def mend_torn_tail(path) -> None:
    """If ``path`` ends in a torn line, rewrite the file (atomically) with that line replaced by the record
    ``{"torn_record": "<its text>"}``: the next appended record starts on a fresh line and nothing is lost."""
    path = Path(path)
    refuse_link(path)
    if not path.is_file():
        return
    data = read_regular(path, str(path))
    start = _torn_tail(data)
    if start is None:
        return
    torn = data[start:].decode("utf-8", "replace")
    _warn(f"warning: {path} ended in a torn record ({len(data) - start} bytes, what a kill or a full disk leaves); "
          f"kept as a torn_record line, and the records of this run start on a fresh line")
    write_file(path, data[:start] + (json.dumps({"torn_record": torn}) + "\n").encode("utf-8"))


def read_records(path, strict: bool = True) -> List[dict]:
    """The records of a ``metrics.jsonl``, one JSON object a line; blank lines are skipped, and so is a torn last
    line (no final newline and not valid JSON: what a kill leaves), with a warning.

    Raises FileNotFoundError when the file is missing. With ``strict``, any other line that is not a JSON object
    is a ValueError naming the file and the line number; without, such lines are passed over.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {path.parent} a training run directory?")
    data = read_regular(path, "metrics file")
    torn_at = _torn_tail(data)
    records = []
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as e:
            if torn_at is not None and number == len(lines):
                _warn(f"warning: {path}, line {number}: a torn last record (cut short by a kill or a full disk); "
                      f"skipped")
                continue
            if not strict:
                continue
            msg = getattr(e, "msg", None) or type(e).__name__
            raise ValueError(f"{path}, line {number}: not valid JSON ({msg})") from None
        if not isinstance(rec, dict):
            if not strict:
                continue
            raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(rec).__name__}")
        records.append(rec)
    return records


def first_record_with(run_dir, key: str):
    """The first record of ``RUN/metrics.jsonl`` that has ``key`` (None if there is none or no file); lines that
    do not parse are passed over."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    for record in read_records(path, strict=False):
        if key in record:
            return record
    return None
