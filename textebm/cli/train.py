"""``textebm train RECIPE`` / ``textebm train --resume RUN``: parse, check, call :func:`textebm.train.train`."""
from __future__ import annotations

import signal
from pathlib import Path

from .common import UserError, log

#: recipe keys that may change when a run is resumed (everything else fixes the model, the data or the noise)
RESUMABLE = {"train": ("steps", "log_every", "eval_every", "eval_batches", "save_every", "keep_checkpoints",
                       "device", "num_threads", "report_to"),
             "generate": None}  # None: every key of the section


def add_parser(sub) -> None:
    t = sub.add_parser("train", help="train a model from a YAML recipe or a packaged recipe's name")
    t.add_argument("recipe", nargs="?", help="recipe YAML file, or the name of a packaged recipe (textebm recipes "
                                             "lists them, e.g. quickstart); not needed with --resume")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.steps=200 (repeatable)")
    t.add_argument("--out", help="run directory (default: runs/<recipe name>); must be new or empty")
    t.add_argument("--data-dir", help="directory holding the corpus files (sets data.data_dir)")
    t.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: the recipe's train.device)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    t.add_argument("--overwrite", action="store_true",
                   help="replace whatever --out holds once the new run has trained a step and saved a checkpoint "
                        "(until then it is kept inside the directory, and put back if the run stops earlier)")
    t.add_argument("--restore", metavar="RUN_DIR",
                   help="put back the run that an interrupted --overwrite left set aside in RUN_DIR")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_resume_overrides(old, new) -> None:
    """Refuse overrides that a resumed run cannot honour (they would change the model, the data or its state)."""
    from ..config import to_dict

    a, b = to_dict(old), to_dict(new)
    for section, value in b.items():
        if value == a[section]:
            continue
        if not isinstance(value, dict):
            raise UserError(f"{section} cannot change when a run is resumed (the run has {a[section]!r})")
        allowed = RESUMABLE.get(section, ())
        for key, v in value.items():
            if v != a[section][key] and allowed is not None and key not in allowed:
                ok = ", ".join(f"{s}.{k}" for s, ks in RESUMABLE.items() for k in (ks or ["*"]))
                raise UserError(f"{section}.{key} cannot change when a run is resumed (the run has "
                                f"{a[section][key]!r}); keys that can: {ok}")


def check_resume_recipe(run_dir, recipe) -> None:
    """``recipe.yaml`` of a run against the recipe its newest checkpoint was trained with: an edit is held to the
    rules of ``--set`` (only :data:`RESUMABLE` keys may differ), so that a changed learning rate, seed or chain
    is refused rather than recorded but not used."""
    from ..config import ConfigError, Recipe, from_dict
    from ..runs import list_checkpoints, load_latest_checkpoint

    if not list_checkpoints(run_dir):
        return  # the trainer says there is nothing to resume
    path, ck = load_latest_checkpoint(run_dir)
    try:
        trained = from_dict(Recipe, ck["recipe"])
    except ConfigError as e:
        raise UserError(f"{path}: the recipe it was trained with is invalid ({e})") from None
    try:
        check_resume_overrides(trained, recipe)
    except UserError as e:
        raise UserError(f"{run_dir / 'recipe.yaml'} was edited since {path.name} was saved: {e}; undo the edit "
                        f"(keys that may change can be given with --set)") from None


def run(args) -> int:
    from ..config import apply_overrides, load_recipe, recipe_files
    from ..rundir import RunLock, check_run_links, recover, restore
    from ..runs import check_out_dir
    from ..train import train

    if args.restore:
        if args.recipe or args.out or args.resume or args.overwrite or args.overrides:
            raise UserError("--restore RUN_DIR takes no recipe, --out, --resume, --overwrite or --set")
        done = restore(Path(args.restore))
        for line in done:
            log(line)
        if not done:
            log(f"{args.restore}: nothing was set aside; nothing to put back")
        return 0
    inputs = []
    if args.resume:
        if args.recipe or args.out or args.data_dir or args.overwrite:
            raise UserError("--resume RUN_DIR continues that run with its own recipe and directory; do not also "
                            "give a recipe, --out, --data-dir or --overwrite")
        run_dir = Path(args.resume)
        if not run_dir.is_dir():
            raise UserError(f"run directory to resume not found: {run_dir}")
        with RunLock(run_dir, "textebm train --resume").acquire(create_dir=False):
            recover(run_dir)  # an interrupted --overwrite of this directory: its run comes back first
            check_run_links(run_dir)
        if not (run_dir / "recipe.yaml").is_file():
            raise UserError(f"{run_dir} is not a training run (it has no recipe.yaml)")
        recipe = load_recipe(run_dir / "recipe.yaml")
        check_resume_recipe(run_dir, recipe)
        if args.overrides:
            new = apply_overrides(recipe, args.overrides)
            check_resume_overrides(recipe, new)
            recipe = new
    else:
        if not args.recipe:
            raise UserError("train needs a recipe file (or --resume RUN_DIR)")
        recipe = load_recipe(args.recipe)
        inputs = recipe_files(args.recipe) + ([Path(args.data_dir)] if args.data_dir else [])
        overrides = list(args.overrides)
        if args.data_dir:
            overrides.append(f"data.data_dir={args.data_dir}")
        recipe = apply_overrides(recipe, overrides)
        run_dir = Path(args.out) if args.out else Path("runs") / recipe.name
        if not args.overwrite:
            check_out_dir(run_dir, False)  # the common mistake, before the lock (train checks again under it)
    summary = train(recipe, run_dir, device=args.device, resume=bool(args.resume), progress=not args.no_progress,
                    overwrite=args.overwrite, inputs=inputs)
    for line in summary.get("report_lines", []):
        log(line)
    sig = summary.get("interrupted_by")
    if sig:
        name = signal.Signals(sig).name
        if summary.get("put_back"):
            log(f"interrupted by {name} before the first training step: nothing was trained, and {run_dir} holds "
                f"what it held before (put back)")
        else:
            log(f"interrupted by {name} at step {summary['step']} of {recipe.train.steps}; checkpoint saved. "
                f"Continue with: textebm train --resume {run_dir}")
        return 128 + int(sig)
    if summary.get("put_back"):
        log(f"the run stopped before its first training step; {run_dir} holds what it held before (put back)")
        return 0
    log(f"saved: {run_dir}")
    return 0
