"""``textebm interpolate RUN "SENTENCE A" "SENTENCE B"``: the decodes along the path between the codes of two
sentences (linear, or spherical with --spherical), both endpoints included; ``--input FILE`` takes one pair per
line (the two sentences separated by a tab). Image runs: the first two images of ``--input IMAGES.npy``, as a PNG
row. The work is :func:`textebm.latent_tools.interpolate_pairs` (:meth:`textebm.model.LatentEBMModel.interpolate`
for one pair)."""
from __future__ import annotations

from pathlib import Path

from .common import UserError, int_in, log
from .inputs import add_common


def add_parser(sub) -> None:
    i = sub.add_parser("interpolate", help="decodes along the path between the codes of two sentences "
                                           "(linear or --spherical)")
    i.add_argument("run", help="run directory, saved model directory, checkpoint file, or Hub id (org/name)")
    i.add_argument("sentences", nargs="*", metavar="SENTENCE", help="the two sentences A and B")
    i.add_argument("--input", metavar="FILE",
                   help="pairs, one per line: SENTENCE A<tab>SENTENCE B (- reads stdin); image runs: a .npy array "
                        "of images (N, C, H, W), of which the first two are the endpoints")
    i.add_argument("--steps", type=int_in(2, 10 ** 4), default=8,
                   help="codes on the path, both endpoints included (default 8)")
    i.add_argument("--spherical", action="store_true",
                   help="spherical interpolation (slerp) about the prior reference's mean instead of a straight line")
    i.add_argument("--jsonl", action="store_true",
                   help="one JSON object per pair (a, b, t, path) instead of one decode per line (pairs separated "
                        "by an empty line)")
    i.add_argument("--out", metavar="row.png", help="image runs: the PNG to write (default interpolation.png)")
    add_common(i, chains_help="posterior chains per endpoint when the run has no amortized posterior (default 8): "
                              "the code is their mean")


def pairs_of(args):
    """(A, B) pairs from the two positional sentences and/or --input (tab-separated lines)."""
    from . import inputs

    pairs = []
    if args.sentences:
        if len(args.sentences) != 2 or "-" in args.sentences:
            raise UserError(f"interpolate takes two sentences, A and B (got {len(args.sentences)}); more pairs go in "
                            f"--input FILE, one 'A<tab>B' per line")
        pairs.append(tuple(" ".join(s.split()) for s in args.sentences))
    if args.input is not None:
        raw = inputs.read_text(args.input).split("\n")
        if raw and raw[-1] == "":
            raw.pop()
        for n, line in enumerate(raw, 1):
            parts = line.split("\t")
            if len(parts) != 2:
                raise UserError(f"{args.input} line {n}: expected two sentences separated by one tab, got "
                                f"{len(parts)} field(s)")
            pairs.append(tuple(" ".join(p.split()) for p in parts))
    if not pairs:
        raise UserError("no sentences: give two sentences, or --input FILE with one 'A<tab>B' pair per line")
    return pairs


def run(args) -> int:
    from ..latent_tools import interpolate_pairs
    from ..runs import check_output
    from . import inputs

    if args.out is not None and not Path(args.out).resolve().parent.is_dir():
        raise FileNotFoundError(f"cannot write {args.out}: its directory does not exist")
    check_output(args.out, "--out", inputs=(args.input,))
    model = inputs.load(args)
    if model.is_image:
        if args.sentences:
            raise UserError("an image run interpolates images: pass --input IMAGES.npy, not sentences")
        x = inputs.images(args.input)
        inputs.check_image_shape(model, x)
        if x.shape[0] < 2:
            raise UserError(f"{args.input} holds {x.shape[0]} image(s); interpolation needs two")
        path = Path(args.out or "interpolation.png")
        check_output(path, "--out", inputs=(args.input,))
        _, imgs = interpolate_pairs(model, [(x[0], x[1])], steps=args.steps, spherical=args.spherical,
                                    n_chains=args.chains, seed=args.seed, batch_size=args.batch_size)
        from ..eval.image_metrics import save_image_grid

        save_image_grid(imgs[0], path, nrow=args.steps)
        log(f"wrote the {args.steps} images of the path to {path}")
        return 0
    pairs = pairs_of(args)
    paths, decodes = interpolate_pairs(model, pairs, steps=args.steps, spherical=args.spherical,
                                       n_chains=args.chains, seed=args.seed, batch_size=args.batch_size,
                                       progress=not args.no_progress)
    ts = [round(k / (args.steps - 1), 6) for k in range(args.steps)]
    if args.jsonl:
        inputs.emit_jsonl({"a": a, "b": b, "t": ts, "path": d} for (a, b), d in zip(pairs, decodes))
        return 0
    lines = []
    for n, d in enumerate(decodes):
        if n:
            lines.append("")
        lines += [inputs.shown(s) for s in d]
    inputs.emit(lines)
    return 0
