"""The image container, array conversions and seeded splits (see :mod:`textebm.data.images`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from ...extras import require


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
