"""The paired datapoint view: one datapoint in two passes, twin beside twin, with what changed.

Scores of both passes with their delta (the chosen metric first), then Inputs, Labels and predictions, Meta info and
one card per debugger, every item shown for pass a and pass b side by side (matched by section, debugger name and
item key, :func:`~eval_viewer.display.datapoint.item_key`), a difference map (:mod:`.diff`) where both have the same
shape, and for debug items the internals comparison (:func:`eval_viewer.backend.compare.compare_items`): per head
JS divergence, entropies and top-k mass for attention; relative error, cosine and SQNR for arrays.

``focus`` names an item key whose card comes first and is marked (``ev-card-focus``): where the layer × head table
sent the user. CSS classes: ``ev-paired``, ``ev-paired-head``, ``ev-pair-twins`` / ``ev-twin`` (``ev-twin-a``,
``ev-twin-b``, ``ev-twin-missing``), ``ev-diff``, ``ev-delta-table``, ``ev-delta-worse`` / ``ev-delta-better``,
``ev-internals``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from eval_viewer.backend.compare import TOPK_NOTE, ItemComparison, compare_items
from eval_viewer.backend.model import DatapointRecord, Item
from eval_viewer.display.datapoint import input_image, item_key, render_keyed
from eval_viewer.display.diff import diff_map
from eval_viewer.display.view import Badge, Group, Node, Problem, Table, Text

__all__ = ["paired_view", "internals_table", "score_rows"]


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.4g}"


def score_rows(a: DatapointRecord, b: DatapointRecord, higher_is_better: Mapping[str, bool],
               metric: str | None) -> list[tuple[str, str, str, str]]:
    """``(metric ↑/↓, value a, value b, delta)`` for every metric of either pass, the chosen one first."""
    names = list(dict.fromkeys([*a.scores, *b.scores]))
    if metric in names:
        names.remove(metric)
        names.insert(0, metric)
    rows = []
    for name in names:
        va, vb = a.scores.get(name, math.nan), b.scores.get(name, math.nan)
        arrow = "↑" if higher_is_better.get(name, True) else "↓"
        delta = vb - va if math.isfinite(va) and math.isfinite(vb) else math.nan
        sign = "+" if delta > 0 else ""
        rows.append((f"{name} {arrow}", _fmt(va), _fmt(vb), "NaN" if math.isnan(delta) else f"{sign}{delta:.4g}"))
    return rows


def _delta_class(a: DatapointRecord, b: DatapointRecord, metric: str | None, higher_is_better: Mapping[str, bool]
                 ) -> str:
    if metric is None:
        return ""
    va, vb = a.scores.get(metric, math.nan), b.scores.get(metric, math.nan)
    if math.isnan(va) and math.isnan(vb):
        return ""
    gain = -math.inf if math.isnan(vb) else math.inf if math.isnan(va) else (vb - va) * (
        1 if higher_is_better.get(metric, True) else -1)
    return "ev-delta-worse" if gain < 0 else "ev-delta-better" if gain > 0 else ""


def internals_table(cmp: ItemComparison) -> Node | None:
    """The per-datapoint internals of one compared item: a row per head (attention) or one row (arrays)."""
    m = cmp.metrics
    if cmp.note and not m:
        return Text(f"not compared: {cmp.note}", cls="ev-empty")
    if "jsd" in m:
        heads = len(np.atleast_1d(m["jsd"]))
        rows = [(f"head {h}", *(_fmt(float(np.atleast_1d(m[c])[h]))
                                for c in ("jsd", "jsd_max", "entropy_a", "entropy_b", "topk_a", "topk_b")))
                for h in range(heads)]
        bound = cmp.note == TOPK_NOTE  # only the largest weights were saved: the JSD is a lower bound
        table = Table(rows, header=("", "JSD ≥ (bits)" if bound else "JSD (bits)", "JSD max ≥" if bound else "JSD max",
                                    "entropy a", "entropy b", "top-5 a", "top-5 b"),
                      cls="ev-table ev-internals", row_headers=True)
        return Group([table, Text(cmp.note, cls="ev-caption")]) if cmp.note else table
    if "rel_error" in m:
        return Table([(_fmt(m["rel_error"]), _fmt(m["cosine"]), f"{_fmt(m['sqnr_db'])} dB")],
                     header=("rel. error", "cosine", "SQNR"), cls="ev-table ev-internals")
    return None


def _twins(key: str, a: Item | None, b: Item | None, image_a: np.ndarray | None, image_b: np.ndarray | None,
           extra: Sequence[Node | None] = ()) -> Group:
    """Pass a's and pass b's rendering of one item side by side, the difference map and ``extra`` below."""
    named = a if a is not None else b
    assert named is not None
    head = Group([Text(named.key, cls="ev-item-key", style="inline") if named.key else None, Badge(named.kind)],
                 cls="ev-item-head")
    sides = []
    for side, item, image in (("a", a, image_a), ("b", b, image_b)):
        body: Node = render_keyed(item, key, image) if item is not None else Text(
            f"not saved in pass {side}", cls="ev-empty")
        sides.append(Group([Text(f"pass {side}", cls="ev-twin-label", style="inline"), body],
                           cls=f"ev-twin ev-twin-{side}" + (" ev-twin-missing" if item is None else "")))
    diff = diff_map(a, b) if a is not None and b is not None else None
    return Group([head, Group(sides, cls="ev-pair-twins"), diff, *extra], cls="ev-item-box ev-item-wide ev-paired-item",
                 data={"item": key})


def _by_key(items: Sequence[Item]) -> dict[str, Item]:
    return {item.key: item for item in items}


def _section(title: str, children: Sequence[Node], empty: str) -> Group:
    slug = title.lower().replace(" ", "-")
    body = list(children) if children else [Text(empty, cls="ev-empty")]
    return Group([Text(title, cls="ev-section-title", style="h2"), Group(body, cls="ev-section-body")],
                 cls=f"ev-section ev-section-{slug}", tag="section")


def _plain_section(section: str, a: Sequence[Item], b: Sequence[Item], image_a: np.ndarray | None,
                   image_b: np.ndarray | None) -> list[Node]:
    ia, ib = _by_key(a), _by_key(b)
    return [_twins(item_key(section, "", k), ia.get(k), ib.get(k), image_a, image_b) for k in dict.fromkeys([*ia, *ib])]


def _meta(a: DatapointRecord, b: DatapointRecord) -> list[Node]:
    keys = list(dict.fromkeys([*map(str, a.meta_info), *map(str, b.meta_info)]))
    if not keys:
        return []
    ma = {str(k): v for k, v in a.meta_info.items()}
    mb = {str(k): v for k, v in b.meta_info.items()}
    rows = [(k, str(ma.get(k, "—")), str(mb.get(k, "—"))) for k in keys]
    return [Table(rows, header=("", "pass a", "pass b"), cls="ev-table ev-meta-table", row_headers=True)]


def _debug(a: DatapointRecord, b: DatapointRecord, image_a: np.ndarray | None, image_b: np.ndarray | None,
           internals: Sequence[ItemComparison], focus: str | None) -> list[Node]:
    compared = {(c.debugger, c.key): c for c in internals}
    cards: list[tuple[bool, Group]] = []
    for name in dict.fromkeys([*a.debug, *b.debug]):
        ia, ib = _by_key(a.debug.get(name, ())), _by_key(b.debug.get(name, ()))
        body = []
        focused = False
        for k in dict.fromkeys([*ia, *ib]):
            key = item_key("debug", name, k)
            focused = focused or key == focus
            cmp = compared.get((name, k))
            body.append(_twins(key, ia.get(k), ib.get(k), image_a, image_b,
                               [internals_table(cmp) if cmp is not None else None]))
        cls = "ev-card ev-card-wide ev-paired-card" + (" ev-card-focus" if focused else "")
        cards.append((focused, Group([Text(name, cls="ev-card-title", style="h3"), Group(body, cls="ev-card-body")],
                                     cls=cls, data={"debugger": name})))
    return [card for _, card in sorted(cards, key=lambda fc: not fc[0])]  # the focused card first, order kept


def paired_view(a: DatapointRecord, b: DatapointRecord, metric: str | None = None,
                higher_is_better: Mapping[str, bool] | None = None, *,
                internals: Sequence[ItemComparison] | None = None, focus: str | None = None) -> Group:
    """Datapoint ``a.idx`` of pass ``a.pass_key`` beside datapoint ``b.idx`` of pass ``b.pass_key``."""
    hib = higher_is_better or {}
    image_a, image_b = input_image(a), input_image(b)
    internals = compare_items(a, b) if internals is None else internals
    head = Group([
        Text(f"a: {a.pass_key} · datapoint {a.idx}", cls="ev-paired-pass ev-twin-a", style="bold"),
        Text(f"b: {b.pass_key} · datapoint {b.idx}", cls="ev-paired-pass ev-twin-b", style="bold"),
    ], cls="ev-paired-head")
    scores = Table(score_rows(a, b, hib, metric), header=("metric", "pass a", "pass b", "Δ (b − a)"),
                   cls=f"ev-table ev-delta-table {_delta_class(a, b, metric, hib)}".strip(), row_headers=True)
    problems = [Problem(f"Some of pass {side} could not be read", items=r.problems, cls="ev-error ev-problems")
                for side, r in (("a", a), ("b", b)) if r.problems]
    labels = _plain_section("labels", [*a.labels], [*b.labels], image_a, image_b) + _plain_section(
        "labels", [Item("prediction " + i.key, i.kind, i.value) for i in a.predictions],
        [Item("prediction " + i.key, i.kind, i.value) for i in b.predictions], image_a, image_b)
    sections = Group([
        _section("Inputs", _plain_section("inputs", a.inputs, b.inputs, image_a, image_b), "No inputs were saved."),
        _section("Labels", labels, "No labels or predictions were saved."),
        _section("Meta info", _meta(a, b), "No meta info was saved."),
        _section("Debug outputs", _debug(a, b, image_a, image_b, internals, focus),
                 "No debugger saved anything for this datapoint in either pass."),
    ], cls="ev-sections")
    return Group([head, scores, *problems, sections], cls="ev-datapoint-content ev-paired")
