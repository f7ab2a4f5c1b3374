"""Corpora built from the Hugging Face Hub with ``datasets.load_dataset``; every failure is one CorpusError.

``datasets`` is imported only when the Hub is used. Offline (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``, or no
network) the error says so and which local files to provide instead.
"""
from __future__ import annotations

import os
from typing import List, Optional

from ..extras import MissingExtraError, require
from .corpus import CorpusError

HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}


def offline_flags_set() -> bool:
    truthy = ("1", "on", "yes", "true")
    return any(os.environ.get(v, "").strip().lower() in truthy for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_hub(label: str, hub_name: str, hub_config: Optional[str], hint: str):
    """``datasets.load_dataset(hub_name, hub_config)``; every failure becomes a CorpusError with ``hint``."""
    try:
        datasets = require("datasets", f"{label}: no local copy, and building it from the Hugging Face Hub", "text")
    except MissingExtraError as e:
        raise CorpusError(f"{e}. {hint}") from None
    try:
        if hub_config:
            return datasets.load_dataset(hub_name, hub_config)
        return datasets.load_dataset(hub_name)
    except Exception as e:  # datasets raises ConnectionError, FileNotFoundError, DatasetNotFoundError, ...
        detail = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        text = f"{type(e).__name__} {e}"
        offline = offline_flags_set() or bool(getattr(getattr(datasets, "config", None), "HF_HUB_OFFLINE", False))
        if offline or "OfflineModeIsEnabled" in text:
            why = "the Hugging Face Hub is unreachable (offline: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)"
        elif isinstance(e, (ConnectionError, TimeoutError)) or "Couldn't reach" in text:
            why = "the Hugging Face Hub is unreachable"
        else:
            why = f"the Hub dataset {hub_name!r} could not be loaded"
        raise CorpusError(f"{label}: no local copy and {why} ({detail}). {hint}") from None


def hub_split(ds, split: str, label: str, hub_name: str):
    name = HUB_SPLITS[split]
    try:
        return ds[name]
    except KeyError:
        have = ", ".join(getattr(ds, "keys", lambda: [])())
        raise CorpusError(f"{label}: the Hub dataset {hub_name!r} has no {name!r} split (it has: {have})") from None


def column(split_ds, field: str, label: str) -> List:
    try:
        return list(split_ds[field])
    except KeyError:
        cols = getattr(split_ds, "column_names", "?")
        raise CorpusError(f"{label}: the Hub data has no field {field!r} (fields: {cols})") from None
