"""scikit-learn's bundled 8x8 digits: an image set that is always available offline."""
from __future__ import annotations


import numpy as np
import torch

from ...extras import require
from .imageset import SPLITS, ImageDataError, _rng


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
