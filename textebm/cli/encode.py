"""``textebm encode RUN``: the code of each sentence (or image): the mean and spread of its posterior, from the
run's amortized posterior q(z | x) when it has one, else from several posterior chains. The work is
:func:`textebm.latent_tools.encode_all` around :meth:`textebm.model.LatentEBMModel.encode`."""
from __future__ import annotations

from .common import log
from .inputs import add_common


def add_parser(sub) -> None:
    e = sub.add_parser("encode", help="codes of sentences (mean and spread of each posterior); to stdout or a "
                                      ".safetensors / .npy / .jsonl file")
    e.add_argument("run", help="run directory, saved model directory, checkpoint file, or Hub id (org/name)")
    e.add_argument("sentences", nargs="*", metavar="SENTENCE", help="sentences to encode (- reads stdin)")
    e.add_argument("--input", metavar="FILE", help="one sentence per line (- reads stdin); image runs: an array "
                                                   "of images (N, C, H, W) in a .npy file")
    e.add_argument("--out", metavar="FILE", help="write the codes here, by extension: .safetensors (mean and std), "
                                                 ".npy (the means), .jsonl (text, mean, std per line); default: "
                                                 "stdout")
    e.add_argument("--jsonl", action="store_true", help="stdout: one JSON object per input (text, mean, std, "
                                                        "source) instead of the means as plain numbers")
    add_common(e, refine=True)


def run(args) -> int:
    from ..latent_tools import code_format, code_records, encode_all, write_codes
    from ..runs import check_output
    from . import inputs

    if args.out is not None:
        code_format(args.out)
        check_output(args.out, "--out", inputs=(args.input,))
    model = inputs.load(args)
    if model.is_image:
        if args.sentences:
            raise inputs.UserError("an image run encodes images: pass --input IMAGES.npy, not sentences")
        x = inputs.images(args.input)
        inputs.check_image_shape(model, x)
        texts = None
    else:
        x = inputs.sentences(args.sentences, args.input)
        texts = x
    codes = encode_all(model, x, batch_size=args.batch_size, n_chains=args.chains, seed=args.seed,
                       progress=not args.no_progress, refine=args.refine)
    how = "the amortized posterior q(z | x)" if codes.source.startswith("encoder") else f"{args.chains} posterior chains"
    steps = model.code_refine(args.refine)
    if steps:
        how += f", each climbed {steps} steps to its posterior's mode"
    if args.out is not None:
        write_codes(args.out, codes, texts)
        log(f"wrote {codes.mean.shape[0]} codes ({codes.mean.shape[1]} values each, from {how}) to {args.out}")
        return 0
    if args.jsonl:
        recs = code_records(codes, texts)
        for r in recs:
            r["source"] = codes.source
        inputs.emit_jsonl(recs)
    else:
        inputs.emit(" ".join(f"{v:.6g}" for v in row) for row in codes.mean.cpu().tolist())
    return 0
