"""Array plumbing shared by every renderer: conversion to numpy, NaN-aware statistics, server-side downsampling.

Values arrive as numpy arrays (possibly memory-mapped), torch tensors from other tools' logs, lists or scalars. Torch is
never imported here: a tensor is recognised by its ``detach`` method, so the display package works without torch and
does not pay its import time.

Downsampling happens here, before anything is encoded, so that a (256, 512, 512) feature map never leaves the server
as more than a few hundred kilobytes of PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "to_numpy",
    "is_arraylike",
    "finite_stats",
    "finite_mean",
    "block_mean",
    "stride_factor",
    "strided",
    "squeeze_leading",
    "first_array",
    "scalar_extras",
]


def is_arraylike(value: Any) -> bool:
    """True for numpy arrays, torch tensors and anything else exposing ``__array__`` (not for lists or scalars)."""
    return isinstance(value, np.ndarray) or hasattr(value, "detach") or hasattr(value, "__array__")


def to_numpy(value: Any) -> np.ndarray:
    """``value`` as a numpy array, without importing torch.

    Torch tensors go through ``detach().cpu().numpy()`` (bfloat16 and other dtypes numpy lacks are widened to float32
    first); everything else through :func:`numpy.asarray`, which keeps memory-mapped arrays lazy.
    """
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):
        tensor = value.detach()
        if hasattr(tensor, "cpu"):
            tensor = tensor.cpu()
        try:
            return np.asarray(tensor.numpy())
        except (TypeError, RuntimeError):  # bfloat16, complex32...: numpy has no such dtype
            return np.asarray(tensor.float().numpy())
    return np.asarray(value)


def finite_stats(array: np.ndarray) -> dict[str, float | int]:
    """``min``/``max``/``mean``/``std`` over the finite values, plus ``n_nan``, ``n_inf`` and ``size``.

    Statistics are NaN when there is no finite value (an all-NaN map still gets a caption, not a crash). Boolean and
    integer arrays have no NaN; complex arrays are summarised by magnitude.
    """
    a = np.asarray(array)
    if np.iscomplexobj(a):
        a = np.abs(a)
    if a.dtype == bool:
        a = a.astype(np.uint8)
    size = int(a.size)
    n_nan = n_inf = 0
    if a.dtype.kind == "f":
        finite_mask = np.isfinite(a)
        n_finite = int(np.count_nonzero(finite_mask))
        if n_finite != size:
            n_nan = int(np.count_nonzero(np.isnan(a)))
            n_inf = size - n_finite - n_nan
            a = a[finite_mask]
    if a.size == 0:
        return {"min": math.nan, "max": math.nan, "mean": math.nan, "std": math.nan,
                "n_nan": n_nan, "n_inf": n_inf, "size": size}
    return {
        "min": float(a.min()),
        "max": float(a.max()),
        "mean": float(a.mean(dtype=np.float64)),
        "std": float(a.std(dtype=np.float64)),
        "n_nan": n_nan,
        "n_inf": n_inf,
        "size": size,
    }


def finite_mean(array: np.ndarray, axis: int) -> np.ndarray:
    """Mean over ``axis`` of the finite values only (NaN where there is none), without numpy's empty-slice warning."""
    x = np.asarray(array)
    if x.dtype.kind != "f":
        return x.mean(axis=axis, dtype=np.float64)
    finite = np.isfinite(x)
    if finite.all():
        return x.mean(axis=axis, dtype=np.float64)
    counts = finite.sum(axis=axis)
    total = np.where(finite, x, 0.0).sum(axis=axis, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)


def stride_factor(shape: tuple[int, ...], max_side: int) -> int:
    """Smallest integer factor that brings the longest of ``shape`` down to ``max_side`` or less."""
    longest = max(shape) if shape else 1
    return max(1, math.ceil(longest / max(1, max_side)))


def strided(array: np.ndarray, max_side: int) -> np.ndarray:
    """Nearest-neighbour downsampling of the last two axes (cheap: a view, no copy); for class maps and subsamples."""
    f = stride_factor(array.shape[-2:], max_side)
    if f == 1:
        return array
    offset = f // 2
    return array[..., offset::f, offset::f]


def block_mean(array: np.ndarray, max_side: int) -> np.ndarray:
    """Area-average the last two axes down to at most ``max_side``, ignoring NaN and Inf.

    A block with no finite value becomes NaN, so a fully invalid region stays visible (and marked) after
    downsampling. Edges that do not fill a block are averaged over what they have. Returns float32.
    """
    a = np.asarray(array)
    h, w = a.shape[-2:]
    f = stride_factor((h, w), max_side)
    if f == 1:
        return a.astype(np.float32, copy=False)
    # Very large inputs: thin them out first so the block mean touches at most ~4x the output's pixels per side.
    if f > 8:
        pre = f // 4
        a = a[..., ::pre, ::pre]
        h, w = a.shape[-2:]
        f = stride_factor((h, w), max_side)
    hb, wb = math.ceil(h / f), math.ceil(w / f)
    x = a.astype(np.float32, copy=False)
    pad = [(0, 0)] * (x.ndim - 2) + [(0, hb * f - h), (0, wb * f - w)]
    finite = np.isfinite(x)
    values = np.pad(np.where(finite, x, 0.0), pad)
    counts = np.pad(finite, pad)
    lead = x.shape[:-2]
    values = values.reshape(*lead, hb, f, wb, f).sum(axis=(-3, -1), dtype=np.float64)
    counts = counts.reshape(*lead, hb, f, wb, f).sum(axis=(-3, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(counts > 0, values / np.maximum(counts, 1), np.nan)
    return out.astype(np.float32)


def squeeze_leading(array: np.ndarray, ndim: int) -> np.ndarray:
    """Drop leading axes of length 1 (a batch of one, a single channel) until ``array`` has ``ndim`` axes or fewer."""
    while array.ndim > ndim and array.shape[0] == 1:
        array = array[0]
    return array


_INDEX_LIKE = ("index", "indices", "idx", "label", "labels")


def first_array(value: Mapping[str, Any], prefer: tuple[str, ...], min_ndim: int) -> tuple[str, np.ndarray]:
    """The main array of a dict value of a known kind: the first key of ``prefer`` present, else the first array with
    at least ``min_ndim`` axes whose key does not look like an index or a label list. Raises ``ValueError`` if none."""
    for key in prefer:
        if key in value and value[key] is not None:
            return key, to_numpy(value[key])
    for key, item in value.items():
        if any(str(key).lower().endswith(s) for s in _INDEX_LIKE):
            continue
        if is_arraylike(item) or isinstance(item, (list, tuple)):
            try:
                array = to_numpy(item)
            except (ValueError, TypeError):
                continue
            if array.ndim >= min_ndim and array.dtype.kind in "biuf":
                return str(key), array
    raise ValueError(f"no array with {min_ndim}+ dimensions among keys {sorted(map(str, value))}")


def scalar_extras(value: Mapping[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Scalars and short strings of a dict value, for a caption beside its main array (``target_class``, a layer
    name)."""
    extras: dict[str, Any] = {}
    for key, item in value.items():
        if key in skip:
            continue
        if isinstance(item, (str, bool, int, float)) and len(str(item)) <= 200:
            extras[str(key)] = item
        elif is_arraylike(item):
            array = to_numpy(item)
            if array.size == 1 and array.dtype.kind in "biuf":
                extras[str(key)] = array.reshape(()).item()
    return extras
