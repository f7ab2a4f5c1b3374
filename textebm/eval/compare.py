"""Several runs' evaluation reports side by side (``textebm compare RUN...``), optionally grouped by a recipe key
with the mean and standard deviation over the runs of each group (seeds, typically).

Each run contributes the report ``textebm eval`` wrote into it (``eval-test.json`` by default). The columns are the
sample metrics (FPPL, RPPL, the grammar's verdict on samples), the likelihood (NLL, KL to the data) and the latent
diagnostics (mutual information, active units, shuffled-latent gap, KL of the posterior to the prior).
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence

#: (column, path into the report, digits)
COLUMNS = (
    ("FPPL", ("fppl", "value"), 2),
    ("RPPL", ("rppl", "value"), 2),
    ("grammatical", ("truth", "samples", "frac_derivable"), 3),
    ("NLL", ("nll", "nll_per_sentence"), 2),
    ("KL(data, model)", ("truth", "kl", "kl_per_sentence"), 2),
    ("MI", ("latent", "mi"), 2),
    ("active units", ("latent", "active_units"), 1),
    ("shuffle gap", ("latent", "shuffle_gap"), 2),
    ("KL(posterior, prior)", ("latent", "kl"), 2),
    ("recon acc", ("latent", "recon_token_acc"), 3),
)


def _get(d, path):
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d if isinstance(d, (int, float)) and not isinstance(d, bool) else None


def load_reports(runs: Sequence[str], report: str = "eval-test.json") -> List[dict]:
    """{run, name, report} for each run (a report file is named after its directory); a run without the report is
    a FileNotFoundError saying what to run."""
    from ..files import read_json

    out = []
    for run in runs:
        p = Path(run)
        path = p if p.is_file() else p / report
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `textebm eval {run}` first (or pass --report NAME)")
        out.append({"run": str(run), "name": (p.parent if p.is_file() else p).name, "report": read_json(path)})
    return out


def recipe_value(report: dict, key: str):
    """The value of a recipe key (``section.key``) recorded in a report, or None."""
    node = (report.get("run") or {}).get("recipe") or {}
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _fmt(v: Optional[float], digits: int) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return str(int(v)) if isinstance(v, int) else f"{v:.{digits}f}"


def compare_table(items: List[dict], by: Optional[str] = None) -> str:
    """A Markdown table: one row per run, or with ``by`` one row per value of that recipe key (mean ± sd)."""
    head = ["run" if by is None else by, "n"] + [c for c, _, _ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if by is None:
        for it in items:
            cells = [it.get("name") or Path(it["run"]).name, "1"] + [_fmt(_get(it["report"], p), d) for _, p, d in COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)
    groups: Dict[str, List[dict]] = {}
    for it in items:
        groups.setdefault(str(recipe_value(it["report"], by)), []).append(it)
    for value, members in groups.items():
        cells = [value, str(len(members))]
        for _, path, d in COLUMNS:
            vals = [v for v in (_get(m["report"], path) for m in members) if v is not None]
            if not vals:
                cells.append("n/a")
            elif len(vals) == 1:
                cells.append(_fmt(vals[0], d))
            else:
                cells.append(f"{_fmt(statistics.mean(vals), d)} ± {_fmt(statistics.stdev(vals), d)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
