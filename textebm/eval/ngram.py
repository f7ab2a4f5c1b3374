"""N-gram language models for text evaluation (KenLM compatible).

Forward / reverse perplexity metrics score generated text with a 5-gram
modified Kneser-Ney model (or score held-out text with a model trained on
generated text).  This module provides:

* :func:`install_lmplz` / :func:`find_lmplz` - build KenLM's ``lmplz``
  estimator from the ``kenlm`` source distribution and locate it;
* :func:`train_lmplz` - run ``lmplz`` with options that make it robust on
  small or degenerate corpora;
* :func:`train_builtin` - a numpy re-implementation of the estimator
  ``lmplz`` runs (interpolated modified Kneser-Ney, no pruning) that writes
  the same ARPA lines as lmplz (same float32 numbers);
* :func:`train` - picks ``lmplz`` when available and falls back to the
  built-in estimator otherwise;
* :func:`perplexity` - scores sentences with :mod:`kenlm`;
* :func:`ngram_main` - the ``install`` / ``train`` / ``ppl`` sub-commands.

Corpus conventions (identical for both estimators): one sentence per line,
tokens separated by spaces, tabs, carriage returns or NUL bytes, an empty
line is a sentence with no words, and the literal tokens ``<s>``, ``</s>``
and ``<unk>`` in training text are dropped (``lmplz --skip_symbols``).
A final line without a trailing newline is still a sentence (``lmplz`` on
its own would drop that sentence's ``</s>``; :func:`train_lmplz` appends the
newline).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np

__all__ = [
    "LmplzError",
    "TrainResult",
    "default_cache_dir",
    "find_lmplz",
    "install_lmplz",
    "lmplz_cache_path",
    "ngram_main",
    "perplexity",
    "train",
    "train_builtin",
    "train_lmplz",
]

PathLike = Union[str, "os.PathLike[str]"]
SentencesOrPath = Union[PathLike, Sequence[str]]

#: Debian packages needed to build ``lmplz``.
DEBIAN_BUILD_DEPS = (
    "build-essential",
    "cmake",
    "libboost-program-options-dev",
    "libboost-system-dev",
    "libboost-thread-dev",
    "libboost-test-dev",
    "zlib1g-dev",
    "libbz2-dev",
    "liblzma-dev",
)

#: Discounts lmplz substitutes (``--discount_fallback`` default) when the
#: closed-form estimate is undefined or out of range, for counts 0, 1, 2, 3+.
FALLBACK_DISCOUNTS = (0.0, 0.5, 1.0, 1.5)

_UNK, _BOS, _EOS = 0, 1, 2
_SPECIAL_WORDS = ("<unk>", "<s>", "</s>")


class LmplzError(RuntimeError):
    """lmplz could not be built or failed to estimate a model."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    ``estimator_used`` is ``"lmplz"`` or ``"builtin"``; ``fallback_reason``
    says why the built-in estimator was used when ``estimator="auto"`` could
    not use lmplz (``None`` otherwise).
    """

    estimator_used: str
    path: Path
    fallback_reason: str | None = None


# ---------------------------------------------------------------------------
# Locating and building lmplz
# ---------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Root of textebm's cache: ``$TEXTEBM_CACHE``, else
    ``$XDG_CACHE_HOME/textebm``, else ``~/.cache/textebm``."""
    env = os.environ.get("TEXTEBM_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "textebm"


def lmplz_cache_path(cache_dir: PathLike | None = None) -> Path:
    """Where :func:`install_lmplz` puts the binary (``<cache>/bin/lmplz``)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "bin" / "lmplz"


def _lmplz_runs(path: Path) -> bool:
    """True if ``path`` is an executable lmplz that starts (libraries load)."""
    if not path.is_file() or not os.access(path, os.X_OK):
        return False
    try:
        proc = subprocess.run(
            [str(path), "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    # ``lmplz --help`` prints its usage and exits with status 1.
    return b"Kneser-Ney" in proc.stdout or b"--order" in proc.stdout


def find_lmplz(explicit: PathLike | None = None) -> Path | None:
    """Locate lmplz.

    Order: ``explicit`` (must exist, else :class:`FileNotFoundError`), the
    ``TEXTEBM_LMPLZ`` environment variable, the cache path of
    :func:`install_lmplz`, then ``lmplz`` on ``PATH``.  Returns ``None`` when
    none is found.
    """
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"lmplz binary not found: {p}")
        return p
    env = os.environ.get("TEXTEBM_LMPLZ")
    if env:
        p = Path(env).expanduser()
        if p.is_file():
            return p
    cached = lmplz_cache_path()
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    on_path = shutil.which("lmplz")
    return Path(on_path) if on_path else None


def _missing_build_deps() -> list[str]:
    """Names of missing build prerequisites (tools and headers)."""
    missing = []
    for tool in ("cmake", "make"):
        if shutil.which(tool) is None:
            missing.append(tool)
    if shutil.which("c++") is None and shutil.which("g++") is None:
        missing.append("a C++ compiler")
    include_dirs = [Path("/usr/include"), Path("/usr/local/include")]
    for extra in (os.environ.get("CPATH", ""), os.environ.get("CPLUS_INCLUDE_PATH", "")):
        include_dirs.extend(Path(d) for d in extra.split(os.pathsep) if d)
    for header, what in (
        ("boost/program_options.hpp", "Boost.ProgramOptions headers"),
        ("boost/thread.hpp", "Boost.Thread headers"),
        ("zlib.h", "zlib headers"),
    ):
        if not any((d / header).is_file() for d in include_dirs):
            missing.append(what)
    return missing


def _deps_error(detail: str) -> LmplzError:
    pkgs = " ".join(DEBIAN_BUILD_DEPS)
    return LmplzError(
        f"cannot build lmplz: {detail}. Install the build dependencies first, "
        f"e.g. on Debian/Ubuntu: apt-get install -y {pkgs}"
    )


def _run_logged(cmd: list[str], cwd: Path, log: Path, what: str) -> None:
    with open(log, "ab") as fh:
        fh.write(("$ " + " ".join(cmd) + "\n").encode())
        fh.flush()
        proc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        if what == "configure" and ("Boost" in tail or "ZLIB" in tail):
            raise _deps_error("cmake could not find Boost or zlib\n" + tail)
        raise LmplzError(f"lmplz {what} step failed ({' '.join(cmd)}):\n{tail}")


def _download_kenlm_sdist(dest: Path, log: Path) -> Path:
    """Fetch the kenlm source distribution with pip into ``dest``."""
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "kenlm",
            "-d", str(dest), "kenlm"]
    # Without build isolation pip only needs setuptools (present in most
    # environments) to read the metadata; the isolated retry fetches build
    # requirements as wheels.
    attempts = [base[:5] + ["--no-build-isolation"] + base[5:], base]
    for cmd in attempts:
        with open(log, "ab") as fh:
            fh.write(("$ " + " ".join(cmd) + "\n").encode())
            fh.flush()
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
        found = sorted(dest.glob("kenlm-*.tar.gz")) + sorted(dest.glob("kenlm-*.zip"))
        if found:
            return found[0]
        if proc.returncode == 0:
            break
    tail = log.read_text(errors="replace")[-2000:]
    raise LmplzError(f"could not download the kenlm source distribution with pip:\n{tail}")


def _extract(archive: Path, dest: Path) -> Path:
    if archive.name.endswith(".zip"):
        shutil.unpack_archive(str(archive), str(dest))
    else:
        with tarfile.open(archive) as tf:
            try:
                tf.extractall(dest, filter="data")
            except TypeError:  # Python without extraction filters
                tf.extractall(dest)
    roots = [p for p in dest.iterdir() if p.is_dir() and (p / "CMakeLists.txt").is_file()]
    if not roots:
        raise LmplzError(f"no CMakeLists.txt found in {archive.name}")
    return roots[0]


def install_lmplz(cache_dir: PathLike | None = None, force: bool = False, jobs: int = 2) -> Path:
    """Build KenLM's ``lmplz`` from the ``kenlm`` sdist and cache it.

    The binary goes to ``<cache>/bin/lmplz`` where ``<cache>`` is
    ``cache_dir`` or :func:`default_cache_dir` (``$TEXTEBM_CACHE``,
    ``$XDG_CACHE_HOME/textebm``, ``~/.cache/textebm``).  Returns at once when
    a working binary is already there (unless ``force``).  Needs cmake, a C++
    compiler, Boost (program_options, system, thread, test) and zlib; when
    they are missing a :class:`LmplzError` names the Debian packages.  The
    build takes a few minutes on two cores.
    """
    target = lmplz_cache_path(cache_dir)
    if not force and _lmplz_runs(target):
        print(f"lmplz already installed: {target}")
        return target
    missing = _missing_build_deps()
    if missing:
        raise _deps_error("missing " + ", ".join(missing))
    target.parent.mkdir(parents=True, exist_ok=True)
    print("building lmplz from the kenlm source distribution (takes a few minutes)...",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="textebm-lmplz-") as tmp:
        tmp_path = Path(tmp)
        log = tmp_path / "build.log"
        log.touch()
        archive = _download_kenlm_sdist(tmp_path / "sdist", log)
        src = _extract(archive, tmp_path / "src")
        build = tmp_path / "build"
        build.mkdir()
        _run_logged(
            ["cmake", str(src), "-DCMAKE_BUILD_TYPE=Release", "-DCOMPILE_TESTS=OFF",
             "-DENABLE_PYTHON=OFF", "-DENABLE_INTERPOLATE=OFF", "-DFORCE_STATIC=OFF",
             "-DBUILD_TESTING=OFF"],
            build, log, "configure",
        )
        _run_logged(["make", f"-j{max(1, int(jobs))}", "lmplz"], build, log, "build")
        built = build / "bin" / "lmplz"
        if not built.is_file():
            raise LmplzError(f"build finished but {built} is missing")
        staged = target.with_name(f".lmplz.{os.getpid()}.tmp")
        shutil.copy2(built, staged)
        os.chmod(staged, 0o755)
        os.replace(staged, target)
    if not _lmplz_runs(target):
        raise LmplzError(f"built lmplz at {target} does not run")
    print(f"lmplz installed: {target}")
    return target


# ---------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------


def _is_sentence_list(x) -> bool:
    return not isinstance(x, (str, bytes, os.PathLike)) and isinstance(x, Iterable)


def _check_order(order) -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
        raise ValueError(f"n-gram order must be an integer, got {order!r}")
    if order < 1:
        raise ValueError(f"n-gram order must be >= 1, got {order}")
    return int(order)


def _read_training_bytes(source: SentencesOrPath) -> tuple[bytes, str]:
    """Corpus as newline-terminated bytes, plus a name for messages."""
    if _is_sentence_list(source):
        lines = [str(s).replace("\n", " ") for s in source]
        data = "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")
        name = "<sentences>"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"training text not found: {path}")
        data = path.read_bytes()
        name = str(path)
        if data and not data.endswith(b"\n"):
            data += b"\n"
    return data, name


_DELIMS = bytes.maketrans(b"\t\r\x00", b"   ")


def _has_words(data: bytes) -> bool:
    """True if the corpus has at least one token other than the specials."""
    specials = (b"<s>", b"</s>", b"<unk>")
    return any(w not in specials for w in data.translate(_DELIMS).split())


def _encode(data: bytes) -> tuple[np.ndarray, list[bytes]]:
    """Token ids (with ``</s>`` = 2 ending each line) and the word list.

    Ids: 0 ``<unk>``, 1 ``<s>``, 2 ``</s>``, then words in order of first
    appearance.  Literal special tokens are dropped (``--skip_symbols``).
    """
    parts = data.translate(_DELIMS).replace(b"\n", b" \n ").split(b" ")
    types = dict.fromkeys(filter(None, parts))  # unique tokens, first-seen order
    mapping = {b"\n": _EOS, b"<s>": -1, b"</s>": -1, b"<unk>": -1}
    words = [t for t in types if t not in mapping]
    mapping.update(zip(words, range(3, 3 + len(words))))
    ids = np.fromiter(map(mapping.__getitem__, filter(None, parts)), dtype=np.int64)
    return ids[ids >= 0], words


# ---------------------------------------------------------------------------
# Built-in modified Kneser-Ney estimator
# ---------------------------------------------------------------------------


def _discounts(adjusted: np.ndarray) -> tuple[np.ndarray, bool]:
    """Modified KN discounts [0, D1, D2, D3+] (float32) as lmplz computes
    them (Chen & Goodman eq. 26), with lmplz's fallback when undefined or out
    of range.  Returns (discounts, used_fallback)."""
    n = np.bincount(np.minimum(adjusted, 5), minlength=6)[:5].astype(np.int64)
    f32 = np.float32
    if n[1] == 0 or n[2] == 0 or n[3] == 0:
        return np.array(FALLBACK_DISCOUNTS, dtype=np.float32), True
    y = f32(n[1]) / f32(float(n[1]) + 2.0 * float(n[2]))
    out = np.zeros(4, dtype=np.float32)
    for j in (1, 2, 3):
        d = f32(j) - f32(j + 1) * y * f32(n[j + 1]) / f32(n[j])
        if d < 0 or d > j:
            return np.array(FALLBACK_DISCOUNTS, dtype=np.float32), True
        out[j] = d
    return out, False


def _gamma_and_probs(ctx: np.ndarray, adjusted: np.ndarray, n_ctx: int, disc: np.ndarray):
    """Per-context gamma (float32) and uninterpolated probabilities.

    Mirrors lmplz's float32 arithmetic: denominators are integer sums cast
    to float, gamma accumulates D_k * N_k(context) for k = 1, 2, 3+.
    """
    denom = np.bincount(ctx, weights=adjusted, minlength=n_ctx).astype(np.float32)
    capped = np.minimum(adjusted, 3)
    gamma = np.zeros(n_ctx, dtype=np.float32)
    for k in (1, 2, 3):
        nk = np.bincount(ctx[capped == k], minlength=n_ctx).astype(np.float32)
        gamma = gamma + disc[k] * nk
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = gamma / denom
        uninterp = (adjusted.astype(np.float32) - disc[capped]) / denom[ctx]
    return gamma, uninterp


def _log10_f32(x: np.ndarray) -> np.ndarray:
    # float32 log10 (libm's log10f, like lmplz), not a rounded float64 one.
    with np.errstate(divide="ignore"):
        return np.log10(np.asarray(x, dtype=np.float32))


_INT_DIGITS = 3    # fixed notation for 1e-6 <= |x| < 1e3 ...
_FRAC_DIGITS = 14  # ... needs at most 5 + 9 digits after the point
_FWIDTH = 2 + _INT_DIGITS + _FRAC_DIGITS  # sign, digits, '.', digits
_DOT_COL = 1 + _INT_DIGITS
_POW10F = 10.0 ** np.arange(-40, 41)  # _POW10F[k + 40] == 10.0 ** k


def _digit_col(j: np.ndarray) -> np.ndarray:
    """Column of the digit for 10**j in the character layout
    ``[sign] 10^2 10^1 10^0 '.' 10^-1 ... 10^-14``."""
    return np.where(j >= 0, _INT_DIGITS - j, _DOT_COL - j)


def _format_unusual(x: np.float32) -> str:
    """Shortest float32 text outside [1e-6, 1e3), in lmplz's style
    (``-2.5885976e-7``, ``1500``, ``-inf``)."""
    if not np.isfinite(x):
        return "nan" if np.isnan(x) else ("inf" if x > 0 else "-inf")
    if abs(x) >= 1e3:
        return np.format_float_positional(x, unique=True, trim="-")
    return np.format_float_scientific(x, unique=True, trim="-", exp_digits=1)


def _float_chars(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shortest decimal text of float32 values, vectorized.

    Returns ``(buf, start, length)``: value i is
    ``buf[start[i]:start[i] + length[i]]`` (ASCII).  For each value the
    smallest number of significant digits p (1..9) whose correctly rounded
    decimal reads back as the same float32 is found with numpy (the same
    digits as lmplz's shortest formatting), then the digits are laid out in
    a fixed-width character matrix.  Values outside [1e-6, 1e3), which log
    probabilities rarely are, are formatted one by one.
    """
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    n = len(v)
    a32 = np.abs(v)
    with np.errstate(invalid="ignore"):
        fixed = ((a32 >= np.float32(1e-6)) & (a32 < np.float32(1e3))) | (v == 0)
    m = np.zeros(n, dtype=np.int64)
    p = np.ones(n, dtype=np.int64)
    e = np.zeros(n, dtype=np.int64)
    todo = np.flatnonzero(fixed & (v != 0))
    if len(todo):
        a = a32[todo].astype(np.float64)
        et = np.floor(np.log10(a)).astype(np.int64)
        et[a < _POW10F[et + 40]] -= 1
        et[a >= _POW10F[et + 41]] += 1
        e[todo] = et
    # A float32 needs at most 9 significant digits.  Any representation with
    # <= 6 digits that reads back is the 6-digit rounding with its trailing
    # zeros removed (a float32 half-ulp, < 6e-8 relative, is below half a
    # unit of the 6th digit, >= 5e-7 relative), so trying 6, 7, 8, 9 digits
    # and stripping zeros gives the shortest.
    for digits in (6, 7, 8, 9):
        if not len(todo):
            break
        at = a32[todo].astype(np.float64)
        k = digits - 1 - e[todo]  # m = round(|v| * 10**k)
        scale = _POW10F[k + 40]
        mt = np.rint(at * scale)
        back = (mt / scale).astype(np.float32)
        ok = back == a32[todo]
        hit = todo[ok]
        mi = mt[ok].astype(np.int64)
        ei = e[hit]
        carry = mi >= 10 ** digits  # rounded up to the next power of ten
        mi[carry] //= 10
        ei[carry] += 1
        m[hit], p[hit], e[hit] = mi, digits, ei
        todo = todo[~ok]
    fixed[todo] = False  # cannot happen; fall back to numpy's repr
    strip = np.flatnonzero((m % 10 == 0) & (p > 1))
    while len(strip):
        m[strip] //= 10
        p[strip] -= 1
        strip = strip[(m[strip] % 10 == 0) & (p[strip] > 1)]

    chars = np.full((n, _FWIDTH), ord("0"), dtype=np.uint8)
    chars[:, _DOT_COL] = ord(".")
    low = e - p + 1  # exponent of the last significant digit
    rest = m.copy()
    for k in range(9):
        rows = np.flatnonzero(p > k)
        if not len(rows):
            break
        chars[rows, _digit_col(low[rows] + k)] = (rest[rows] % 10 + ord("0")).astype(np.uint8)
        rest[rows] //= 10
    neg = v < 0
    first = _digit_col(np.maximum(e, 0)) - neg
    chars[np.flatnonzero(neg), first[neg]] = ord("-")
    last = _digit_col(np.minimum(low, 0))
    length = last - first + 1
    for i in np.flatnonzero(~fixed).tolist():
        text = _format_unusual(v[i]).encode()[:_FWIDTH]
        chars[i, :len(text)] = np.frombuffer(text, dtype=np.uint8)
        first[i], length[i] = 0, len(text)
    start = np.arange(n, dtype=np.int64) * _FWIDTH + first
    return chars.reshape(-1), start, length


def _format_f32(values: np.ndarray) -> list[bytes]:
    """Shortest float32 strings as a list of bytes (see :func:`_float_chars`)."""
    buf, start, length = _float_chars(values)
    raw = buf.tobytes()
    return [raw[s:s + n] for s, n in zip(start.tolist(), length.tolist())]


@dataclasses.dataclass
class _Order:
    ctx: np.ndarray        # id of the (n-1)-gram prefix (sorted, grouped)
    last: np.ndarray       # last word id
    suffix: np.ndarray     # id of the (n-1)-gram suffix
    first: np.ndarray      # first word id
    raw: np.ndarray        # raw count in the corpus


def _count_ngrams(seq: np.ndarray, sid: np.ndarray, order: int, vocab_size: int,
                  track: int = -1) -> tuple[list[_Order | None], list[int]]:
    """Unique n-grams of each order of the sentence-padded sequence.

    ``seq`` holds ``<s> w1 .. wk </s>`` for every sentence; the n-grams of
    order n are all windows of length n inside a sentence (a single ``<s>``,
    as in lmplz's output).  Entry 0 (unigrams) is ``None``: unigram ids are
    word ids.  Also returns, for each order n, the id of the n-gram ending at
    position ``track`` (-1 where that window leaves the sentence).
    """
    L = len(seq)
    levels: list[_Order | None] = [None]
    tracked = [int(seq[track]) if 0 <= track < L else -1]
    prev_ids = seq  # ids of the (n-1)-gram starting at each position
    for n in range(2, order + 1):
        m = L - n + 1
        if m <= 0:
            levels.append(_empty_order())
            tracked.append(-1)
            prev_ids = np.zeros(0, dtype=np.int64)
            continue
        starts = np.flatnonzero(sid[:m] == sid[n - 1:n - 1 + m])
        pid = prev_ids[starts]
        key = pid * vocab_size + seq[starts + n - 1]
        uniq, inv, raw = np.unique(key, return_inverse=True, return_counts=True)
        inv = inv.reshape(-1)
        rep = np.empty(len(uniq), dtype=np.int64)
        rep[inv] = starts
        ids = np.full(m, -1, dtype=np.int64)
        ids[starts] = inv
        levels.append(_Order(
            ctx=uniq // vocab_size,
            last=uniq % vocab_size,
            suffix=prev_ids[rep + 1],
            first=seq[rep],
            raw=raw.astype(np.int64),
        ))
        start = track - n + 1
        tracked.append(int(ids[start]) if 0 <= start < m else -1)
        prev_ids = ids
    return levels, tracked


def _last_suffix_position(seq: np.ndarray, sid: np.ndarray, order: int) -> tuple[int, int]:
    """End position of the highest-order n-gram that lmplz visits last, and
    how many of its suffixes are lower-order n-grams.

    lmplz's ``AdjustCounts`` walks the ``<s>``-padded order-N n-grams in
    suffix order (last word first, ids by first appearance) and, when it
    flushes the lower-order n-grams still open at the end, it adds their raw
    counts (not their adjusted counts) to the counts-of-counts used for the
    discounts.  Those n-grams are the suffixes of the last n-gram in that
    order, of lengths 1..K (K stops at a ``<s>``).  Reproducing this keeps
    the discounts identical on small corpora.
    """
    cand = np.flatnonzero(seq != _BOS)
    vals = seq[cand]
    cand = cand[vals == vals.max()]
    words = [int(seq[cand[0]])]
    for k in range(1, order):
        prev = cand - k
        inside = (prev >= 0) & (sid[np.maximum(prev, 0)] == sid[cand])
        v = np.where(inside, seq[np.maximum(prev, 0)], _BOS)
        best = v.max()
        cand = cand[v == best]
        words.append(int(best))
    padded = words[::-1]  # the order-N n-gram, <s>-padded on the left
    bos_at = [i for i in range(1, order) if padded[i] == _BOS]
    k_open = order - max(bos_at) if bos_at else order - 1
    return int(cand[0]), k_open


def _empty_order() -> _Order:
    z = np.zeros(0, dtype=np.int64)
    return _Order(z, z, z, z, z)


def _build_sequence(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Insert ``<s>`` before every sentence; returns (seq, sentence id, #sentences)."""
    eos_pos = np.flatnonzero(ids == _EOS)
    n_sent = len(eos_pos)
    sent_starts = np.concatenate(([0], eos_pos[:-1] + 1)) if n_sent else np.zeros(0, np.int64)
    L = len(ids) + n_sent
    is_bos = np.zeros(L, dtype=bool)
    is_bos[sent_starts + np.arange(n_sent)] = True
    seq = np.empty(L, dtype=np.int64)
    seq[is_bos] = _BOS
    seq[~is_bos] = ids
    sid = np.cumsum(is_bos) - 1
    return seq, sid, n_sent


def estimate_builtin(order: int, sentences_or_path: SentencesOrPath):
    """Estimate the model; returns (words, levels, info).

    ``levels[n-1]`` describes the n-grams of order n: float32 ``logprob``,
    ``logbackoff`` (all but the highest order) and, for n > 1, ``ctx`` (index
    of the (n-1)-gram prefix in the previous level) and ``last`` (word id;
    ids 0, 1, 2 are ``<unk>``, ``<s>``, ``</s>``, then ``words``).
    """
    order = _check_order(order)
    data, name = _read_training_bytes(sentences_or_path)
    ids, words = _encode(data)
    n_words = int(np.count_nonzero(ids != _EOS))
    if n_words == 0:
        raise ValueError(f"training corpus is empty (no words): {name}")
    V = len(words) + 3
    seq, sid, n_sent = _build_sequence(ids)
    last_pos, k_open = _last_suffix_position(seq, sid, order) if order > 1 else (-1, 0)
    levels, tracked = _count_ngrams(seq, sid, order, V, track=last_pos)

    # Adjusted counts: raw counts at the highest order and for n-grams that
    # start with <s>; otherwise the number of distinct left extensions.
    raw1 = np.bincount(seq, minlength=V).astype(np.int64)
    adjusted: list[np.ndarray] = []
    for n in range(1, order + 1):
        if n == 1:
            if order == 1:
                a = raw1.copy()
            else:
                a = np.bincount(levels[1].suffix, minlength=V).astype(np.int64)
            a[_UNK] = 0
            a[_BOS] = 0
        else:
            lv = levels[n - 1]
            if n == order:
                a = lv.raw.copy()
            else:
                a = np.bincount(levels[n].suffix, minlength=len(lv.raw)).astype(np.int64)
                bos = lv.first == _BOS
                a[bos] = lv.raw[bos]
        adjusted.append(a)

    discounts, fallback_orders = [], []
    for n, a in enumerate(adjusted, start=1):
        if n <= k_open and n < order and tracked[n - 1] >= 0:
            # lmplz's counts-of-counts see this n-gram's raw count.
            j = tracked[n - 1]
            a = a.copy()
            a[j] = raw1[j] if n == 1 else levels[n - 1].raw[j]
        d, fb = _discounts(a)
        discounts.append(d)
        if fb:
            fallback_orders.append(n)

    # Uninterpolated probabilities, gammas, then interpolation (float32).
    uniform = np.float32(1.0 / float(V - 1))  # vocabulary incl. <unk>, excl. <s>
    probs: list[np.ndarray] = []
    gammas: list[np.ndarray | None] = []
    a1 = adjusted[0]
    g1, u1 = _gamma_and_probs(np.zeros(V, dtype=np.int64), a1, 1, discounts[0])
    p1 = u1 + g1[0] * uniform
    p1[_BOS] = np.float32(1.0)
    probs.append(p1.astype(np.float32))
    gammas.append(None)
    for n in range(2, order + 1):
        lv = levels[n - 1]
        n_ctx = len(probs[-1])
        g, u = _gamma_and_probs(lv.ctx, adjusted[n - 1], n_ctx, discounts[n - 1])
        p = u + g[lv.ctx] * probs[-1][lv.suffix]
        probs.append(p.astype(np.float32))
        gammas.append(g)

    out = []
    for n in range(1, order + 1):
        entry = {"logprob": np.minimum(np.float32(0.0), _log10_f32(probs[n - 1]))}
        if n < order:
            size = len(probs[n - 1])
            bo = np.ones(size, dtype=np.float32)
            nxt = levels[n]
            is_ctx = np.bincount(nxt.ctx, minlength=size) > 0
            bo[is_ctx] = gammas[n][is_ctx]
            entry["logbackoff"] = _log10_f32(bo)
        if n > 1:
            entry["ctx"] = levels[n - 1].ctx
            entry["last"] = levels[n - 1].last
        out.append(entry)
    info = {
        "source": name,
        "sentences": n_sent,
        "tokens": n_words,
        "types": V,
        "discounts": [d[1:].tolist() for d in discounts],
        "fallback_orders": fallback_orders,
    }
    return words, out, info


def train_builtin(order: int, sentences_or_path: SentencesOrPath, arpa_path: PathLike) -> Path:
    """Estimate an interpolated modified Kneser-Ney model like ``lmplz``.

    Reproduces lmplz (KenLM ``lm/builder``, no pruning, default options plus
    ``--discount_fallback --skip_symbols``):

    * every sentence is ``<s> w1 .. wk </s>``; ``<s>`` is only a context,
      ``</s>`` is predicted;
    * adjusted counts: raw counts for the highest order and for n-grams
      starting with ``<s>``, otherwise the number of distinct words seen to
      the left (``<s>`` included); unigrams ``<s>`` and ``<unk>`` get 0;
    * per order, counts-of-counts n1..n4 give
      ``Y = n1 / (n1 + 2 n2)`` and ``D_k = k - (k+1) Y n_{k+1} / n_k``
      (k = 1, 2, 3+); if some n_k (k <= 3) is 0 or a D_k falls outside
      [0, k] the fallback discounts 0.5, 1, 1.5 are used.  As in lmplz,
      the lower-order n-grams that are suffixes of the last n-gram in its
      suffix-sorted walk enter n1..n4 with their raw count (see
      :func:`_last_suffix_position`);
    * ``p(w|h) = (a(hw) - D(a(hw))) / sum_x a(hx) + gamma(h) p(w|h')`` with
      ``gamma(h) = (D1 N1(h) + D2 N2(h) + D3 N3+(h)) / sum_x a(hx)``;
      unigrams interpolate with the uniform distribution over the vocabulary
      including ``<unk>`` but excluding ``<s>``; ``<unk>`` gets only the
      interpolated mass, ``<s>`` gets probability 1 (log10 0);
    * the ARPA backoff of an n-gram is log10 gamma of it as a context (0 if
      it is not one); the highest order has no backoff column.

    Arithmetic is float32 in the same order as lmplz and numbers are written
    in the shortest form that reads back as the same float32, so the ARPA
    file has the same lines as lmplz's (possibly in another order).  Order 1
    is supported but KenLM can only load models of order >= 2.
    """
    words, levels, info = estimate_builtin(order, sentences_or_path)
    arpa_path = Path(arpa_path)
    _write_arpa(arpa_path, words, levels)
    return arpa_path


def _copy_segments(src: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> bytes:
    """Concatenate ``src[starts[i]:starts[i] + lengths[i]]`` for all i."""
    total = int(lengths.sum())
    if total == 0:
        return b""
    dst = np.cumsum(lengths) - lengths
    idx = np.repeat(starts - dst, lengths) + np.arange(total, dtype=np.int64)
    return src[idx].tobytes()


def _write_arpa(path: Path, words: list[bytes], levels: list[dict],
                chunk_lines: int = 200_000) -> None:
    """Write the ARPA file the way lmplz lays it out.

    Each line is a fixed sequence of byte segments (log10 prob, tab, words
    separated by spaces, tab, backoff, newline) copied out of one source
    buffer with a single numpy gather per chunk of lines.
    """
    vocab = [w.encode() for w in _SPECIAL_WORDS] + list(words)
    consts = b"\t \n"
    TAB, SPACE, NL = 0, 1, 2
    word_len = np.fromiter(map(len, vocab), dtype=np.int64, count=len(vocab))
    word_start = len(consts) + np.cumsum(word_len) - word_len
    head = np.frombuffer(consts + b"".join(vocab), dtype=np.uint8)

    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    word_ids: list[np.ndarray] = []  # word id at each position, current order
    with open(tmp, "wb") as fh:
        fh.write(b"\\data\\\n")
        for n, lv in enumerate(levels, start=1):
            fh.write(b"ngram %d=%d\n" % (n, len(lv["logprob"])))
        fh.write(b"\n")
        for n, lv in enumerate(levels, start=1):
            size = len(lv["logprob"])
            if n == 1:
                word_ids = [np.arange(size, dtype=np.int64)]
            else:
                word_ids = [w[lv["ctx"]] for w in word_ids] + [lv["last"]]
            one = np.ones(size, dtype=np.int64)
            tab, space, newline = (np.full(size, c, dtype=np.int64) for c in (TAB, SPACE, NL))
            pbuf, pstart, plen = _float_chars(lv["logprob"])
            bufs = [head, pbuf]
            segments = [(pstart + len(head), plen), (tab, one)]
            for k, w in enumerate(word_ids):
                if k:
                    segments.append((space, one))
                segments.append((word_start[w], word_len[w]))
            if "logbackoff" in lv:
                bbuf, bstart, blen = _float_chars(lv["logbackoff"])
                segments += [(tab, one), (bstart + len(head) + len(pbuf), blen)]
                bufs.append(bbuf)
            segments.append((newline, one))
            src = np.concatenate(bufs)
            starts = np.stack([st for st, _ in segments], axis=1)
            lengths = np.stack([ln for _, ln in segments], axis=1)
            fh.write(b"\\%d-grams:\n" % n)
            for lo in range(0, size, chunk_lines):
                hi = min(size, lo + chunk_lines)
                fh.write(_copy_segments(src, starts[lo:hi].reshape(-1), lengths[lo:hi].reshape(-1)))
            fh.write(b"\n")
        fh.write(b"\\end\\\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# lmplz runner and dispatcher
# ---------------------------------------------------------------------------


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _auto_memory(text_bytes: int, order: int) -> str:
    """lmplz ``-S``: enough for the corpus in memory, at most 20% of RAM.

    lmplz allocates and touches all of ``-S`` up front, so the default 80%
    (or a flat 20%) costs seconds on small corpora.
    """
    want = max(64 << 20, text_bytes * 12 * max(order, 1))
    phys = _physical_memory()
    if phys:
        want = min(want, phys // 5)
    return f"{max(want >> 20, 16)}M"


def train_lmplz(order: int, text_path: PathLike, arpa_path: PathLike,
                lmplz: PathLike | None = None, memory: str | None = None,
                temp_dir: PathLike | None = None) -> Path:
    """Run lmplz: ``-o order --discount_fallback --skip_symbols -S mem -T tmp``.

    ``memory`` is lmplz's ``-S`` (e.g. ``"20%"`` or ``"1G"``); by default
    it is sized from the corpus and capped at 20% of RAM.  Raises
    :class:`LmplzError` with lmplz's stderr when it fails, and
    :class:`FileNotFoundError` when lmplz or the text is missing.
    """
    order = _check_order(order)
    text_path = Path(text_path)
    if not text_path.is_file():
        raise FileNotFoundError(f"training text not found: {text_path}")
    exe = find_lmplz(lmplz)
    if exe is None:
        raise FileNotFoundError(
            "lmplz not found (set TEXTEBM_LMPLZ, pass its path, or run install_lmplz())")
    size = text_path.stat().st_size
    if size == 0 or not _has_words(text_path.read_bytes()):
        raise ValueError(f"training corpus is empty (no words): {text_path}")
    arpa_path = Path(arpa_path)
    arpa_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="textebm-lmplz-", dir=temp_dir) as tmp:
        src = text_path
        with open(text_path, "rb") as fh:
            fh.seek(size - 1)
            unterminated = fh.read(1) != b"\n"
        if unterminated:  # lmplz would drop the last sentence's </s>
            src = Path(tmp) / "text.txt"
            shutil.copyfile(text_path, src)
            with open(src, "ab") as fh:
                fh.write(b"\n")
        cmd = [str(exe), "-o", str(order), "--discount_fallback", "--skip_symbols",
               "-S", memory or _auto_memory(size, order), "-T", str(Path(tmp) / "lmplz_"),
               "--text", str(src), "--arpa", str(arpa_path)]
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise LmplzError(f"could not run {exe}: {exc}") from exc
    if proc.returncode != 0 or not arpa_path.is_file():
        err = proc.stderr.decode(errors="replace").strip()
        raise LmplzError(f"lmplz failed (exit {proc.returncode}) on {text_path}:\n{err[-4000:]}")
    return arpa_path


def train(order: int, input: SentencesOrPath, output: PathLike, estimator: str = "auto",
          lmplz: PathLike | None = None) -> TrainResult:
    """Train an ARPA model with lmplz or the built-in estimator.

    ``estimator="auto"`` uses lmplz when it is found and succeeds, else the
    built-in estimator, recording why in ``fallback_reason``.  ``input`` is a
    text file (one sentence per line) or a list of sentences.
    """
    order = _check_order(order)
    if estimator not in ("auto", "lmplz", "builtin"):
        raise ValueError(f"estimator must be 'auto', 'lmplz' or 'builtin', got {estimator!r}")
    output = Path(output)
    if estimator == "builtin":
        return TrainResult("builtin", train_builtin(order, input, output), None)

    # Validate the input once, so user errors are not reported as lmplz failures.
    with tempfile.TemporaryDirectory(prefix="textebm-ngram-") as tmp:
        if _is_sentence_list(input):
            data, _ = _read_training_bytes(input)
            text_path = Path(tmp) / "train.txt"
            text_path.write_bytes(data)
            label = "<sentences>"
        else:
            text_path = Path(input)
            if not text_path.is_file():
                raise FileNotFoundError(f"training text not found: {text_path}")
            data = text_path.read_bytes()
            label = str(text_path)
        if not _has_words(data):
            raise ValueError(f"training corpus is empty (no words): {label}")
        del data

        if estimator == "lmplz":
            return TrainResult("lmplz", train_lmplz(order, text_path, output, lmplz=lmplz), None)

        exe = find_lmplz(lmplz)
        if exe is None:
            reason = "lmplz not found (install it with `textebm ngram install`)"
        else:
            try:
                return TrainResult("lmplz", train_lmplz(order, text_path, output, lmplz=exe), None)
            except LmplzError as exc:
                first = str(exc).strip().splitlines()
                reason = f"lmplz at {exe} failed: " + (first[-1] if first else "unknown error")
        return TrainResult("builtin", train_builtin(order, text_path, output), reason)


# ---------------------------------------------------------------------------
# Perplexity
# ---------------------------------------------------------------------------


def _read_eval_sentences(sentences) -> tuple[list[str], str]:
    if _is_sentence_list(sentences):
        return [str(s) for s in sentences], "<sentences>"
    path = Path(sentences)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation text not found: {path}")
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines, str(path)


def perplexity(arpa_or_model, sentences) -> dict:
    """Score sentences with a KenLM model, as KenLM's ``query`` does.

    ``arpa_or_model`` is an ARPA / KenLM binary path or a loaded
    ``kenlm.Model``; ``sentences`` is a list of strings or a text file with
    one sentence per line (an empty line is a sentence with only ``</s>``).

    Each sentence is scored with ``<s>`` as context and ``</s>`` predicted
    (``Model.full_scores``); OOV words get ``<unk>``'s probability.  With
    ``total`` the sum of log10 probabilities of all predicted tokens:

    * ``ppl`` = 10 ** (-total / (words + sentences))  (``</s>`` included;
      KenLM query's "Perplexity including OOVs");
    * ``ppl_no_eos`` = 10 ** (-(total - total_eos) / words)  (``</s>`` terms
      removed; NaN when there are no words);
    * ``ppl_excluding_oov`` = 10 ** (-(total - total_oov) / (words +
      sentences - oov))  (query's "Perplexity excluding OOVs").

    Returns a dict with those and ``words``, ``sentences``, ``oov``,
    ``total_log10prob``.
    """
    lines, name = _read_eval_sentences(sentences)
    if not lines:
        raise ValueError(f"no sentences to score: {name}")
    if hasattr(arpa_or_model, "full_scores"):
        model = arpa_or_model
    else:
        import kenlm

        path = Path(arpa_or_model)
        if not path.is_file():
            raise FileNotFoundError(f"language model not found: {path}")
        model = kenlm.Model(str(path))
    total = 0.0
    total_eos = 0.0
    total_oov = 0.0
    words = 0
    oov = 0
    for line in lines:
        scores = list(model.full_scores(line, bos=True, eos=True))
        for logp, _, is_oov in scores[:-1]:
            total += logp
            if is_oov:
                oov += 1
                total_oov += logp
        total += scores[-1][0]
        total_eos += scores[-1][0]
        words += len(scores) - 1
    n = len(lines)
    ppl = 10.0 ** (-total / (words + n))
    ppl_no_eos = 10.0 ** (-(total - total_eos) / words) if words else float("nan")
    kept = words + n - oov
    ppl_ex_oov = 10.0 ** (-(total - total_oov) / kept) if kept else float("nan")
    return {
        "ppl": ppl,
        "ppl_no_eos": ppl_no_eos,
        "ppl_excluding_oov": ppl_ex_oov,
        "words": words,
        "sentences": n,
        "oov": oov,
        "total_log10prob": total,
    }


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="textebm ngram",
                                description="KenLM-compatible n-gram language models")
    sub = p.add_subparsers(dest="command", required=True)
    pi = sub.add_parser("install", help="build lmplz from the kenlm source distribution")
    pi.add_argument("--cache-dir", default=None,
                    help="cache root (default: $TEXTEBM_CACHE or ~/.cache/textebm)")
    pi.add_argument("--force", action="store_true", help="rebuild even if present")
    pt = sub.add_parser("train", help="estimate an ARPA model")
    pt.add_argument("--order", type=int, required=True)
    pt.add_argument("--input", required=True, help="text file, one sentence per line")
    pt.add_argument("--output", required=True, help="ARPA file to write")
    pt.add_argument("--estimator", choices=("auto", "lmplz", "builtin"), default="auto")
    pt.add_argument("--lmplz", default=None, help="path to the lmplz binary")
    pp = sub.add_parser("ppl", help="perplexity of a text under a model")
    pp.add_argument("model", help="ARPA or KenLM binary file")
    pp.add_argument("text", help="text file, one sentence per line")
    pp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def ngram_main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``textebm ngram {install,train,ppl}``; returns 0."""
    args = _parser().parse_args(list(argv) if argv is not None else None)
    if args.command == "install":
        install_lmplz(cache_dir=args.cache_dir, force=args.force)
    elif args.command == "train":
        res = train(args.order, args.input, args.output, estimator=args.estimator,
                    lmplz=args.lmplz)
        msg = f"wrote {res.path} (estimator: {res.estimator_used})"
        if res.fallback_reason:
            msg += f"; fell back to the built-in estimator: {res.fallback_reason}"
        print(msg)
    elif args.command == "ppl":
        res = perplexity(args.model, args.text)
        if args.json:
            print(json.dumps(res))
        else:
            width = max(len(k) for k in res)
            for k, v in res.items():
                val = f"{v:.4f}" if isinstance(v, float) and math.isfinite(v) else str(v)
                print(f"{k:<{width}}  {val}")
    return 0
