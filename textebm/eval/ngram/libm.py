"""glibc's single-precision ``log10f``, bit for bit, as numpy array code.

lmplz writes ``log10f(p)`` of float32 probabilities and backoffs, so the
built-in estimator must reproduce glibc's ``log10f`` exactly to write the
same ARPA numbers.  Neither numpy's float32 ``np.log10`` nor a float64
``log10`` rounded to float32 does (they differ from glibc in about 40% and
20% of inputs, by one ulp).

glibc (since 2.27; checked on 2.36) computes ``log10f`` as
``sysdeps/ieee754/flt-32/e_log10f.c`` (from SunPro's fdlibm) does, in float32
arithmetic, for ``x = m 2**k`` with m in [1, 2):

* ``i = 1`` if ``k < 0`` else ``0``; ``x' = m / 2**i`` (so x' is in
  [1, 2) for k >= 0 and in [1/2, 1) for k < 0) and ``y = (float)(k + i)``;
* ``z = y * log10_2lo + ivln10 * logf(x')``;
* ``log10f(x) = z + y * log10_2hi``,

with float32 constants ``ivln10`` ~ 1/ln 10 and ``log10_2hi + log10_2lo`` ~
log10 2.  Subnormal inputs are first scaled by 2**25 (k starts at -25).
``logf`` (``e_logf.c``, Arm's optimized routine) is evaluated in float64 and
rounded once to float32: with ``x' = 2**k' z``, z in [0.69921875,
1.3984375) (0.69921875 has the float bits 0x3f330000), a 16-entry table
indexed by bits 19 to 22 of ``bits(x') - 0x3f330000`` gives ``invc ~ 1/c``
and ``logc = log c`` for a c near z, and, in this evaluation order,

    r = z invc - 1,   y0 = logc + k' ln 2,
    logf(x') = (float)((A0 r**2 + (A1 r + A2)) r**2 + (y0 + r)).

Every step is one IEEE operation, which numpy float32 / float64 array
arithmetic performs exactly as C does.  On x86-64 glibc runs an FMA-compiled
``logf`` when the CPU has FMA and AVX2; on all 2**24 reduced arguments x' in
[1/2, 2) it returns the same floats as the unfused evaluation here, so the
emulation matches both builds (checked exhaustively against the real libm
for every float32 bit pattern).
"""

from __future__ import annotations

import numpy as np

__all__ = ["log10f"]

# glibc sysdeps/ieee754/flt-32/e_logf_data.c: (invc, logc) per subinterval.
_LOGF_TABLE = np.array([[float.fromhex(a), float.fromhex(b)] for a, b in (
    ("0x1.661ec79f8f3bep+0", "-0x1.57bf7808caadep-2"),
    ("0x1.571ed4aaf883dp+0", "-0x1.2bef0a7c06ddbp-2"),
    ("0x1.49539f0f010bp+0", "-0x1.01eae7f513a67p-2"),
    ("0x1.3c995b0b80385p+0", "-0x1.b31d8a68224e9p-3"),
    ("0x1.30d190c8864a5p+0", "-0x1.6574f0ac07758p-3"),
    ("0x1.25e227b0b8eap+0", "-0x1.1aa2bc79c81p-3"),
    ("0x1.1bb4a4a1a343fp+0", "-0x1.a4e76ce8c0e5ep-4"),
    ("0x1.12358f08ae5bap+0", "-0x1.1973c5a611cccp-4"),
    ("0x1.0953f419900a7p+0", "-0x1.252f438e10c1ep-5"),
    ("0x1p+0", "0x0p+0"),
    ("0x1.e608cfd9a47acp-1", "0x1.aa5aa5df25984p-5"),
    ("0x1.ca4b31f026aap-1", "0x1.c5e53aa362eb4p-4"),
    ("0x1.b2036576afce6p-1", "0x1.526e57720db08p-3"),
    ("0x1.9c2d163a1aa2dp-1", "0x1.bc2860d22477p-3"),
    ("0x1.886e6037841edp-1", "0x1.1058bc8a07ee1p-2"),
    ("0x1.767dcf5534862p-1", "0x1.4043057b6ee09p-2"),
)])
_LOGF_INVC = np.ascontiguousarray(_LOGF_TABLE[:, 0])
_LOGF_LOGC = np.ascontiguousarray(_LOGF_TABLE[:, 1])
_LOGF_LN2 = float.fromhex("0x1.62e42fefa39efp-1")
_LOGF_A0, _LOGF_A1, _LOGF_A2 = (float.fromhex(c) for c in (
    "-0x1.00ea348b88334p-2", "0x1.5575b0be00b6ap-2", "-0x1.ffffef20a4123p-2"))
_LOGF_OFF = np.int32(0x3F330000)


def _f32(bits: int) -> np.float32:
    return np.array(bits, dtype=np.uint32).view(np.float32)[()]


# glibc sysdeps/ieee754/flt-32/e_log10f.c
_TWO25 = _f32(0x4C000000)      # 2**25
_IVLN10 = _f32(0x3EDE5BD9)     # 1 / ln 10
_LOG10_2HI = _f32(0x3E9A2080)  # log10 2, leading bits
_LOG10_2LO = _f32(0x355427DB)  # log10 2 - _LOG10_2HI

_EXP_MASK = np.int32(-(1 << 23))  # C's 0x1ff << 23: sign and exponent bits


def _logf_normal(x: np.ndarray) -> np.ndarray:
    """glibc's ``logf`` of positive normal float32 values (see the module
    docstring); float64 evaluation rounded once to float32."""
    ix = x.view(np.int32)
    tmp = ix - _LOGF_OFF
    i = (tmp >> 19) & 15               # subinterval (LOGF_TABLE_BITS = 4)
    k = tmp >> 23                      # arithmetic shift, as in C
    z = (ix - (tmp & _EXP_MASK)).view(np.float32).astype(np.float64)
    r = z * _LOGF_INVC[i] - 1.0
    y0 = _LOGF_LOGC[i] + k * _LOGF_LN2
    r2 = r * r
    y = _LOGF_A1 * r + _LOGF_A2
    y = _LOGF_A0 * r2 + y
    y = y * r2 + (y0 + r)
    return y.astype(np.float32)


_BLOCK = 1 << 15  # elements per pass: temporaries stay in cache (about 3x faster)


def log10f(x) -> np.ndarray:
    """``log10f`` of each element of ``x`` (cast to float32), bit-identical
    to glibc's: log10 of positive finite values (the module docstring gives
    the float32 steps), ``-inf`` for +-0, ``inf`` for ``inf``, the default
    quiet NaN for negative numbers and ``-inf``, NaN inputs made quiet.
    Raises no floating-point warnings."""
    x = np.asarray(x, dtype=np.float32)
    flat = x.reshape(-1)
    out = np.empty(len(flat), dtype=np.float32)
    with np.errstate(all="ignore"):
        for lo in range(0, len(flat), _BLOCK):
            out[lo:lo + _BLOCK] = _log10f_block(flat[lo:lo + _BLOCK])
    return out.reshape(x.shape)


def _log10f_block(x: np.ndarray) -> np.ndarray:
    """:func:`log10f` of a 1-d float32 array (glibc ``e_log10f.c`` plus the
    special values of its ``log10f`` wrapper)."""
    hx = x.view(np.int32)
    k = np.zeros(len(x), dtype=np.int32)
    subnormal = (hx > 0) & (hx < 0x00800000)
    if subnormal.any():  # C: k -= 25; x *= two25
        hx = np.where(subnormal, (x * _TWO25).view(np.int32), hx)
        k[subnormal] = -25
    regular = (hx >= 0x00800000) & (hx < 0x7F800000)  # positive and finite
    k += (hx >> 23) - 127
    i = (k < 0).astype(np.int32)
    reduced = np.where(regular, (hx & 0x007FFFFF) | ((0x7F - i) << 23), np.int32(0x3F800000))
    y = (k + i).astype(np.float32)
    z = y * _LOG10_2LO + _IVLN10 * _logf_normal(reduced.view(np.float32))
    out = z + y * _LOG10_2HI
    if not regular.all():
        nan = np.isnan(x)
        out[(hx < 0) & ~nan] = _f32(0x7FC00000)  # glibc's wrapper: NaN for x < 0
        out[(hx & 0x7FFFFFFF) == 0] = -np.inf    # log10f(+-0)
        special = nan | (hx == 0x7F800000)
        out[special] = x[special] + x[special]    # C: x+x (inf; NaN made quiet)
    return out
