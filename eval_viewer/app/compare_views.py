"""What the compare callbacks return: rows of the delta and layer × head tables, the delta map, the worst-datapoints
list, the paired view's position line. Plain functions of the store and the state; the callbacks stay thin."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
from dash import html

from eval_viewer.app import ids
from eval_viewer.app.compare_state import compare_deltas, compare_position, list_order, pass_token, vs_pass
from eval_viewer.app.state import ViewState, resolve
from eval_viewer.backend import LogStore, PassKey
from eval_viewer.backend.compare import CommonFailures, Deltas, failures_across
from eval_viewer.backend.summary import LayerSummary

__all__ = ["deltas_of", "delta_rows", "delta_caption", "delta_map_figure", "summary_rows", "worst_list",
           "compare_nav", "compare_step", "progress_bar", "summary_notes", "failures_of", "failure_columns", "failure_rows",
           "failure_caption", "failure_map_figure", "pass_options_all", "FAIL_MAP_ROWS", "FAIL_LIST_ROWS"]


def _num(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def deltas_of(store: LogStore, state: ViewState) -> Deltas:
    """The deltas of a resolved state with a comparison."""
    assert state.vs is not None
    resolved = resolve(store, state, strict=False)
    if resolved.state.metric is None:
        from eval_viewer.errors import NotFoundError

        raise NotFoundError("No metric to compare")
    return compare_deltas(store, resolved.state.pass_key, state.vs, resolved.state.metric)


def _status(d: Deltas, row: int) -> str:
    tags = [name for name in ("forgotten", "regressed", "improved") if getattr(d, name)[row]]
    if math.isnan(d.b[row]) and not math.isnan(d.a[row]):
        tags.append("became NaN")
    return ", ".join(tags)


def delta_rows(d: Deltas, which: str) -> list[dict[str, Any]]:
    """One row per datapoint of filter ``which``, in :func:`list_order`."""
    return [{"idx": int(d.idx_a[r]), "idx_b": int(d.idx_b[r]), "a": _num(d.a[r]), "b": _num(d.b[r]),
             "delta": _num(d.delta[r]), "gain": _num(d.gain[r]), "status": _status(d, r)} for r in list_order(d, which)]


def delta_caption(d: Deltas, a: str, b: str) -> list[Any]:
    c = d.counts()
    t = d.thresholds
    unmatched = ""
    if c["unmatched_a"] or c["unmatched_b"]:
        listed = ", ".join(map(str, d.alignment.unmatched_a[:10].tolist()))
        more = "…" if c["unmatched_a"] > 10 else ""
        unmatched = (f" · unmatched: {c['unmatched_a']} in a ({listed}{more}), {c['unmatched_b']} in b")
    arrow = "↑" if d.higher_is_better else "↓"
    return [html.B(f"a = {a}, b = {b}"), f" · {d.metric} {arrow} · {c['matched']} matched"
            + (f" by {d.alignment.by}" if d.alignment.by else " by index")
            + f" · {c['regressed']} regressed, {c['improved']} improved, {c['forgotten']} forgotten"
            + f" (change > {t.change:.3g}, good ≥ {t.good:.3g}, bad < {t.bad:.3g})" + unmatched]


def delta_map_figure(d: Deltas) -> go.Figure:
    """One cell per matched datapoint (pass a's order), coloured by signed improvement: red got worse, blue better,
    dark: became NaN. ``customdata`` is the datapoint of pass a, so a click opens the pair."""
    n = d.a.size
    cols = max(1, min(40, math.ceil(math.sqrt(n * 4))))
    rows = max(1, math.ceil(n / cols))
    gain = np.full(rows * cols, np.nan)
    gain[:n] = np.where(np.isfinite(d.gain), d.gain, np.nan)
    custom = np.full(rows * cols, -1)
    custom[:n] = d.idx_a
    top = float(np.nanmax(np.abs(gain))) if np.isfinite(gain).any() else 1.0
    lost = np.full(rows * cols, np.nan)
    lost[:n] = np.where(np.isneginf(d.gain), 0.0, np.nan)
    z = [[None if not math.isfinite(v) else v for v in r] for r in gain.reshape(rows, cols).tolist()]
    fig = go.Figure(go.Heatmap(z=z, customdata=custom.reshape(rows, cols), colorscale="RdBu", zmid=0,
                               zmin=-top or -1, zmax=top or 1, xgap=1, ygap=1, hoverongaps=False,
                               colorbar={"thickness": 10, "len": 0.9, "title": {"text": "gain"}},
                               hovertemplate="datapoint %{customdata}<br>gain %{z:.4g}<extra></extra>"))
    if np.isfinite(lost).any():
        fig.add_trace(go.Heatmap(z=[[None if not math.isfinite(v) else v for v in r]
                                    for r in lost.reshape(rows, cols).tolist()],
                                 customdata=custom.reshape(rows, cols), colorscale=[[0, "#2b2f3a"], [1, "#2b2f3a"]],
                                 showscale=False, xgap=1, ygap=1, hoverongaps=False,
                                 hovertemplate="datapoint %{customdata}<br>became NaN<extra></extra>"))
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", constrain="domain")
    fig.update_layout(height=340, margin={"l": 8, "r": 8, "t": 8, "b": 8}, paper_bgcolor="rgba(0,0,0,0)",
                      plot_bgcolor="rgba(0,0,0,0)")
    return fig


def summary_rows(summary: LayerSummary) -> list[dict[str, Any]]:
    rows = []
    for r in summary.table():
        row: dict[str, Any] = {"id": f"{r.layer}#{'' if r.head is None else r.head}", "layer": r.layer,
                               "head": r.head, "count": r.count}
        row.update({k: _num(v) for k, v in r.values.items()})
        rows.append(row)
    return rows


def _focus_key(layer: str) -> str:
    from eval_viewer.display.datapoint import item_key

    debugger, _, key = layer.partition("/")
    return item_key("debug", debugger, key)


def worst_list(summary: LayerSummary, layer: str, head: int | None, limit: int = 12) -> html.Div:
    """Buttons opening the datapoints where ``layer`` (``head``) diverges most, on that card."""
    metric = "JSD" if head is not None else "rel. error"
    focus = _focus_key(layer)
    items = [html.Li(html.Button(f"#{a}" + (f" ↔ #{b}" if b != a else "") + f" · {metric} {value:.3g}",
                                 id=ids.worst_item(a, focus), className="ev-button ev-worst-button"))
             for a, b, value in summary.worst(layer, head, limit)]
    title = f"{layer}" + ("" if head is None else f" · head {head}") + f": highest {metric} first"
    return html.Div([html.Div(title, className="ev-worst-title"), html.Ol(items, className="ev-worst-items")])


def summary_notes(summary: LayerSummary, limit: int = 8) -> html.Ul | None:
    """What the summary could not compare (an unreadable page, shapes that differ...), each naming its file or
    layer; None when nothing."""
    if not summary.notes:
        return None
    items = [html.Li(note) for note in summary.notes[:limit]]
    if len(summary.notes) > limit:
        items.append(html.Li(f"… and {len(summary.notes) - limit} more"))
    return html.Ul(items, className="ev-summary-notes")


def progress_bar(done: int, total: int, note: str = "") -> html.Div:
    share = 0 if total == 0 else round(100 * done / total)
    return html.Div([
        html.Div(html.Div(className="ev-progress-fill", style={"width": f"{share}%"}), className="ev-progress",
                 role="progressbar", **{"aria-valuenow": str(share), "aria-valuemin": "0", "aria-valuemax": "100"}),
        html.Span(f"{done} / {total} datapoints" + (f" · {note}" if note else ""), className="ev-progress-text"),
    ], className="ev-progress-box")


def compare_step(store: LogStore, state: ViewState, forward: bool) -> int | None:
    """The next (``forward``) or previous datapoint in the compare list."""
    assert state.vs is not None and state.idx is not None
    where = compare_position(deltas_of(store, state), state.vs.filter, state.idx)
    return where.next_idx if forward else where.prev_idx


def compare_nav(store: LogStore, state: ViewState) -> tuple[Any, bool, bool]:
    """The position line of the paired view and whether ← and → are disabled."""
    assert state.vs is not None and state.idx is not None
    d = deltas_of(store, state)
    where = compare_position(d, state.vs.filter, state.idx)
    b = vs_pass(store, state.vs)
    rank = f"{where.rank} of {where.total}" if where.rank else f"not in the list ({where.total})"
    label = [html.Span(f"#{state.idx}" + (f" ↔ #{where.partner}" if where.partner not in (None, state.idx) else ""),
                       className="ev-position-idx"),
             html.Span(f"{state.vs.filter} {rank}", className="ev-position-rank"),
             html.Span(f"vs {b}, " + ("biggest gain first" if state.vs.filter == "improved" else
                                      "worst change first"), className="ev-position-by")]
    return label, where.prev_idx is None, where.next_idx is None


# ------------------------------------------------------------------------------------------------- common failures
FAIL_MAP_ROWS = 40
"""Datapoints drawn in the common-failures map (the list holds more)."""
FAIL_LIST_ROWS = 2000
"""Datapoints sent to the common-failures list at most (the most failing; the caption says when there are more)."""


def pass_options_all(store: LogStore) -> list[dict[str, Any]]:
    """Every scored pass of every run, as the common-failures picker lists them."""
    return [{"label": f"{run.name} · {info.label}", "value": pass_token(info.key)}
            for run in store.runs() for info in run.passes if info.has_scores]


def failures_of(store: LogStore, keys: list[PassKey], metric: str,
                percentile: float) -> tuple[CommonFailures, np.ndarray, bool]:
    """Which datapoints fail in which of ``keys`` (in the worst ``percentile`` % of ``metric`` of that pass, lower
    is better respected, NaN a failure), the ``(passes, datapoints)`` values, and whether higher is better."""
    return failures_across(store, keys, metric, percentile)


def failure_columns(keys: list[PassKey]) -> list[dict[str, Any]]:
    """idx, the failure count, then the metric in each pass (its failing cells marked)."""
    number = {"type": "numericColumn", "valueFormatter": {"function": "params.value == null ? 'NaN' : "
                                                                      "Number(params.value.toPrecision(4)).toString()"}}
    columns: list[dict[str, Any]] = [
        {"field": "idx", "headerName": "idx", "maxWidth": 90, "pinned": "left"},
        {"field": "count", "headerName": "fails in", "maxWidth": 110, "sort": None,
         "headerTooltip": "in how many of the chosen passes the datapoint is in the worst percentile (or NaN)"},
    ]
    columns += [{"field": f"p{k}", "headerName": f"{key.run} · {key.label}", "headerTooltip": str(key),
                 "cellClassRules": {"ev-fail-cell": f"params.data.f{k}"}, **number} for k, key in enumerate(keys)]
    return columns


def failure_rows(cf: CommonFailures, table: np.ndarray, minimum: int,
                 limit: int = FAIL_LIST_ROWS) -> list[dict[str, Any]]:
    """Datapoints failing in at least ``minimum`` passes, the most failing first (ties by index), at most
    ``limit``."""
    rows = []
    for i in cf.order().tolist():
        if cf.counts[i] < minimum or len(rows) >= limit:
            break
        row: dict[str, Any] = {"idx": i, "count": int(cf.counts[i])}
        for k in range(table.shape[0]):
            row[f"p{k}"] = _num(table[k, i])
            row[f"f{k}"] = bool(cf.fails[k, i])
        rows.append(row)
    return rows


def failure_caption(cf: CommonFailures, keys: list[PassKey], minimum: int, listed: int,
                    higher: bool) -> list[Any]:
    """What is listed, and each pass's failure boundary (``≤`` for higher-is-better metrics, ``≥`` otherwise)."""
    everywhere = int((cf.counts == len(keys)).sum())
    failing = int((cf.counts >= minimum).sum())
    shown = f"{failing} datapoints" + (f" (the first {listed} listed)" if listed < failing else "")
    cuts = ", ".join(f"{key.run} · {key.label} {'≤' if higher else '≥'} {c:.3g}" if math.isfinite(c) else
                     f"{key.run} · {key.label}: no values" for key, c in zip(keys, cf.cutoffs))
    return [html.B(f"{shown} fail in at least {minimum} of {len(keys)} passes"),
            f" · {everywhere} in all of them · failing = in the worst {cf.percentile:g} % of {cf.metric} or NaN "
            f"(boundaries: {cuts}) · click a row to open it in the first pass it fails in, a pass's cell to open it "
            "there"]


def failure_map_figure(cf: CommonFailures, keys: list[PassKey], table: np.ndarray,
                       shown: list[int]) -> go.Figure:
    """Datapoints (rows, in list order) × passes (columns): red where the datapoint fails. ``customdata`` is
    ``[idx, pass position]``, so a click opens the datapoint in that pass."""
    labels = [f"{key.run} · {key.label}" for key in keys]
    z = [[int(cf.fails[k, i]) for k in range(len(keys))] for i in shown]
    custom = [[[i, k] for k in range(len(keys))] for i in shown]
    text = [[("NaN" if not math.isfinite(table[k, i]) else f"{table[k, i]:.4g}") for k in range(len(keys))]
            for i in shown]
    fig = go.Figure(go.Heatmap(
        z=z, x=labels, y=[f"#{i}" for i in shown], customdata=custom, text=text, zmin=0, zmax=1, xgap=2, ygap=2,
        colorscale=[[0, "#e6ebf3"], [0.5, "#e6ebf3"], [0.5, "#d1495b"], [1, "#d1495b"]], showscale=False,
        hovertemplate="datapoint %{y} in %{x}<br>" + cf.metric + " %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category", tickfont={"size": 10})
    fig.update_xaxes(side="top", type="category", tickfont={"size": 10})
    fig.update_layout(height=min(620, 70 + 16 * max(len(shown), 1)), margin={"l": 8, "r": 8, "t": 40, "b": 8},
                      paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)")
    return fig
