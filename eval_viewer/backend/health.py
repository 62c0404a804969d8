"""Health checks on saved debug outputs: where did it break, and on which datapoints, without re-running the model.

Plain numpy over what the capture saved. Each checked debug item (a *column*: one debugger's feature map, layer
output, statistics or attention call) is first **measured** (:func:`measure`, with :mod:`.health_measures`:
fractions of NaN, Inf and exact zeros, values at the extremes, spread, scale, per-channel deadness, per-head attention
entropy), then the measures are **flagged** against :class:`HealthThresholds` (:func:`flag_columns`). One code path
serves one datapoint (:func:`health`, lazily, for a badge) and a whole pass (:mod:`.health_summary`, a page at a time
through :mod:`.health_pages`, which also supplies the pass-wide context: a head's typical entropy, channels dead on
every datapoint).

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eval_viewer.backend.health_measures import (
    SCALAR_FIELDS,
    HealthThresholds,
    Measure,
    item_array,
    measure_array,
    measure_attention,
    measure_stats,
)
from eval_viewer.backend.model import DatapointRecord, Item
from eval_viewer.log_format import INDEX_FORWARD_POSITION, INDEX_LAYER, Kind

__all__ = ["KINDS", "FAMILIES", "HealthThresholds", "Flag", "Measure", "Column", "PassContext", "ForwardOrder",
           "forward_order", "measure", "stack", "flag_columns", "flags_of", "flags_of_row", "Hits", "scale_jump",
           "health", "scale_jumps", "flag_text"]

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
        return measure_attention(item.value)
    if item.kind not in _ARRAY_KINDS or item.key.partition(".")[0].rstrip("_0123456789") in _CHANNEL_KEYS:
        return None
    value = item_array(item.value)
    if value is None:
        return None
    return measure_array(value, channels=item.kind == Kind.FEATURE_MAP and value.ndim >= 3, t=t)


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
