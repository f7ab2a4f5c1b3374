"""``textebm sample RUN``: sentences (one per line on stdout) or a PNG grid of images from a trained model; with
``--near SENTENCE [--radius R]`` variations of a sentence, with ``--symbol K`` (symbol-vector runs) samples of one
symbol."""
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
    w = s.add_mutually_exclusive_group()
    w.add_argument("--near", metavar="SENTENCE",
                   help="variations of this sentence: decodes of codes from its posterior (its posterior chains, or "
                        "draws of the run's amortized posterior), or with --radius from around its code")
    w.add_argument("--symbol", type=int_in(0), default=None, metavar="K",
                   help="symbol-vector runs: codes from p(z | y = K), the prior conditioned on symbol K")
    s.add_argument("--radius", type=float_in(0.0, low_open=False), default=None, metavar="R",
                   help="with --near: codes drawn from N(m, R^2 I) about the sentence's code m (the mean of its "
                        "posterior) instead of from its posterior")
    s.add_argument("--chains", type=int_in(1, 10 ** 4), default=8,
                   help="with --near --radius: posterior chains whose mean is the code m (default 8)")


def run(args) -> int:
    import torch

    from ..runs import check_output, load_model
    from .common import device as resolve

    dev = resolve(args.device)
    if args.radius is not None and args.near is None:
        raise ValueError("--radius goes with --near SENTENCE (the neighbourhood of which sentence?)")
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
    if (args.near is not None or args.symbol is not None) and model.is_image:
        raise ValueError("--near and --symbol are for text runs; this is an image run")
    if args.symbol is not None:
        if not hasattr(model.prior, "sample_symbol"):
            raise ValueError(f"--symbol needs a symbol-vector run (prior.kind: symbol_vector); this run's prior is "
                             f"{model.prior.kind!r}")
        if args.symbol >= model.prior.n_symbols:
            raise ValueError(f"--symbol {args.symbol}: this run has {model.prior.n_symbols} symbols, 0 to "
                             f"{model.prior.n_symbols - 1}")
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
        if args.near is not None:
            _, sents = model.sample_near(args.near, m, radius=args.radius, generator=gen, n_chains=args.chains,
                                         **decoding)
        else:
            sents = model.generate(m, chain=chain, generator=gen, symbol=args.symbol, **decoding)
        for sent in sents:
            # an empty decode still prints a visible line, so the output has exactly N non-empty lines
            out.write((sent if sent.strip() else "<empty>") + "\n")
        left -= m
    out.flush()
    return 0
