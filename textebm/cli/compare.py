"""``textebm compare RUN...``: evaluation reports of several runs side by side (grouped by a recipe key)."""
from __future__ import annotations


def add_parser(sub) -> None:
    c = sub.add_parser("compare", help="put the evaluation reports of several runs side by side (textebm eval "
                                       "writes them), optionally grouped by a recipe key with mean ± sd")
    c.add_argument("runs", nargs="+", help="run directories (or report files), or Hub ids (org/name)")
    c.add_argument("--by", default=None, metavar="SECTION.KEY",
                   help="group runs by this recipe key (e.g. prior.kind) and show mean ± sd over each group")
    c.add_argument("--report", default="eval-test.json", help="report file name in each run (default eval-test.json)")


def run(args) -> int:
    from ..eval.compare import compare_table, load_reports
    from .common import resolve_run

    resolved = [resolve_run(r, must_exist=False) for r in args.runs]  # Hub ids (org/name) as their local snapshots
    reports = load_reports([str(p) for p, _ in resolved], args.report)
    for entry, run, (_, from_hub) in zip(reports, args.runs, resolved):
        if from_hub:
            entry.update(run=run, name=run)
    print(compare_table(reports, by=args.by))
    return 0
