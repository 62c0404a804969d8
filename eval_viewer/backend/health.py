"""Health checks on saved debug outputs: where did it break, and on which datapoints, without re-running the model.

Plain numpy over what the capture saved. Each checked debug item (a *column*: one debugger's feature map, layer
output, statistics or attention call) is first **measured** (:func:`measure`: fractions of NaN, Inf and exact zeros,
values at the extremes, spread, scale, per-channel deadness, per-head attention entropy), then the measures are
**flagged** against :class:`HealthThresholds` (:func:`flag_columns`). One code path serves one datapoint
(:func:`health`, lazily, for a badge) and a whole pass (:mod:`.health_summary`, vectorised over datapoints, which also
supplies the pass-wide context: a head's typical entropy, channels dead on every datapoint).

Problem kinds (:data:`KINDS`) and what ``Flag.amount`` is for each:

* ``nan`` / ``inf``: fraction of the saved values that are NaN / ±Inf (from a statistics-only capture, which counts
  NaN and Inf together, ``nan`` with ``Flag.values`` the count);
* ``dead``: fraction of exact zeros (a ReLU that never fires gives 1.0);
* ``dead_channel``: fraction of the layer's channels that are exactly zero on *every* datapoint of the pass (needs
  the pass, so a lone datapoint never gets it);
* ``saturated``: fraction of values sitting at the output's own non-zero extremes (tanh/sigmoid/clipped units);
* ``low_variance``: the values' standard deviation, when it is near zero next to their magnitude;
* ``attention_collapsed`` / ``attention_uniform``: a head's mean row entropy as a fraction of the uniform bound
  ``log(keys)`` (0: all mass on one key, 1: no focus); collapsed also when far below the head's own typical
  (median) entropy over the pass;
* ``scale_jump``: ratio of the layer's RMS in pass b to pass a (:func:`scale_jumps`).

``Flag.first_bad_layer`` is the earliest layer, in forward order, with a problem of the same family on that datapoint
(NaN and Inf are one family, as are dead units and dead channels): a NaN born in ``backbone.layer3`` and carried on to
``layer4`` is flagged at both, each saying "since backbone.layer3". Forward order is what the capture recorded
(``index.json``'s ``forward_position``, see :mod:`eval_viewer.log_format`); logs written before that fall back to the
order of the debuggers in the page (:func:`forward_order` says which it used).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eval_viewer.backend.model import DatapointRecord, Item
from eval_viewer.log_format import INDEX_FORWARD_POSITION, INDEX_LAYER, Kind

__all__ = ["KINDS", "FAMILIES", "HealthThresholds", "Flag", "Measure", "Column", "PassContext", "ForwardOrder",
           "forward_order", "measure", "stack", "flag_columns", "flags_of", "flags_of_row", "Hits", "scale_jump", "health", "scale_jumps", "flag_text"]

KINDS = ("nan", "inf", "dead", "dead_channel", "saturated", "low_variance", "attention_collapsed",
         "attention_uniform", "scale_jump")
"""Every problem kind, in the order tables show them."""
FAMILIES = {"nan": "nonfinite", "inf": "nonfinite", "dead": "dead", "dead_channel": "dead"}
"""Kinds that travel together down the network (first-bad-layer is found per family; other kinds are their own)."""

_CALL_RE = re.compile(r"_(\d+)$")
_ARRAY_KINDS = frozenset({Kind.FEATURE_MAP, Kind.LOGITS, Kind.SERIES})
_CHANNEL_KEYS = ("channel_mean", "channel_std")
_STAT_KEYS = frozenset({"mean", "std", "min", "max", "nonfinite", "sparsity"})


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
class Flag:
    """One problem of one debug item on one datapoint: what, how much, where, and since which layer."""

    debugger: str
    key: str
    """The item key inside the debugger's output (``"feature_map"``, ``"attention_1"``...)."""
    layer: str
    """The hooked layer's dotted name as the capture recorded it, else the debugger name."""
    kind: str
    amount: float
    """See the module docstring: a fraction for most kinds, a standard deviation, a ratio for ``scale_jump``."""
    head: int | None = None
    first_bad_layer: str | None = None
    values: int | None = None
    """How many values are bad, when only a count is known (statistics-only captures)."""

    @property
    def text(self) -> str:
        """A short line for a badge: ``NaN 100 % since backbone.layer3``."""
        return flag_text(self)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (notebooks, JSON, the report)."""
        return {"debugger": self.debugger, "key": self.key, "layer": self.layer, "kind": self.kind,
                "amount": self.amount, "head": self.head, "first_bad_layer": self.first_bad_layer,
                "values": self.values, "text": self.text}


_LABELS = {"nan": "NaN", "inf": "Inf", "dead": "dead", "dead_channel": "dead channels", "saturated": "saturated",
           "low_variance": "constant", "attention_collapsed": "collapsed", "attention_uniform": "uniform",
           "scale_jump": "scale ×"}


def flag_text(flag: Flag) -> str:
    """What a badge says: the kind, the amount in its unit, the head, and the first bad layer when it is elsewhere."""
    label = _LABELS.get(flag.kind, flag.kind)
    if flag.kind == "scale_jump":
        amount = f"{flag.amount:.3g}"
    elif flag.kind == "low_variance":
        amount = f"std {flag.amount:.2g}"
    elif flag.kind.startswith("attention_"):
        amount = f"entropy {100 * flag.amount:.0f} % of uniform"
    elif flag.values is not None and not math.isfinite(flag.amount):
        amount = f"{flag.values} values"
    else:
        amount = f"{100 * flag.amount:.3g} %"
    head = f" head {flag.head}" if flag.head is not None else ""
    text = f"{label}{head} {amount}" if flag.kind != "scale_jump" else f"{label}{amount}{head}"
    if flag.first_bad_layer and flag.first_bad_layer != flag.layer:
        text += f" since {flag.first_bad_layer}"
    return text


# ------------------------------------------------------------------------------------------------------ forward order
@dataclass(frozen=True)
class ForwardOrder:
    """Debugger name -> position in forward order, its layer names, and where the order came from."""

    positions: Mapping[str, int]
    layers: Mapping[str, str]
    source: str
    """``"capture"`` (recorded by the capture) or ``"page"`` (older logs: the order of the debuggers in the page)."""

    @property
    def note(self) -> str:
        if self.source == "capture":
            return ""
        return ("this log records no forward order (written before it existed): the first bad layer is taken in the "
                "order of the debuggers in the page")


def forward_order(debuggers: Mapping[str, Any], names: Sequence[str]) -> ForwardOrder:
    """Forward order of the debuggers ``names`` (a record's, in page order) from ``index.json``'s ``debuggers``.

    Debuggers whose layer ran get their recorded position; the rest (whole-datapoint debuggers, logs without
    positions) follow in page order."""
    layers: dict[str, str] = {}
    recorded: dict[str, int] = {}
    for name in names:
        info = debuggers.get(name)
        info = info if isinstance(info, Mapping) else {}
        layer = info.get(INDEX_LAYER)
        layers[name] = layer if isinstance(layer, str) and layer else name
        position = info.get(INDEX_FORWARD_POSITION)
        if isinstance(position, int) and not isinstance(position, bool):
            recorded[name] = position
    ranked = sorted(names, key=lambda n: (0, recorded[n], 0) if n in recorded else (1, 0, names.index(n)))
    return ForwardOrder({n: i for i, n in enumerate(ranked)}, layers, "capture" if recorded else "page")


# ----------------------------------------------------------------------------------------------------------- measures
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


_CHUNK = 1 << 20
"""Values measured at a time: a chunk of rows small enough to stay in cache through the passes over it."""


def measure_arrays(x: np.ndarray, channels: bool, t: HealthThresholds) -> dict[str, np.ndarray]:
    """Vectorised over the first axis (datapoints): each of :data:`SCALAR_FIELDS` as a ``(n,)`` array, and with
    ``channels`` the ``(n, C)`` mask of channels (axis 1) that are exactly zero (a NaN channel is not dead)."""
    n = x.shape[0]
    flat = x.reshape(n, -1)
    out = {f: np.full(n, np.nan) for f in SCALAR_FIELDS}
    step = max(1, _CHUNK // max(flat.shape[1], 1))
    for start in range(0, n, step):
        part = flat[start:start + step]
        for name, values in _measure_rows(part, t).items():
            out[name][start:start + step] = values
    if channels and x.ndim >= 3:
        out["dead"] = ~np.any(x.reshape(n, x.shape[1], -1) != 0, axis=2)
    return out


def _measure_rows(flat: np.ndarray, t: HealthThresholds) -> dict[str, np.ndarray]:
    """The measures of a chunk of rows. A row whose sum is finite holds no NaN or Inf (they would carry into it),
    so only rows with a non-finite sum pay for the finite-aware path."""
    if flat.dtype.kind != "f" or flat.dtype.itemsize < 4:
        flat = flat.astype(np.float32)
    n, total = flat.shape
    with np.errstate(invalid="ignore", over="ignore"):
        sums = flat.sum(axis=1, dtype=np.float64)
    bad = ~np.isfinite(sums)
    if bad.any():
        out = {f: np.full(n, np.nan) for f in ("nan", "inf", "zeros", "saturated", "mean", "std", "scale")}
        good = np.flatnonzero(~bad)
        if good.size:
            for name, values in _measure_rows(flat[good], t).items():
                out[name][good] = values
        rows = np.flatnonzero(bad)
        for name, values in _measure_unclean(flat[rows], t).items():
            out[name][rows] = values
        return out
    zeros = total - np.count_nonzero(flat, axis=1)
    mean = sums / total
    square = np.einsum("ij,ij->i", flat, flat, dtype=np.float64) / total
    top, low = flat.max(axis=1), flat.min(axis=1)
    tol = t.extreme_tolerance
    at_top = np.count_nonzero(flat >= (top - tol * np.abs(top))[:, None], axis=1)
    at_low = np.count_nonzero(flat <= (low + tol * np.abs(low))[:, None], axis=1)
    at = np.where(top != 0, at_top, 0) + np.where((low != 0) & (low != top), at_low, 0)
    saturated = np.where(top == low, 0.0, at / total) if total >= t.min_values else np.full(n, np.nan)
    return {"nan": np.zeros(n), "inf": np.zeros(n), "zeros": zeros / total, "saturated": saturated, "mean": mean,
            "std": np.sqrt(np.maximum(square - mean * mean, 0.0)), "scale": np.sqrt(square)}


def _measure_unclean(flat: np.ndarray, t: HealthThresholds) -> dict[str, np.ndarray]:
    """Rows holding NaN or Inf: the same measures over their finite values."""
    total = flat.shape[1]
    finite = np.isfinite(flat)
    n_finite = np.count_nonzero(finite, axis=1)
    nan = np.count_nonzero(np.isnan(flat), axis=1)
    values = np.where(finite, flat, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        count = np.where(n_finite > 0, n_finite, np.nan)
        mean = values.sum(axis=1, dtype=np.float64) / count
        square = np.einsum("ij,ij->i", values, values, dtype=np.float64) / count
        top = np.where(finite, flat, -np.inf).max(axis=1)
        low = np.where(finite, flat, np.inf).min(axis=1)
        tol = t.extreme_tolerance
        at_top = np.count_nonzero(finite & (flat >= (top - tol * np.abs(top))[:, None]), axis=1)
        at_low = np.count_nonzero(finite & (flat <= (low + tol * np.abs(low))[:, None]), axis=1)
        at = np.where(top != 0, at_top, 0) + np.where((low != 0) & (low != top), at_low, 0)
        saturated = np.where(top == low, 0.0, at / count)
    return {"nan": nan / total, "inf": (total - n_finite - nan) / total,
            "zeros": (total - np.count_nonzero(flat, axis=1)) / total,
            "saturated": np.where(n_finite >= t.min_values, saturated, np.nan), "mean": mean,
            "std": np.sqrt(np.maximum(square - mean * mean, 0.0)), "scale": np.sqrt(square)}


def _measure_array(value: np.ndarray, channels: bool, t: HealthThresholds) -> Measure:
    m = measure_arrays(value[None], channels, t)
    return Measure(**{f: float(m[f][0]) for f in SCALAR_FIELDS}, dead=m["dead"][0] if "dead" in m else None)


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


def _measure_attention(value: Any) -> Measure | None:
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


@dataclass(frozen=True)
class Column:
    """One checked debug item: which debugger, key and layer, what kind of measure, and its forward position."""

    debugger: str
    key: str
    layer: str
    source: str
    """``"array"``, ``"stats"`` or ``"attention"``."""
    position: int

    @property
    def name(self) -> str:
        """``debugger/key``: how tables name the column."""
        return f"{self.debugger}/{self.key}" if self.key else self.debugger


def _call(key: str) -> str:
    match = _CALL_RE.search(key.partition(".")[0])
    return match.group(1) if match else ""


def measure(record: DatapointRecord, order: ForwardOrder | None = None,
            thresholds: HealthThresholds | None = None) -> dict[Column, Measure]:
    """Every checkable debug item of ``record`` measured: attention calls, float feature maps / layer outputs, and
    statistics where the same debugger call saved no array."""
    t = thresholds or HealthThresholds()
    order = order or forward_order({}, list(record.debug))
    out: dict[Column, Measure] = {}
    for name, items in record.debug.items():
        position = order.positions.get(name, len(order.positions))
        layer = order.layers.get(name, name)
        by_key = {item.key: item for item in items}
        arrays: set[str] = set()
        for item in items:
            m = _measure_item(item, t)
            if m is None:
                continue
            source = "attention" if m.entropy is not None else "array"
            out[Column(name, item.key, layer, source, position)] = m
            arrays.add(_call(item.key))  # statistics of a call measured from its array or attention are skipped
        for item in items:
            if item.kind != Kind.STATS or not isinstance(item.value, Mapping) or _call(item.key) in arrays:
                continue
            if not _STAT_KEYS & set(map(str, item.value)):
                continue
            suffix = item.key[len("stats"):] if item.key.startswith("stats") else ""
            channel = {k: getattr(by_key.get(f"{k}{suffix}"), "value", None) for k in _CHANNEL_KEYS}
            out[Column(name, item.key, layer, "stats", position)] = measure_stats(item.value, channel)
    return out


def _measure_item(item: Item, t: HealthThresholds) -> Measure | None:
    if item.kind == Kind.ATTENTION:
        return _measure_attention(item.value)
    if item.kind not in _ARRAY_KINDS or item.key.partition(".")[0].rstrip("_0123456789") in _CHANNEL_KEYS:
        return None
    value = item_array(item.value)
    if value is None:
        return None
    return _measure_array(value, channels=item.kind == Kind.FEATURE_MAP and value.ndim >= 3, t=t)


def item_array(value: Any) -> np.ndarray | None:
    """The float array an array item's checks run on: the value, or the first float array of a dict (a layer output
    saved with its shape, ``{"output": array, ...}``); None when there is none."""
    if isinstance(value, Mapping):
        value = next((v for v in value.values() if isinstance(v, np.ndarray) and v.dtype.kind == "f"), None)
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.size == 0:
        return None
    return value


# -------------------------------------------------------------------------------------------------------------- flags
@dataclass(frozen=True)
class PassContext:
    """What a pass knows that one datapoint does not: per column, the heads' typical (median) entropy and the
    fraction of channels dead on every datapoint."""

    typical_entropy: Mapping[str, np.ndarray] = field(default_factory=dict)
    dead_everywhere: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Hits:
    """Datapoints where one (column, kind, head) is flagged, and by how much (NaN amount: only ``count`` known)."""

    mask: np.ndarray
    amount: np.ndarray
    count: np.ndarray | None = None


HitKey = tuple[Column, str, "int | None"]


def flag_columns(columns: Mapping[Column, Mapping[str, np.ndarray]], thresholds: HealthThresholds | None = None,
                 context: PassContext | None = None) -> dict[HitKey, Hits]:
    """Vectorised over datapoints: ``{(column, kind, head): Hits}``. ``columns[c]`` holds a ``(n,)`` array per
    :data:`SCALAR_FIELDS` name and optionally ``entropy`` ``(n, heads)`` (:func:`stack`)."""
    t = thresholds or HealthThresholds()
    out: dict[HitKey, Hits] = {}

    def put(column: Column, kind: str, head: int | None, where: np.ndarray, amount: np.ndarray,
            count: np.ndarray | None = None) -> None:
        if np.any(where):
            out[(column, kind, head)] = Hits(where, amount, count)

    with np.errstate(invalid="ignore"):
        for c, m in columns.items():
            put(c, "nan", None, m["nan"] > 0, m["nan"])
            put(c, "inf", None, m["inf"] > 0, m["inf"])
            if "entropy" in m:
                h = m["entropy"]
                typical = context.typical_entropy.get(c.name) if context else None
                for head in range(h.shape[1]):
                    low = t.collapsed
                    if typical is not None and head < typical.size and np.isfinite(typical[head]):
                        low = max(low, t.collapsed_vs_typical * float(typical[head]))
                    put(c, "attention_collapsed", head, h[:, head] <= low, h[:, head])
                    put(c, "attention_uniform", head, h[:, head] >= t.uniform, h[:, head])
                continue
            counted = m["nonfinite_count"] > 0
            if np.any(counted) and (c, "nan", None) not in out:
                put(c, "nan", None, counted, np.full(counted.shape, np.nan), m["nonfinite_count"])
            dead = m["zeros"] >= t.dead
            put(c, "dead", None, dead, m["zeros"])
            put(c, "saturated", None, m["saturated"] >= t.saturated, m["saturated"])
            lowvar = (m["std"] <= t.low_variance * np.maximum(np.abs(m["mean"]), 1.0)) & ~dead
            put(c, "low_variance", None, lowvar, m["std"])
            everywhere = context.dead_everywhere.get(c.name) if context else None
            if everywhere is not None and everywhere > t.dead_channel:
                present = np.isfinite(m["scale"]) | np.isfinite(m["zeros"])
                put(c, "dead_channel", None, present, np.full(present.shape, everywhere))
    return out


def flags_of_row(flagged: Mapping[HitKey, Hits], row: int) -> list[Flag]:
    """The flags of datapoint ``row``, each with its family's first bad layer (lowest forward position)."""
    hits = [(c, kind, head, h) for (c, kind, head), h in flagged.items() if h.mask[row]]
    first: dict[str, Column] = {}
    for c, kind, _head, _h in hits:
        family = FAMILIES.get(kind, kind)
        if family not in first or c.position < first[family].position:
            first[family] = c
    flags = []
    for c, kind, head, h in hits:
        count = int(h.count[row]) if h.count is not None else None
        origin = first[FAMILIES.get(kind, kind)]
        flags.append(Flag(c.debugger, c.key, c.layer, kind, float(h.amount[row]), head, origin.layer, count))
    flags.sort(key=lambda f: (KINDS.index(f.kind), f.debugger, f.key, f.head or 0))
    return flags


def stack(measures: Sequence[Mapping[Column, Measure]]) -> dict[Column, dict[str, np.ndarray]]:
    """Per-datapoint measures -> per column, arrays over the datapoints (NaN where a datapoint lacks the column)."""
    n = len(measures)
    columns: dict[Column, dict[str, np.ndarray]] = {}
    for row, found in enumerate(measures):
        for c, m in found.items():
            arrays = columns.get(c)
            if arrays is None:
                arrays = columns[c] = {f: np.full(n, np.nan) for f in SCALAR_FIELDS}
                if m.entropy is not None:
                    arrays["entropy"] = np.full((n, m.entropy.size), np.nan)
                if m.dead is not None:
                    arrays["dead"] = np.zeros((n, m.dead.size), dtype=bool)
                    arrays["dead_seen"] = np.zeros(n, dtype=bool)
            for f in SCALAR_FIELDS:
                arrays[f][row] = getattr(m, f)
            if m.entropy is not None and "entropy" in arrays and m.entropy.size == arrays["entropy"].shape[1]:
                arrays["entropy"][row] = m.entropy
            if m.dead is not None and "dead" in arrays and m.dead.size == arrays["dead"].shape[1]:
                arrays["dead"][row] = m.dead
                arrays["dead_seen"][row] = True
    return columns


def health(record: DatapointRecord, debuggers: Mapping[str, Any] | None = None, *,
           thresholds: HealthThresholds | None = None, context: PassContext | None = None) -> tuple[Flag, ...]:
    """The health flags of one datapoint, from its saved debug outputs alone.

    ``debuggers``: ``index.json``'s ``debuggers`` object (``LogStore.debugger_info``) for layer names and forward
    order (without it: debugger names, page order). ``context``: the pass's typical entropies and dead channels
    (:class:`~.health_summary.HealthSummary.context`); without it, checks that need the whole pass are skipped.
    """
    t = thresholds or HealthThresholds()
    order = forward_order(debuggers or {}, list(record.debug))
    columns = stack([measure(record, order, t)])
    return tuple(flags_of_row(flag_columns(columns, t, context), 0))


def flags_of(columns: Mapping[Column, Mapping[str, np.ndarray]], thresholds: HealthThresholds | None = None,
             context: PassContext | None = None) -> list[list[Flag]]:
    """Every datapoint's flags from stacked columns (:func:`stack`)."""
    flagged = flag_columns(columns, thresholds, context)
    n = next((len(a) for m in columns.values() for a in m.values()), 0)
    return [flags_of_row(flagged, row) for row in range(n)]


def scale_jumps(scale_a: Mapping[str, np.ndarray], scale_b: Mapping[str, np.ndarray],
                thresholds: HealthThresholds | None = None) -> dict[str, np.ndarray]:
    """Per column name present in both: the ratio of RMS (pass b / pass a) per aligned datapoint, NaN where it did
    not jump by ``scale_jump`` or more either way (or where either pass lacks a finite, non-zero scale)."""
    t = thresholds or HealthThresholds()
    out: dict[str, np.ndarray] = {}
    for name, a in scale_a.items():
        b = scale_b.get(name)
        if b is None or b.shape != a.shape:
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = b / a
            jump = np.isfinite(ratio) & (a > 0) & (b > 0) & ((ratio >= t.scale_jump) | (ratio <= 1 / t.scale_jump))
        if np.any(jump):
            out[name] = np.where(jump, ratio, np.nan)
    return out


def scale_jump(record_a: DatapointRecord, record_b: DatapointRecord, debuggers: Mapping[str, Any] | None = None,
               thresholds: HealthThresholds | None = None) -> tuple[Flag, ...]:
    """``scale_jump`` flags of one datapoint between two passes (``record_a`` the reference)."""
    t = thresholds or HealthThresholds()
    order = forward_order(debuggers or {}, list(record_b.debug))
    ma, mb = measure(record_a, order, t), measure(record_b, order, t)
    by_name = {c.name: c for c in mb}
    jumps = scale_jumps({c.name: np.array([m.scale]) for c, m in ma.items()},
                        {c.name: np.array([m.scale]) for c, m in mb.items()}, t)
    hits = sorted((by_name[name] for name in jumps), key=lambda c: c.position)
    first = hits[0].layer if hits else None
    return tuple(Flag(c.debugger, c.key, c.layer, "scale_jump", float(jumps[c.name][0]), None, first) for c in hits)


def iter_flags(flags: Iterable[Flag], kind: str | None = None, layer: str | None = None) -> list[Flag]:
    """Flags of one kind and/or one layer."""
    return [f for f in flags if (kind is None or f.kind == kind) and (layer is None or f.layer == layer)]
