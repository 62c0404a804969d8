"""App benchmark: server time and response size of opening one datapoint view, on the example and on a large log.

Run from the repository root::

    python benchmarks/bench_app.py                      # data/example + a 0.5 GB, 20k-datapoint log, about a minute
    python benchmarks/bench_app.py --large-gb 0.1       # a quick look

Opening a datapoint is what the browser does when the URL gains ``idx=``: three callbacks fire (``sync``, which keeps
the selectors in step, ``show``, which switches views and ranks the datapoint, and ``render``, which draws it). Each is
POSTed to ``/_dash-update-component`` through Flask's test client, exactly the request the browser sends, so the time
is the server's whole work (backend read, rendering, JSON encoding) without the network, and the size is the response
body the browser would download. Every datapoint is opened for the first time in its process (the store's memory cache
has not seen it; the OS page cache may have) with prefetching off. A user stepping with → is measured apart: the app
then drew the neighbour while the previous datapoint was on screen. The very first open after start-up is reported
apart: on a log without an index the backend is still building its page caches then.

The overview's failure table is measured the same way, request by request as the grid sends them: its columns (once
per run/pass/metric choice) and one block of rows (``getRowsRequest`` -> ``getRowsResponse`` and the caption), for
the first block in the default worst-first order, a block deep down, a block sorted by a text and a metric column,
and a block under a text and a number filter. Each kind is sent ``TABLE_REPEATS`` times; the first-block figure also
reports the very first request (nothing computed yet).

The large log is written by ``benchmarks/bench_backend.py``'s ``build`` (plain ``joblib.dump`` pages of a recorder
record, a feature map and a GradCAM map per datapoint), into a temporary folder deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from eval_viewer.app import create_app, ids
from eval_viewer.app.state import ViewState, pass_value, to_query
from eval_viewer.backend import LogStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backend import build  # noqa: E402  (a sibling script, not a package)
from dash_browser import payload as _payload  # noqa: E402

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]
SERVER_MS_TARGET = 200
BYTES_TARGET = 3 * 2**20
STEP_PAUSE_S = 1.0
TABLE_MS_TARGET = 100
TABLE_BYTES_TARGET = 100 * 2**10
TABLE_REPEATS = 10
BLOCK = 100


def _opening_requests(search: str, selection: dict[str, Any], version: str) -> dict[str, dict[str, Any]]:
    """What the browser sends when the URL gains ``idx=``: ``sync``, ``show`` and ``render``, with the values the page
    holds (the selectors of ``selection``, the store's ``version`` in LOG_VERSION)."""
    sync_out = [(ids.URL, "search"), (ids.RUN, "options"), (ids.RUN, "value"), (ids.PASS, "options"),
                (ids.PASS, "value"), (ids.PASS, "disabled"), (ids.METRIC, "options"), (ids.METRIC, "value"),
                (ids.SELECTION, "data"), (ids.NOTICE, "children")]
    sync_in = [(ids.URL, "search", search), (ids.RUN, "value", selection["run"]),
               (ids.PASS, "value", pass_value(selection["split"], selection["step"])),
               (ids.METRIC, "value", selection["metric"]), (ids.LOG_VERSION, "data", version)]
    show_out = [(ids.OVERVIEW_VIEW, "hidden"), (ids.DATAPOINT_VIEW, "hidden"), (ids.POSITION, "children"),
                (ids.PREV, "disabled"), (ids.NEXT, "disabled")]
    render_out = [(ids.DATAPOINT_BODY, "children"), (ids.INDEX_POLL, "disabled")]
    render_in = [(ids.URL, "search", search), (ids.INDEX_POLL, "n_intervals", None)]
    return {
        "sync": _payload(sync_out, sync_in, [(ids.SELECTION, "data", selection)]),
        "show": _payload(show_out, [(ids.URL, "search", search)]),
        "render": _payload(render_out, render_in),
    }


def _post(client: Any, body: dict[str, Any]) -> tuple[float, int]:
    started = time.perf_counter()
    response = client.post("/_dash-update-component", json=body)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code not in (200, 204):
        raise RuntimeError(f"callback failed with {response.status_code}: {response.get_data(as_text=True)[:500]}")
    data = response.get_data()
    if b"ev-error" in data:
        raise RuntimeError(f"the view shows an error: {data[:800]!r}")
    return elapsed, len(data)


def _rows_request(search: str, start: int, sort: list[dict[str, Any]],
                  filters: dict[str, Any]) -> dict[str, Any]:
    """The grid asking for rows ``[start, start + BLOCK)`` (what AG Grid's infinite model puts in getRowsRequest)."""
    request = {"startRow": start, "endRow": start + BLOCK, "sortModel": sort, "filterModel": filters}
    return _payload([(ids.TABLE, "getRowsResponse"), (ids.TABLE_CAPTION, "children")],
                    [(ids.TABLE, "getRowsRequest", request)], [(ids.URL, "search", search)])


def _fields(columns: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Column definition by header name, out of the column groups, as the browser got them."""
    flat = [child for col in columns for child in col.get("children", [col])]
    return {col["headerName"]: col for col in flat}


def measure_table(store: LogStore, search: str, selection: dict[str, Any], n: int) -> dict[str, Any]:
    """Time the table's requests; every answer is checked (a block of the right length, the right row count).

    First the first block of a selection the app has not seen (a new app each time, so the table behind the blocks is
    built from the store's scores and meta fields: what a user waits for after picking another run, pass or
    metric), then the columns and every kind of block with that table kept."""
    first_block = _rows_request(search, 0, [{"colId": "rank", "sort": "asc"}], {})
    new_selection = []
    for _ in range(3):
        client = create_app(store, prefetch=False).server.test_client()
        new_selection.append(_post(client, first_block))
    columns_body = _payload([(ids.TABLE, "columnDefs"), (ids.TABLE, "style")], [(ids.SELECTION, "data", selection)])
    started = time.perf_counter()
    response = client.post("/_dash-update-component", json=columns_body)
    columns_ms = (time.perf_counter() - started) * 1000
    by_header = _fields(response.get_json()["response"][ids.TABLE]["columnDefs"])
    metric_col = next(c for h, c in by_header.items() if h.startswith(f"{selection['metric']} "))
    text_col = next((c for c in by_header.values() if c.get("filter") == "agTextColumnFilter"), None)
    sort = [{"colId": metric_col["field"], "sort": "desc"}]
    filters: dict[str, Any] = {metric_col["field"]: {"filterType": "number", "operator": "OR", "conditions": [
        {"filterType": "number", "type": "greaterThan", "filter": 0.5}, {"filterType": "number", "type": "blank"}]}}
    if text_col is not None:
        sort.insert(0, {"colId": text_col["field"], "sort": "desc"})
        filters[text_col["field"]] = {"filterType": "text", "type": "notContains", "filter": "9"}
    kinds = {
        "first block": first_block,
        "deep block": _rows_request(search, max(0, n // 2 - BLOCK // 2), [{"colId": "rank", "sort": "asc"}], {}),
        "sorted block": _rows_request(search, 0, sort, {}),
        "filtered block": _rows_request(search, 0, [{"colId": "rank", "sort": "asc"}], filters),
    }
    results: dict[str, Any] = {"new_selection_ms": [t for t, _ in new_selection], "columns_ms": columns_ms,
                               "columns_bytes": len(response.get_data()), "sort": sort, "filters": filters}
    for name, body in kinds.items():
        timings = []
        for _ in range(TABLE_REPEATS):
            started = time.perf_counter()
            response = client.post("/_dash-update-component", json=body)
            timings.append(((time.perf_counter() - started) * 1000, len(response.get_data())))
            answer = response.get_json()["response"][ids.TABLE]["getRowsResponse"]
            if name != "filtered block" and (answer["rowCount"] != n or len(answer["rowData"]) != min(BLOCK, n)):
                raise RuntimeError(f"{name}: {len(answer['rowData'])} rows of {answer['rowCount']}, expected {n}")
        results[name] = {"ms": [t for t, _ in timings], "bytes": timings[0][1], "rows": len(answer["rowData"]),
                         "matching": answer["rowCount"]}
    return results


def measure(log_dir: Path, cache: Path, opens: int, seed: int) -> dict[str, Any]:
    """Open ``opens`` random datapoints of the first trainer run's last pass with debug outputs (else any run)."""
    store = LogStore([log_dir], cache_dir=cache)
    try:
        runs = store.runs()
        run = next((r for r in runs if r.kind == "trainer" and any(p.has_debug for p in r.passes)), runs[0])
        drawable = [p for p in run.passes if p.has_debug and p.has_scores]
        shown = run.default_pass if run.default_pass in drawable else drawable[-1]  # its latest validated epoch
        key = shown.key
        store.wait_for_index(key, timeout=600)
        scores = store.scores(key)
        metric = scores.metrics[0]
        app = create_app(store, prefetch=False)  # cold opens: nothing drawn ahead
        client = app.server.test_client()
        selection = {"run": run.name, "split": key.split, "step": key.step, "metric": metric}
        rng = random.Random(seed)
        picks = rng.sample(range(scores.num_datapoints), min(opens + 1, scores.num_datapoints))

        def state(idx: int | None = None) -> ViewState:
            return ViewState(run=run.name, split=key.split, step=key.step, metric=metric, idx=idx)

        def open_one(idx: int) -> dict[str, Any]:
            search = to_query(state(idx))
            requests = _opening_requests(search, selection, store.version)
            timings = {name: _post(client, body) for name, body in requests.items()}
            return {"idx": idx, "ms": sum(t for t, _ in timings.values()), "render_ms": timings["render"][0],
                    "bytes": sum(b for _, b in timings.values())}

        first = open_one(picks[0])  # right after start-up: the backend may still be building its page caches
        store.wait_background()
        table = measure_table(store, to_query(state()), selection, scores.num_datapoints)
        rows = [open_one(idx) for idx in picks[1:]]
        client = create_app(store, prefetch=True).server.test_client()  # a user stepping with → instead
        ranking = [int(i) for i in scores.ranking(metric)]
        steps = []
        for idx in [i for i in picks[1:] if ranking.index(i) > 0][:5]:
            open_one(ranking[ranking.index(idx) - 1])
            time.sleep(STEP_PAUSE_S)  # the user looks at the datapoint; its neighbours are drawn meanwhile
            steps.append(open_one(idx))
        return {"run": run.name, "pass": shown.label, "datapoints": scores.num_datapoints, "first": first, "opens": rows,
                "steps": steps, "table": table}
    finally:
        store.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(name: str, result: dict[str, Any]) -> bool:
    ms = [r["ms"] for r in result["opens"]]
    sizes = [r["bytes"] for r in result["opens"]]
    first = result["first"]
    ok = _pct(ms, 0.95) < SERVER_MS_TARGET and max(sizes + [first["bytes"]]) < BYTES_TARGET
    print(f"{name}: {result['run']} {result['pass']}, {result['datapoints']:,} datapoints")
    print(f"  first open after start-up: {first['ms']:.0f} ms, {first['bytes'] / 2**10:.0f} KiB")
    print(f"  open one datapoint (sync + show + render), server time: "
          f"p50 {statistics.median(ms):.0f} ms, p95 {_pct(ms, 0.95):.0f} ms, max {max(ms):.0f} ms (n={len(ms)})")
    print(f"    of which render: p50 {statistics.median(r['render_ms'] for r in result['opens']):.0f} ms")
    steps = [r["ms"] for r in result["steps"]]
    print(f"  step with → to a neighbour drawn ahead ({STEP_PAUSE_S:.0f} s after the previous open): "
          f"p50 {statistics.median(steps):.0f} ms, max {max(steps):.0f} ms (n={len(steps)})")
    print(f"  response size: p50 {statistics.median(sizes) / 2**10:.0f} KiB, max {max(sizes) / 2**10:.0f} KiB")
    print(f"  target p95 < {SERVER_MS_TARGET} ms and < {BYTES_TARGET // 2**20} MB: {'met' if ok else 'MISSED'}")
    return report_table(result) and ok


def report_table(result: dict[str, Any]) -> bool:
    table = result["table"]
    new = table["new_selection_ms"]
    print(f"  failure table ({result['datapoints']:,} datapoints, blocks of {BLOCK} rows):")
    print(f"    first block of a new selection (table built): p50 {statistics.median(new):.0f} ms, "
          f"max {max(new):.0f} ms (n={len(new)})")
    print(f"    then, table kept ({TABLE_REPEATS} requests each): columns {table['columns_ms']:.0f} ms, "
          f"{table['columns_bytes'] / 2**10:.1f} KiB")
    for name in ("first block", "deep block", "sorted block", "filtered block"):
        ms = table[name]["ms"]
        print(f"      {name + ':':16} p50 {statistics.median(ms):5.1f} ms, max {max(ms):5.1f} ms, "
              f"{table[name]['bytes'] / 2**10:5.1f} KiB, {table[name]['rows']} rows of {table[name]['matching']:,}")
    print(f"      sorted by {json.dumps(table['sort'])}")
    print(f"      filtered by {json.dumps(table['filters'])}")
    first = table["first block"]
    ok = max([*first["ms"], *new]) < TABLE_MS_TARGET and first["bytes"] < TABLE_BYTES_TARGET
    print(f"  target first block < {TABLE_MS_TARGET} ms (new selection too) and < {TABLE_BYTES_TARGET // 2**10} KiB: "
          f"{'met' if ok else 'MISSED'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--example-dir", type=Path, default=REPO / "data" / "example")
    parser.add_argument("--large-gb", type=float, default=0.5, help="bytes of pages of the large log")
    parser.add_argument("--large-datapoints", type=int, default=20_000)
    parser.add_argument("--opens", type=int, default=30, help="datapoints opened per log")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the raw measurements as JSON too")
    args = parser.parse_args(argv)
    if not args.example_dir.is_dir():
        print(f"{args.example_dir} is missing: python -m eval_viewer.demo --out {args.example_dir}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="eval_viewer_bench_app_", dir="/tmp"))
    try:
        results = {"example": measure(args.example_dir, work / "cache-example", args.opens, args.seed)}
        info = build(work / "large", args.large_gb, args.large_datapoints, 1, 100)
        print(f"large log: {info['bytes'] / 1e9:.2f} GB of pages, {args.large_datapoints:,} datapoints, "
              f"{info['pages']} pages, {info['datapoint_bytes'] / 2**10:.1f} KiB per datapoint")
        results["large"] = measure(work / "large", work / "cache-large", args.opens, args.seed)
        ok = all([report(name, result) for name, result in results.items()])
        if args.json:
            print(json.dumps(results))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
