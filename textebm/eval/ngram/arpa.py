"""Writing ARPA files: lmplz's layout and its shortest float32 numbers.

:func:`write_arpa` writes the ``\\data\\`` header, then for each order
``n`` the section ``\\n-grams:`` with one line per n-gram: log10
probability, a tab, the words separated by spaces and, for all but the
highest order, a tab and the log10 backoff.  Numbers are the shortest
decimal strings that read back as the same float32, in lmplz's style
(:func:`format_f32`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .corpus import SPECIAL_WORDS

_INT_DIGITS = 3    # fixed notation for 1e-6 <= |x| < 1e3 ...
_FRAC_DIGITS = 14  # ... needs at most 5 + 9 digits after the point
_FWIDTH = 2 + _INT_DIGITS + _FRAC_DIGITS  # sign, digits, '.', digits
_DOT_COL = 1 + _INT_DIGITS
_POW10F = 10.0 ** np.arange(-40, 41)  # _POW10F[k + 40] == 10.0 ** k


#: how far into a file the ``\\data\\`` header is looked for
HEADER_SEARCH_BYTES = 1 << 20
#: the first bytes of a KenLM binary model (not an ARPA file: its header is KenLM's to check)
KENLM_BINARY_MAGIC = b"mmap lm "
_COUNT_RE = re.compile(r"^ngram\s+(\S+?)\s*=\s*(\S*)\s*$")


class ArpaHeaderError(ValueError):
    """An ARPA file whose ``\\data\\`` header kenlm must not be given (KenLM crashes on a negative count and
    allocates whatever a huge one asks for)."""


def _open_model_bytes(path: Path):
    """A binary file object over the model's text (decompressing .gz, .bz2 and .xz as kenlm does)."""
    import bz2
    import gzip
    import lzma

    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb"), True
    if magic[:3] == b"BZh":
        return bz2.open(path, "rb"), True
    if magic[:6] == b"\xfd7zXZ\x00":
        return lzma.open(path, "rb"), True
    return open(path, "rb"), False


def check_arpa_header(path) -> None:
    """Check the ``\\data\\`` header of an ARPA file before kenlm reads it: ``ngram N=COUNT`` lines for
    N = 1, 2, ... in order (at most 6, KenLM's limit), each COUNT a non-negative integer, the unigrams at least
    one, and the counts no more than the file can hold (each n-gram line takes at least 2n + 2 bytes; a
    compressed file, at most 256 times its size). A KenLM binary model is left to kenlm. Raises
    :class:`ArpaHeaderError` naming the file and the line."""
    from .corpus import MAX_ORDER

    path = Path(path)
    fh, compressed = _open_model_bytes(path)
    try:
        head = fh.read(HEADER_SEARCH_BYTES)
    except (OSError, EOFError, ValueError) as e:
        raise ArpaHeaderError(f"not an ARPA or KenLM binary model: {path} (cannot decompress it: {e})") from None
    finally:
        fh.close()
    if head.startswith(KENLM_BINARY_MAGIC):
        return
    size = path.stat().st_size
    lines = head.split(b"\n")
    try:
        start = next(i for i, l in enumerate(lines) if l.strip() == b"\\data\\")
    except StopIteration:
        raise ArpaHeaderError(f"not an ARPA or KenLM binary model: {path} (no \\data\\ header line in its first "
                              f"{HEADER_SEARCH_BYTES} bytes)") from None
    counts = []
    for line in lines[start + 1:]:
        text = line.decode("utf-8", "replace").strip()
        if not text:
            if counts:
                break
            continue
        m = _COUNT_RE.match(text)
        if m is None:
            if text.startswith("\\"):
                break
            raise ArpaHeaderError(f"ARPA file {path}: header line {text[:60]!r} is not 'ngram N=COUNT'")
        order, count = m.groups()
        if not order.isdigit() or int(order) != len(counts) + 1:
            raise ArpaHeaderError(f"ARPA file {path}: header line {text[:60]!r}: the orders must be 1, 2, ... in "
                                  f"turn (expected ngram {len(counts) + 1}=...)")
        if not count.isdigit():
            raise ArpaHeaderError(f"ARPA file {path}: header line {text[:60]!r}: the count must be a non-negative "
                                  f"integer")
        counts.append(int(count))
        if len(counts) > MAX_ORDER:
            raise ArpaHeaderError(f"ARPA file {path}: more than {MAX_ORDER} orders (KenLM's limit)")
    if not counts:
        raise ArpaHeaderError(f"ARPA file {path}: the \\data\\ header lists no 'ngram N=COUNT' lines")
    if counts[0] < 1:
        raise ArpaHeaderError(f"ARPA file {path}: the header counts no unigrams (ngram 1=0)")
    need = sum(c * (2 * n + 2) for n, c in enumerate(counts, start=1))
    room = size * 256 if compressed else size
    if need > room:
        raise ArpaHeaderError(f"ARPA file {path}: its header counts {sum(counts)} n-grams, more than its {size} "
                              f"bytes can hold; the header is wrong or the file is truncated")


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


def format_f32(values: np.ndarray) -> list[bytes]:
    """Shortest float32 strings as a list of bytes (see :func:`_float_chars`)."""
    buf, start, length = _float_chars(values)
    raw = buf.tobytes()
    return [raw[s:s + n] for s, n in zip(start.tolist(), length.tolist())]


def _copy_segments(src: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> bytes:
    """Concatenate ``src[starts[i]:starts[i] + lengths[i]]`` for all i."""
    total = int(lengths.sum())
    if total == 0:
        return b""
    dst = np.cumsum(lengths) - lengths
    idx = np.repeat(starts - dst, lengths) + np.arange(total, dtype=np.int64)
    return src[idx].tobytes()


def write_arpa(path: Path, words: list[bytes], levels: list[dict],
                chunk_lines: int = 200_000) -> None:
    """Write the model ``levels`` (as :func:`.estimator.estimate_builtin`
    returns it; word ids 0, 1, 2 are ``<unk>``, ``<s>``, ``</s>``, then
    ``words``) to ``path`` the way lmplz lays an ARPA file out.

    Each line is a fixed sequence of byte segments (log10 prob, tab, words
    separated by spaces, tab, backoff, newline) copied out of one source
    buffer with a single numpy gather per chunk of lines.
    """
    vocab = [w.encode() for w in SPECIAL_WORDS] + list(words)
    consts = b"\t \n"
    TAB, SPACE, NL = 0, 1, 2
    word_len = np.fromiter(map(len, vocab), dtype=np.int64, count=len(vocab))
    word_start = len(consts) + np.cumsum(word_len) - word_len
    head = np.frombuffer(consts + b"".join(vocab), dtype=np.uint8)

    from ...files import write_file

    def write(fh) -> None:
        _write_levels(fh, levels, head, word_start, word_len, chunk_lines, (TAB, SPACE, NL))

    write_file(Path(path), write)


def _write_levels(fh, levels, head, word_start, word_len, chunk_lines, consts) -> None:
    """The body of :func:`write_arpa`, into an open binary file."""
    TAB, SPACE, NL = consts
    word_ids: list[np.ndarray] = []  # word id at each position, current order
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
