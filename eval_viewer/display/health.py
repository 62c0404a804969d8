"""Health flags as views: the badges on a debug card, and the per-pass layers × kinds table.

Neutral nodes only (:mod:`eval_viewer.display.view`), so the app, a notebook and the offline report show the same
badges. A badge says what, how much and since which layer (:attr:`~eval_viewer.backend.health.Flag.text`); its
classes are ``ev-health-badge ev-health-<kind>``, and the badges of a card sit in ``ev-health-badges``. The summary
table puts each (layer, kind) count in a cell with ``cell_id(layer, kind)`` as its id when one is given (the app
listens to clicks there to filter the failure table).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from eval_viewer.backend.health import KINDS, Flag
from eval_viewer.display.view import Badge, Caption, Child, Group, Table, Text

__all__ = ["health_badges", "flags_by_debugger", "health_table", "KIND_TITLES"]

KIND_TITLES = {"nan": "NaN", "inf": "Inf", "dead": "dead units", "dead_channel": "dead channels",
               "saturated": "saturated", "low_variance": "constant", "attention_collapsed": "collapsed heads",
               "attention_uniform": "uniform heads", "scale_jump": "scale jump"}
"""Column titles of the summary table, one per problem kind."""


def flags_by_debugger(flags: Iterable[Flag]) -> dict[str, list[Flag]]:
    """Flags grouped by the debugger whose card shows them."""
    out: dict[str, list[Flag]] = {}
    for flag in flags:
        out.setdefault(flag.debugger, []).append(flag)
    return out


def health_badges(flags: Sequence[Flag]) -> Group | None:
    """One badge per flag of a card (None when it has none); the item key is named when the card has several."""
    if not flags:
        return None
    keys = {f.key for f in flags}
    badges: list[Child] = []
    for flag in flags:
        where = f"{flag.key}: " if len(keys) > 1 and flag.key else ""
        badges.append(Badge(f"⚠ {where}{flag.text}", cls=f"ev-health-badge ev-health-{flag.kind}"))
    return Group(badges, cls="ev-health-badges", data={"health": " ".join(sorted({f.kind for f in flags}))})


def _worst(kind: str, value: float) -> str:
    if not math.isfinite(value):
        return ""
    if kind == "scale_jump":
        return f"×{value:.3g}"
    if kind == "low_variance":
        return f"std {value:.2g}"
    if kind.startswith("attention_"):
        return f"H {100 * value:.0f} %"
    return f"{100 * value:.3g} %"


def health_table(rows: Sequence[Any], total: int, *, notes: Sequence[str] = (),
                 cell_id: Callable[[str, str], Any] | None = None,
                 order_note: str = "") -> Group:
    """Layers (forward order) × problem kinds: in each cell, how many datapoints have the problem there, the worst
    amount, and how many have it there first. ``rows``: :class:`~eval_viewer.backend.health_summary.HealthRow`."""
    if not rows:
        body: list[Child] = [Text(f"No problems found in {total:,} datapoints.", cls="ev-health-clean")]
        return Group([*body, *(Caption(n) for n in notes)], cls="ev-health-summary")
    kinds = [k for k in KINDS if any(r.kind == k for r in rows)]
    layers: dict[str, dict[str, Any]] = {}
    for row in rows:
        layers.setdefault(row.layer, {})[row.kind] = row
    table_rows = []
    for layer, cells in layers.items():
        line: list[Child] = [layer]
        for kind in kinds:
            row = cells.get(kind)
            if row is None:
                line.append("")
                continue
            heads = f" · head {', '.join(map(str, row.heads))}" if row.heads else ""
            first = f" · first in {row.first}" if row.first and row.first != row.datapoints else ""
            detail = f"{_worst(kind, row.worst)}{heads}{first}".strip(" ·")
            ident = cell_id(layer, kind) if cell_id is not None else None
            link = " ev-health-link" if ident is not None else ""  # a click lists the datapoints
            line.append(Group([Text(f"{row.datapoints:,} / {row.total:,}", cls="ev-health-count", style="bold"),
                               Text(detail, cls="ev-health-detail", style="inline") if detail else None],
                              cls=f"ev-health-cell ev-health-{kind}{link}", id=ident,
                              data={"layer": layer, "kind": kind}))
        table_rows.append(line)
    table = Table(table_rows, header=["layer", *(KIND_TITLES.get(k, k) for k in kinds)],
                  cls="ev-table ev-health-table", row_headers=True)
    captions = [Caption(f"datapoints with the problem / datapoints that captured the layer, of {total:,}"
                        + (" · click a count to list them in the table below" if cell_id is not None else ""))]
    if order_note:
        captions.append(Caption(order_note))
    return Group([table, *captions, *(Caption(n) for n in notes)], cls="ev-health-summary")


def as_plain(rows: Sequence[Any]) -> list[Mapping[str, Any]]:
    """Summary rows as plain dicts (for a notebook table)."""
    return [{"layer": r.layer, "kind": r.kind, "datapoints": r.datapoints, "total": r.total, "first": r.first,
             "worst": r.worst, "heads": list(r.heads)} for r in rows]
