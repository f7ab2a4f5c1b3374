"""Image sets from local files: folders of images, .npz and .npy arrays (see :mod:`textebm.data.images`)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ...extras import require
from .imageset import (IMAGE_EXTENSIONS, SPLITS, SPLIT_ALIASES, ImageDataError, array_to_images, _carve_valid,
                       _labels, _pil_to_array, _split_arrays, _uint8_nhwc_to_tensor)


# ---- local files ----------------------------------------------------------------------
def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _images_in(directory: Path) -> Tuple[List[Path], Dict[str, List[Path]]]:
    """(loose image files, {class folder: its image files}) of one directory, sorted."""
    loose = sorted(p for p in directory.iterdir() if _is_image(p))
    classes = {}
    for sub in sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in sub.iterdir() if _is_image(p))
        if files:
            classes[sub.name] = files
    if loose and classes:
        raise ImageDataError(f"{directory}: holds both loose image files and class subfolders "
                             f"({', '.join(list(classes)[:5])}); put every image in a class folder or none")
    return loose, classes


def _read_files(files: Sequence[Path], image_size: int, channels: int, crop: Optional[int],
                stats: dict) -> torch.Tensor:
    Image = require("PIL.Image", "reading image files", "images")

    arr = np.empty((len(files), image_size, image_size, channels), dtype=np.uint8)
    for i, p in enumerate(files):
        try:
            with Image.open(p) as img:
                img.load()
                arr[i] = _pil_to_array(img, image_size, channels, crop, stats)
        except ImageDataError:
            raise
        except Exception as e:  # PIL.UnidentifiedImageError, OSError (truncated), ...
            raise ImageDataError(f"cannot read image file {p}: {type(e).__name__}: {e}; "
                                 f"remove or replace it") from None
    return _uint8_nhwc_to_tensor(arr)


def _find_split_dir(root: Path, split: str) -> Optional[Path]:
    for alias in SPLIT_ALIASES[split]:
        if (root / alias).is_dir():
            return root / alias
    return None


def _load_image_dir(root: Path, name: str, image_size: int, channels: int, valid_fraction: float, seed: int,
                    crop: Optional[int], stats: dict):
    train_dir = _find_split_dir(root, "train")
    if train_dir is not None:  # (a) split folders
        dirs = {s: _find_split_dir(root, s) for s in SPLITS}
        if dirs["test"] is None:
            raise ImageDataError(f"{root}: has a train/ folder but no test/ folder; add test/ "
                                 f"(valid/ is optional) or use a flat folder of images instead")
        listed = {s: _images_in(d) for s, d in dirs.items() if d is not None}
        labelled = {s: bool(c) for s, (_, c) in listed.items()}
        if len(set(labelled.values())) > 1:
            raise ImageDataError(f"{root}: some split folders use class subfolders and some do not "
                                 f"({labelled}); use the same layout in train/, valid/ and test/")
        class_names = sorted({c for _, classes in listed.values() for c in classes})
        parts = {}
        for s, (loose, classes) in listed.items():
            files = loose or [p for c in sorted(classes) for p in classes[c]]
            if not files:
                raise ImageDataError(f"{dirs[s]}: holds zero image files ({', '.join(IMAGE_EXTENSIONS)})")
            y = None
            if classes:
                ids = {c: i for i, c in enumerate(class_names)}
                y = torch.tensor([ids[c] for c in sorted(classes) for _ in classes[c]], dtype=torch.int64)
            parts[s] = (_read_files(files, image_size, channels, crop, stats), y)
        stats["layout"] = "split folders" + (" with class subfolders" if class_names else "")
        if "valid" not in parts:
            parts["train"], parts["valid"] = _carve_valid(parts["train"], valid_fraction, seed)
            stats["valid_carved"] = 1
    else:  # (b) one flat folder (optionally with class subfolders)
        loose, classes = _images_in(root)
        class_names = sorted(classes)
        files = loose or [p for c in class_names for p in classes[c]]
        if not files:
            raise ImageDataError(f"{root}: holds zero image files ({', '.join(IMAGE_EXTENSIONS)}) and no "
                                 f"train/ test/ folders, .npz or .npy file")
        y = None
        if classes:
            y = torch.tensor([i for i, c in enumerate(class_names) for _ in classes[c]], dtype=torch.int64)
        parts = _split_arrays(name, _read_files(files, image_size, channels, crop, stats), y, valid_fraction, seed)
        stats["layout"] = "flat folder" + (" with class subfolders" if class_names else "")
    if class_names:
        stats["classes"] = class_names
    return parts


def _np_load(path: Path):
    """np.load without pickles; an unreadable file is an ImageDataError naming it."""
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:
        raise ImageDataError(f"cannot read {path}: {type(e).__name__}: {e}") from None


def _load_npz(path: Path, name: str, image_size: int, channels: int, valid_fraction: float, seed: int,
              stats: dict):
    with _np_load(path) as data:
        keys = set(data.files)
        if "x_train" in keys:
            if "x_test" not in keys:
                raise ImageDataError(f"{path}: has x_train but no x_test (keys: {sorted(keys)}); add x_test, "
                                     f"or store all images as x")
            parts = {}
            for s in SPLITS:
                if f"x_{s}" not in keys:
                    continue
                what = f"{path.name}[x_{s}]"
                x = array_to_images(data[f"x_{s}"], image_size, channels, what)
                y = _labels(data[f"y_{s}"], len(x), f"{path.name}[y_{s}]") if f"y_{s}" in keys else None
                parts[s] = (x, y)
            if len({p[1] is None for p in parts.values()}) > 1:
                raise ImageDataError(f"{path}: labels (y_*) are given for some splits only; give all or none")
            stats["layout"] = "npz splits"
            if "valid" not in parts:
                parts["train"], parts["valid"] = _carve_valid(parts["train"], valid_fraction, seed)
                stats["valid_carved"] = 1
            return parts
        if "x" in keys:
            x = array_to_images(data["x"], image_size, channels, f"{path.name}[x]")
            y = _labels(data["y"], len(x), f"{path.name}[y]") if "y" in keys else None
            stats["layout"] = "npz x/y"
            return _split_arrays(name, x, y, valid_fraction, seed)
        raise ImageDataError(f"{path}: expected keys x_train, y_train, x_test, y_test (optional x_valid, y_valid) "
                             f"or x (optional y); found {sorted(keys)}")


def _load_npy(path: Path, name: str, image_size: int, channels: int, valid_fraction: float, seed: int,
              stats: dict):
    x = _np_load(path)
    stats["layout"] = "npy"
    return _split_arrays(name, array_to_images(x, image_size, channels, path.name), None, valid_fraction, seed)


def _load_local(path: Path, name: str, image_size: int, channels: int, valid_fraction: float, seed: int,
                crop: Optional[int], stats: dict):
    if not path.exists():
        raise ImageDataError(f"image data not found: {path} does not exist")
    if path.is_dir():
        arrays = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in (".npz", ".npy"))
        has_images = any(_is_image(p) for p in path.iterdir()) or any(
            d.is_dir() for d in path.iterdir() if not d.name.startswith("."))
        if len(arrays) == 1 and not has_images:
            path = arrays[0]
        elif len(arrays) > 1 and not has_images:
            raise ImageDataError(f"{path}: holds several array files ({', '.join(p.name for p in arrays)}); "
                                 f"point at one of them")
    stats["source"], stats["location"] = "local", str(path)
    if path.is_dir():
        return _load_image_dir(path, name, image_size, channels, valid_fraction, seed, crop, stats)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, name, image_size, channels, valid_fraction, seed, stats)
    if suffix == ".npy":
        return _load_npy(path, name, image_size, channels, valid_fraction, seed, stats)
    raise ImageDataError(f"{path}: not a directory, .npz or .npy file; see textebm.data.images for the layouts")


LOCAL_LAYOUTS = ("a folder with train/ and test/ (optional valid/) subfolders of image files (png, jpg, jpeg, "
                 "bmp, webp; optionally in class subfolders), a flat folder of image files, an .npz file with "
                 "x_train/y_train/x_test/y_test (or x/y), or an .npy image array")
