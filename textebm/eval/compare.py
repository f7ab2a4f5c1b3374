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
    from ..rundir import check_recovered

    out = []
    for run in runs:
        p = Path(run)
        if p.is_dir():
            check_recovered(p)
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
    """A number for the table: fixed-point with ``digits`` decimals, scientific notation for magnitudes of 1e6
    and above (an integer above 1e308 included: no float can hold it), "n/a" for None and non-finite values."""
    if v is None:
        return "n/a"
    if isinstance(v, int) and not isinstance(v, bool):
        if abs(v) < 10 ** 6:
            return str(v)
        s = str(abs(v))  # digits of an integer beyond any float, read off its decimal text
        return f"{'-' if v < 0 else ''}{s[0]}.{s[1:digits + 1]}e+{len(s) - 1}"
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}e}" if abs(v) >= 1e6 else f"{v:.{digits}f}"


def _cell(text: str) -> str:
    """Text as one Markdown table cell: ``|`` escaped, line breaks as spaces."""
    return " ".join(str(text).split()).replace("\\", "\\\\").replace("|", "\\|")


def _mean_sd(vals: List[float]):
    """Mean and sample standard deviation of values that may be huge: computed on floats, with an overflow (values
    near 1e308) giving None, shown as n/a."""
    try:
        xs = [float(v) for v in vals]
        mean = math.fsum(xs) / len(xs)
        sd = statistics.stdev(xs)
    except (OverflowError, ValueError):
        return None, None
    return (mean if math.isfinite(mean) else None), (sd if math.isfinite(sd) else None)


def compare_table(items: List[dict], by: Optional[str] = None) -> str:
    """A Markdown table: one row per run, or with ``by`` one row per value of that recipe key (mean ± sd)."""
    head = ["run" if by is None else by, "n"] + [c for c, _, _ in COLUMNS]
    lines = ["| " + " | ".join(_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    if by is None:
        for it in items:
            cells = [it.get("name") or Path(it["run"]).name, "1"] + [_fmt(_get(it["report"], p), d) for _, p, d in COLUMNS]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        return "\n".join(lines)
    from ..config import check_key

    check_key(by)
    if items and all(_missing(it["report"], by) for it in items):
        raise ValueError(f"--by {by}: none of the reports records a value for it (they were written without the "
                         f"run's recipe); group by a key the runs' recipes hold, e.g. prior.kind")
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
                mean, sd = _mean_sd(vals)
                cells.append(f"{_fmt(mean, d)} ± {_fmt(sd, d)}")
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _missing(report: dict, key: str) -> bool:
    node = (report.get("run") or {}).get("recipe")
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return True
        node = node[part]
    return False
