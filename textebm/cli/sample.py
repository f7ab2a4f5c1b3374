"""``textebm sample RUN``: sentences (one per line on stdout) or a PNG grid of images from a trained model."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import float_in, int_in, log, seed_type


def add_parser(sub) -> None:
    s = sub.add_parser("sample", help="sample sentences from a trained model (one per line on stdout), or a PNG "
                                      "grid of images from an image model")
    s.add_argument("run", help="run directory, saved model directory, checkpoint file, or Hub id (org/name)")
    s.add_argument("-n", type=int_in(1, 10 ** 7), default=10, help="number of sentences or images (default 10)")
    s.add_argument("--steps", type=int_in(0, 10 ** 6), default=None,
                   help="prior Langevin steps K0 (default: the recipe's)")
    s.add_argument("--step-size", type=float_in(0.0), default=None,
                   help="prior Langevin step size s0 (default: the recipe's)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--temperature", type=float_in(0.0), default=None)
    g.add_argument("--greedy", action="store_true", help="arg-max decoding")
    s.add_argument("--top-k", type=int_in(0), default=None, help="keep the k most likely tokens (0 = all)")
    s.add_argument("--top-p", type=float_in(0.0, 1.0), default=None,
                   help="nucleus: the smallest set of tokens with probability >= P, 0 < P <= 1")
    s.add_argument("--max-len", type=int_in(1, 10 ** 5), default=None)
    s.add_argument("--batch-size", type=int_in(1, 10 ** 6), default=256)
    s.add_argument("--seed", type=seed_type, default=0)
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", help="image models: the PNG grid to write (default samples.png)")


def run(args) -> int:
    import torch

    from ..runs import check_output, load_model
    from .common import device as resolve

    dev = resolve(args.device)
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise FileNotFoundError(f"cannot write {args.out}: its directory does not exist")
    check_output(args.out, "--out")
    model = load_model(args.run, device=str(dev))
    model.eval()
    from ..model import recipe_decoding

    chain = model.prior_chain.replace(n_steps=args.steps, step_size=args.step_size)
    decoding = recipe_decoding(model.recipe, max_len=args.max_len, greedy=True if args.greedy else None,
                               temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    gen = torch.Generator(device=dev)
    gen.manual_seed(args.seed)
    if model.is_image:  # one PNG grid
        from ..eval.image_metrics import save_image_grid

        images = torch.cat([model.generate(min(args.batch_size, args.n - i), chain=chain, generator=gen).cpu()
                            for i in range(0, args.n, args.batch_size)])
        path = Path(args.out or "samples.png")
        save_image_grid(images, path)
        log(f"wrote {len(images)} samples to {path}")
        return 0
    left, out = args.n, sys.stdout
    while left > 0:
        m = min(left, args.batch_size)
        for sent in model.generate(m, chain=chain, generator=gen, **decoding):
            # an empty decode still prints a visible line, so the output has exactly N non-empty lines
            out.write((sent if sent.strip() else "<empty>") + "\n")
        left -= m
    out.flush()
    return 0
