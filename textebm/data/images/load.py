"""The entry point: where an image set comes from (:func:`load_images`), and the anomaly protocol's split."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..corpus import repo_data_dir
from .digits import _load_digits
from .hub import _load_hub
from .imageset import (BUILTIN_SETS, CELEBA_CROP, HUB_SETS, ImageDataError, ImageSet, _check_channels,
                       _check_options, _finish)
from .local import LOCAL_LAYOUTS, _load_local


# ---- the entry point ----------------------------------------------------------------------
def _resolve_local(name_or_path: str, data_dir) -> Optional[Path]:
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    base = Path(data_dir).expanduser() if data_dir else repo_data_dir()
    for cand in (base / name_or_path, base / f"{name_or_path}.npz", base / f"{name_or_path}.npy"):
        if cand.exists():
            return cand
    return None


def load_images(name_or_path: str, image_size: int, channels: int, data_dir=None, source: str = "auto",
                limit: Optional[int] = None, valid_fraction: float = 0.05, seed: int = 0) -> ImageSet:
    """Load an image set as float32 ``(N, C, H, W)`` tensors in ``[-1, 1]`` (pixel ``p`` in 0..255 -> ``p/127.5 - 1``).

    ``name_or_path``: ``svhn``, ``cifar10``, ``mnist``, ``celeba`` (Hugging Face Hub), ``digits``
    (scikit-learn), or a path to local data (see the module docstring for the layouts). ``data_dir/<name>``
    (default: ``$TEXTEBM_DATA`` or ``data/`` beside the package) is used in place of the Hub when it exists.
    ``source``: ``"auto"`` (local if found, else Hub / built-in), ``"local"`` (local only) or ``"hub"``.
    Image files and Hub images are converted to ``channels`` (PIL ``L`` / ``RGB``); ``celeba`` images at least
    140 pixels on each side are center-cropped to 140x140 first (the 64x64 CelebA protocol);
    images are resized (bilinear) to ``image_size`` when they differ. Without a validation split
    ``valid_fraction`` of train is carved off with ``seed``. ``limit`` keeps at most ``limit`` images per split
    (the first of a seeded shuffle, in data order).
    """
    _check_channels(channels, image_size)
    _check_options(source, limit, valid_fraction)
    name_or_path = str(name_or_path)
    key = name_or_path.lower()
    known = key in HUB_SETS or key in BUILTIN_SETS
    stats: dict = {}
    local = None if source == "hub" else _resolve_local(name_or_path, data_dir)
    if local is not None:
        name = key if known else (local.stem or local.name)
        crop = CELEBA_CROP if key == "celeba" else None
        parts = _load_local(local, name, image_size, channels, valid_fraction, seed, crop, stats)
        return _finish(name, parts, stats, limit, seed)
    if source == "local" or not known:
        where = Path(data_dir).expanduser() / name_or_path if data_dir else repo_data_dir() / name_or_path
        what = "" if known else (f" and it is not a known set ({', '.join([*HUB_SETS, *BUILTIN_SETS])})")
        raise ImageDataError(f"image data not found: {name_or_path!r} is not an existing path, {where} does not "
                             f"exist{what}. Use {LOCAL_LAYOUTS}")
    if key == "digits":
        return _finish(key, _load_digits(image_size, channels, seed, stats), stats, limit, seed)
    base = Path(data_dir).expanduser() if data_dir else repo_data_dir()
    parts = _load_hub(key, image_size, channels, valid_fraction, seed, limit, base / key, stats)
    out = _finish(key, parts, stats, None, seed)  # limit already applied before decoding
    if limit is not None:
        out.stats["limit"] = int(limit)
    return out


# ---- the anomaly protocol ----------------------------------------------------------------------
def held_out_class_split(images: ImageSet, held_out: int) -> ImageSet:
    """The held-out-class anomaly protocol: train on every class but ``held_out``; test on all test images.

    train / valid keep the images with label != ``held_out`` (and their labels); test keeps every image and
    its labels become ``1[label == held_out]`` (1 = anomaly, 0 = normal).
    """
    if images.train_labels is None or images.test_labels is None:
        raise ImageDataError(f"{images.name}: held_out_class_split needs labels, but the set has none "
                             f"(use a labelled set: class subfolders, y_* arrays or a labelled Hub set)")
    if len(images.valid) and images.valid_labels is None:
        raise ImageDataError(f"{images.name}: the valid split has no labels, so class {held_out} cannot be removed")
    held_out = int(held_out)
    for split in ("train", "test"):
        if not bool((images.labels(split) == held_out).any()):
            present = sorted(set(images.labels(split).tolist()))
            raise ImageDataError(f"{images.name}: class {held_out} is absent from the {split} split "
                                 f"(classes present: {present})")
    keep = {}
    for split in ("train", "valid"):
        y = images.labels(split)
        if y is None:
            keep[split] = (images.split(split), None)
            continue
        m = y != held_out
        keep[split] = (images.split(split)[m], y[m])
    test_y = (images.test_labels == held_out).to(torch.int64)
    stats = dict(images.stats, held_out=held_out, n_train=len(keep["train"][0]), n_valid=len(keep["valid"][0]),
                 n_test_anomalies=int(test_y.sum()), n_test=len(test_y))
    return ImageSet(name=f"{images.name}-heldout{held_out}", train=keep["train"][0], valid=keep["valid"][0],
                    test=images.test, train_labels=keep["train"][1], valid_labels=keep["valid"][1],
                    test_labels=test_y, stats=stats)
