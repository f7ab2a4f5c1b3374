"""Image sets from the Hugging Face Hub (svhn, cifar10, mnist, celeba), read through the datasets cache."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ...extras import require
from .imageset import (CELEBA_CROP, HUB_SETS, SPLITS, SPLIT_ALIASES, ImageDataError, _carve, _labels, _limit_index,
                       _pil_to_array, _uint8_nhwc_to_tensor)
from .local import LOCAL_LAYOUTS


# ---- the Hugging Face Hub ----------------------------------------------------------------------
def _hub_error(name: str, hub_name: str, e: Optional[BaseException], local_dir: Path) -> ImageDataError:
    from ..hub import offline_flags_set

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
