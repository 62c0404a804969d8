"""The failure report's views: its head (the pass, the ranking, the pass's scores), a table of contents and one
section per datapoint, each the app's own datapoint view (or, against a second pass, the app's paired view).

Pure views, like the rest of :mod:`eval_viewer.display`: records in, neutral nodes out. Reading the logs and writing
the files is :mod:`eval_viewer.report`'s job; :func:`eval_viewer.display.html.page` turns these nodes into the page.
The contents link to each section by an anchor (``#dp-<idx>``), the one thing a static page needs that the app's
view tree has no node for (:func:`eval_viewer.display.html.link`).

CSS classes (:data:`REPORT_CSS`, added to the app's stylesheet on the page): ``ev-report-head``, ``ev-report-toc``,
``ev-report-entry`` (``data-idx``, ``data-rank``), ``ev-report-entry-head``, ``ev-report-flag``, ``ev-report-back``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from eval_viewer.backend.health import Flag
from eval_viewer.backend.model import DatapointRecord, PassKey
from eval_viewer.display.datapoint import datapoint_view
from eval_viewer.display.html import link
from eval_viewer.display.paired import paired_view
from eval_viewer.display.view import Badge, Child, Group, Node, Table, Text

__all__ = ["ReportSpec", "ReportEntry", "report_head", "contents", "entry_view", "anchor", "REPORT_CSS"]

REPORT_CSS = """
.ev-report-head { background: var(--ev-panel); border: 1px solid var(--ev-border); border-radius: var(--ev-radius);
  padding: 12px 16px; margin-bottom: 14px; }
.ev-report-head h2 { margin: 0 0 4px; }
.ev-report-toc { background: var(--ev-panel); border: 1px solid var(--ev-border); border-radius: var(--ev-radius);
  padding: 12px 16px; margin-bottom: 18px; }
.ev-report-toc td:nth-child(2), .ev-report-toc th:nth-child(2) { text-align: left; padding-left: 12px; }
.ev-report-toc td:last-child { text-align: left; padding-left: 12px; }
.ev-report-entry { margin: 26px 0; padding-top: 10px; border-top: 2px solid var(--ev-border); }
.ev-report-entry-head { display: flex; align-items: baseline; gap: 10px; flex-wrap: wrap; margin-bottom: 8px; }
.ev-report-entry-head h2 { margin: 0; }
.ev-report-flag { background: var(--ev-bad-soft); color: var(--ev-bad); border-color: var(--ev-bad); }
.ev-report-back { margin-left: auto; font-size: 12px; }
"""
"""The report's own rules, on top of the app's stylesheet."""


@dataclass(frozen=True)
class ReportSpec:
    """What the report is about: pass ``pass_a`` ranked by ``metric``, the worst ``shown`` of ``num_datapoints``;
    ``pass_b`` (with its aggregated scores) for a paired report."""

    pass_a: PassKey
    metric: str
    higher_is_better: Mapping[str, bool]
    num_datapoints: int
    shown: int
    aggregated_a: Mapping[str, float]
    pass_b: PassKey | None = None
    aggregated_b: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    """Sentences shown under the head (what the report could not do)."""


@dataclass(frozen=True)
class ReportEntry:
    """One ranked datapoint: its record in pass a, its partner in pass b (paired reports) and its health flags."""

    rank: int
    """1 for the worst."""
    record: DatapointRecord
    partner: DatapointRecord | None = None
    flags: tuple[str, ...] = ()
    """Plain-text health flags (what looked wrong in its saved debug outputs), one badge each."""
    flag_summary: str = ""
    """The flags in a few words for the contents (``nan ×2, dead ×1``)."""
    card_flags: tuple[Flag, ...] = ()
    """Pass a's flags themselves: the datapoint view puts each on its debugger's card, as the app does."""
    no_partner: str = ""
    """Why a paired report shows this datapoint alone."""

    @property
    def idx(self) -> int:
        return self.record.idx


def anchor(idx: int) -> str:
    """The id of datapoint ``idx``'s section, which the contents link to."""
    return f"dp-{idx}"


def _fmt(value: float | None) -> str:
    return "NaN" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _delta(a: float | None, b: float | None) -> str:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return "NaN"
    d = b - a
    return f"{'+' if d > 0 else ''}{d:.4g}"


def _arrow(spec: ReportSpec, metric: str) -> str:
    return "↑" if spec.higher_is_better.get(metric, True) else "↓"


def report_head(spec: ReportSpec) -> Group:
    """The title (which pass, which metric and which way is worse, how many), and every aggregated score of the pass
    (and of pass b, with the delta, in a paired report)."""
    direction = "higher is better" if spec.higher_is_better.get(spec.metric, True) else "lower is better"
    title = f"Worst {spec.shown} of {spec.num_datapoints} datapoints by {spec.metric} ({direction}; NaN first)"
    passes = f"pass a: {spec.pass_a}" + (f" · pass b: {spec.pass_b}" if spec.pass_b is not None else "")
    names = list(dict.fromkeys([*spec.aggregated_a, *spec.aggregated_b]))
    scores: Node | None
    if spec.pass_b is None:  # the pass's aggregated scores as the app's score chips, the ranked metric marked
        scores = Group([Group([Text(f"{m} {_arrow(spec, m)}", cls="ev-score-name", style="inline"),
                               Text(_fmt(v), cls="ev-score-value", style="inline")],
                              cls="ev-score" + (" ev-score-chosen" if m == spec.metric else "")
                              + ("" if math.isfinite(v) else " ev-score-nan"))
                        for m, v in spec.aggregated_a.items()], cls="ev-scores ev-report-scores")
    else:
        rows = [(f"{m} {_arrow(spec, m)}", _fmt(spec.aggregated_a.get(m)), _fmt(spec.aggregated_b.get(m)),
                 _delta(spec.aggregated_a.get(m), spec.aggregated_b.get(m))) for m in names]
        scores = Table(rows, header=("aggregated", "pass a", "pass b", "Δ (b − a)"),
                       cls="ev-table ev-report-scores", row_headers=True) if rows else None
    return Group([Text(title, style="h2"), Text(passes, cls="ev-caption"), scores,
                  *(Text(note, cls="ev-section-note") for note in spec.notes)],
                 cls="ev-report-head", id="ev-report-head")


def _score(record: DatapointRecord | None, metric: str) -> float | None:
    return None if record is None else record.scores.get(metric)


def contents(spec: ReportSpec, entries: Sequence[ReportEntry]) -> Group:
    """One row per datapoint, worst first, linking to its section: rank, datapoint, the metric (both passes and the
    delta in a paired report) and its health flags."""
    m = f"{spec.metric} {_arrow(spec, spec.metric)}"
    paired = spec.pass_b is not None
    header = ("#", "datapoint", *((f"{m} a", f"{m} b", "Δ (b − a)") if paired else (m,)), "flags")
    rows: list[tuple[Child, ...]] = []
    for e in entries:
        a = _score(e.record, spec.metric)
        values = (_fmt(a), _fmt(_score(e.partner, spec.metric)), _delta(a, _score(e.partner, spec.metric))) \
            if paired else (_fmt(a),)
        rows.append((str(e.rank), link(f"datapoint {e.idx}", f"#{anchor(e.idx)}"), *values,
                     e.flag_summary or ", ".join(e.flags) or "—"))
    return Group([Text("Contents", style="h3"), Table(rows, header=header, cls="ev-table ev-report-toc-table")],
                 cls="ev-report-toc", id="ev-report-toc", tag="section")


def entry_view(spec: ReportSpec, entry: ReportEntry) -> Group:
    """Datapoint ``entry``'s section: a head (rank, datapoint, metric, flags, a link back to the contents) above the
    app's datapoint view, or its paired view when the report has a pass b and the datapoint a partner there."""
    value = _fmt(_score(entry.record, spec.metric))
    head = Group([Text(f"#{entry.rank} · datapoint {entry.idx}", style="h2"),
                  Text(f"{spec.metric} = {value}", style="bold"),
                  *(Badge(f"⚠ {flag}", cls="ev-kind-tag ev-report-flag") for flag in entry.flags),
                  link("↑ contents", "#ev-report-toc", cls="ev-report-back")],
                  cls="ev-report-entry-head")
    body: list[Node | None] = []
    if entry.partner is not None:
        body.append(paired_view(entry.record, entry.partner, spec.metric, spec.higher_is_better))
    else:
        if spec.pass_b is not None:
            body.append(Text(entry.no_partner or f"No partner in {spec.pass_b}: shown in pass a only.",
                             cls="ev-section-note"))
        body.append(datapoint_view(entry.record, spec.metric, spec.higher_is_better, health=entry.card_flags))
    return Group([head, *body], cls="ev-report-entry", tag="section", id=anchor(entry.idx),
                 data={"idx": str(entry.idx), "rank": str(entry.rank)})
