"""Image data sets for the image-side latent EBM prior models: Hub sets, scikit-learn digits, local files.

Every loader returns an :class:`ImageSet`: ``train`` / ``valid`` / ``test`` float32 tensors shaped
``(N, C, H, W)`` and scaled to ``[-1, 1]``, optional int64 labels, and ``stats`` (where the data came from,
counts, what was converted).

Where the data comes from (:func:`load_images`):

* a **local path** (``name_or_path`` is an existing file or directory, or ``data_dir/<name>`` exists):

  (a) a directory with ``train/``, ``test/`` and optionally ``valid/`` (aliases ``validation/``, ``val/``)
      holding image files (png, jpg, jpeg, bmp, webp), directly or in one level of class subfolders
      (sorted folder names -> label ids 0, 1, ...); without a validation folder ``valid_fraction`` of train
      is carved off with ``seed``;
  (b) a flat directory of image files (or of class subfolders), split deterministically by ``seed`` into
      train / valid / test = 1 - valid_fraction - 0.05 / valid_fraction / 0.05 (90/5/5 by default);
  (c) an ``.npz`` file with ``x_train``, ``x_test`` (optional ``x_valid``) and matching optional ``y_*``
      label arrays, or with ``x`` (and optional ``y``), split like (b);
  (d) an ``.npy`` file holding one image array (no labels), split like (b).

  A directory holding no images but exactly one ``.npz`` / ``.npy`` file is read as that file.
* the **Hugging Face Hub** (``svhn``, ``cifar10``, ``mnist``, ``celeba``) via :func:`datasets.load_dataset`
  (downloaded once, then read from the ``datasets`` cache, which also works offline);
* **scikit-learn's bundled 8x8 digits** (``digits``): always available offline.

Image files are converted to the requested channel count (PIL mode ``L`` or ``RGB``) and resized to
``image_size`` (bilinear, antialiased by PIL) when they differ. Arrays are never resized or re-channelled:
an array with the wrong size or channel count is an error naming ``data.image_size`` / ``data.channels``.

Array value rule (:func:`array_to_images`): integer arrays must lie in ``[0, 255]`` and map by
``x / 127.5 - 1``; float arrays with no negative value and maximum <= 1 are taken as ``[0, 1]`` and map by
``2 x - 1``; other float arrays within ``[-1, 1]`` are kept; anything else (or NaN / inf) is an error.
Array layout rule: 3-d arrays are ``(N, H, W)`` (one channel); 4-d arrays are ``(N, H, W, C)`` when only the
last axis has 1 or 3 entries, ``(N, C, H, W)`` when only axis 1 has, and when both do, whichever reading
matches the requested ``(channels, image_size)`` (``(N, H, W, C)`` if neither does).

``datasets``, ``PIL`` and ``sklearn`` are imported only when used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..extras import require
from .batching import Batch
from .corpus import repo_data_dir

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"train": ("train",), "valid": ("valid", "validation", "val"), "test": ("test",)}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
#: named Hub sets: name -> (Hub name, config, image column, label column or None)
HUB_SETS: Dict[str, Tuple[str, Optional[str], str, Optional[str]]] = {
    "svhn": ("ufldl-stanford/svhn", "cropped_digits", "image", "label"),
    "cifar10": ("uoft-cs/cifar10", None, "img", "label"),
    "mnist": ("ylecun/mnist", None, "image", "label"),
    "celeba": ("flwrlabs/celeba", None, "image", None),
}
BUILTIN_SETS = ("digits",)
#: the usual 64x64 CelebA protocol: center crop 140x140 of the 178x218 aligned faces, then resize
CELEBA_CROP = 140
TEST_FRACTION = 0.05
_CHUNK = 2048


class ImageDataError(ValueError):
    """Image data that cannot be found, read or used as asked; the message says what to change."""


# ---- the container ----------------------------------------------------------------------
@dataclass
class ImageSet:
    """Train / valid / test images, each a float32 tensor ``(N, C, H, W)`` in ``[-1, 1]``, with optional labels.

    ``*_labels`` are int64 tensors ``(N,)`` or ``None``; ``stats`` records the source and what was converted.
    """

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    train_labels: Optional[torch.Tensor] = None
    valid_labels: Optional[torch.Tensor] = None
    test_labels: Optional[torch.Tensor] = None
    stats: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        """C of the ``(N, C, H, W)`` tensors."""
        return int(self.train.shape[1])

    @property
    def image_size(self) -> int:
        """H (= W) of the ``(N, C, H, W)`` tensors."""
        return int(self.train.shape[-1])

    @staticmethod
    def _split_name(name: str) -> str:
        for split, aliases in SPLIT_ALIASES.items():
            if name in aliases:
                return split
        raise ImageDataError(f"unknown split {name!r}: use 'train', 'valid' (or 'validation', 'val') or 'test'")

    def split(self, name: str) -> torch.Tensor:
        """The images of split ``name`` (``train``, ``valid`` / ``validation`` / ``val``, ``test``)."""
        return getattr(self, self._split_name(name))

    def labels(self, name: str) -> Optional[torch.Tensor]:
        """The labels of split ``name`` (or ``None`` when the set has none)."""
        return getattr(self, self._split_name(name) + "_labels")

    def __repr__(self) -> str:
        n = ", ".join(f"{s}={len(getattr(self, s))}" for s in SPLITS)
        return f"ImageSet({self.name!r}, {n}, channels={self.channels}, image_size={self.image_size})"


# ---- conversions ----------------------------------------------------------------------
def _uint8_nhwc_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, C)`` -> float32 ``(N, C, H, W)`` with ``x / 127.5 - 1`` (0 -> -1, 255 -> 1), chunked."""
    n, h, w, c = arr.shape
    out = torch.empty((n, c, h, w), dtype=torch.float32)
    for i in range(0, n, _CHUNK):
        part = torch.from_numpy(np.ascontiguousarray(arr[i:i + _CHUNK])).permute(0, 3, 1, 2)
        out[i:i + _CHUNK] = part.to(torch.float32).div_(127.5).sub_(1.0)
    return out


def _check_channels(channels: int, image_size: int) -> None:
    if channels not in (1, 3):
        raise ImageDataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}; set data.channels")
    if not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ImageDataError(f"image_size must be a positive integer, got {image_size!r}; set data.image_size")


def _array_layout(shape: Tuple[int, ...], image_size: int, channels: int, what: str) -> str:
    if len(shape) == 3:
        return "NHW"
    if len(shape) != 4:
        raise ImageDataError(f"{what}: expected an image array shaped (N, H, W), (N, H, W, C) or (N, C, H, W), "
                             f"got shape {tuple(shape)}")
    last, first = shape[3] in (1, 3), shape[1] in (1, 3)
    if last and not first:
        return "NHWC"
    if first and not last:
        return "NCHW"
    if first and last:  # e.g. (N, 3, 3, 3): take the reading that matches the request
        if tuple(shape[1:]) == (channels, image_size, image_size) and shape[1:] != (image_size, image_size, channels):
            return "NCHW"
        return "NHWC"
    raise ImageDataError(f"{what}: cannot find the channel axis in shape {tuple(shape)}: expected 1 or 3 channels "
                         f"on axis 3 (N, H, W, C) or axis 1 (N, C, H, W)")


def array_to_images(x, image_size: int, channels: int, what: str = "array") -> torch.Tensor:
    """An image array -> float32 ``(N, C, H, W)`` in ``[-1, 1]``; layout and value scale are detected.

    Layout: ``(N, H, W)`` is one channel; a 4-d array is ``(N, H, W, C)`` when only its last axis has 1 or 3
    entries and ``(N, C, H, W)`` when only axis 1 has (if both, the reading matching the request wins).
    Values: integer dtypes must lie in [0, 255] and map by ``x / 127.5 - 1``; floats with ``min >= 0`` and
    ``max <= 1`` are [0, 1] and map by ``2 x - 1``; floats within [-1, 1] are kept; else an error.
    The size must be ``image_size`` x ``image_size`` and the channel count ``channels`` (never converted).
    """
    _check_channels(channels, image_size)
    x = np.asarray(x)
    layout = _array_layout(x.shape, image_size, channels, what)
    if layout == "NHW":
        x = x[:, None]
    elif layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    n, c, h, w = x.shape
    if n == 0:
        raise ImageDataError(f"{what}: the array holds zero images (shape {tuple(x.shape)})")
    if (h, w) != (image_size, image_size):
        raise ImageDataError(f"{what}: images are {h}x{w} but the recipe asks for {image_size}x{image_size}; "
                             f"set data.image_size={h} (arrays are never resized)" if h == w else
                             f"{what}: images are {h}x{w} (not square) but the recipe asks for "
                             f"{image_size}x{image_size}; resize the array or store image files instead")
    if c != channels:
        raise ImageDataError(f"{what}: images have {c} channel(s) (layout {layout}) but the recipe asks for "
                             f"{channels}; set data.channels={c} (arrays are never converted)")
    if x.dtype == np.bool_:
        x = x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise ImageDataError(f"{what}: integer pixel values in [{lo}, {hi}]; expected uint8-style [0, 255]")
        return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).div_(127.5).sub_(1.0)
    if not np.issubdtype(x.dtype, np.floating):
        raise ImageDataError(f"{what}: unsupported dtype {x.dtype}; use uint8 [0, 255] or float [0, 1] / [-1, 1]")
    finite = np.isfinite(x)
    if not finite.all():
        bad = int((~finite).sum())
        raise ImageDataError(f"{what}: {bad} pixel value(s) are NaN or inf; clean the array first")
    lo, hi = float(x.min()), float(x.max())
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if lo >= 0.0 and hi <= 1.0:
        return t.mul(2.0).sub_(1.0)
    if lo >= -1.0 and hi <= 1.0:
        return t.clone()
    hint = " (it looks like [0, 255]: store it as uint8)" if lo >= 0.0 and hi <= 255.0 else ""
    raise ImageDataError(f"{what}: float pixel values in [{lo:.4g}, {hi:.4g}]; expected [0, 1] or [-1, 1]{hint}")


def _labels(y, n: int, what: str) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim != 1:
        y = y.reshape(len(y), -1)
        if y.shape[1] != 1:
            raise ImageDataError(f"{what}: labels must be one integer per image, got shape {tuple(np.shape(y))}")
        y = y[:, 0]
    if len(y) != n:
        raise ImageDataError(f"{what}: {len(y)} labels for {n} images; the lengths must match")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise ImageDataError(f"{what}: labels must be integers (found non-integer or NaN values)")
    elif y.dtype.kind not in "iub":
        raise ImageDataError(f"{what}: labels must be integers, got dtype {y.dtype}")
    return torch.from_numpy(y.astype(np.int64))


def _pil_to_array(img, image_size: int, channels: int, crop: Optional[int], stats: dict) -> np.ndarray:
    """PIL image -> uint8 (H, W, C): mode L / RGB, optional center crop, bilinear resize when sizes differ."""
    Image = require("PIL.Image", "reading image files", "images")

    img = img.convert("L" if channels == 1 else "RGB")
    if crop is not None and min(img.size) >= crop:
        w, h = img.size
        left, top = (w - crop) // 2, (h - crop) // 2
        img = img.crop((left, top, left + crop, top + crop))
        stats["cropped"] = stats.get("cropped", 0) + 1
    if img.size != (image_size, image_size):
        if img.size[0] != img.size[1]:
            stats["non_square"] = stats.get("non_square", 0) + 1
        img = img.resize((image_size, image_size), Image.BILINEAR)
        stats["resized"] = stats.get("resized", 0) + 1
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


# ---- splitting, limits ----------------------------------------------------------------------
def _rng(seed: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *salt])


def _carve(n: int, fraction: float, seed: int, salt: int) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded split of range(n) into (rest, carved) with round(fraction * n) carved (at least 1 if fraction > 0)."""
    k = 0 if fraction <= 0 else max(1, int(round(fraction * n)))
    if k >= n:
        raise ImageDataError(f"too few images ({n}) to carve a {fraction:.0%} split and keep any for training")
    perm = _rng(seed, salt).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def _three_way(n: int, valid_fraction: float, seed: int) -> Dict[str, np.ndarray]:
    rest, test = _carve(n, TEST_FRACTION, seed, 1)
    n_valid = 0 if valid_fraction <= 0 else max(1, int(round(valid_fraction * n)))
    if n_valid >= len(rest):
        raise ImageDataError(f"too few images ({n}) to split into train / valid / test")
    perm = _rng(seed, 2).permutation(len(rest))
    return {"train": np.sort(rest[perm[n_valid:]]), "valid": np.sort(rest[perm[:n_valid]]), "test": test}


def _limit_index(n: int, limit: Optional[int], seed: int, salt: int) -> np.ndarray:
    """All of range(n), or the first ``limit`` of a seeded shuffle (returned in data order)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(_rng(seed, 100 + salt).permutation(n)[:limit])


def _check_options(source: str, limit, valid_fraction: float) -> None:
    if source not in ("auto", "local", "hub"):
        raise ImageDataError(f"source must be 'auto', 'local' or 'hub', got {source!r}")
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ImageDataError(f"limit must be a positive integer or None, got {limit!r}")
    if not 0.0 <= valid_fraction < 0.9:
        raise ImageDataError(f"valid_fraction must be in [0, 0.9), got {valid_fraction!r}")


# ---- assembling an ImageSet ----------------------------------------------------------------------
def _finish(name: str, parts: Dict[str, Tuple[torch.Tensor, Optional[torch.Tensor]]], stats: dict,
            limit: Optional[int], seed: int) -> ImageSet:
    out: Dict[str, object] = {}
    for salt, split in enumerate(SPLITS):
        x, y = parts[split]
        idx = _limit_index(len(x), limit, seed, salt)
        if len(idx) < len(x):
            x, y = x[torch.from_numpy(idx)], (None if y is None else y[torch.from_numpy(idx)])
        out[split], out[split + "_labels"] = x.contiguous(), y
        stats[f"n_{split}"] = int(len(x))
    if len(out["train"]) == 0:
        raise ImageDataError(f"{name}: the train split holds zero images")
    if limit is not None:
        stats["limit"] = int(limit)
    return ImageSet(name=name, stats=stats, **out)


def _split_arrays(name: str, x: torch.Tensor, y: Optional[torch.Tensor], valid_fraction: float, seed: int):
    parts = {}
    for split, idx in _three_way(len(x), valid_fraction, seed).items():
        t = torch.from_numpy(idx)
        parts[split] = (x[t], None if y is None else y[t])
    return parts


def _carve_valid(train, valid_fraction: float, seed: int):
    x, y = train
    keep, carved = _carve(len(x), valid_fraction, seed, 3)
    k, c = torch.from_numpy(keep), torch.from_numpy(carved)
    return (x[k], None if y is None else y[k]), (x[c], None if y is None else y[c])


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


# ---- scikit-learn digits -------------------------------------------------------------------------------------
def _load_digits(image_size: int, channels: int, seed: int, stats: dict):
    """sklearn's 1797 8x8 digits (values 0..16 -> x / 8 - 1), resized; stratified 70/10/20 split by seed."""
    if channels != 1:
        raise ImageDataError(f"digits: the images are grayscale (1 channel) but the recipe asks for {channels}; "
                             f"set data.channels=1")
    d = require("sklearn.datasets", "the digits image set", "images").load_digits()
    x = torch.from_numpy(np.asarray(d.images, dtype=np.float32)).div_(8.0).sub_(1.0)[:, None]
    if image_size != 8:
        x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear",
                                            align_corners=False, antialias=image_size < 8).clamp_(-1.0, 1.0)
        stats["resized"] = int(len(x))
    y = np.asarray(d.target, dtype=np.int64)
    rng = _rng(seed, 4)
    idx = {s: [] for s in SPLITS}
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        n_train, n_valid = int(round(0.7 * len(members))), int(round(0.1 * len(members)))
        idx["train"] += list(members[:n_train])
        idx["valid"] += list(members[n_train:n_train + n_valid])
        idx["test"] += list(members[n_train + n_valid:])
    yt = torch.from_numpy(y)
    parts = {}
    for s in SPLITS:
        t = torch.from_numpy(rng.permutation(np.asarray(idx[s], dtype=np.int64)))
        parts[s] = (x[t], yt[t])
    stats.update(source="sklearn", location="sklearn.datasets.load_digits", layout="stratified 70/10/20",
                 classes=[str(i) for i in range(10)])
    return parts


# ---- the Hugging Face Hub ----------------------------------------------------------------------
def _hub_error(name: str, hub_name: str, e: Optional[BaseException], local_dir: Path) -> ImageDataError:
    from .hub import offline_flags_set

    detail = "" if e is None else f" ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
    text = "" if e is None else f"{type(e).__name__} {e}"
    if offline_flags_set() or "OfflineModeIsEnabled" in text:
        why = "the Hugging Face Hub is unreachable (offline: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set) and " \
              "the set is not in the datasets cache"
    elif isinstance(e, (ConnectionError, TimeoutError)) or "Couldn't reach" in text:
        why = "the Hugging Face Hub is unreachable"
    else:
        why = f"the Hub dataset {hub_name!r} could not be loaded"
    return ImageDataError(f"{name}: no local copy and {why}{detail}. Instead use a local folder or file: "
                          f"{LOCAL_LAYOUTS}; put it at {local_dir} or pass its path (or --data-dir DIR holding "
                          f"DIR/{name})")


def _hub_indices(ds, split_names: Dict[str, Optional[str]], valid_fraction: float, seed: int):
    """{split: (Hub split name, row indices)}; valid carved from train when the Hub set has none."""
    out = {}
    n_train = len(ds[split_names["train"]])
    if split_names["valid"] is None:
        keep, carved = _carve(n_train, valid_fraction, seed, 3)
        out["train"], out["valid"] = (split_names["train"], keep), (split_names["train"], carved)
    else:
        out["train"] = (split_names["train"], np.arange(n_train))
        out["valid"] = (split_names["valid"], np.arange(len(ds[split_names["valid"]])))
    out["test"] = (split_names["test"], np.arange(len(ds[split_names["test"]])))
    return out


def _load_hub(name: str, image_size: int, channels: int, valid_fraction: float, seed: int, limit: Optional[int],
              local_dir: Path, stats: dict):
    hub_name, config, image_col, label_col = HUB_SETS[name]
    datasets = require("datasets", f"{name}: no local copy, and loading {hub_name!r} from the Hugging Face Hub",
                       "text")
    try:
        ds = datasets.load_dataset(hub_name, config) if config else datasets.load_dataset(hub_name)
    except Exception as e:  # ConnectionError, FileNotFoundError, DatasetNotFoundError, OfflineModeIsEnabled, ...
        raise _hub_error(name, hub_name, e, local_dir) from None
    have = list(ds.keys())
    names: Dict[str, Optional[str]] = {}
    for s in SPLITS:
        names[s] = next((a for a in SPLIT_ALIASES[s] if a in have), None)
    for s in ("train", "test"):
        if names[s] is None:
            raise ImageDataError(f"{name}: the Hub dataset {hub_name!r} has no {s!r} split (it has: {have})")
    crop = CELEBA_CROP if name == "celeba" else None
    parts = {}
    for salt, (s, (hub_split, rows)) in enumerate(_hub_indices(ds, names, valid_fraction, seed).items()):
        rows = rows[_limit_index(len(rows), limit, seed, salt)]  # decode only what is kept
        split_ds = ds[hub_split]
        if image_col not in split_ds.column_names:
            raise ImageDataError(f"{name}: the Hub split {hub_split!r} has no column {image_col!r} "
                                 f"(columns: {split_ds.column_names})")
        sub = split_ds.select(rows.tolist())
        arr = np.empty((len(sub), image_size, image_size, channels), dtype=np.uint8)
        for i in range(0, len(sub), 1000):
            for j, img in enumerate(sub[i:i + 1000][image_col]):
                arr[i + j] = _pil_to_array(img, image_size, channels, crop, stats)
        y = None
        if label_col is not None and label_col in sub.column_names:
            y = _labels(sub[label_col], len(sub), f"{name}[{label_col}]")
        parts[s] = (_uint8_nhwc_to_tensor(arr), y)
    stats.update(source="hub", location=hub_name + (f" ({config})" if config else ""),
                 layout="hub splits", valid_carved=int(names["valid"] is None))
    return parts


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


# ---- batching ----------------------------------------------------------------------
class ImageBatcher:
    """Seeded mini-batches of an image tensor ``(N, C, H, W)``; resumable and shardable.

    Epoch ``e`` uses the permutation ``default_rng([seed, e]).permutation(N)`` (identity when ``shuffle`` is
    off). With ``world_size`` W > 1 the permutation is first cut into W equal shards, rank ``r`` taking
    positions ``r, r + W, ...`` (``N // W`` each with ``drop_last``; otherwise padded by wrapping around, as
    ``DistributedSampler`` does); each shard is then cut into batches of ``batch_size`` (a short last batch is
    dropped when ``drop_last``). ``next()`` is the endless, resumable training stream: ``state_dict()`` holds
    (epoch, batch index, seed) and a loaded state gives the same next batch. ``__iter__`` is one full pass over
    the current epoch's batches that leaves the stream alone (for evaluation).
    """

    def __init__(self, images, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = True,
                 rank: int = 0, world_size: int = 1):
        if isinstance(images, ImageSet):
            images = images.train
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ImageDataError(f"ImageBatcher needs a (N, C, H, W) tensor (or an ImageSet), got "
                                 f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))}")
        if batch_size < 1:
            raise ImageDataError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ImageDataError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.images, self.batch_size, self.shuffle, self.seed = images, int(batch_size), shuffle, int(seed)
        self.drop_last, self.rank, self.world_size = drop_last, int(rank), int(world_size)
        self.epoch, self.index = 0, 0
        self._cached = None
        if len(self) == 0:
            raise ImageDataError(f"{len(images)} images give no batch of {batch_size} per rank "
                                 f"(world_size={world_size}, drop_last={drop_last}); use a smaller batch size")

    def _plan(self, epoch: int) -> List[np.ndarray]:
        n, W, B = len(self.images), self.world_size, self.batch_size
        order = _rng(self.seed, epoch).permutation(n) if self.shuffle else np.arange(n)
        if W > 1:
            per = n // W if self.drop_last else math.ceil(n / W)
            if per * W > n:
                order = np.concatenate([order, order[: per * W - n]])
            order = order[self.rank: per * W: W]
        stop = (len(order) // B) * B if self.drop_last else len(order)
        return [order[i:i + B] for i in range(0, stop, B)]

    def _epoch_plan(self) -> List[np.ndarray]:
        if self._cached is None or self._cached[0] != (self.epoch, self.seed):
            self._cached = ((self.epoch, self.seed), self._plan(self.epoch))
        return self._cached[1]

    def __len__(self) -> int:
        """Batches per epoch (for this rank)."""
        n, W, B = len(self.images), self.world_size, self.batch_size
        per = n if W == 1 else (n // W if self.drop_last else math.ceil(n / W))
        return per // B if self.drop_last else math.ceil(per / B)

    def next(self) -> torch.Tensor:
        """The next batch ``(B, C, H, W)``, starting a new epoch when one ends (endless stream)."""
        return self.next_batch().x

    def next_batch(self) -> Batch:
        """The next batch with its images' indices, starting a new epoch when one ends (endless stream)."""
        if self.index >= len(self):
            self.epoch, self.index = self.epoch + 1, 0
        b = torch.from_numpy(self._epoch_plan()[self.index]).long()
        self.index += 1
        return Batch(self.images[b], b)

    def __iter__(self) -> Iterator[torch.Tensor]:
        """One full pass (this rank's batches) over the current epoch's plan; the stream state is untouched.

        Like ``BucketBatcher.__iter__``: safe to break out of (evaluation), and repeated passes are identical
        until :meth:`next` moves the stream to another epoch.
        """
        for b in self._epoch_plan():
            yield self.images[torch.from_numpy(b)]

    def state_dict(self) -> dict:
        """``{"epoch", "index", "seed"}``: where the stream stands."""
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Resume at ``state`` (from :meth:`state_dict`)."""
        self.epoch, self.index, self.seed = int(state["epoch"]), int(state["index"]), int(state["seed"])
