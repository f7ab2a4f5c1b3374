"""``textebm`` command line: thin wrappers that parse, load and call the library.

Heavy libraries (torch, datasets, transformers, kenlm) are imported inside the commands, so ``--help`` is fast.
User errors print one line ``textebm: error: ...`` on stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


class UserError(Exception):
    """An error caused by the user's input; printed as one line, exit status 2."""


def _positive_int(name):
    def parse(v):
        try:
            i = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {v!r}")
        if i < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1, got {i}")
        return i
    return parse


def _positive_float(name):
    def parse(v):
        try:
            f = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {v!r}")
        if not f > 0:
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {f}")
        return f
    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="textebm", description="Latent-space energy-based prior models for text.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    t = sub.add_parser("train", help="train a model from a YAML recipe")
    t.add_argument("recipe", nargs="?", help="recipe YAML file (see recipes/); not needed with --resume")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.steps=200 (repeatable)")
    t.add_argument("--out", help="run directory (default: runs/<recipe name>)")
    t.add_argument("--data-dir", help="directory holding the corpus files (sets data.data_dir)")
    t.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: the recipe's train.device)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    t.add_argument("--overwrite", action="store_true",
                   help="start afresh even if the run directory already holds a run (its checkpoints are removed)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser("sample", help="sample sentences from a trained model (one per line on stdout), or a PNG "
                                      "grid of images from an image model")
    s.add_argument("run", help="run directory, saved model directory, or checkpoint file")
    s.add_argument("-n", type=_positive_int("-n"), default=10, help="number of sentences or images (default 10)")
    s.add_argument("--steps", type=int, default=None, help="prior Langevin steps K0 (default: the recipe's)")
    s.add_argument("--step-size", type=_positive_float("--step-size"), default=None,
                   help="prior Langevin step size s0 (default: the recipe's)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--temperature", type=_positive_float("--temperature"), default=None)
    g.add_argument("--greedy", action="store_true", help="arg-max decoding")
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--top-p", type=_positive_float("--top-p"), default=None)
    s.add_argument("--max-len", type=_positive_int("--max-len"), default=None)
    s.add_argument("--batch-size", type=_positive_int("--batch-size"), default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", help="image models: the PNG grid to write (default samples.png)")
    from .eval import commands as eval_commands  # light module: imports nothing heavy at import time

    eval_commands.add_parsers(sub)
    n = sub.add_parser("ngram", help="KenLM n-gram models: install lmplz, train (lmplz or built-in), perplexity",
                       add_help=False)
    n.add_argument("args", nargs=argparse.REMAINDER, help="install | train ... | ppl ARPA TXT (see textebm ngram -h)")
    return p


# ---- commands -------------------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from .config import apply_overrides, load_recipe
    from .train import train

    if args.resume:
        run_dir = Path(args.resume)
        if not run_dir.is_dir():
            raise UserError(f"run directory to resume not found: {run_dir}")
        recipe = load_recipe(run_dir / "recipe.yaml")
        if args.overrides:
            recipe = apply_overrides(recipe, args.overrides)
    else:
        if not args.recipe:
            raise UserError("train needs a recipe file (or --resume RUN_DIR)")
        recipe = load_recipe(args.recipe)
        overrides = list(args.overrides)
        if args.data_dir:
            overrides.append(f"data.data_dir={args.data_dir}")
        recipe = apply_overrides(recipe, overrides)
        run_dir = Path(args.out) if args.out else Path("runs") / recipe.name
        ckpts = run_dir / "checkpoints"
        if args.overwrite and ckpts.exists():
            import shutil

            shutil.rmtree(ckpts)
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        if ckpts.exists() and any(ckpts.iterdir()):
            raise UserError(f"{run_dir} already holds a run; use --resume {run_dir} to continue it or "
                            f"--out to choose another directory (or --overwrite to start afresh)")
    summary = train(recipe, run_dir, device=args.device, resume=bool(args.resume), progress=not args.no_progress)
    start, end = summary.get("valid_recon_nll_start"), summary.get("valid_recon_nll_end")
    if summary.get("valid_mse_start") is not None and summary.get("valid_mse_end") is not None:
        print(f"validation reconstruction MSE (per pixel value): start {summary['valid_mse_start']:.5f} -> end "
              f"{summary['valid_mse_end']:.5f}", file=sys.stderr)
    elif start is not None and end is not None:
        print(f"validation reconstruction NLL (nats/sentence): start {start:.3f} -> end {end:.3f}", file=sys.stderr)
    print(f"saved: {run_dir}", file=sys.stderr)
    return 0


def load_model_for_sampling(path: str, device: str = "cpu"):
    """A model from a run directory, a saved-model directory, or a checkpoint file."""
    import torch

    from .config import Recipe, from_dict
    from .data.vocab import load_tokenizer
    from .model import CONFIG, WEIGHTS, LatentEBMModel, build_model
    from .train import load_latest_checkpoint

    p = Path(path)
    if not p.exists():
        raise UserError(f"no such run directory or checkpoint: {p}")
    if p.is_dir() and (p / CONFIG).exists() and (p / WEIGHTS).exists():
        return LatentEBMModel.from_pretrained(p, device=device)
    if p.is_dir():
        _, ck = load_latest_checkpoint(p)
        tok_dir = p
    else:
        try:
            ck = torch.load(p, map_location="cpu", weights_only=False)
        except Exception as e:
            raise UserError(f"cannot read checkpoint {p}: {type(e).__name__}: {str(e)[:200]}")
        tok_dir = p.parent.parent
    if not isinstance(ck, dict) or "model" not in ck or "recipe" not in ck:
        raise UserError(f"{p} is not a textebm checkpoint")
    recipe = from_dict(Recipe, ck["recipe"])
    model = build_model(recipe, load_tokenizer(tok_dir) if recipe.data.kind == "text" else None)
    model.load_state_dict(ck["model"])
    return model.to(device)


def cmd_sample(args) -> int:
    import torch

    from .train import resolve_device

    device = resolve_device(args.device)
    model = load_model_for_sampling(args.run, device=str(device))
    model.eval()
    rec = model.recipe
    s = rec.sampling if rec is not None else None
    gcfg = rec.generate if rec is not None else None
    steps = args.steps if args.steps is not None else (s.prior_steps if s else 60)
    if steps < 0:
        raise UserError(f"--steps must be >= 0, got {steps}")
    step_size = args.step_size or (s.prior_step_size if s else 0.4)
    gen_kwargs = dict(
        max_len=args.max_len or (gcfg.max_len if gcfg else 40),
        greedy=args.greedy or (gcfg.greedy if gcfg and args.temperature is None else False),
        temperature=args.temperature or (gcfg.temperature if gcfg else 1.0),
        top_k=args.top_k if args.top_k is not None else (gcfg.top_k if gcfg else 0),
        top_p=args.top_p or (gcfg.top_p if gcfg else 1.0),
    )
    gen = torch.Generator(device=device)
    gen.manual_seed(args.seed)
    if model.is_image:  # one PNG grid
        from .eval.image import save_image_grid

        images = torch.cat([model.generate(min(args.batch_size, args.n - i), n_steps=steps, step_size=step_size,
                                           generator=gen).cpu() for i in range(0, args.n, args.batch_size)])
        path = Path(args.out or "samples.png")
        save_image_grid(images, path)
        print(f"wrote {len(images)} samples to {path}", file=sys.stderr)
        return 0
    left = args.n
    out = sys.stdout
    while left > 0:
        m = min(left, args.batch_size)
        for sent in model.generate(m, n_steps=steps, step_size=step_size, generator=gen, **gen_kwargs):
            # an empty decode still prints a visible line, so the output has exactly N non-empty lines
            out.write((sent if sent.strip() else "<empty>") + "\n")
        left -= m
    out.flush()
    return 0


def cmd_ngram(args) -> int:
    from .eval.ngram import ngram_main

    return ngram_main(args.args) or 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "ngram": cmd_ngram}


def _command(name):
    if name in COMMANDS:
        return COMMANDS[name]
    from .eval import commands as eval_commands

    return eval_commands.COMMANDS[name]


def _is_user_error(e: BaseException) -> bool:
    """Errors caused by what the user passed (files, recipes, settings), as opposed to bugs."""
    from .config import ConfigError

    kinds = [UserError, ConfigError, FileNotFoundError, ValueError]
    if "torch" in sys.modules:
        from .sampling.base import SamplerDivergedError

        kinds.append(SamplerDivergedError)
    if "textebm.eval.ngram" in sys.modules:
        from .eval.ngram import LmplzError

        kinds.append(LmplzError)
    return isinstance(e, tuple(kinds))


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "ngram":  # its own parser handles everything after the word, --help included
        args = argparse.Namespace(command="ngram", args=argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        return _command(args.command)(args)
    except Exception as e:  # user-facing errors become one line; anything else is a bug and keeps its traceback
        if not _is_user_error(e):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"textebm: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("textebm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
