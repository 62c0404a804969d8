"""How far apart two captures of the same thing are: distributions (attention rows) and tensors (feature maps).

numpy, vectorised over leading axes, no scipy needed at run time (the tests check every figure against scipy); the
pass-wide attention comparison's inner loop compiled by numba (:mod:`.attention_kernel`).

Conventions, chosen once and shown as such in the app and the notebook:

* :func:`js_divergence` is the Jensen–Shannon **divergence in bits**, in [0, 1]: the *square* of
  ``scipy.spatial.distance.jensenshannon(p, q, base=2)``. 0: identical distributions; 1: disjoint supports.
* :func:`entropy` is in **bits** (``scipy.stats.entropy(p, base=2)``): 0 for one-hot, log2(n) for uniform.
* :func:`top_k_mass` is the probability mass of the ``k`` largest entries (1 for one-hot, k/n for uniform).
* Each distribution is normalised along ``axis`` first (as scipy does); a row summing to 0 (nothing captured) gives
  NaN, never a number that looks like an answer.
* :func:`relative_error` ``= ||b - a|| / ||a||``, :func:`cosine_similarity` ``= a·b / (||a|| ||b||)`` and
  :func:`sqnr_db` ``= 10 log10(||a||² / ||a - b||²)`` take ``a`` as the reference (the full-precision model); SQNR is
  +inf when the two are equal, the figure quantization toolkits report (int8 is typically 25–40 dB).

The pass-wide summary compares thousands of captures, so :func:`attention_divergence` and :func:`tensor_divergence`
take whole batches (a page of datapoints at once) and hold the per-datapoint figures to the functions above; see
their docstrings for how they stay fast (float32 maths for float16 and float32 captures in a form that does not
cancel, float16 read by its bits; attention in one compiled loop, tensors in cache-sized chunks).
"""

from __future__ import annotations

import logging
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["normalise", "js_divergence", "entropy", "top_k_mass", "relative_error", "cosine_similarity", "sqnr_db",
           "tensor_metrics", "attention_divergence", "topk_divergence", "tensor_divergence", "half_to_float",
           "row_sums", "row_dots", "warm_compiled", "ATTENTION_METRICS", "TOPK_METRICS", "TENSOR_METRICS"]

ATTENTION_METRICS = ("jsd", "jsd_max", "entropy_a", "entropy_b", "topk_a", "topk_b")
TOPK_METRICS = ("jsd", "jsd_max", "topk_a", "topk_b")
TENSOR_METRICS = ("rel_error", "cosine", "sqnr_db")


def normalise(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """``p`` as float64 probabilities along ``axis``; rows that sum to 0 (or hold NaN) become NaN."""
    p = np.asarray(p, dtype=np.float64)
    total = p.sum(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = p / total
    return np.where(total > 0, out, np.nan)


def _xlogx_over(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``p * log2(p / m)`` with ``0 log 0 = 0``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0) / np.where(m > 0, m, 1.0)), 0.0)


def js_divergence(p: np.ndarray, q: np.ndarray, axis: int = -1) -> np.ndarray:
    """Jensen–Shannon divergence in bits between ``p`` and ``q`` along ``axis`` (each normalised first), in [0, 1]."""
    p, q = normalise(p, axis), normalise(q, axis)
    m = 0.5 * (p + q)
    js = 0.5 * (_xlogx_over(p, m).sum(axis=axis) + _xlogx_over(q, m).sum(axis=axis))
    bad = np.isnan(p).any(axis=axis) | np.isnan(q).any(axis=axis)
    return np.where(bad, np.nan, np.clip(js, 0.0, 1.0))


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in bits of ``p`` along ``axis`` (normalised first)."""
    p = normalise(p, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return np.where(np.isnan(p).any(axis=axis), np.nan, terms.sum(axis=axis))


def top_k_mass(p: np.ndarray, k: int = 5, axis: int = -1) -> np.ndarray:
    """Probability mass of the ``k`` largest entries along ``axis`` (normalised first); all of it when ``k >= n``."""
    p = np.moveaxis(normalise(p, axis), axis, -1)
    k = max(1, min(int(k), p.shape[-1]))
    top = np.partition(p, p.shape[-1] - k, axis=-1)[..., p.shape[-1] - k:]
    return top.sum(axis=-1)


def _flat_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    return a.reshape(-1), b.reshape(-1)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``||b - a|| / ||a||`` (L2 over every element), ``a`` the reference; NaN when ``a`` is all zeros and ``b`` not."""
    a, b = _flat_pair(a, b)
    diff = float(np.linalg.norm(b - a))
    ref = float(np.linalg.norm(a))
    if ref == 0:
        return 0.0 if diff == 0 else float("nan")
    return diff / ref


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """``a·b / (||a|| ||b||)`` over every element; 1 when both are all zeros, NaN when only one is."""
    a, b = _flat_pair(a, b)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else float("nan")
    return float(np.dot(a, b) / (na * nb))


def sqnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(||a||² / ||a - b||²)`` in dB, ``a`` the reference signal;
    +inf when ``b == a``, NaN when ``a`` is all zeros and ``b`` not."""
    a, b = _flat_pair(a, b)
    noise = float(np.sum((a - b) ** 2))
    signal = float(np.sum(a ** 2))
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("nan")
    return 10.0 * float(np.log10(signal / noise))


def tensor_metrics(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """``rel_error``, ``cosine`` and ``sqnr_db`` of ``b`` against the reference ``a`` (non-finite values as 0): one
    pair of :func:`tensor_divergence`, so the paired view shows what the pass-wide summary computed."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    return {name: float(values[0]) for name, values in tensor_divergence(a.reshape(1, -1), b.reshape(1, -1)).items()}


def tensor_divergence(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`tensor_metrics` of every pair ``a[i]``, ``b[i]`` of two same-shaped batches: ``(n,)`` float64 arrays.

    Each figure as :func:`relative_error`, :func:`cosine_similarity` and :func:`sqnr_db` give it (non-finite values
    count as 0), from three sums per pair over cache-sized chunks of the batch: ``a·a``, ``b·b`` and the noise
    ``(b - a)·(b - a)``, summed from the differences so a small error keeps its digits. The cosine comes from them
    too, as ``1 - (noise - (|a| - |b|)²) / (2 |a| |b|)``, which does not cancel where the maps nearly agree (a
    float32 ``a·b`` would be rounding noise there). Float16 and float32 captures are summed in float32, within about
    1e-6 of float64; wider ones in float64, and so is any pair whose float32 sums overflow or fall towards float32's
    smallest numbers (a mean square below 1e-20, all-zero maps included)."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    n = a.shape[0]
    flat_a, flat_b = a.reshape(n, -1), b.reshape(n, -1)
    dtype = _working_dtype(flat_a, flat_b)
    sums = _dot_sums(flat_a, flat_b, dtype)
    if dtype != np.float64:
        with np.errstate(invalid="ignore"):
            mean_square = sums[:2] / max(flat_a.shape[1], 1)
            outside = ~np.isfinite(sums).all(axis=0) | (mean_square < _F32_SMALL).any(axis=0)
        redo = np.flatnonzero(outside)
        if redo.size:
            sums[:, redo] = _dot_sums(flat_a[redo], flat_b[redo], np.dtype(np.float64))
    signal, other, noise = sums
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(signal > 0, np.sqrt(noise) / np.sqrt(signal), np.where(noise == 0, 0.0, np.nan))
        both = (signal > 0) & (other > 0)
        norms = np.sqrt(signal) * np.sqrt(other)
        apart = np.maximum(noise - (np.sqrt(signal) - np.sqrt(other)) ** 2, 0.0)
        cosine = np.where(both, np.clip(1.0 - apart / (2.0 * norms), -1.0, 1.0),
                          np.where(signal == other, 1.0, np.nan))
        sqnr = np.where(noise == 0, np.inf, np.where(signal > 0, 10.0 * np.log10(signal / noise), np.nan))
    return {"rel_error": rel, "cosine": cosine, "sqnr_db": sqnr}


_F32_SMALL = 1e-20
"""A float32 pair whose mean square is below this is summed in float64: its squares (and the squares of its
differences) near float32's smallest normal number, 1.2e-38, would lose digits or vanish."""


def _dot_sums(flat_a: np.ndarray, flat_b: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``(3, n)`` float64: per row ``a·a``, ``b·b`` and ``(b - a)·(b - a)``, summed in ``dtype``."""
    n, width = flat_a.shape
    rows = max(1, min(n, _CHUNK // max(width, 1)))
    buffers = np.empty((rows, width), dtype=dtype), np.empty((rows, width), dtype=dtype)
    sums = np.empty((3, n))
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        for start in range(0, n, rows):
            end = min(start + rows, n)
            x, y = (_finite(raw[start:end], buf[:end - start]) for raw, buf in ((flat_a, buffers[0]),
                                                                               (flat_b, buffers[1])))
            sums[0, start:end] = row_dots(x, x)
            sums[1, start:end] = row_dots(y, y)
            np.subtract(y, x, out=y)
            sums[2, start:end] = row_dots(y, y)
    return sums


def _finite(raw: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``raw`` as the float type of ``out``, in ``out``, non-finite values as 0 (float16 through :func:`_to_float`,
    much faster than its cast)."""
    _to_float(raw, out)
    return out if np.isfinite(out).all() else np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)


# ---------------------------------------------------------------------------------------------- attention in batches
_TINY = 1e-300
"""Added before a logarithm, so ``0 log 0`` gives 0 without a branch: far below any weight a capture holds after
normalising, above the smallest normal float64."""
_F16_SCALE = np.float32(2.0 ** 112)
_F64_SCALE = 2.0 ** 1008
_CHUNK = 1 << 16
"""Weights per working chunk (five float32 buffers of this size stay in the CPU's L2 cache; smaller chunks pay
numpy's per-call cost, measured slower from 2^12 to 2^15)."""
_COMPILED_CHUNK = 1 << 18
"""Weights per call of the compiled loop: it needs no cache-sized chunks (a row at a time stays in L1), and each
call costs some 50 µs of numpy around it (top-k, checks), a third of the work at :data:`_CHUNK`."""
_INV_4_LN2 = 1.0 / (4.0 * np.log(2.0))


_HALF_LAYOUT = {4: (np.uint32, 13, 0x8FFFFFFF, _F16_SCALE), 8: (np.uint64, 42, 0x81FFFFFFFFFFFFFF, _F64_SCALE)}
"""By the width of the float written: its unsigned int view, the shift of exponent and mantissa into place, the
mask that keeps the sign bit and clears the rest of the sign extension, and the scale that corrects the exponent's
bias."""


_HALF_BEYOND = 2.0 ** 16
"""What an Inf or NaN half (exponent all ones) becomes by the bit shuffle: 2^16 or more, beyond any finite half."""


def half_to_float(raw: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Float16 ``raw`` into ``out`` (float32 or float64, contiguous, same shape), by its bits: each half
    sign-extended into the wider integer, shifted so exponent and mantissa sit in place, the extension's ones cleared
    but the sign (a pass only when a half is negative), then scaled (2^112 for float32, 2^1008 for float64) to
    correct the exponent's bias. Exact for every finite half, subnormals too, and several times faster than numpy's
    half cast. Infinite and NaN halves (exponent all ones) come out 2^16 or more; where there are any, they are put
    in from numpy's cast of just those values."""
    if not raw.size:
        return out
    uint, shift, keep, scale = _HALF_LAYOUT[out.dtype.itemsize]
    top = int(raw.view(np.uint16).max())  # the largest pattern: 0x8000 or more when a half is negative
    wide = out.view(uint)
    np.copyto(wide, raw.view(np.int16), casting="unsafe")  # (C conversion: -x becomes 2^n - x, the sign extended)
    np.left_shift(wide, shift, out=wide)
    if top >= 0x8000:
        np.bitwise_and(wide, keep, out=wide)
    np.multiply(out, scale, out=out)
    # an Inf or NaN: a negative one is 0xFC00 or more unsigned, a positive one 0x7C00 or more signed
    if top >= 0xFC00 or (top >= 0x7C00 and (top < 0x8000 or int(raw.view(np.int16).max()) >= 0x7C00)):
        flat = out.reshape(-1)
        where = np.flatnonzero(np.abs(flat) >= _HALF_BEYOND)
        flat[where] = raw.reshape(-1)[where]
    return out


def _to_float(raw: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``raw`` as the float type of ``out``, in ``out``; float16 by its bits (:func:`half_to_float`)."""
    if raw.dtype == np.float16:
        return half_to_float(raw, out)
    np.copyto(out, raw, casting="unsafe")
    return out


def _working_dtype(*raws: np.ndarray) -> np.dtype:
    """float32 for float16 and float32 captures (they hold no more digits), float64 for anything wider or integer."""
    small = all(r.dtype.kind == "f" and r.dtype.itemsize <= 4 for r in raws)
    return np.dtype(np.float32 if small else np.float64)


def row_sums(x: np.ndarray) -> np.ndarray:
    """Each row's sum of a 2-D array, the same bits however many rows are summed together (a datapoint's figures
    must not depend on its batch): ``einsum``, twice as fast as ``sum(axis=1)``, for rows that fit numpy's buffer;
    longer rows by numpy's pairwise sum (``einsum`` splits them where its buffer ends, which moves with the batch;
    BLAS's order moves with it too)."""
    if x.shape[1] <= np.getbufsize():
        return np.einsum("ij->i", x)
    return np.add.reduce(x, axis=1)


def row_dots(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row's dot product of two same-shaped 2-D arrays, batch-independent as :func:`row_sums` (rows longer than
    numpy's buffer one at a time)."""
    if x.shape[1] <= np.getbufsize():
        return np.einsum("ij,ij->i", x, y)
    return np.array([np.einsum("ij,ij->i", x[r:r + 1], y[r:r + 1])[0] for r in range(len(x))], dtype=x.dtype)


def _entropy_terms(p: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Each row's ``-sum p log2 p`` (0 log 0 = 0) of float64 rows, ``out`` a scratch buffer."""
    np.add(p, _TINY, out=out)
    np.log2(out, out=out)
    np.multiply(out, p, out=out)
    return -row_sums(out)


def _jsd_rows(p: np.ndarray, q: np.ndarray, s: np.ndarray, d: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Each row's JSD in bits, of normalised float64 rows ``p`` and ``q`` (``s``, ``d``, ``a``: scratch buffers).

    With ``m = (p + q) / 2`` and ``d = (p - q) / (p + q)``, a weight contributes
    ``(p + q) / 4 · g(d) / ln 2``, ``g(d) = (1 + d) ln(1 + d) + (1 - d) ln(1 - d) = 2 d atanh(d) + ln(1 - d²)``.
    The last form's two terms are about ``2d²`` and ``-d²``, so nothing cancels when the passes nearly agree (the
    textbook ``H(m) - (H(p) + H(q)) / 2`` loses most digits there). Where one side is 0, ``d`` stops one float
    short of ±1, so ``atanh`` and ``log1p`` stay finite."""
    np.add(p, q, out=s)
    np.subtract(p, q, out=d)
    np.add(s.view(np.int64), 1, out=a.view(np.int64))  # the next float above p + q (above 0: the smallest one)
    np.divide(d, a, out=d)  # so |d| < 1 where one side is 0, atanh and log1p stay finite, and 0 / 0 does not occur
    np.arctanh(d, out=a)
    np.multiply(a, d, out=a)
    np.add(a, a, out=a)
    np.multiply(d, d, out=d)
    np.negative(d, out=d)
    np.log1p(d, out=d)
    np.add(a, d, out=a)
    np.multiply(a, s, out=a)
    return np.clip(row_sums(a) * _INV_4_LN2, 0.0, 1.0)


def _top_k(raw: np.ndarray, total: np.ndarray, k: int) -> np.ndarray:
    """Per row of ``raw`` weights (``(rows, keys)``, any float type), the mass of the ``k`` largest over the row's
    ``total``: float16 rows by sorting their bits with the sign cleared (then the bits order as the values do;
    numpy's 16-bit sort is vectorised, several times faster than a partition of the floats), every row the same
    way, so a row's mass does not depend on the rows beside it. Rows holding a NaN or a negative weight give a
    number here; the caller makes them NaN."""
    keys = raw.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        if k >= keys:
            return np.ones(len(raw)) if len(raw) else np.empty(0)
        if raw.dtype == np.float16:
            bits = np.bitwise_and(raw.view(np.uint16), 0x7FFF)  # -0.0 as 0.0 (and a negative half as its size:
            bits.sort(axis=-1)  # its row is left out anyway); then the bits order as the values do, Inf and NaN last
            top = bits[:, keys - k:].view(np.float16)
            mass = top[:, 0].astype(np.float32)
            for column in range(1, k):  # column by column: a third of the time of widening the strided block
                mass += top[:, column]
            return mass / total
        return row_sums(np.partition(raw, keys - k, axis=-1)[:, keys - k:]) / total


_PER_ROW = ("jsd", "entropy_a", "entropy_b", "topk_a", "topk_b")
_F32_TOTALS = (1e-30, 1e30)
"""A float32 row whose total lies outside these is compared in float64: normalising it would overflow or lose
digits in float32 (so would a row of finite weights whose float32 total overflows)."""


def _chunk_rows(raw_p: np.ndarray, raw_q: np.ndarray, k: int, out: dict[str, np.ndarray], start: int,
                buffers: list[np.ndarray]) -> None:
    """The per-row figures of rows ``start``... (``raw_p``, ``raw_q``: ``(rows, keys)``) into ``out``, in numpy
    and float64 (``buffers``: five float64 scratch arrays). A row whose total is zero or not finite in either pass,
    or that holds a negative weight, is NaN everywhere."""
    rows = raw_p.shape[0]
    p, q, s, d, a = (b[:rows] for b in buffers)
    _to_float(raw_p, p)
    _to_float(raw_q, q)
    sp, sq = row_sums(p), row_sums(q)
    end = start + rows
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        bad = ~((sp > 0) & (sq > 0) & np.isfinite(sp) & np.isfinite(sq))
        kk = max(1, min(int(k), p.shape[1]))
        out["topk_a"][start:end] = _top_k(p, sp, kk)
        out["topk_b"][start:end] = _top_k(q, sq, kk)
        np.multiply(p, (1 / sp)[:, None], out=p)
        np.multiply(q, (1 / sq)[:, None], out=q)
        out["entropy_a"][start:end] = _entropy_terms(p, a)
        out["entropy_b"][start:end] = _entropy_terms(q, a)
        bad |= np.isnan(out["entropy_a"][start:end]) | np.isnan(out["entropy_b"][start:end])  # negative weights
        out["jsd"][start:end] = _jsd_rows(p, q, s, d, a)
    if bad.any():
        for name in _PER_ROW:
            out[name][start:end][bad] = np.nan


def _compiled_rows(raw_p: np.ndarray, raw_q: np.ndarray, k: int, out: dict[str, np.ndarray], start: int) -> None:
    """As :func:`_chunk_rows`, for float16 and float32 rows: the JSD and entropies by the compiled loop
    (:mod:`eval_viewer.backend.attention_kernel`), the top-k masses by numpy's sort. Rows whose float32 totals
    cannot be normalised are redone by :func:`_chunk_rows` in float64."""
    from eval_viewer.backend.attention_kernel import attention_rows, kernel_arrays

    rows, keys = raw_p.shape
    end = start + rows
    sp = np.empty(rows, dtype=np.float32)
    sq = np.empty(rows, dtype=np.float32)
    attention_rows(*kernel_arrays(raw_p), *kernel_arrays(raw_q), out["jsd"][start:end], out["entropy_a"][start:end],
                   out["entropy_b"][start:end], sp, sq)
    kk = max(1, min(int(k), keys))
    topk_a = out["topk_a"][start:end]
    topk_b = out["topk_b"][start:end]
    topk_a[:] = _top_k(raw_p, sp, kk)
    topk_b[:] = _top_k(raw_q, sq, kk)
    bad = np.isnan(out["jsd"][start:end])
    topk_a[bad] = np.nan
    topk_b[bad] = np.nan
    _redo_extremes(raw_p, raw_q, sp, sq, k, out, start)


_KERNEL_OK: list[bool] = []
"""Whether the compiled loop loaded (checked once per process; empty until then)."""


def _kernel_loads() -> bool:
    """Whether :mod:`.attention_kernel` loads, compiled (its one version, so no later call compiles): where numba
    cannot load or compile (a platform or Python it does not support yet), float16 and float32 captures are
    compared by the float64 numpy path instead, slower but the same figures."""
    if not _KERNEL_OK:
        try:
            from eval_viewer.backend.attention_kernel import warm

            warm()
            _KERNEL_OK.append(True)
        except Exception as exc:  # noqa: BLE001 - ImportError, or numba failing to start on this machine
            logger.warning("the compiled comparison loop does not load here (%s); comparing in float64 numpy", exc)
            _KERNEL_OK.append(False)
    return _KERNEL_OK[0]


def warm_compiled() -> None:
    """Load :mod:`~eval_viewer.backend.attention_kernel`'s compiled loop ahead of the first comparison (about 0.6 s;
    seconds on a fresh install, where numba compiles it once into its disk cache): :func:`_kernel_loads`, whose
    answer the comparisons then reuse. Never fails."""
    _kernel_loads()


def _redo_extremes(raw_p: np.ndarray, raw_q: np.ndarray, sp: np.ndarray, sq: np.ndarray, k: int,
                   out: dict[str, np.ndarray], start: int) -> None:
    """Rows of a float32 chunk whose totals lie outside :data:`_F32_TOTALS` (``sp``, ``sq``), compared again in
    float64 (rare: attention rows sum to about 1)."""
    low, high = _F32_TOTALS
    with np.errstate(invalid="ignore"):
        odd = ((sp > 0) & (sp < low)) | (sp > high) | ((sq > 0) & (sq < low)) | (sq > high)
    unsure = np.flatnonzero(~np.isfinite(sp) | ~np.isfinite(sq))
    if unsure.size:  # a non-finite float32 total: overflow (redone) or an Inf or NaN weight (NaN, as it is)
        odd[unsure] = np.isfinite(raw_p[unsure]).all(axis=1) & np.isfinite(raw_q[unsure]).all(axis=1)
    redo = np.flatnonzero(odd)
    if not redo.size:
        return
    wide = {name: np.empty(redo.size) for name in _PER_ROW}
    _chunk_rows(raw_p[redo], raw_q[redo], k, wide, 0, [np.empty((redo.size, raw_p.shape[1])) for _ in range(5)])
    for name in _PER_ROW:
        out[name][start + redo] = wide[name]


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """One lasting pool per thread count (a summary asks for thousands of batches)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="eval-viewer-maths")
        return pool


def attention_divergence(p: np.ndarray, q: np.ndarray, k: int = 5, threads: int = 1) -> dict[str, np.ndarray]:
    """Per datapoint and head of two ``(..., heads, Lq, Lk)`` batches of attention weights: ``jsd`` (per query, then
    averaged over queries, bits), ``jsd_max`` (its worst query), ``entropy_a`` / ``entropy_b`` (bits, averaged over
    queries) and ``topk_a`` / ``topk_b`` (mass of the ``k`` largest keys, averaged over queries); each
    ``(..., heads)`` float64. A query whose row sums to 0 or holds a non-finite or negative weight in either pass is
    left out of every mean (NaN when a head has no other).

    Row by row these are :func:`js_divergence`, :func:`entropy` and :func:`top_k_mass`. Float16 and float32
    captures are compared in float32 (they hold no more digits): the JSD and entropies by the compiled loop of
    :mod:`.attention_kernel` (each row of both passes read once; the JSD in a form whose parts do not cancel, so it
    keeps its digits where the passes nearly agree), the top-k masses by numpy's sort of float16 bits or its
    partition. Wider captures are compared in float64 by numpy, over cache-sized chunks of rows, and so is a float32
    row whose total float32 cannot normalise (below 1e-30 or above 1e30). The tests hold every figure to scipy's
    float64: within 1e-4 relative (float32; the worst case is a weight 10^-4 of its twin, most rows agree to 1e-7),
    1e-9 (float64). That holds down to a JSD of about 1e-9 bits (weights 0.01 % apart, a float16 copy against its
    float32 original); closer passes keep fewer digits (at 1e-13 bits, float32's own rounding, only the order of
    magnitude). A datapoint's figures do not depend on its batch or the thread count. ``threads`` > 1 spreads the
    chunks over that many threads (numpy and the compiled loop release the GIL)."""
    p = np.asarray(p)
    q = np.asarray(q)
    if p.shape != q.shape:
        raise ValueError(f"shapes differ: {p.shape} and {q.shape}")
    if p.ndim < 2:
        raise ValueError(f"expected (..., heads, queries, keys) attention, got shape {p.shape}")
    lead, keys = p.shape[:-2], p.shape[-1]
    queries = p.shape[-2]
    if not queries or not keys:  # nothing captured: no query to average, as when every one is left out
        return {name: np.full(lead, np.nan) for name in ATTENTION_METRICS}
    flat_p, flat_q = (np.ascontiguousarray(x.reshape(-1, keys), dtype=x.dtype.newbyteorder("=")) for x in (p, q))
    total = flat_p.shape[0]
    compiled = _working_dtype(flat_p, flat_q) == np.float32 and _kernel_loads()
    rows = max(1, min(total, (_COMPILED_CHUNK if compiled else _CHUNK) // max(keys, 1)))
    per_row = {name: np.empty(total, dtype=np.float64) for name in ("jsd", "entropy_a", "entropy_b", "topk_a",
                                                                   "topk_b")}
    starts = list(range(0, total, rows))
    parts = max(1, min(int(threads), len(starts)))

    def work(part: int) -> None:
        buffers = [] if compiled else [np.empty((rows, keys)) for _ in range(5)]
        for start in starts[part::parts]:
            chunk_p, chunk_q = flat_p[start:start + rows], flat_q[start:start + rows]
            if compiled:
                _compiled_rows(chunk_p, chunk_q, k, per_row, start)
            else:
                _chunk_rows(chunk_p, chunk_q, k, per_row, start, buffers)

    if parts == 1:
        work(0)
    else:  # numpy lets go of the GIL inside each operation: chunks of one batch run on several cores
        list(_pool(parts).map(work, range(parts)))
    shaped = {name: values.reshape(*lead, queries) for name, values in per_row.items()}
    jsd = shaped["jsd"]
    if np.isnan(jsd).any():
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a head with no valid query: its NaN is the answer
            out = {name: np.nanmean(values, axis=-1) for name, values in shaped.items()}
            out["jsd_max"] = np.nanmax(jsd, axis=-1)
    else:
        out = {name: values.mean(axis=-1) for name, values in shaped.items()}
        out["jsd_max"] = jsd.max(axis=-1)
    return {name: out[name] for name in ATTENTION_METRICS}


# -------------------------------------------------------------------------------------------- attention in top-k form
def topk_divergence(index_a: np.ndarray, values_a: np.ndarray, index_b: np.ndarray, values_b: np.ndarray,
                    k: int = 5) -> dict[str, np.ndarray]:
    """Attention saved in the top-k form (each kept query row's ``K`` largest weights ``values`` at keys ``index``,
    both ``(..., queries, K)``, rows of the full map summing to 1), compared per leading index (datapoint, head),
    averaged over the queries:

    * ``jsd`` (and ``jsd_max``, its worst query): a **lower bound** of the rows' JSD in bits. Both rows are
      coarse-grained the same way, into the keys in both top-``K`` sets and one bucket holding the rest of each row's
      mass; merging outcomes never increases a divergence, so the full maps' JSD is at least this, and equal to it
      when the top-``K`` sets cover the rows' mass (``K`` = every key);
    * ``topk_a`` / ``topk_b``: the mass of the ``k`` largest weights, exact (:func:`top_k_mass`); NaN when fewer than
      ``k`` were saved (``K < k``: the mass of ``K`` would be another figure under the same name).

    A query whose weights are not finite in either pass is left out of the means (NaN when a head has no other)."""
    index_a, index_b = np.asarray(index_a), np.asarray(index_b)
    if not (index_a.shape == index_b.shape == np.shape(values_a) == np.shape(values_b)) or index_a.ndim < 2:
        raise ValueError(f"top-k shapes differ or lack a query axis: {index_a.shape}, {np.shape(values_a)}, "
                         f"{index_b.shape}, {np.shape(values_b)}")
    va = np.asarray(values_a, dtype=np.float64)
    vb = np.asarray(values_b, dtype=np.float64)
    match = index_a[..., :, None] == index_b[..., None, :]  # (..., queries, K, K): key i of a is key j of b
    pa = np.where(match, va[..., :, None], 0.0)  # (a row's keys are distinct: each weight matched at most once)
    pb = np.where(match, vb[..., None, :], 0.0)
    rest_a = np.clip(1.0 - pa.sum(axis=(-2, -1)), 0.0, 1.0)
    rest_b = np.clip(1.0 - pb.sum(axis=(-2, -1)), 0.0, 1.0)
    half = 0.5 * (pa + pb)
    rest = 0.5 * (rest_a + rest_b)
    rows = 0.5 * (_xlogx_over(pa, half).sum(axis=(-2, -1)) + _xlogx_over(pb, half).sum(axis=(-2, -1))
                  + _xlogx_over(rest_a, rest) + _xlogx_over(rest_b, rest))
    kk = max(1, int(k))
    if kk <= va.shape[-1]:
        top_a = -np.partition(-va, kk - 1, axis=-1)[..., :kk].sum(-1)
        top_b = -np.partition(-vb, kk - 1, axis=-1)[..., :kk].sum(-1)
    else:
        top_a = top_b = np.full(va.shape[:-1], np.nan)
    bad = ~(np.isfinite(va).all(-1) & np.isfinite(vb).all(-1))
    per_row = {"jsd": np.where(bad, np.nan, np.clip(rows, 0.0, 1.0)), "topk_a": np.where(bad, np.nan, top_a),
               "topk_b": np.where(bad, np.nan, top_b)}
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a head with no valid query: its NaN is the answer
        out = {name: np.nanmean(values, axis=-1) for name, values in per_row.items()}
        out["jsd_max"] = np.nanmax(per_row["jsd"], axis=-1)
    return {name: out[name] for name in TOPK_METRICS}
