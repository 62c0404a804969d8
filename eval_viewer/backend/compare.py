"""Comparing two passes: which datapoints line up, which changed, and how their captured internals differ.

Plain values in, plain values out (numpy arrays and frozen dataclasses); the app, the notebook API and the benchmarks
all call these. Pass ``a`` is the *reference* (the earlier epoch, the full-precision model), pass ``b`` the other.

* :func:`align` pairs datapoints by index, or by a meta_info key (``image_id``); unmatched ones are counted and listed.
* :func:`deltas` gives per-datapoint deltas of one metric with *regressed*, *improved* and *forgotten* flags
  (:class:`Thresholds`, with documented defaults), lower-is-better respected, NaN handled as a failure.
* :func:`compare_items` compares the matched debug items of one datapoint in both passes: attention per head (JS
  divergence averaged over queries, each pass's entropy and top-k mass), arrays (relative error, cosine, SQNR).
* :func:`common_failures` counts in how many passes each datapoint fails.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eval_viewer.backend.divergence import attention_divergence, tensor_metrics, topk_divergence
from eval_viewer.backend.model import DatapointRecord, Item
from eval_viewer.errors import ViewerError
from eval_viewer.log_format import Kind

__all__ = ["Alignment", "align", "Thresholds", "Deltas", "deltas", "ItemComparison", "compare_items",
           "attention_weights", "attention_array", "array_of", "attention_metrics", "TopK", "attention_top_k",
           "topk_metrics", "TOPK_NOTE", "common_failures",
           "CommonFailures", "failures_across", "CompareError", "TOP_K", "TENSOR_KINDS", "DELTA_FILTERS"]

TOP_K = 5
"""``k`` of the top-k attention mass."""
TENSOR_KINDS = frozenset({Kind.FEATURE_MAP, Kind.HEATMAP, Kind.DEPTH, Kind.SERIES})
"""Kinds compared element by element (relative error, cosine, SQNR) when both passes saved the same shape."""
DELTA_FILTERS = ("all", "regressed", "improved", "forgotten", "changed")


class CompareError(ViewerError):
    """Two passes that cannot be compared as asked (no such meta key...); the message says why."""


# ---------------------------------------------------------------------------------------------------------- alignment
@dataclass(frozen=True)
class Alignment:
    """Datapoint ``a[i]`` of pass a is datapoint ``b[i]`` of pass b; the rest are unmatched."""

    a: np.ndarray
    b: np.ndarray
    unmatched_a: np.ndarray
    """Indices of pass a with no partner in b (missing key, key absent from b, or a duplicate key)."""
    unmatched_b: np.ndarray
    by: str | None = None
    """The meta_info key used, None for "by index"."""

    @property
    def size(self) -> int:
        return int(self.a.size)

    def b_of(self, idx_a: int) -> int | None:
        where = np.flatnonzero(self.a == idx_a)
        return int(self.b[where[0]]) if where.size else None

    def a_of(self, idx_b: int) -> int | None:
        where = np.flatnonzero(self.b == idx_b)
        return int(self.a[where[0]]) if where.size else None


def _key_positions(column: Sequence[Any]) -> tuple[dict[Any, int], list[int]]:
    """First position of every non-None value; later duplicates and Nones are returned as unmatched."""
    first: dict[Any, int] = {}
    rest: list[int] = []
    for pos, value in enumerate(column):
        if value is None or (isinstance(value, float) and math.isnan(value)) or value in first:
            rest.append(pos)
        else:
            first[value] = pos
    return first, rest


def align(n_a: int, n_b: int, by: str | None = None, meta_a: Mapping[str, Sequence[Any]] | None = None,
          meta_b: Mapping[str, Sequence[Any]] | None = None) -> Alignment:
    """Pair the datapoints of two passes: by index (``by=None``; the first ``min(n_a, n_b)``), or by the value of
    meta_info key ``by`` (columns from :meth:`LogStore.meta_table`). A datapoint without the key, with a value the
    other pass lacks, or with a value an earlier datapoint already took, is unmatched."""
    if by is None:
        n = min(n_a, n_b)
        return Alignment(np.arange(n), np.arange(n), np.arange(n, n_a), np.arange(n, n_b))
    cols = []
    for name, meta, n in (("a", meta_a, n_a), ("b", meta_b, n_b)):
        if not meta or by not in meta:
            known = ", ".join(meta or ()) or "none"
            raise CompareError(f"Pass {name} has no meta_info key {by!r} to align by (keys: {known})")
        col = list(meta[by])[:n]
        cols.append(col + [None] * (n - len(col)))
    first_a, rest_a = _key_positions(cols[0])
    first_b, rest_b = _key_positions(cols[1])
    pairs = sorted((pos, first_b[value]) for value, pos in first_a.items() if value in first_b)
    a = np.array([p for p, _ in pairs], dtype=np.int64)
    b = np.array([q for _, q in pairs], dtype=np.int64)
    unmatched_a = np.setdiff1d(np.arange(n_a), a)
    unmatched_b = np.setdiff1d(np.arange(n_b), b)
    return Alignment(a, b, unmatched_a, unmatched_b, by)


# ------------------------------------------------------------------------------------------------------------- deltas
@dataclass(frozen=True)
class Thresholds:
    """What counts as a change, a good value and a bad value of the metric; ``None``: the documented default.

    * ``change``: a datapoint *regressed* (*improved*) when it got worse (better) by more than this, in the metric's
      units. Default: 5 % of the reference pass's spread (its 95th minus 5th percentile), at least 1e-12.
    * ``good`` / ``bad``: a datapoint is *forgotten* when it was good in the reference pass (at least as good as
      ``good``) and is bad in the other (worse than ``bad``, or NaN). Defaults: the reference pass's median and its
      worst-quartile boundary (25th percentile of goodness), so "forgotten" means "was in the better half, is now in
      the worst quarter of where the reference stood".
    """

    change: float | None = None
    good: float | None = None
    bad: float | None = None


@dataclass(frozen=True)
class Deltas:
    """Per matched datapoint: both values, their delta and what the change means. Arrays share one order: that of
    ``alignment.a`` (ascending index of pass a when aligned by index)."""

    metric: str
    higher_is_better: bool
    alignment: Alignment
    a: np.ndarray
    b: np.ndarray
    delta: np.ndarray
    """``b - a`` in metric units (NaN when either is NaN)."""
    gain: np.ndarray
    """Signed improvement: ``delta`` for higher-is-better, ``-delta`` otherwise; -inf when b became NaN, +inf when a
    NaN became a value, NaN when both are NaN. Sorting by ``gain`` puts the worst regressions first."""
    regressed: np.ndarray
    improved: np.ndarray
    forgotten: np.ndarray
    thresholds: Thresholds
    """The thresholds used, every field resolved to a number."""

    @property
    def idx_a(self) -> np.ndarray:
        return self.alignment.a

    @property
    def idx_b(self) -> np.ndarray:
        return self.alignment.b

    def mask(self, which: str = "all") -> np.ndarray:
        """Rows of a filter: ``all``, ``regressed``, ``improved``, ``forgotten`` or ``changed``."""
        if which == "all":
            return np.ones(self.a.size, dtype=bool)
        if which == "changed":
            return self.regressed | self.improved
        if which in ("regressed", "improved", "forgotten"):
            return np.asarray(getattr(self, which))
        raise ValueError(f"unknown filter {which!r} (one of {', '.join(DELTA_FILTERS)})")

    def order(self, which: str = "all", worst_first: bool = True) -> np.ndarray:
        """Row positions of filter ``which``, worst regression first (or best improvement first); rows with both
        values NaN last. Stable on ties."""
        rows = np.flatnonzero(self.mask(which))
        gain = self.gain[rows]
        key = np.where(np.isnan(gain), np.inf, gain if worst_first else -gain)
        return rows[np.argsort(key, kind="stable")]

    def counts(self) -> dict[str, int]:
        return {"matched": int(self.a.size), "regressed": int(self.regressed.sum()),
                "improved": int(self.improved.sum()), "forgotten": int(self.forgotten.sum()),
                "unmatched_a": int(self.alignment.unmatched_a.size), "unmatched_b": int(self.alignment.unmatched_b.size)}


def _resolve_thresholds(values: np.ndarray, higher_is_better: bool, given: Thresholds) -> Thresholds:
    finite = values[np.isfinite(values)]
    goodness = finite if higher_is_better else -finite
    sign = 1.0 if higher_is_better else -1.0
    if finite.size:
        p5, p25, p50, p95 = np.percentile(goodness, [5, 25, 50, 95])
    else:
        p5 = p25 = p50 = p95 = 0.0
    change = given.change if given.change is not None else max(0.05 * float(p95 - p5), 1e-12)
    good = given.good if given.good is not None else sign * float(p50)
    bad = given.bad if given.bad is not None else sign * float(p25)
    return Thresholds(change=float(change), good=float(good), bad=float(bad))


def deltas(values_a: np.ndarray, values_b: np.ndarray, metric: str, higher_is_better: bool = True,
           alignment: Alignment | None = None, thresholds: Thresholds | None = None) -> Deltas:
    """Per-datapoint deltas of ``metric`` between pass a (reference) and pass b, on ``alignment`` (by index when
    None). NaN is a failure: a value that became NaN regressed (and is forgotten if it was good), a NaN that became a
    value improved."""
    values_a = np.asarray(values_a, dtype=np.float64)
    values_b = np.asarray(values_b, dtype=np.float64)
    alignment = alignment or align(values_a.size, values_b.size)
    a, b = values_a[alignment.a], values_b[alignment.b]
    t = _resolve_thresholds(values_a, higher_is_better, thresholds or Thresholds())
    sign = 1.0 if higher_is_better else -1.0
    delta = b - a
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    gain = np.where(nan_a & nan_b, np.nan,
                    np.where(nan_b, -np.inf, np.where(nan_a, np.inf, sign * delta)))
    with np.errstate(invalid="ignore"):
        regressed = gain < -t.change
        improved = gain > t.change
        good_a = ~nan_a & (sign * a >= sign * t.good)  # type: ignore[operator]
        bad_b = nan_b | (sign * b < sign * t.bad)  # type: ignore[operator]
    return Deltas(metric, higher_is_better, alignment, a, b, delta, gain, regressed, improved, good_a & bad_b, t)


# ------------------------------------------------------------------------------------------- internals of a datapoint
def attention_weights(value: Any) -> np.ndarray | None:
    """``(heads, Lq, Lk)`` float32 attention weights of a saved attention value (a bare array or a dict holding one
    under ``weights`` / ``attention`` / ...), or None when there is none."""
    array = attention_array(value)
    return None if array is None else array.astype(np.float32, copy=False)


def attention_array(value: Any) -> np.ndarray | None:
    """As :func:`attention_weights`, in the dtype it was saved in (float16 stays float16: the batched maths reads
    half floats faster than a cast to float32 would)."""
    if type(value) is dict and type(value.get("weights")) is np.ndarray:  # what our capture writes: no search
        value = value["weights"]
    elif isinstance(value, Mapping):
        for key in ("weights", "attention", "attn", "attn_weights", "attention_weights", "attention_probs", "probs"):
            if key in value and value[key] is not None:
                value = value[key]
                break
        else:
            return None
    array = array_of(value)
    if array is None or array.ndim < 2:
        return None
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        return None
    return array


@dataclass(frozen=True)
class TopK:
    """Attention saved in the capture's top-k form (:mod:`eval_viewer.debuggers.builtins.attention`): each kept query
    row's ``K`` largest weights (``values``) at keys ``index``, ``(heads, queries, K)``; which queries were kept; and
    the capture's per-head entropy over *every* query, in bits (None when the value has no summary)."""

    index: np.ndarray
    values: np.ndarray
    queries: tuple[int, ...] | None
    entropy: np.ndarray | None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)


TOPK_NOTE = ("top-k form (only each query's largest weights were saved): JSD is a lower bound (keys outside both "
             "passes' top-k merged into one bucket), entropy is the capture's own over every query, top-k mass is over "
             "the kept queries")


def attention_top_k(value: Any) -> TopK | None:
    """The top-k form of a saved attention value (``{"top_k": {"index", "values"}, "summary": ..., "query_index":
    ...}``), or None when it holds none."""
    if not isinstance(value, Mapping) or not isinstance(value.get("top_k"), Mapping):
        return None
    index, values = array_of(value["top_k"].get("index")), array_of(value["top_k"].get("values"))
    if index is None or values is None or index.shape != values.shape or index.ndim < 2:
        return None
    while values.ndim > 3 and values.shape[0] == 1:
        index, values = index[0], values[0]
    if values.ndim == 2:
        index, values = index[None], values[None]
    if values.ndim != 3:
        return None
    queries = value.get("query_index")
    try:
        kept = tuple(int(q) for q in queries) if queries is not None else None
    except (TypeError, ValueError):
        kept = None
    entropy = None
    summary = value.get("summary")
    if isinstance(summary, Mapping):
        nats = array_of(summary.get("entropy"))
        if nats is not None and nats.reshape(-1).shape == (values.shape[0],):
            entropy = nats.reshape(-1).astype(np.float64) / math.log(2)
    return TopK(index, values, kept, entropy)


def topk_metrics(a: TopK, b: TopK, k: int = TOP_K) -> dict[str, np.ndarray]:
    """Per head of two top-k captures of the same queries: :func:`~.divergence.topk_divergence` (``jsd`` a lower
    bound, ``topk_*`` exact over the kept queries) and the captures' own ``entropy_a`` / ``entropy_b`` (NaN without a
    summary); the same keys as :func:`attention_metrics`."""
    out = topk_divergence(a.index, a.values, b.index, b.values, k)
    heads = a.values.shape[0]
    out["entropy_a"] = a.entropy if a.entropy is not None else np.full(heads, np.nan)
    out["entropy_b"] = b.entropy if b.entropy is not None else np.full(heads, np.nan)
    return {name: out[name] for name in ("jsd", "jsd_max", "entropy_a", "entropy_b", "topk_a", "topk_b")}


def array_of(value: Any) -> np.ndarray | None:
    """The numeric array of a saved value: the value itself, or the first numeric array in a dict (``output``,
    ``feature_map``, ``gradcam``... first), as numpy; None when there is none."""
    if type(value) is np.ndarray:  # the common case first: the pass-wide summary asks for every datapoint
        return value if value.dtype.kind in "fiub" and value.size else None
    if isinstance(value, Mapping):
        for key in ("output", "feature_map", "gradcam", "heatmap", "values", "value"):
            if key in value:
                found = array_of(value[key])
                if found is not None:
                    return found
        for inner in value.values():
            if hasattr(inner, "shape") and getattr(inner, "ndim", 0) >= 1:
                return array_of(inner)
        return None
    if hasattr(value, "detach"):  # a torch tensor from a log written by another tool
        value = value.detach().cpu().float().numpy()
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
        value = np.asarray(value, dtype=np.float64)
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiub" or value.size == 0:
        return None
    return value


def attention_metrics(wa: np.ndarray, wb: np.ndarray, k: int = TOP_K) -> dict[str, np.ndarray]:
    """Per head of two ``(heads, Lq, Lk)`` attention captures: ``jsd`` (per query, then averaged over queries, bits),
    ``jsd_max`` (its worst query), ``entropy_a`` / ``entropy_b`` (bits, averaged over queries) and ``topk_a`` /
    ``topk_b`` (mass of the ``k`` largest keys, averaged over queries). Each ``(heads,)`` float64.

    One datapoint of :func:`~.divergence.attention_divergence`, the batched computation the pass-wide summary runs
    over whole pages, so the paired view and the summary give the same figures (the tests hold both to scipy)."""
    wa, wb = np.asarray(wa), np.asarray(wb)
    if wa.shape != wb.shape:
        raise ValueError(f"shapes differ: {wa.shape} and {wb.shape}")
    return {name: values[0] for name, values in attention_divergence(wa[None], wb[None], k).items()}


@dataclass(frozen=True)
class ItemComparison:
    """One debug item found in both records by (debugger name, item key), with its metrics or why there are none."""

    debugger: str
    key: str
    kind: str
    metrics: Mapping[str, Any] = field(default_factory=dict)
    """Attention: per-head arrays (:func:`attention_metrics`); arrays: ``rel_error``, ``cosine``, ``sqnr_db``."""
    note: str = ""

    @property
    def layer(self) -> str:
        """``debugger`` or ``debugger/key``: how tables name it."""
        return f"{self.debugger}/{self.key}" if self.key else self.debugger


def _compare_item(name: str, item_a: Item, item_b: Item) -> ItemComparison:
    if item_a.kind == Kind.ATTENTION and item_b.kind == Kind.ATTENTION:
        wa, wb = attention_array(item_a.value), attention_array(item_b.value)
        if wa is None or wb is None:
            ta, tb = attention_top_k(item_a.value), attention_top_k(item_b.value)
            if ta is not None and tb is not None:
                return _compare_top_k(name, item_a, ta, tb)
            return ItemComparison(name, item_a.key, item_a.kind, note="no attention weights in one of the passes")
        if wa.shape != wb.shape:
            return ItemComparison(name, item_a.key, item_a.kind, note=f"shapes differ: {wa.shape} and {wb.shape}")
        return ItemComparison(name, item_a.key, item_a.kind, attention_metrics(wa, wb))
    if item_a.kind in TENSOR_KINDS and item_b.kind == item_a.kind:
        xa, xb = array_of(item_a.value), array_of(item_b.value)
        if xa is None or xb is None:
            return ItemComparison(name, item_a.key, item_a.kind, note="no array in one of the passes")
        if xa.shape != xb.shape:
            return ItemComparison(name, item_a.key, item_a.kind, note=f"shapes differ: {xa.shape} and {xb.shape}")
        if xa.dtype.kind != "f" and xb.dtype.kind != "f":  # shapes, channel lists, counts: shown, not measured
            return ItemComparison(name, item_a.key, item_a.kind)
        return ItemComparison(name, item_a.key, item_a.kind, tensor_metrics(xa, xb))
    return ItemComparison(name, item_a.key, item_a.kind)


def _compare_top_k(name: str, item: Item, ta: TopK, tb: TopK) -> ItemComparison:
    if ta.shape != tb.shape:
        return ItemComparison(name, item.key, item.kind, note=f"top-k shapes differ: {ta.shape} and {tb.shape}")
    if ta.queries != tb.queries:
        return ItemComparison(name, item.key, item.kind, note="the passes kept different queries")
    return ItemComparison(name, item.key, item.kind, topk_metrics(ta, tb), note=TOPK_NOTE)


def compare_items(record_a: DatapointRecord, record_b: DatapointRecord) -> list[ItemComparison]:
    """Every debug item saved in both records (matched by debugger name and item key), in pass a's order; attention
    and array kinds get metrics, the others an entry without (they are shown twin beside twin)."""
    out = []
    for name, items in record_a.debug.items():
        others = {item.key: item for item in record_b.debug.get(name, ())}
        for item in items:
            if item.key in others:
                out.append(_compare_item(name, item, others[item.key]))
    return out


# --------------------------------------------------------------------------------------------------- common failures
@dataclass(frozen=True)
class CommonFailures:
    """``fails[p, i]``: datapoint ``i`` fails in pass ``p``; ``counts[i]``: in how many passes it fails."""

    metric: str
    percentile: float
    fails: np.ndarray
    counts: np.ndarray
    cutoffs: np.ndarray
    """Per pass, the metric value at the percentile (the failure boundary)."""

    def order(self) -> np.ndarray:
        """Datapoints failing in the most passes first (ties by index)."""
        return np.argsort(-self.counts, kind="stable")


def common_failures(table: np.ndarray, metric: str, higher_is_better: bool = True,
                    percentile: float = 25.0) -> CommonFailures:
    """Datapoints that fail in several passes: ``table`` is (passes, datapoints) (``LogStore.scores_across_passes``);
    a datapoint fails in a pass when it is in that pass's worst ``percentile`` % of the metric, or NaN."""
    table = np.asarray(table, dtype=np.float64)
    sign = 1.0 if higher_is_better else -1.0
    goodness = sign * table
    cutoffs = np.full(table.shape[0], np.nan)
    fails = np.isnan(table)
    for p, row in enumerate(goodness):
        finite = row[np.isfinite(row)]
        if finite.size:
            cut = float(np.percentile(finite, percentile))
            cutoffs[p] = sign * cut
            with np.errstate(invalid="ignore"):
                fails[p] |= row <= cut
    return CommonFailures(metric, percentile, fails, fails.sum(axis=0), cutoffs)


def failures_across(store: Any, keys: Sequence[Any], metric: str,
                    percentile: float = 25.0) -> tuple[CommonFailures, np.ndarray, bool]:
    """:func:`common_failures` of passes ``keys`` of ``store`` (a :class:`~eval_viewer.backend.LogStore`): the
    failures, the ``(passes, datapoints)`` values of ``metric`` and whether higher is better (the first pass's
    direction). A pass without ``metric`` is a :class:`CompareError` naming it (its missing values would otherwise all
    count as failures)."""
    for key in keys:
        scores = store.scores(key)
        if metric not in scores.per_datapoint:
            raise CompareError(f"{key} has no metric {metric!r} (metrics: {', '.join(scores.metrics) or 'none'})")
    if len(keys) == 0:
        raise CompareError("No passes to look for common failures in")
    table = store.scores_across_passes(keys, metric)
    higher = bool(store.scores(keys[0]).higher_is_better.get(metric, True))
    return common_failures(table, metric, higher, percentile), table, higher
