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
from pathlib import Path
from typing import List, Tuple

from .files import FileFormatError, WriteError, load_state, write_file
from .rundir import check_recovered, is_internal, set_aside  # noqa: F401 (set_aside: the trainer's, through here)
from .console import log as _log

CKPT_DIR = "checkpoints"
CKPT_GLOB = "ckpt-*.pt"
#: what a checkpoint must hold (the trainer writes more)
CKPT_KEYS = ("step", "recipe", "model")


class CheckpointError(FileFormatError):
    """A checkpoint cannot be used: damaged, or not a textebm checkpoint. The message names the file."""


class UnsafeCheckpointError(CheckpointError):
    """A file asks for code to run while it is loaded; it is refused before anything in it runs."""


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
    if path.exists() and not path.is_file():  # a device or a pipe: torch would read it forever, or block
        raise CheckpointError(f"checkpoint {path} is not a regular file (a directory, a device or a pipe)")
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


def atomic_save(obj, path: Path, root=None) -> None:
    """``torch.save`` through :func:`textebm.files.write_file` (an exclusive temporary file, fsync, rename): a
    crash or a full disk never leaves a half-written file, and nothing is written through a link. torch reports
    a failed write (a full disk) as a RuntimeError; it becomes a :class:`~textebm.files.WriteError`."""
    import torch

    def write(fh):
        try:
            torch.save(obj, fh)
        except RuntimeError as e:
            raise WriteError(f"could not write {path}: {_first_line(e)[:120]} (is the disk full?); nothing was "
                             f"replaced") from None

    write_file(path, write, root=root)


def list_checkpoints(run_dir) -> List[Path]:
    return sorted((Path(run_dir) / CKPT_DIR).glob(CKPT_GLOB))


def save_checkpoint(state: dict, run_dir, keep: int) -> Path:
    """Write ``state`` as ``checkpoints/ckpt-<step>.pt`` and keep only the newest ``keep`` checkpoints. Neither
    ``checkpoints/`` nor a checkpoint may be a link (refused: a planted link would send the write, or the
    removal of old checkpoints, into another directory)."""
    from .files import refuse_link

    d = Path(run_dir) / CKPT_DIR
    path = d / f"ckpt-{int(state['step']):08d}.pt"
    atomic_save(state, path, root=run_dir)
    for old in list_checkpoints(run_dir)[:-keep]:
        refuse_link(old, "in the run,")
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
    """True when the directory holds anything but the lock file of :mod:`textebm.rundir`."""
    p = Path(path)
    return p.is_dir() and any(not is_internal(c.name) for c in p.iterdir())


def check_out_dir(run_dir, overwrite: bool) -> None:
    """Refuse a non-empty ``--out`` (a saved model, a run, anything) unless ``overwrite``.

    With ``overwrite`` nothing is removed here: the trainer sets the contents aside only once the new run has set
    up its data and model (:func:`textebm.rundir.set_aside`), and they come back unless it trains and saves.
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
             "tokenizer.json", "tokenizer_config.json", "metrics.jsonl", ".lock")
#: folders of a run whose every file belongs to it
RUN_DIRS = (CKPT_DIR, "tensorboard")


def check_output(path, flag: str, inputs=()) -> None:
    """Refuse an output path that would replace a file of a run or saved model (``RUN_FILES``, anything under
    ``checkpoints/`` or a run that ``--overwrite`` set aside) or one of the command's own inputs: a
    FileExistsError naming the flag and the file. Links are resolved first (``Path.resolve``): a link that
    points at a protected file is refused like the file itself."""
    if path is None:
        return
    p = Path(path).expanduser().resolve()
    if p.is_dir():
        raise FileExistsError(f"{flag} {path} is a directory; pass the path of a file")
    for src in inputs:
        if src is None:
            continue
        s = Path(src).expanduser()
        if s.exists() and (s.resolve() == p or (p.exists() and os.path.samefile(p, s))):
            raise FileExistsError(f"{flag} {path} is also this command's input; write the output elsewhere")
    for folder in p.parents:  # inside a run that --overwrite set aside
        if is_internal(folder.name):
            raise FileExistsError(f"{flag} {path} would write into {folder}, which keeps a replaced run; "
                                  f"choose another path")
    run = p.parent.parent if p.parent.name in RUN_DIRS else p.parent
    if _holds_run(run) and (p.name in RUN_FILES or p.parent.name in RUN_DIRS):
        raise FileExistsError(f"{flag} {path} would replace a file of the run or model in {run}; "
                              f"choose another path")


def _holds_run(d: Path) -> bool:
    return d.is_dir() and (any((d / f).is_file() for f in ("config.json", "recipe.yaml"))
                           or bool(list_checkpoints(d)))


def restore_aside(run_dir, aside) -> None:
    """Remove what the failed new run wrote and put back what ``set_aside`` moved away."""
    aside.put_back()


def drop_aside(aside) -> None:
    """The new run has trained and saved: what ``--overwrite`` replaced goes."""
    aside.commit()


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
    if not p.exists():
        raise FileNotFoundError(f"no such run directory or checkpoint: {p}")
    run = p if p.is_dir() else p.parent.parent if p.parent.name == CKPT_DIR else None
    if run is not None:
        check_recovered(run)
    if is_saved_model(p):
        check_model_config(p)
        model = LatentEBMModel.from_pretrained(p, device=device)
        _check_vocab(model, p)
        return model
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


#: bounds on the scales in a saved model's config.json (its sizes are bounded by the weights file, which must hold
#: that many values: :meth:`LatentEBMModel.from_pretrained`): floats that scale the latent space or the likelihood
CONFIG_FLOAT_BOUNDS = {"sigma0": (1e-12, 1e6), "sigma": (1e-12, 1e6), "f_clamp": (1e-12, 1e12),
                       "negative_slope": (-1e6, 1e6), "init_range": (0.0, 1e6)}


def check_model_config(directory) -> None:
    """``config.json`` of a saved model read as data (a regular file, bounded size and nesting) with its scales
    bounded (:data:`CONFIG_FLOAT_BOUNDS`; a ``sigma0`` of 1e308 overflows the first chain), before anything is
    built from it: a ValueError naming the file and the key."""
    import math

    from .files import read_json

    path = Path(directory) / "config.json"
    cfg = read_json(path)
    for part in ("prior", "decoder"):
        sec = cfg.get(part)
        if not isinstance(sec, dict):
            continue
        for key, (lo, hi) in CONFIG_FLOAT_BOUNDS.items():
            value = sec.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not (math.isfinite(value) and lo <= value <= hi):
                raise FileFormatError(f"{path} ({part}): {key} = {value!r} must be a number in [{lo:g}, {hi:g}]")


def _check_vocab(model, where) -> None:
    """The tokenizer a saved model brings must have as many tokens as its decoder's vocabulary (a shorter
    vocab.json would make decoding index past its end)."""
    n = getattr(model.decoder, "vocab_size", None)
    if model.tokenizer is not None and isinstance(n, int) and len(model.tokenizer) != n:
        raise FileFormatError(f"the tokenizer in {where} has {len(model.tokenizer)} tokens but the model's "
                              f"vocab_size is {n}; the vocabulary file does not belong to these weights")


# ---- a training command's hold on its run directory ----------------------------------------------------------
def write_run_file(run_dir, name: str, text: str) -> Path:
    """Write one file of a run (``recipe.yaml``) through :func:`textebm.files.write_file`, inside ``run_dir``."""
    return write_file(Path(run_dir) / name, text, root=run_dir)


def divergence_message(e, trainer) -> str:
    """A chain that diverged during training, explained by what the run shows: a chain that diverges before any
    update points at its step size; weights that have grown far within a few updates point at the learning rates,
    not at the step size of the chain that then diverged. (A loss that diverges is a TrainingDivergedError, whose
    message already names the learning rates.)"""
    t = trainer.recipe.train
    lrs = f"train.lr_decoder={t.lr_decoder:g}, train.lr_prior={t.lr_prior:g}"
    step = trainer.step
    if step == 0:
        return str(e)
    import torch

    with torch.no_grad():
        sizes = [p.detach().abs().max() for p in trainer.model.parameters() if p.numel()]
        biggest = float(torch.stack(sizes).max()) if sizes else 0.0
    what = f"the {e.sampler} chain diverged ({e.what} is NaN or Inf)"
    if not biggest < 1e3 or max(t.lr_decoder, t.lr_prior) > 1.0:
        return (f"training diverged at step {step}: {what} after the weights grew to |w| = {biggest:.3g} in {step} "
                f"update(s); the learning rates ({lrs}) are too large: lower them, or clip gradients "
                f"(train.grad_clip)")
    return (f"training diverged at step {step}: {what}; lower the learning rates ({lrs}) or the chains' step "
            f"sizes (sampling.prior_step_size, sampling.posterior_step_size), clip gradients (train.grad_clip), or "
            f"clamp |f| / |z| (prior.f_clamp, sampling.z_clamp)")


class TrainSession:
    """What ``textebm train`` holds while it writes ``run_dir`` (a context manager around the Trainer):

    * the lock of :class:`textebm.rundir.RunLock` (on the main process of a distributed run), taken before
      anything else, so that a second command on the same directory fails at once;
    * a run that an interrupted ``--overwrite`` left set aside is put back first (:func:`textebm.rundir.recover`);
    * a run whose files are links is refused, and a new run's directory must not hold its inputs (the recipe
      files in ``inputs``, the corpus) and must be empty unless ``overwrite``;
    * SIGTERM raises (as SIGINT does) until the training loop installs its own handlers, so a replaced run is
      put back on any exit before the new run has trained and saved; a fresh directory of a run that fails
      before its first checkpoint is removed again.
    """

    def __init__(self, run_dir, recipe=None, resume: bool = False, overwrite: bool = False, inputs=()):
        self.run_dir, self.recipe, self.resume, self.overwrite = Path(run_dir), recipe, resume, overwrite
        self.inputs = list(inputs)
        self.main = int(os.environ.get("RANK", "0") or 0) == 0
        self.trainer, self.lock, self.fresh, self._old_term = None, None, False, None

    def __enter__(self) -> "TrainSession":
        import signal

        from . import rundir
        from .config import data_inputs

        if not self.main:
            return self
        if not self.resume and self.recipe is not None:  # before the lock creates the directory
            rundir.check_not_inputs(self.run_dir, self.inputs + data_inputs(self.recipe))
        existed = self.run_dir.exists()
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise FileExistsError(f"--out {self.run_dir} is a file, not a directory")
        self.lock = rundir.RunLock(self.run_dir, "textebm train --resume" if self.resume else "textebm train")
        self.lock.acquire(create_dir=not self.resume)
        try:
            rundir.recover(self.run_dir)
            rundir.check_run_links(self.run_dir)
            if not self.resume:
                check_out_dir(self.run_dir, self.overwrite)
            self.fresh = not self.resume and not holds_anything(self.run_dir)

            def on_term(signum, frame):
                raise rundir.Interrupted(signum)

            try:
                self._old_term = signal.signal(signal.SIGTERM, on_term)
            except ValueError:  # not the main thread
                self._old_term = None
        except BaseException:
            self._release(remove=not existed)
            raise
        return self

    def finish(self) -> bool:
        """After the training loop: a replacement the new run did not commit (it stopped before its first
        step) is put back. True when that happened."""
        from .rundir import active

        r = active(self.run_dir) if self.main else None
        if r is None:
            return False
        r.put_back()
        if self.trainer is not None:
            self.trainer.replaced = None
        return True

    def _release(self, remove: bool = False) -> None:
        import signal

        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)
            self._old_term = None
        if remove and self.run_dir.is_dir() and not holds_anything(self.run_dir):
            clear_dir(self.run_dir)
            self.run_dir.rmdir()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __exit__(self, et, e, tb):
        from .rundir import active
        from .sampling.base import SamplerDivergedError

        if not self.main:
            return False
        try:
            if et is not None:
                r = active(self.run_dir)
                if r is not None:  # --overwrite: a run that never trained and saved leaves the old one as it was
                    r.put_back()
                    if self.trainer is not None:
                        self.trainer.replaced = None
                # a new run that fails before its first checkpoint leaves nothing behind (the same --out works
                # again)
                if self.fresh and self.run_dir.is_dir() and not list_checkpoints(self.run_dir):
                    clear_dir(self.run_dir)
                    self.run_dir.rmdir()
        finally:
            self._release()
        if isinstance(e, SamplerDivergedError) and self.trainer is not None:
            e.args = (divergence_message(e, self.trainer),)  # the same error, explained by what the run shows
        return False
