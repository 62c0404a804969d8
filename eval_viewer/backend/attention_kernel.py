"""The pass-wide attention comparison's per-row figures in one compiled loop (numba), for float16 and float32 captures.

Why compiled: numpy makes one pass over memory per operation. The JSD, both entropies and the widening of float16
took about 35 of them per weight, so the comparison of two passes was CPU-bound (about 7.7 ns a weight, top-k
included) while the disk delivered the bytes faster. Here a row of both passes is widened once and every figure is
summed in registers: about 2.6 ns a weight for float16, 2.0 for float32. The top-k masses stay with numpy's
vectorised sort of float16 bits, which a compiled loop did not beat (a sorted insertion per weight mispredicts its
branches; a branch-free one per lane of rows was no faster).

Why the logarithms are written out: LLVM vectorises plain arithmetic but calls ``logf`` one value at a time unless
it has a vector maths library, and the llvmlite on the package index is built without one (numba's ``SVML`` state
is off). A scalar ``logf`` made the fused loop four times *slower* than numpy. :func:`_ln` is Cephes' ``logf``
(range reduction by the float's bits, a degree-9 polynomial), which LLVM vectorises like any arithmetic: within
1.2e-7 relative of the float64 logarithm over 10^-30..10^30 (tested).

How the JSD keeps its digits: a weight contributes ``(p + q) / 4 · g(d) / ln 2`` with ``d = (p - q) / (p + q)`` and
``g(d) = (1 + d) ln(1 + d) + (1 - d) ln(1 - d) = Σ_{n≥1} d^{2n} / (n (2n - 1))``. Where ``|d| ≤ 1/2`` (the passes'
weights within a factor of 3, most of them when two passes nearly agree) nine terms of the series give ``g`` to a
few 1e-8 relative, with no logarithm and nothing to cancel (the textbook ``H(m) - (H(p) + H(q)) / 2`` loses every
digit there in float32). The other weights contribute ``(p ln(p / m) + q ln(q / m)) / 2`` from the entropies'
logarithms and one of the mean ``m``: their two terms cancel by at most a factor of about 2.3 there. Both forms are
computed for every weight and one is kept, so the loop vectorises. ``d`` stops one float short of ±1 where one
side is 0, as in the float64 form (:func:`eval_viewer.backend.divergence._jsd_rows`).

Each row is computed by the same instructions however many rows a call holds, so a datapoint's figures do not
depend on its batch or on the number of threads (``nogil``: the caller's threads run calls side by side). Compiled
code is cached on disk by numba, so a worker process or a restart loads it instead of compiling again
(:func:`warm` does that ahead of the first comparison; importing numba and loading take about 0.6 s a process).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

__all__ = ["attention_rows", "warm"]

_F = np.float32
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
"""Reordering (so sums and minima vectorise) and contraction into FMAs; never ``nnan``/``ninf``: a row's NaN, Inf
and negative weights are tested for and must survive."""
_JIT = dict(fastmath=_FASTMATH, boundscheck=False, error_model="numpy", cache=True)


@intrinsic
def _bits(typingctx, x):
    """A float32's bits as an int32 (LLVM's bitcast: no instruction at all)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


@intrinsic
def _float(typingctx, x):
    """An int32's bits as a float32."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


def _widen(value):
    """A weight as float32: a float16 stored as its uint16 bits, or a float32 as it is (compiled per type below)."""


@overload(_widen)
def _widen_typed(value):
    if isinstance(value, types.Integer):  # float16 bits: exact for every half, subnormals, Inf and NaN too
        def from_half(value):
            h = np.int32(value)
            rest = h & 0x7FFF
            normal = _float((rest << 13) + 0x38000000)  # exponent rebiased from 15 to 127 by adding 112 << 23
            tiny = _F(rest) * _F(2.0 ** -24)  # a subnormal half: its mantissa times 2^-24, exact and normal in f32
            special = _float((rest << 13) | 0x7F800000)  # Inf or NaN, mantissa kept
            wide = normal if rest >= 0x400 else tiny
            wide = special if rest >= 0x7C00 else wide
            return _float(_bits(wide) | ((h & 0x8000) << 16))
        return from_half
    if isinstance(value, types.Float):
        return lambda value: _F(value)
    return None


@nb.njit(inline="always", **_JIT)
def _widen_row(raw, out):
    """A row widened into ``out`` (float32); its sum and how many of its weights are negative (counted, not a
    running minimum: LLVM vectorises a float minimum only when told that no NaN occurs, and one may)."""
    total = _F(0.0)
    negative = 0
    for j in range(raw.size):
        w = _widen(raw[j])
        out[j] = w
        total += w
        negative += np.int32(w < _F(0.0))
    return total, negative


@nb.njit(inline="always", **_JIT)
def _ln(x):
    """Natural logarithm of a positive normal float32 (Cephes ``logf``; see the module docstring)."""
    b = _bits(x)
    e = (b >> 23) - 127
    m = _float((b & 0x007FFFFF) | 0x3F800000)  # mantissa in [1, 2)
    if m > _F(1.41421356):  # centre it on 1: [sqrt(1/2), sqrt(2))
        m = m * _F(0.5)
        e = e + 1
    f = m - _F(1.0)
    z = f * f
    y = _F(7.0376836292e-2)
    y = y * f + _F(-1.1514610310e-1)
    y = y * f + _F(1.1676998740e-1)
    y = y * f + _F(-1.2420140846e-1)
    y = y * f + _F(1.4249322787e-1)
    y = y * f + _F(-1.6668057665e-1)
    y = y * f + _F(2.0000714765e-1)
    y = y * f + _F(-2.4999993993e-1)
    y = y * f + _F(3.3333331174e-1)
    y = y * f * z
    ef = _F(e)
    y += ef * _F(-2.12194440e-4)
    y += _F(-0.5) * z
    return f + y + ef * _F(0.693359375)


@nb.njit(inline="always", **_JIT)
def _series(t):
    """``g(d)`` from ``t = d²``, for ``t ≤ 1/4``: nine terms of ``Σ t^n / (n (2n - 1))`` (the tenth is below 2e-8
    of the sum)."""
    y = _F(1.0 / 153.0)
    y = y * t + _F(1.0 / 120.0)
    y = y * t + _F(1.0 / 91.0)
    y = y * t + _F(1.0 / 66.0)
    y = y * t + _F(1.0 / 45.0)
    y = y * t + _F(1.0 / 28.0)
    y = y * t + _F(1.0 / 15.0)
    y = y * t + _F(1.0 / 6.0)
    y = y * t + _F(1.0)
    return y * t


@nb.njit(inline="always", **_JIT)
def _next_up(s):
    """The next float32 above a non-negative ``s`` (above 0: the smallest subnormal)."""
    return _float(_bits(s) + 1)


_SMALLEST_NORMAL = float(np.finfo(np.float32).tiny)
_TINY = 1e-30
"""Added before a logarithm so ``0 log 0`` gives 0 without a branch, as in the numpy form."""
_LN2 = math.log(2.0)
_INV_LN2 = 1.0 / _LN2


@nb.njit(nogil=True, **_JIT)
def attention_rows(raw_p, raw_q, jsd, entropy_a, entropy_b, total_a, total_b):
    """Per row of two ``(rows, keys)`` arrays of attention weights (float32, or float16 as its uint16 bits), into
    the float64 outputs: the JSD (bits) and each pass's entropy (bits); and each row's float32 totals into
    ``total_a`` / ``total_b`` (the caller redoes in float64 the rows whose totals float32 cannot normalise). A row
    whose total is 0 or not finite, or that holds a negative weight, in either pass is NaN in every figure."""
    rows, keys = raw_p.shape
    p = np.empty(keys, dtype=np.float32)
    q = np.empty(keys, dtype=np.float32)
    tiny = _F(_TINY)
    for r in range(rows):
        sp, negative_p = _widen_row(raw_p[r], p)
        sq, negative_q = _widen_row(raw_q[r], q)
        total_a[r] = sp
        total_b[r] = sq
        if not (sp > 0 and sq > 0 and math.isfinite(sp) and math.isfinite(sq) and negative_p + negative_q == 0):
            jsd[r] = entropy_a[r] = entropy_b[r] = np.nan
            continue
        ip = _F(1.0) / sp
        iq = _F(1.0) / sq
        ha = _F(0.0)
        hb = _F(0.0)
        near = _F(0.0)
        far = _F(0.0)
        for j in range(keys):
            a = p[j] * ip
            b = q[j] * iq
            la = _ln(a + tiny)
            lb = _ln(b + tiny)
            ha += a * la
            hb += b * lb
            s = a + b
            d = (a - b) / _next_up(max(s, _F(_SMALLEST_NORMAL)))  # never a subnormal divisor: slow
            t = d * d
            if t <= _F(0.25):  # LLVM turns both sides into selects: one vectorised loop
                near += s * _series(t)
            else:
                half = _ln(s + tiny) - _F(_LN2)  # ln(s / 2), the mean's
                far += a * (la - half) + b * (lb - half)
        jsd[r] = min(max((near * _F(0.25) + far * _F(0.5)) * _F(_INV_LN2), _F(0.0)), _F(1.0))
        entropy_a[r] = -ha * _F(_INV_LN2)
        entropy_b[r] = -hb * _F(_INV_LN2)


def warm() -> None:
    """Load (or, on a fresh install, compile: seconds) the loop for float16 and for float32 pairs now, so the
    first comparison does not wait; pairs of mixed types are compiled on first use."""
    for dtype in (np.uint16, np.float32):
        one = np.ones((1, 1), dtype=dtype)
        out = [np.empty(1) for _ in range(3)]
        attention_rows(one, one, *out, np.empty(1, dtype=np.float32), np.empty(1, dtype=np.float32))
