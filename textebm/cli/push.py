"""``textebm push RUN org/name``: upload a trained model to the Hugging Face Hub with a generated model card
(:meth:`textebm.model.LatentEBMModel.push_to_hub`); ``--stage DIR`` writes what would be uploaded and sends nothing."""
from __future__ import annotations

from pathlib import Path

from .common import UserError, log


def add_parser(sub) -> None:
    p = sub.add_parser("push", help="upload a trained model to the Hugging Face Hub (safetensors weights, tokenizer, "
                                    "recipe, metrics, evaluation reports and a generated model card)")
    p.add_argument("run", help="run directory, saved model directory, or checkpoint file")
    p.add_argument("repo_id", metavar="org/name", help="the Hub repository (created if it does not exist)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", default=None, help="the branch to push to (default: main)")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument("--stage", default=None, metavar="DIR",
                   help="write the files that would be uploaded (model card included) into DIR, a new or empty "
                        "directory, and upload nothing")


def run(args) -> int:
    from ..hub import parse_hub_id, push, stage
    from ..runs import holds_anything, load_model
    from .common import resolve_run

    if parse_hub_id(args.repo_id) is None or "@" in args.repo_id:
        raise UserError(f"{args.repo_id!r} is not a Hub repository id; expected org/name")
    stage_dir = Path(args.stage) if args.stage else None
    if stage_dir is not None and (stage_dir.exists() and (not stage_dir.is_dir() or holds_anything(stage_dir))):
        raise UserError(f"--stage {stage_dir} must be a new or empty directory")
    path, _ = resolve_run(args.run)
    run_dir = path if path.is_dir() else path.parent.parent
    model = load_model(path)
    if stage_dir is not None:
        files = stage(model, stage_dir, args.repo_id, run_dir)
        for f in files:
            print(f)
        log(f"staged {len(files)} files for {args.repo_id} in {stage_dir}; nothing was uploaded")
        return 0
    info = push(model, args.repo_id, run_dir=run_dir, private=args.private or None, commit_message=args.message,
                revision=args.revision)
    url = getattr(info, "commit_url", None) or getattr(info, "repo_url", None) or str(info)
    print(url)
    log(f"pushed {args.run} to {args.repo_id}; load it with LatentEBMModel.from_pretrained({args.repo_id!r}) or "
        f"textebm sample {args.repo_id}")
    return 0
