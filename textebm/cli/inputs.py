"""What the latent commands (``encode``, ``reconstruct``, ``interpolate``, ``cluster``, ``sample --near``) share:
sentences from arguments, a file or stdin; images from a ``.npy`` array; the options every one of them takes; and
the one-line outputs (plain text or JSONL) on stdout.

Inputs are bounded like every other file the package reads (a regular file, or stdin, of at most
:data:`MAX_INPUT_BYTES`); each line is one sentence, its whitespace normalized; a final newline does not make an
empty last sentence. Standard library only at import time (``textebm --help`` stays fast).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import UserError, int_in, seed_type

#: the most bytes an input file (or stdin) may hold
MAX_INPUT_BYTES = 64 << 20


def add_common(p, chains_help: str = "posterior chains per input when the run has no amortized posterior "
                                     "(default 8): the code is their mean", refine: bool = False) -> None:
    """The options every latent command takes: --chains, --batch-size, --seed, --device, --threads,
    --no-progress; with ``refine`` also --refine (steps of ascent from each code to its posterior's mode)."""
    p.add_argument("--chains", type=int_in(1, 10 ** 4), default=8, help=chains_help)
    if refine:
        p.add_argument("--refine", type=int_in(0, 10 ** 5), default=None, metavar="STEPS",
                       help="move each code to its posterior's mode by STEPS steps of gradient ascent (noise-free "
                            "Langevin of size 0.3); 100 suits the quickstart (default: the recipe's "
                            "sampling.code_refine, 0 in most: the mean itself)")
    p.add_argument("--batch-size", type=int_in(1, 10 ** 6), default=64, help="inputs per batch (default 64)")
    p.add_argument("--seed", type=seed_type, default=0, help="seed of the chains and of sampled decoding")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default cpu)")
    p.add_argument("--threads", type=int_in(1, 1024), default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on long inputs")


def read_text(path: str, what: str = "input") -> str:
    """The text of ``path`` (``-``: stdin), bounded and UTF-8; errors name the input."""
    if path == "-":
        data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        if len(data) > MAX_INPUT_BYTES:
            raise ValueError(f"stdin holds more than the {MAX_INPUT_BYTES} bytes an {what} may have")
        name = "stdin"
    else:
        from ..files import read_regular

        data = read_regular(Path(path), f"{what} file", MAX_INPUT_BYTES)
        name = path
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {name} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def lines_of(text: str):
    """One sentence per line (newline only), whitespace normalized; a final newline ends the last line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [" ".join(line.split()) for line in lines]


def sentences(args, input_path, what: str = "sentences"):
    """Sentences from the positional arguments (``-`` among them reads stdin there) and ``--input FILE``
    (``-``: stdin), in that order; a UserError when there are none."""
    out = []
    stdin_used = False
    for a in args or ():
        if a == "-":
            if stdin_used:
                raise UserError("stdin (-) can be read once")
            stdin_used = True
            out += lines_of(read_text("-"))
        else:
            out.append(" ".join(a.split()))
    if input_path is not None:
        if input_path == "-" and stdin_used:
            raise UserError("stdin (-) can be read once")
        out += lines_of(read_text(input_path))
    if not out:
        raise UserError(f"no {what}: give them as arguments, with --input FILE, or - to read stdin")
    return out


def images(input_path, what: str = "--input"):
    """Images (N, C, H, W) from a ``.npy`` array file (read without pickles) for an image run, as a float
    tensor."""
    import io

    import numpy as np
    import torch

    from ..files import read_regular

    if input_path is None:
        raise UserError(f"an image run reads images: pass {what} IMAGES.npy (an array of shape (N, C, H, W))")
    if input_path == "-":
        raise UserError("an image run reads a .npy file, not stdin")
    try:
        arr = np.load(io.BytesIO(read_regular(Path(input_path), "image array")), allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{input_path} is not a .npy array of numbers ({' '.join(str(e).split())[:120]})") from None
    if arr.ndim != 4 or arr.dtype.kind not in "fiu":
        raise ValueError(f"{input_path}: expected an array of numbers of shape (N, C, H, W), got {arr.dtype} "
                         f"{arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).float()


def check_image_shape(model, x) -> None:
    d = model.decoder
    want = (getattr(d, "channels", None), getattr(d, "image_size", None), getattr(d, "image_size", None))
    if None not in want and tuple(x.shape[1:]) != want:
        raise ValueError(f"the images are {tuple(x.shape[1:])}; this run reads (C, H, W) = {want}")


def emit(lines) -> None:
    """Print lines on stdout (an empty string still prints a line)."""
    out = sys.stdout
    for line in lines:
        out.write(line + "\n")
    out.flush()


def emit_jsonl(records) -> None:
    out = sys.stdout
    for r in records:
        out.write(json.dumps(r, ensure_ascii=False) + "\n")
    out.flush()


def shown(sentence: str) -> str:
    """A decode as a line: an empty one reads ``<empty>`` (as ``textebm sample`` prints it)."""
    return sentence if sentence.strip() else "<empty>"


def load(args, for_what: str = ""):
    """The model of ``args.run`` on ``args.device`` in eval mode, with ``args.threads`` torch threads."""
    from ..runs import load_model
    from .common import device, resolve_run, set_threads

    run_path, _ = resolve_run(args.run)
    set_threads(args.threads)
    model = load_model(run_path, device=str(device(args.device)))
    model.eval()
    return model
