"""The pass-wide attention comparison's per-row JSD and entropies in one compiled loop (numba), for float16 and
float32 captures.

Why compiled: numpy makes one pass over memory per operation. The JSD, both entropies and the widening of float16
took about 35 of them per weight, so the comparison of two passes was CPU-bound (about 7.7 ns a weight, top-k
included) while the disk delivered the bytes faster. Here a row of both passes is widened once and every figure is
summed in registers: about 2.9 ns a weight. The top-k masses stay with numpy's vectorised sort of float16 bits,
which a compiled loop did not beat (a sorted insertion per weight mispredicts its branches; a branch-free one
across rows was no faster once the rows were transposed for it).

Why the logarithms are written out: LLVM vectorises plain arithmetic but calls ``logf`` one value at a time unless
it has a vector maths library, and the llvmlite on the package index is built without one (numba's ``SVML`` state
is off). A scalar ``logf`` made the fused loop four times *slower* than numpy. :func:`_ln` is Cephes' ``logf``
(range reduction by the float's bits, a degree-9 polynomial), which LLVM vectorises like any arithmetic: within
3e-7 relative of the float64 logarithm (tested over 10^-30..10^30).

How the JSD keeps its digits: a weight contributes ``(p + q) / 4 · g(d) / ln 2`` with ``d = (p - q) / (p + q)`` and
``g(d) = (1 + d) ln(1 + d) + (1 - d) ln(1 - d) = Σ_{n≥1} d^{2n} / (n (2n - 1))``. Where ``|d| ≤ 1/2`` (the passes'
weights within a factor of 3, most of them when two passes nearly agree) nine terms of the series give ``g`` to a
few 1e-8 relative, with no logarithm and nothing to cancel (the textbook ``H(m) - (H(p) + H(q)) / 2`` loses every
digit there in float32). The other weights contribute ``(p ln(p / m) + q ln(q / m)) / 2`` from the entropies'
logarithms and one of the mean ``m``: their two terms cancel by at most a factor of about 2.3 there. Both forms are
computed for every weight and one is kept, so the loop vectorises. ``d`` is taken from the unnormalised weights
with float64 products (:func:`_figures`), so passes that differ only by float16's rounding keep their digits too.
Sums run in float32 within blocks of 256 keys and in float64 across them, so rows of a million keys keep theirs.

A pass's weights arrive as float16 bits or as float32 (:func:`kernel_arrays`), always read-only, so one compiled
version serves float16 and float32, writable and read-only, alone and mixed, and the same numbers give the same
sums whatever their type. Each row is computed by the same instructions however many rows a call holds, so a
datapoint's figures do not depend on its batch or on the number of threads (``nogil``: the caller's threads run
calls side by side). numba caches the compiled code on disk (beside the package, or in the user's cache dir; where
neither is writable, each process compiles it), so a worker process or a restart loads it instead of compiling
again; :func:`warm` does that ahead of the first comparison (importing numba and loading take about 0.6 s a
process; compiling, on a fresh install, a few seconds).
"""

from __future__ import annotations

import logging
import math

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["attention_rows", "kernel_arrays", "warm"]

logger = logging.getLogger(__name__)

_F = np.float32
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
"""Reordering (so sums vectorise) and contraction into FMAs; never ``nnan``/``ninf``: a row's NaN, Inf and negative
weights are tested for and must survive."""


def _compiled(**options):
    """``numba.njit`` with numba's disk cache, or without it where numba finds no writable place for one (a
    read-only install run by a user without a home): then each process compiles once (seconds) instead of
    failing."""
    def decorate(fn):
        try:
            return nb.njit(cache=True, fastmath=_FASTMATH, boundscheck=False, error_model="numpy", **options)(fn)
        except RuntimeError as exc:  # "cannot cache function ...: no locator available"
            logger.info("numba cannot cache %s (%s); compiling it in each process", fn.__name__, exc)
            return nb.njit(cache=False, fastmath=_FASTMATH, boundscheck=False, error_model="numpy", **options)(fn)
    return decorate


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


@_compiled(inline="always")
def _from_half(value):
    """A float16, given as its uint16 bits, as float32: exact for every half, subnormals, Inf and NaN too. Chosen by
    selects, not branches, so the loop that widens stays vectorised."""
    h = np.int32(value)
    rest = h & 0x7FFF
    normal = _float((rest << 13) + 0x38000000)  # exponent rebiased from 15 to 127 by adding 112 << 23
    tiny = _F(rest) * _F(2.0 ** -24)  # a subnormal half: its mantissa times 2^-24, exact and normal in float32
    special = _float((rest << 13) | 0x7F800000)  # Inf or NaN, mantissa kept
    wide = normal if rest >= 0x400 else tiny
    wide = special if rest >= 0x7C00 else wide
    return _float(_bits(wide) | ((h & 0x8000) << 16))


@_compiled(inline="always")
def _widen(halves, floats, r, out):
    """Row ``r`` into ``out`` as float32: from ``halves`` (float16 bits) where it has rows, else from ``floats``."""
    if halves.shape[0]:
        bits = halves[r]
        for j in range(out.size):
            out[j] = _from_half(bits[j])
    else:
        values = floats[r]
        for j in range(out.size):
            out[j] = values[j]


_BLOCK = 256
"""Keys per block of a row's sums: float32 within a block (vectorised), float64 across blocks, so a row of 10^6 keys
keeps its digits (a float32 sum over the whole row lost them past about 10^5)."""


@_compiled(inline="always")
def _total(row):
    """A float32 row's sum (float64, by blocks) and how many of its weights are negative (counted, not a running
    minimum: LLVM vectorises a float minimum only when told that no NaN occurs, and one may)."""
    total = 0.0
    negative = 0
    for start in range(0, row.size, _BLOCK):
        block = row[start:start + _BLOCK]  # (a slice from 0: numba's loop from ``start`` does not vectorise)
        part = _F(0.0)
        for j in range(block.size):
            w = block[j]
            part += w
            negative += np.int32(w < _F(0.0))
        total += part
    return total, negative


@_compiled(inline="always")
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


@_compiled(inline="always")
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


_TINY = 1e-30
"""Added before a logarithm so ``0 log 0`` gives 0 without a branch, as in the float64 form."""
_LN2 = math.log(2.0)
_INV_LN2 = 1.0 / _LN2


_RENORMALISE_BELOW = 0.01
"""An entropy (nats) below which :func:`_renormalised` corrects it: the correction is at most about 1.2e-7 nats,
so above this it changes the figure by less than 1.2e-5 of itself."""


@_compiled(inline="always")
def _renormalised(plogp, row, inverse):
    """``sum a ln a`` of the weights ``a = row[j] * inverse`` as rounded to float32, made that of those weights
    renormalised by their exact sum ``A``: ``sum (a/A) ln(a/A) = sum a ln a / A - ln A``. Rounding ``inverse`` and a
    weight near 1 leaves ``A`` up to about 1.2e-7 from 1, which is most of the entropy of a nearly one-hot row (an
    attention sink: 2e-5 bits was 4e-3 off). Only rows of low entropy pay for the float64 sum (a float64 sum inside
    :func:`_figures`' loop made it 1.7 times slower)."""
    if -plogp >= _RENORMALISE_BELOW:
        return plogp
    mass = 0.0
    for j in range(row.size):
        mass += np.float64(row[j] * inverse)  # (float64 holds every such sum of up to 2^29 weights exactly)
    return plogp / mass - math.log(mass)


@_compiled(inline="always")
def _figures(p, q, sp, sq):
    """A row's JSD (nats, times 4), and its two ``sum p ln p`` (float64 each, by blocks as :func:`_total`), of
    widened rows ``p`` and ``q`` with their totals ``sp``, ``sq`` (float64). ``d`` is taken from the unnormalised
    weights, ``(p sq - q sp) / (p sq + q sp)``, in float64 (the products of tiny weights and totals underflow
    float32). Normalising in float32 first rounds each weight by about 6e-8, which is most of ``d`` where two passes
    differ by float16's rounding (a JSD near 1e-9 bits was 3e-3 off; now 4e-5 at worst). The totals' own rounding
    shifts every ``d`` of a row alike, which cancels to first order (``sum (p - q) = 0``). The entropies come as
    ``sum p ln p`` (nats, negative), renormalised where they are small (:func:`_renormalised`)."""
    tiny = _F(_TINY)
    ip = _F(1.0 / sp)
    iq = _F(1.0 / sq)
    ha = 0.0
    hb = 0.0
    jsd = 0.0
    for start in range(0, p.size, _BLOCK):
        block_p = p[start:start + _BLOCK]  # (slices from 0: numba's loop from ``start`` does not vectorise)
        block_q = q[start:start + _BLOCK]
        block_a = _F(0.0)
        block_b = _F(0.0)
        near = _F(0.0)
        far = _F(0.0)
        for j in range(block_p.size):
            a = block_p[j] * ip
            b = block_q[j] * iq
            la = _ln(a + tiny)
            lb = _ln(b + tiny)
            block_a += a * la
            block_b += b * lb
            s = a + b
            x = block_p[j] * sq
            y = block_q[j] * sp
            d = (x - y) / max(x + y, 1e-300)  # 0 where both are 0, ±1 where one is (then the far form)
            t = _F(d * d)
            if t <= _F(0.25):  # LLVM turns both sides into selects: one vectorised loop
                near += s * _series(t)
            else:
                half = _ln(s + tiny) - _F(_LN2)  # ln(s / 2), the mean's
                far += a * (la - half) + b * (lb - half)
        ha += block_a
        hb += block_b
        jsd += near + _F(2.0) * far
    return jsd, _renormalised(ha, p, ip), _renormalised(hb, q, iq)


@_compiled(nogil=True)
def attention_rows(halves_p, floats_p, halves_q, floats_q, jsd, entropy_a, entropy_b, total_a, total_b):
    """Per row of two passes' ``(rows, keys)`` attention weights, into the float64 outputs: the JSD (bits) and each
    pass's entropy (bits); and each row's totals into the float32 ``total_a`` / ``total_b`` (the caller redoes in
    float64 the rows whose totals float32 cannot normalise). A pass's weights come either as float16 bits
    (``halves_*``) or as float32 (``floats_*``), the other an empty ``(0, 0)`` array, all read-only: one compiled
    version serves every pair of types, and the same numbers give the same sums whatever their type. A row whose
    total is 0 or not finite, or that holds a negative weight, in either pass is NaN in every figure."""
    rows = max(halves_p.shape[0], floats_p.shape[0])
    keys = max(halves_p.shape[1], floats_p.shape[1])
    p = np.empty(keys, dtype=np.float32)
    q = np.empty(keys, dtype=np.float32)
    for r in range(rows):
        _widen(halves_p, floats_p, r, p)
        _widen(halves_q, floats_q, r, q)
        wide_p, negative_p = _total(p)
        wide_q, negative_q = _total(q)
        sp = _F(wide_p)
        sq = _F(wide_q)
        total_a[r] = sp
        total_b[r] = sq
        if not (sp > 0 and sq > 0 and math.isfinite(sp) and math.isfinite(sq) and negative_p + negative_q == 0):
            jsd[r] = entropy_a[r] = entropy_b[r] = np.nan
            continue
        four_jsd, ha, hb = _figures(p, q, wide_p, wide_q)
        jsd[r] = min(max(four_jsd * (0.25 * _INV_LN2), 0.0), 1.0)
        entropy_a[r] = -ha * _INV_LN2
        entropy_b[r] = -hb * _INV_LN2


def kernel_arrays(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A pass's ``(rows, keys)`` float16 or float32 weights as :func:`attention_rows` takes them: ``(halves,
    floats)``, read-only, the unused one empty; each weight aligned to its size (a copy where not)."""
    if raw.ctypes.data % raw.itemsize:
        raw = raw.copy()
    view = raw.view(np.uint16 if raw.dtype == np.float16 else np.float32).view()
    view.flags.writeable = False
    return (view, _EMPTY_FLOATS) if raw.dtype == np.float16 else (_EMPTY_HALVES, view)


_EMPTY_HALVES = np.empty((0, 0), dtype=np.uint16)
_EMPTY_HALVES.flags.writeable = False
_EMPTY_FLOATS = np.empty((0, 0), dtype=np.float32)
_EMPTY_FLOATS.flags.writeable = False


def warm() -> None:
    """Load (or, on a fresh install, compile: seconds) the loop now, so the first comparison does not wait."""
    halves = kernel_arrays(np.ones((1, 1), dtype=np.float16))
    floats = kernel_arrays(np.ones((1, 1), dtype=np.float32))
    out = [np.empty(1) for _ in range(3)]
    attention_rows(*halves, *floats, *out, np.empty(1, dtype=np.float32), np.empty(1, dtype=np.float32))
