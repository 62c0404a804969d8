"""How far apart two captures of the same thing are: distributions (attention rows) and tensors (feature maps).

Plain numpy, vectorised over leading axes, no scipy needed at run time (the tests check every figure against scipy).

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
"""

from __future__ import annotations

import numpy as np

__all__ = ["normalise", "js_divergence", "entropy", "top_k_mass", "relative_error", "cosine_similarity", "sqnr_db",
           "tensor_metrics"]


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
    """``rel_error``, ``cosine`` and ``sqnr_db`` of ``b`` against the reference ``a`` (non-finite values as 0)."""
    a = np.nan_to_num(np.asarray(a, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    b = np.nan_to_num(np.asarray(b, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return {"rel_error": relative_error(a, b), "cosine": cosine_similarity(a, b), "sqnr_db": sqnr_db(a, b)}
