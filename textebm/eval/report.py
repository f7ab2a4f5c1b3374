"""Reports of the evaluation tools: JSON (atomic, NaN-free), a Markdown table, and a small PNG line plot.

The PNG writer needs only numpy, zlib and struct (no plotting library): a line plot rasterized into an RGB
array, with tick labels drawn in a 3x5 bitmap font.
"""
from __future__ import annotations

import json
import math
import os
import struct
import zlib
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np


# ---- JSON -----------------------------------------------------------------------------------------------
def jsonable(obj):
    """A copy of ``obj`` that :func:`json.dumps` accepts with ``allow_nan=False``: non-finite floats -> None,
    paths -> str, tuples -> lists, numpy / torch scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0:
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def write_json(path, report: dict) -> Path:
    """Write ``report`` as indented JSON, atomically (temporary file + rename)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"cannot write the report: directory {path.parent} does not exist")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(report), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


# ---- Markdown -------------------------------------------------------------------------------------------
def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.{digits}e}"
        return f"{v:.{digits}f}"
    return str(v)


def metric_rows(report: dict) -> List[tuple]:
    """(metric, value, notes) rows of an evaluation report, in a fixed order."""
    rows = []
    f = report.get("fppl")
    if f is not None:
        rows.append(("FPPL", _fmt(f.get("value"), 2),
                     _notes(f, f"{f.get('order')}-gram on train, {f.get('n_samples')} samples, "
                               f"oov {f.get('oov', 'n/a')}, {f.get('estimator', 'n/a')}")))
    r = report.get("rppl")
    if r is not None:
        rows.append(("RPPL", _fmt(r.get("value"), 2),
                     _notes(r, f"{r.get('order')}-gram on {r.get('n_samples')} samples, "
                               f"oov {r.get('oov', 'n/a')}, {r.get('estimator', 'n/a')}")))
    n = report.get("nll")
    if n is not None:
        extra = ""
        if n.get("log_z") is not None:
            extra = (f"{n.get('n_sentences')} sentences, K={n['settings']['n_importance']}, "
                     f"log Z={n['log_z']:.3f}±{n['log_z_se']:.3f}, ESS {n.get('ess_mean', 0):.1f}")
        rows.append(("NLL (nats/sentence)", _fmt(n.get("nll_per_sentence"), 3), _notes(n, extra)))
        rows.append(("PPL (per token, IS)", _fmt(n.get("ppl_per_token"), 3), "tokens include </s>"))
    c = report.get("recon")
    if c is not None:
        rows.append(("recon NLL (nats/sentence)", _fmt(c.get("recon_nll_per_sentence"), 3),
                     _notes(c, f"{c.get('n_sentences', 0)} sentences, one posterior sample each")))
        rows.append(("recon NLL (nats/token)", _fmt(c.get("recon_nll_per_token"), 4), "tokens include </s>"))
    d = report.get("diversity")
    if d is not None:
        for k in ("distinct_1", "distinct_2", "distinct_3"):
            rows.append((k.replace("_", "-"), _fmt(d.get(k), 4), ""))
        rows.append(("self-BLEU-4", _fmt(d.get("self_bleu"), 4),
                     _notes(d, f"{d.get('self_bleu_n_used')} samples (subsample)")))
    return rows


def _notes(section: dict, text: str) -> str:
    msg = section.get("message")
    fb = section.get("fallback_reason")
    parts = [text] if text else []
    if fb:
        parts.append(f"fallback: {fb}")
    if msg:
        parts.append(f"WARNING: {msg}")
    return "; ".join(parts).replace("|", "/")


def markdown_table(report: dict) -> str:
    """The report's numbers as a Markdown table (metric | value | notes)."""
    lines = ["| metric | value | notes |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in metric_rows(report)]
    return "\n".join(lines)


def markdown_chain(rows: Sequence[dict]) -> str:
    lines = ["| step | log-density | sentence |", "|---:|---:|---|"]
    for r in rows:
        sent = (r["sentence"] or "<empty>").replace("|", "/")
        lines.append(f"| {r['step']} | {r['log_density']:.3f} | {sent} |")
    return "\n".join(lines)


# ---- PNG ------------------------------------------------------------------------------------------------
def write_png(path, rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 array as an 8-bit RGB PNG (filter 0 on every row), atomically."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) array, got shape {rgb.shape}")
    h, w, _ = rgb.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(png)
    os.replace(tmp, path)
    return path


# 3x5 glyphs, rows top to bottom
_GLYPHS = {
    "0": ("111", "101", "101", "101", "111"), "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"), "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"), "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"), "7": ("111", "001", "010", "010", "010"),
    "8": ("111", "101", "111", "101", "111"), "9": ("111", "101", "111", "001", "111"),
    "-": ("000", "000", "111", "000", "000"), "+": ("000", "010", "111", "010", "000"),
    ".": ("000", "000", "000", "000", "010"), "e": ("000", "111", "111", "100", "111"),
    " ": ("000", "000", "000", "000", "000"), "s": ("000", "011", "110", "001", "110"),
    "t": ("010", "111", "010", "010", "011"), "p": ("000", "110", "101", "110", "100"),
    "l": ("110", "010", "010", "010", "111"), "o": ("000", "111", "101", "101", "111"),
    "g": ("000", "011", "101", "011", "001"), "d": ("001", "001", "011", "101", "011"),
    "n": ("000", "110", "101", "101", "101"), "i": ("010", "000", "010", "010", "010"),
    "y": ("000", "101", "101", "011", "001"), "a": ("000", "111", "011", "101", "111"),
}


def _text(img: np.ndarray, x: int, y: int, s: str, color=(0, 0, 0), scale: int = 2) -> None:
    """Draw ``s`` with its top-left corner at (x, y); unknown characters are skipped."""
    h, w, _ = img.shape
    for ch in s:
        g = _GLYPHS.get(ch)
        if g is not None:
            for r, row in enumerate(g):
                for c, bit in enumerate(row):
                    if bit == "1":
                        y0, x0 = y + r * scale, x + c * scale
                        if 0 <= y0 and y0 + scale <= h and 0 <= x0 and x0 + scale <= w:
                            img[y0:y0 + scale, x0:x0 + scale] = color
        x += 4 * scale


def _label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-2:
        return f"{v:.1e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{v:.4g}"


def line_plot(ys: Sequence[float], xs: Optional[Sequence[float]] = None, width: int = 640, height: int = 360,
              xlabel: str = "step", ylabel: str = "log density", color=(31, 119, 180)) -> np.ndarray:
    """Rasterize a line plot of ys over xs into an (height, width, 3) uint8 array with axes and ticks."""
    ys = np.asarray(ys, dtype=np.float64)
    xs = np.arange(len(ys), dtype=np.float64) if xs is None else np.asarray(xs, dtype=np.float64)
    if ys.ndim != 1 or len(ys) == 0 or xs.shape != ys.shape:
        raise ValueError("line_plot needs one or more (x, y) points")
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 90, 20, 20, 50
    pw, ph = width - left - right, height - top - bottom
    finite = np.isfinite(ys)
    lo, hi = (float(ys[finite].min()), float(ys[finite].max())) if finite.any() else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 1.0, hi + 1.0
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    x_lo, x_hi = float(xs.min()), float(xs.max())
    if x_hi - x_lo < 1e-12:
        x_hi = x_lo + 1.0

    def px(x):
        return left + (np.asarray(x) - x_lo) / (x_hi - x_lo) * (pw - 1)

    def py(y):
        return top + (hi - np.asarray(y)) / (hi - lo) * (ph - 1)

    for i in range(5):  # grid and y ticks
        yv = lo + pad + i * (hi - lo - 2 * pad) / 4
        row = int(round(float(py(yv))))
        img[row, left:left + pw] = (225, 225, 225)
        lab = _label(yv)
        _text(img, left - 8 - 8 * len(lab), row - 5, lab)
    for i in range(5):  # x ticks
        xv = x_lo + i * (x_hi - x_lo) / 4
        col = int(round(float(px(xv))))
        img[top:top + ph, col] = (225, 225, 225)
        img[top + ph:top + ph + 5, col] = 0
        lab = _label(round(xv, 6) if abs(xv) < 1e5 else xv)
        _text(img, col - 4 * len(lab), top + ph + 8, lab)
    img[top:top + ph, left] = 0
    img[top + ph - 1, left:left + pw] = 0
    _text(img, left + pw // 2 - 4 * len(xlabel), height - 16, xlabel)
    _text(img, 4, 4, ylabel)
    X, Y = px(xs), py(ys)
    for i in range(len(xs) - 1):
        if not (finite[i] and finite[i + 1]):
            continue
        n = int(max(abs(X[i + 1] - X[i]), abs(Y[i + 1] - Y[i]))) + 2
        cx = np.rint(np.linspace(X[i], X[i + 1], n)).astype(int)
        cy = np.rint(np.linspace(Y[i], Y[i + 1], n)).astype(int)
        for dx, dy in ((0, 0), (1, 0), (0, 1)):
            img[np.clip(cy + dy, 0, height - 1), np.clip(cx + dx, 0, width - 1)] = color
    if len(xs) == 1 and finite[0]:
        img[int(Y[0]) - 2:int(Y[0]) + 3, int(X[0]) - 2:int(X[0]) + 3] = color
    return img


def write_line_plot_png(path, ys: Sequence[float], xs: Optional[Sequence[float]] = None, **kw) -> Path:
    """:func:`line_plot` written to ``path`` as PNG."""
    return write_png(path, line_plot(ys, xs, **kw))
