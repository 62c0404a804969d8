"""What one saved debug item looks like, measured: the numbers the health checks (:mod:`.health`) flag.

Plain numpy. Arrays (feature maps, layer outputs) are measured vectorised over a leading datapoint axis, in
cache-sized chunks of rows (:func:`measure_arrays`), so a whole page of one item costs one call; attention heads get
their mean row entropy as a fraction of the uniform bound, from the capture's own per-head summary when it has one
(:func:`summary_entropy`), else from the saved map (:func:`head_entropy`); statistics-only captures are read as they
are (:func:`measure_stats`). :class:`HealthThresholds` (the documented defaults) lives here because measuring uses
two of them (the saturation tolerance, the fewest values worth judging).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from eval_viewer.backend.divergence import half_to_float, row_dots, row_sums

__all__ = ["HealthThresholds", "Measure", "SCALAR_FIELDS", "measure_arrays", "measure_array", "measure_stats",
           "head_entropy", "attention_weights", "summary_entropy", "measure_attention", "item_array"]


@dataclass(frozen=True)
class HealthThresholds:
    """When a measure becomes a flag. Defaults are deliberately conservative: a healthy network trips none of them.

    * ``dead = 0.95``: at least this fraction of a layer's values are exactly 0 on a datapoint;
    * ``dead_channel = 0.0``: more than this fraction of the layer's channels are 0 on every datapoint of the pass
      (checked only over at least ``min_datapoints`` datapoints);
    * ``saturated = 0.5``: at least this fraction of values sit at the output's non-zero extremes (within
      ``extreme_tolerance`` of the max or min, relative);
    * ``low_variance = 1e-6``: standard deviation at most this times ``max(|mean|, 1)`` (a constant output);
    * ``collapsed = 0.05``: a head's entropy at most this fraction of ``log(keys)``; or at most
      ``collapsed_vs_typical = 0.2`` of the head's median over the pass;
    * ``uniform = 0.98``: a head's entropy at least this fraction of ``log(keys)``;
    * ``scale_jump = 10.0``: RMS grew or shrank by at least this factor between two passes;
    * ``min_values = 16``: outputs with fewer finite values are not checked for saturation or spread.
    """

    dead: float = 0.95
    dead_channel: float = 0.0
    saturated: float = 0.5
    extreme_tolerance: float = 1e-3
    low_variance: float = 1e-6
    collapsed: float = 0.05
    collapsed_vs_typical: float = 0.2
    uniform: float = 0.98
    scale_jump: float = 10.0
    min_values: int = 16
    min_datapoints: int = 8


@dataclass(frozen=True)
class Measure:
    """What one debug item of one datapoint looks like: NaN for anything this item cannot tell."""

    nan: float = math.nan
    inf: float = math.nan
    nonfinite_count: float = math.nan
    """NaN + Inf count, for statistics that do not tell the fraction."""
    zeros: float = math.nan
    saturated: float = math.nan
    mean: float = math.nan
    std: float = math.nan
    scale: float = math.nan
    """Root mean square of the finite values."""
    dead: np.ndarray | None = None
    """Per channel: exactly zero on this datapoint."""
    entropy: np.ndarray | None = None
    """Per head: mean row entropy as a fraction of the uniform bound."""


SCALAR_FIELDS = ("nan", "inf", "nonfinite_count", "zeros", "saturated", "mean", "std", "scale")


def _fraction(count: int, total: int) -> float:
    return count / total if total else math.nan


_CHUNK = 1 << 18
"""Values measured at a time: a chunk of rows small enough to stay in cache through the passes over it (1 MB of
float32; measured fastest among 2^14..2^22 on the health benchmark's feature maps)."""


def measure_arrays(x: np.ndarray, channels: bool, t: HealthThresholds) -> dict[str, np.ndarray]:
    """Vectorised over the first axis (datapoints): each of :data:`SCALAR_FIELDS` as a ``(n,)`` array, and with
    ``channels`` the ``(n, C)`` mask of channels (axis 1) that are exactly zero (a NaN channel is not dead)."""
    n = x.shape[0]
    flat = x.reshape(n, -1)
    out = {f: np.full(n, np.nan) for f in SCALAR_FIELDS}
    dead = channels and x.ndim >= 3
    if dead:
        out["dead"] = np.zeros((n, x.shape[1]), dtype=bool)
    step = max(1, _CHUNK // max(flat.shape[1], 1))
    buffer = np.empty((min(step, n), flat.shape[1]), dtype=np.float32) if _widened(flat.dtype) else None
    for start in range(0, n, step):
        part = _wide(flat[start:start + step], buffer)  # once per chunk (comparing halves is several times slower)
        for name, values in _measure_rows(part, t).items():
            out[name][start:start + step] = values
        if dead:  # (a NaN channel is not dead: NaN != 0)
            out["dead"][start:start + step] = ~np.any(part.reshape(len(part), x.shape[1], -1) != 0, axis=2)
    return out


def _widened(dtype: np.dtype) -> bool:
    return not (dtype.kind == "f" and dtype.itemsize >= 4)


def _wide(flat: np.ndarray, buffer: np.ndarray | None = None) -> np.ndarray:
    """``flat`` as float32 at least (half floats and integers are measured in float32; halves by their bits,
    :func:`~.divergence.half_to_float`, several times faster than numpy's cast and exact), written into
    ``buffer`` (float32, at least as many rows) when given: a chunk's fresh memory costs more than widening it."""
    if not _widened(flat.dtype):
        return flat
    out = np.empty(flat.shape, dtype=np.float32) if buffer is None else buffer[:len(flat)]
    if flat.dtype == np.float16:
        return half_to_float(flat, out)
    np.copyto(out, flat, casting="unsafe")
    return out


def _measure_rows(flat: np.ndarray, t: HealthThresholds) -> dict[str, np.ndarray]:
    """The measures of a chunk of rows. A row whose sum is finite holds no NaN or Inf (they would carry into it),
    so every row is measured the plain way and only rows with a non-finite sum are measured again, the finite-aware
    way, over their plain results."""
    flat = _wide(flat)
    with np.errstate(invalid="ignore", over="ignore"):
        sums = row_sums(flat)  # (in the rows' own precision: :func:`_measure_clean` says why that is enough)
        out = _measure_clean(flat, sums, t)
    bad = np.flatnonzero(~np.isfinite(sums))
    if bad.size:
        for name, values in _measure_unclean(flat[bad], t).items():
            out[name][bad] = values
    return out


def _count_rows(mask: np.ndarray) -> np.ndarray:
    """How many values of each row of a boolean ``mask`` are set, as int64: its bytes summed in the narrowest
    integer that holds the count (``count_nonzero`` along an axis is four times slower, a 64-bit sum twice)."""
    narrow = np.uint16 if mask.shape[1] <= np.iinfo(np.uint16).max else np.int64
    return mask.view(np.uint8).sum(axis=1, dtype=narrow).astype(np.int64)


_SPREAD_EXACT = 1e-2
"""A row whose variance is below this fraction of its mean square is measured again in float64, two-pass: there
``E[x²] - E[x]²`` would cancel away the float32 sums' digits (a constant output must come out constant)."""
_SQUARE_SAFE = 1e36
"""A float32 row whose largest magnitude squared, times its length, could overflow float32 is measured in float64."""
_SQUARE_SMALL = 1e-20
"""A float32 row whose mean square is below this (all-zero rows too) is measured in float64: its squares near
float32's smallest normal number, 1.2e-38, would lose digits or vanish."""


def _measure_clean(flat: np.ndarray, sums: np.ndarray, t: HealthThresholds) -> dict[str, np.ndarray]:
    """The measures of rows holding no NaN or Inf (``sums``: each row's sum, :func:`~.divergence.row_sums`); a row
    holding them gets numbers here that :func:`_measure_rows` replaces.

    Sums and sums of squares are taken in the rows' precision (float32 for float32 and float16 captures, which
    hold no more digits) and turned into mean, spread and RMS in float64: within about 1e-6 of float64 sums; the
    spread within 1e-4 for rows of up to millions of values (the error grows with a row's length). Where that
    would not hold (a spread below :data:`_SPREAD_EXACT` of the mean square, values large enough to overflow
    float32 squares, or small enough to lose them) the row is measured again in float64, the mean subtracted
    first, so a constant output's spread is exactly 0."""
    n, total = flat.shape
    zeros = _count_rows(flat == 0)
    top, low = flat.max(axis=1), flat.min(axis=1)
    mean = sums.astype(np.float64) / total
    square = row_dots(flat, flat).astype(np.float64) / total
    variance = square - mean * mean
    big = np.maximum(np.abs(top), np.abs(low)).astype(np.float64)
    exact = np.flatnonzero(~(variance >= _SPREAD_EXACT * square) | ~(big * big * total < _SQUARE_SAFE)
                           | ((square < _SQUARE_SMALL) & (flat.dtype != np.float64)))
    if exact.size:  # (rare: near-constant, tiny or huge outputs)
        x = flat[exact].astype(np.float64)
        mean[exact] = x.mean(axis=1)
        x -= mean[exact][:, None]
        variance[exact] = row_dots(x, x) / total
        square[exact] = variance[exact] + mean[exact] ** 2
    at = _at_extremes(flat, top, low, t.extreme_tolerance)
    saturated = np.where(top == low, 0.0, at / total) if total >= t.min_values else np.full(n, np.nan)
    return {"nan": np.zeros(n), "inf": np.zeros(n), "zeros": zeros / total, "saturated": saturated, "mean": mean,
            "std": np.sqrt(np.maximum(variance, 0.0)), "scale": np.sqrt(np.maximum(square, 0.0))}


def _at_extremes(flat: np.ndarray, top: np.ndarray, low: np.ndarray, tol: float,
                 finite: np.ndarray | None = None) -> np.ndarray:
    """Per row, how many (``finite``) values sit at its non-zero extremes: within ``tol`` (relative) of its max when
    that is not 0, or of its min when that is neither 0 nor the max. A value within both bands (a row that barely
    varies) is counted once."""
    high, floor = top - tol * np.abs(top), low + tol * np.abs(low)
    above, below = flat >= high[:, None], flat <= floor[:, None]
    if finite is not None:
        above &= finite
        below &= finite
    use_top, use_low = top != 0, (low != 0) & (low != top)
    at = np.where(use_top, _count_rows(above), 0) + np.where(use_low, _count_rows(below), 0)
    overlap = np.flatnonzero(use_top & use_low & (floor >= high))
    if overlap.size:
        at[overlap] = _count_rows(above[overlap] | below[overlap])
    return at


def _measure_unclean(flat: np.ndarray, t: HealthThresholds) -> dict[str, np.ndarray]:
    """Rows holding NaN or Inf: the same measures over their finite values."""
    total = flat.shape[1]
    finite = np.isfinite(flat)
    n_finite = np.count_nonzero(finite, axis=1)
    nan = np.count_nonzero(np.isnan(flat), axis=1)
    values = np.where(finite, flat, 0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        count = np.where(n_finite > 0, n_finite, np.nan)
        mean = row_sums(values) / count
        square = row_dots(values, values) / count
        top = np.where(finite, flat, -np.inf).max(axis=1)
        low = np.where(finite, flat, np.inf).min(axis=1)
        at = _at_extremes(flat, top, low, t.extreme_tolerance, finite)
        saturated = np.where(top == low, 0.0, at / count)
    return {"nan": nan / total, "inf": (total - n_finite - nan) / total,
            "zeros": (total - np.count_nonzero(flat, axis=1)) / total,
            "saturated": np.where(n_finite >= t.min_values, saturated, np.nan), "mean": mean,
            "std": np.sqrt(np.maximum(square - mean * mean, 0.0)), "scale": np.sqrt(square)}


def measure_array(value: np.ndarray, channels: bool, t: HealthThresholds) -> Measure:
    m = measure_arrays(value[None], channels, t)
    values: dict[str, Any] = {f: float(m[f][0]) for f in SCALAR_FIELDS}
    return Measure(**values, dead=m["dead"][0] if "dead" in m else None)


def _number(value: Any) -> float:
    try:
        out = float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return math.nan
    return out


def measure_stats(stats: Mapping[str, Any], channel: Mapping[str, Any]) -> Measure:
    mean, std = _number(stats.get("mean")), _number(stats.get("std"))
    low, high = _number(stats.get("min")), _number(stats.get("max"))
    zeros = _number(stats.get("sparsity"))
    if not math.isfinite(zeros) and low == 0 and high == 0:
        zeros = 1.0
    dead = None
    means = channel.get("channel_mean")
    if isinstance(means, np.ndarray) and means.ndim == 1 and means.size:
        dead = means == 0
        stds = channel.get("channel_std")
        if isinstance(stds, np.ndarray) and stds.shape == means.shape:
            dead &= stds == 0
    scale = math.sqrt(mean * mean + std * std) if math.isfinite(mean) and math.isfinite(std) else math.nan
    return Measure(nonfinite_count=_number(stats.get("nonfinite")), zeros=zeros, mean=mean, std=std, scale=scale,
                   dead=dead)


def head_entropy(weights: np.ndarray, keep: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """Each row's entropy over the last axis as a fraction of ``log(keys)``, averaged over every axis but ``keep``
    (the head axis; with a leading datapoint axis, that too; rows that hold no mass are left out), and the fraction
    of rows holding NaN or Inf (over every axis but the leading one of ``keep``)."""
    keys = weights.shape[-1]
    if keys < 2 or weights.ndim < 2:
        return None
    p = weights.astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        total = p.sum(axis=-1, keepdims=True)
        p /= total
        terms = np.log(np.maximum(p, np.float32(1e-30)))
        terms *= p
        rows = terms.sum(axis=-1, dtype=np.float64) / -math.log(keys)
    sums = total[..., 0]
    rows[~(sums > 0)] = np.nan
    bad = ~np.isfinite(sums)
    bad = np.moveaxis(bad, keep[0], 0).reshape(bad.shape[keep[0]], -1).mean(axis=1)
    rows = np.moveaxis(rows, keep, tuple(range(len(keep))))
    rows = rows.reshape(rows.shape[:len(keep)] + (-1,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(rows, axis=-1), bad


def attention_weights(value: Any) -> tuple[np.ndarray, int] | None:
    """The saved map of an attention value and its head axis (``(..., heads, queries, keys)``), or None."""
    if isinstance(value, np.ndarray):
        value = {"weights": value}
    weights = value.get("weights") if isinstance(value, Mapping) else None
    if not isinstance(weights, np.ndarray) or weights.ndim < 2 or weights.dtype.kind != "f":
        return None
    w = weights if weights.ndim >= 3 else weights[None]
    axes = value.get("axes")
    head = list(axes).index("head") - len(axes) if isinstance(axes, (list, tuple)) and "head" in axes else -3
    head = head if -w.ndim <= head < -2 else -3
    return w, head % w.ndim


def summary_entropy(value: Any) -> np.ndarray | None:
    """Per head, the capture's own summary (mean row entropy over *every* query, nats) as a fraction of
    ``log(num_keys)``; None without one, or for windowed attention (whose rows span a window, not every key)."""
    if not isinstance(value, Mapping) or "windows" in value:
        return None
    summary, keys = value.get("summary"), value.get("num_keys")
    if not isinstance(summary, Mapping) or not isinstance(keys, int) or isinstance(keys, bool) or keys < 2:
        return None
    h = np.asarray(summary.get("entropy"), dtype=np.float64)
    if h.ndim < 1 or not h.size:
        return None
    peak = summary.get("max")
    if isinstance(peak, np.ndarray) and peak.shape == h.shape:
        h = np.where(peak > 0, h, np.nan)  # rows with no mass (the capture zeroes non-finite rows): nothing to judge
    if h.ndim > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            h = np.nanmean(h.reshape(-1, h.shape[-1]), axis=0)
    return h / math.log(keys)


def measure_attention(value: Any) -> Measure | None:
    """Per-head entropy from the capture's summary when it has one (exact over every query, and free: our capture
    zeroes non-finite rows, so its maps hold no NaN to count), else from the saved map, with the fraction of its
    rows holding NaN or Inf (as ``nan``)."""
    entropy = summary_entropy(value)
    if entropy is not None:
        return Measure(entropy=entropy)
    found = attention_weights(value)
    measured = head_entropy(found[0][None], (0, found[1] + 1)) if found is not None else None
    if measured is None:
        return None
    return Measure(nan=float(measured[1][0]), entropy=measured[0][0])


def item_array(value: Any) -> np.ndarray | None:
    """The float array an array item's checks run on: the value, or the first float array of a dict (a layer output
    saved with its shape, ``{"output": array, ...}``); None when there is none."""
    if type(value) is np.ndarray:  # the common case first: it runs for every datapoint of a pass
        return value if value.dtype.kind == "f" and value.size else None
    if isinstance(value, Mapping):
        value = next((v for v in value.values() if isinstance(v, np.ndarray) and v.dtype.kind == "f"), None)
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.size == 0:
        return None
    return value
