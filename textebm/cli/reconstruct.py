"""``textebm reconstruct RUN``: each sentence decoded at its code (greedy by default), with token accuracy and
BLEU against the input on request; image runs write the images beside their reconstructions as a PNG grid. The
work is :func:`textebm.latent_tools.reconstruct_all` around :meth:`textebm.model.LatentEBMModel.reconstruct`."""
from __future__ import annotations

from pathlib import Path

from .common import float_in, int_in, log
from .inputs import add_common


def add_parser(sub) -> None:
    r = sub.add_parser("reconstruct", help="decode each sentence's code (greedy, or sampled), with token accuracy "
                                           "and BLEU against the input (--scores)")
    r.add_argument("run", help="run directory, saved model directory, checkpoint file, or Hub id (org/name)")
    r.add_argument("sentences", nargs="*", metavar="SENTENCE", help="sentences to reconstruct (- reads stdin)")
    r.add_argument("--input", metavar="FILE", help="one sentence per line (- reads stdin); image runs: an array "
                                                   "of images (N, C, H, W) in a .npy file")
    r.add_argument("--scores", action="store_true",
                   help="also print token accuracy (by position, </s> included), exact match and corpus BLEU-4 "
                        "against the inputs on stderr (image runs: the MSE)")
    r.add_argument("--jsonl", action="store_true",
                   help="one JSON object per sentence (text, reconstruction and, with --scores, its token "
                        "accuracy and exact match)")
    d = r.add_mutually_exclusive_group()
    d.add_argument("--sample", action="store_true", help="decode by the recipe's rule (sampling) instead of greedily")
    d.add_argument("--temperature", type=float_in(0.0), default=None, help="decode by sampling at this temperature")
    r.add_argument("--top-k", type=int_in(0), default=None, help="sampling: the k most likely tokens (0 = all)")
    r.add_argument("--top-p", type=float_in(0.0, 1.0), default=None, help="sampling: nucleus, 0 < P <= 1")
    r.add_argument("--max-len", type=int_in(1, 10 ** 5), default=None, help="longest decode (default: the recipe's)")
    r.add_argument("--out", metavar="grid.png", help="image runs: the PNG grid to write (default reconstructions.png)")
    add_common(r, refine=True)


def decoding_rule(model, args) -> dict:
    """Greedy unless the command line asks for sampling (--sample, --temperature, --top-k, --top-p)."""
    from ..model import recipe_decoding

    sampled = args.sample or any(v is not None for v in (args.temperature, args.top_k, args.top_p))
    return recipe_decoding(model.recipe, max_len=args.max_len, greedy=None if sampled else True,
                           temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)


def run(args) -> int:
    from ..latent_tools import reconstruct_all
    from ..model import describe_decoding
    from ..runs import check_output
    from . import inputs

    if args.out is not None:
        if not Path(args.out).resolve().parent.is_dir():
            raise FileNotFoundError(f"cannot write {args.out}: its directory does not exist")
        check_output(args.out, "--out", inputs=(args.input,))
    model = inputs.load(args)
    if model.is_image:
        if args.sentences:
            raise inputs.UserError("an image run reconstructs images: pass --input IMAGES.npy, not sentences")
        check_output(args.out or "reconstructions.png", "--out", inputs=(args.input,))
        x = inputs.images(args.input)
        inputs.check_image_shape(model, x)
        rec, _, sc = reconstruct_all(model, x, batch_size=args.batch_size, n_chains=args.chains, seed=args.seed,
                                     progress=not args.no_progress, refine=args.refine)
        import torch

        from ..eval.image_metrics import save_image_grid

        path = Path(args.out or "reconstructions.png")
        save_image_grid(torch.stack([x, rec], 1).flatten(0, 1), path, nrow=2)
        log(f"wrote {len(rec)} images, each beside its reconstruction (one pair per row), to {path}")
        if args.scores:
            log(f"reconstruction MSE {sc['mse']:.5f} per value over {sc['n']} images")
        return 0
    sents = inputs.sentences(args.sentences, args.input)
    rule = decoding_rule(model, args)
    decodes, rows, sc = reconstruct_all(model, sents, batch_size=args.batch_size, n_chains=args.chains,
                                        seed=args.seed, progress=not args.no_progress, decoding=rule,
                                        scores=args.scores, refine=args.refine)
    if args.jsonl:
        recs = []
        for i, (s, d) in enumerate(zip(sents, decodes)):
            rec = {"text": s, "reconstruction": d}
            if rows is not None:
                rec.update(rows[i])
            recs.append(rec)
        inputs.emit_jsonl(recs)
    else:
        inputs.emit(inputs.shown(d) for d in decodes)
    if sc is not None:
        code = "the amortized posterior's mean" if model.encoder is not None else \
            f"the mean of {args.chains} posterior chains"
        steps = model.code_refine(args.refine)
        if steps:
            code += f", then {steps} steps of ascent to the posterior's mode"
        log(f"reconstruction of {sc['n']} sentences ({describe_decoding(rule)}, code: {code}): token accuracy "
            f"{sc['token_acc']:.3f}, exact match {sc['exact']:.3f}, BLEU-4 {sc['bleu']:.3f}")
    return 0
