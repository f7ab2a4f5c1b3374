"""Run directories: checkpoints that are safe to open, the model loader, and the guard on ``--out``.

A run directory holds ``recipe.yaml``, the tokenizer (text runs), ``metrics.jsonl``, ``checkpoints/ckpt-*.pt``
and, once training has finished, ``config.json`` + ``model.safetensors`` (:meth:`LatentEBMModel.save_pretrained`).

Safety: every checkpoint is read with ``torch.load(..., weights_only=True)``, PyTorch's restricted unpickler that
builds tensors and plain Python values and refuses to call anything else. So a checkpoint holds only tensors,
numbers, strings, lists, tuples and dicts: random-number states are stored as tensors and plain types
(:func:`rng_state`), never as pickled objects. A file that asks for any other global (for example ``os.system``)
is refused before anything in it runs, naming what it asked for. Checkpoints written before this format kept the
numpy random state as a pickled ``numpy.ndarray``; those exact numpy globals (array reconstruction, which runs no
code) are allowed for them, and nothing else is.
"""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import List, Tuple

from .files import FileFormatError, atomic_write, load_state

CKPT_DIR = "checkpoints"
CKPT_GLOB = "ckpt-*.pt"
#: what a checkpoint must hold (the trainer writes more)
CKPT_KEYS = ("step", "recipe", "model")


class CheckpointError(FileFormatError):
    """A checkpoint cannot be used: damaged, or not a textebm checkpoint. The message names the file."""


class UnsafeCheckpointError(CheckpointError):
    """A file asks for code to run while it is loaded; it is refused before anything in it runs."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- random-number states as plain values -------------------------------------------------------------------
def rng_state() -> dict:
    """The states of Python's, numpy's and torch's global generators, as tensors and plain types."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "python": [version, list(internal), gauss_next],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    import numpy as np
    import torch

    version, internal, gauss_next = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss_next))
    n = state["numpy"]
    keys = n["keys"].numpy() if hasattr(n["keys"], "numpy") else np.asarray(n["keys"])
    np.random.set_state((n["kind"], keys.astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                         float(n["cached_gaussian"])))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- reading and writing checkpoints ----------------------------------------------------------------------
def _legacy_numpy_globals() -> dict:
    """name -> object for the numpy globals an older checkpoint's pickled ``np.random.get_state()`` uses."""
    import numpy as np

    out = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            m = __import__(mod, fromlist=["_reconstruct"])
            out[f"{mod}._reconstruct"] = m._reconstruct
        except (ImportError, AttributeError):
            pass
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None and hasattr(dtypes, "UInt32DType"):
        out["numpy.dtypes.UInt32DType"] = dtypes.UInt32DType
    return out


def _upgrade_legacy(ck: dict) -> dict:
    """Older checkpoints kept the global RNG states under separate keys with numpy's state as an ndarray."""
    import numpy as np
    import torch

    if "rng" not in ck and "numpy_rng" in ck:
        kind, keys, pos, has_gauss, cached = ck.pop("numpy_rng")
        ck["rng"] = {
            "python": list(ck.pop("python_rng")),
            "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": ck.pop("torch_rng"),
            "cuda": ck.pop("cuda_rng", None),
        }
        ck["rng"]["python"][1] = list(ck["rng"]["python"][1])
    return ck


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read one checkpoint without running any code in it (see the module docstring).

    Raises :class:`CheckpointError` for a file that asks for code to run, a damaged file, or one that is not a
    textebm checkpoint (not a dict with ``step``, ``recipe`` and ``model``).
    """
    import torch

    path = Path(path)
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as e:  # truncated or not a torch file at all
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {_first_line(e)})") from None
    legacy = _legacy_numpy_globals()
    refused = [g for g in unsafe if g not in legacy]
    if refused:
        raise UnsafeCheckpointError(f"refusing to open {path}: loading it would call {', '.join(refused[:3])}, which a "
                              f"textebm checkpoint never does (it may be hostile; nothing in it was run)")
    try:
        if unsafe:
            with torch.serialization.safe_globals(list(legacy.values())):  # dtype classes are built on load
                ck = torch.load(path, map_location=map_location, weights_only=True)
        else:
            ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for damaged files
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(ck, dict) or any(k not in ck for k in CKPT_KEYS) or not isinstance(ck.get("recipe"), dict):
        raise CheckpointError(f"{path} is not a textebm checkpoint (expected a mapping with "
                              f"{', '.join(CKPT_KEYS)})")
    return _upgrade_legacy(ck)


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:200] if s else ""


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file, fsync, then rename: a crash never leaves a half-written file."""
    import torch

    def write(tmp):
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())

    path = atomic_write(path, write)
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
    except OSError:
        pass


def list_checkpoints(run_dir) -> List[Path]:
    return sorted((Path(run_dir) / CKPT_DIR).glob(CKPT_GLOB))


def save_checkpoint(state: dict, run_dir, keep: int) -> Path:
    """Write ``state`` as ``checkpoints/ckpt-<step>.pt`` and keep only the newest ``keep`` checkpoints."""
    d = Path(run_dir) / CKPT_DIR
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"ckpt-{int(state['step']):08d}.pt"
    atomic_save(state, path)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(run_dir, map_location="cpu") -> Tuple[Path, dict]:
    """The newest readable checkpoint; damaged ones are reported and skipped. An unsafe one stops everything."""
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise FileNotFoundError(f"no checkpoints in {Path(run_dir) / CKPT_DIR}")
    for path in reversed(ckpts):
        try:
            return path, load_checkpoint(path, map_location)
        except UnsafeCheckpointError:
            raise
        except CheckpointError as e:
            _log(f"warning: {e}; falling back to the previous one")
    raise CheckpointError(f"every checkpoint in {Path(run_dir) / CKPT_DIR} is unreadable")


# ---- what a directory holds --------------------------------------------------------------------------------
def is_saved_model(path) -> bool:
    from .model import CONFIG, WEIGHTS

    p = Path(path)
    return p.is_dir() and (p / CONFIG).is_file() and (p / WEIGHTS).is_file()


def holds_anything(path) -> bool:
    p = Path(path)
    return p.is_dir() and any(p.iterdir())


def check_out_dir(run_dir, overwrite: bool) -> None:
    """Refuse a non-empty ``--out`` (a saved model, a run, anything) unless ``overwrite``.

    With ``overwrite`` nothing is removed here: the trainer clears the directory only once the new run has set up
    its data and model, so a run that fails to start leaves what was there untouched.
    """
    p = Path(run_dir)
    if p.exists() and not p.is_dir():
        raise FileExistsError(f"--out {p} is a file, not a directory")
    if holds_anything(p) and not overwrite:
        what = ("a saved model" if is_saved_model(p) else "a training run" if list_checkpoints(p)
                else "files")
        raise FileExistsError(f"{p} already holds {what}; use --resume {p} to continue a run, another --out, "
                              f"or --overwrite to replace it")


#: the files a run or a saved model consists of (beside ``checkpoints/``); no output flag may write over them
RUN_FILES = ("config.json", "model.safetensors", "recipe.yaml", "vocab.json", "spm.model", "spm.json",
             "tokenizer.json", "tokenizer_config.json", "metrics.jsonl")


def check_output(path, flag: str, inputs=()) -> None:
    """Refuse an output path that would replace a file of a run or saved model (``RUN_FILES``, anything under
    ``checkpoints/``) or one of the command's own inputs: a FileExistsError naming the flag and the file."""
    if path is None:
        return
    p = Path(path).expanduser().absolute()
    for src in inputs:
        if src is not None and Path(src).exists() and p.exists() and os.path.samefile(p, src):
            raise FileExistsError(f"{flag} {path} is also this command's input; write the output elsewhere")
    run = p.parent.parent if p.parent.name == CKPT_DIR else p.parent
    if _holds_run(run) and (p.name in RUN_FILES or p.parent.name == CKPT_DIR):
        raise FileExistsError(f"{flag} {path} would replace a file of the run or model in {run}; "
                              f"choose another path")


def _holds_run(d: Path) -> bool:
    return d.is_dir() and (any((d / f).is_file() for f in ("config.json", "recipe.yaml"))
                           or bool(list_checkpoints(d)))


def set_aside(run_dir) -> Path:
    """Move everything in ``run_dir`` into a hidden folder inside it (``--overwrite``): the old run stays whole
    until the new one has written its first checkpoint (:func:`drop_aside`) or is put back if it fails to get
    there (:func:`restore_aside`)."""
    run_dir = Path(run_dir)
    aside = run_dir / f".replaced-{os.getpid()}"
    aside.mkdir()
    for child in list(run_dir.iterdir()):
        if child != aside:
            os.replace(child, aside / child.name)
    return aside


def restore_aside(run_dir, aside: Path) -> None:
    """Remove what the failed new run wrote and move the old contents back."""
    for child in list(Path(run_dir).iterdir()):
        if child != aside:
            _remove(child)
    for child in list(aside.iterdir()):
        os.replace(child, Path(run_dir) / child.name)
    aside.rmdir()


def drop_aside(aside: Path) -> None:
    """The new run has started: the old contents go."""
    _remove(aside)


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def clear_dir(run_dir) -> None:
    """Remove everything inside ``run_dir`` (the directory itself stays)."""
    for child in list(Path(run_dir).iterdir()):
        _remove(child)


# ---- loading a model from a run, a saved model or a checkpoint ---------------------------------------------
def load_model(path, device="cpu"):
    """A :class:`~textebm.model.LatentEBMModel` from a saved-model directory, a run directory (its newest
    checkpoint), a checkpoint file, or a model on the Hugging Face Hub by id (``org/name``; :mod:`textebm.hub`).
    Errors name the path and what was expected there."""
    from .config import Recipe, from_dict
    from .data.tokenizers import load_tokenizer
    from .hub import resolve
    from .model import LatentEBMModel, build_model

    p = resolve(path)  # a Hub id (org/name) becomes its snapshot in the local cache
    if is_saved_model(p):
        return LatentEBMModel.from_pretrained(p, device=device)
    if p.is_dir():
        if not list_checkpoints(p):
            raise FileNotFoundError(f"{p} holds no saved model (config.json + model.safetensors) and no checkpoints "
                                    f"({CKPT_DIR}/{CKPT_GLOB}); pass a run directory, a saved model or a checkpoint")
        ckpt_path, ck = load_latest_checkpoint(p)
        tok_dir = p
    else:
        ckpt_path, ck = p, load_checkpoint(p)
        tok_dir = p.parent.parent
    recipe = from_dict(Recipe, ck["recipe"])
    tokenizer = load_tokenizer(tok_dir) if recipe.data.kind == "text" else None
    model = build_model(recipe, tokenizer)
    load_state(model, ck["model"], f"checkpoint {ckpt_path}")
    return model.to(device)
