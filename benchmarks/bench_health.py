"""The per-pass health summary on a large log, against the rate the disk gives the same bytes.

Writes one evaluator-style pass of ``--datapoints`` datapoints in the large-log shape of ``bench_compare.py`` (per
datapoint an image, a mask, attention ``(heads, 64, 64)`` float16 and a feature map ``(16, 16, 16)`` float16, in
100 MB joblib pages with our index, here with recorded layer names and forward positions), with problems planted on
a known share of datapoints (NaN in the feature map of every 50th, a collapsed head 0 on every 40th). The attention
value is what our AttentionDebugger writes: the map plus its per-head ``summary`` over every query (entropy in nats,
top-k mass, max); ``--maps-only`` leaves the summary out, as older captures and other tools do, so the entropies
come from the maps. Then, in fresh processes with the pages evicted from the OS cache:

* raw: every page read from disk into memory, the bytes per second the disk gives: the plain way (``read_bytes``,
  fresh memory per page), ``preadv`` into one reused buffer, and each page mapped and populated by the kernel
  (``MADV_POPULATE_READ``); the fastest of the last two is the bar;
* health: :func:`eval_viewer.backend.health_summary.compute_health` over the pass (every datapoint read through the
  bulk reader, every item measured, the table built; a task per page in worker processes), its time and rate over
  the same page bytes: the first job of a server (its store starts the workers when the pass is opened,
  ``prepare_workers``), the first job of a notebook (its workers start with it), a second job (workers running), and
  in-process (``workers=0``, the way before); the planted problems are checked to be found (counts printed);
* naive (``--naive N``): the first N datapoints through ``LogStore.datapoint`` + :func:`~.health.health` one by one,
  the per-click path, scaled to the pass for comparison.

``python benchmarks/bench_health.py [--datapoints 20000]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from eval_viewer.log_format import (
    DEBUGGER_DIR,
    EVALUATION_SCORES,
    FORMAT_VERSION,
    INDEX_FORWARD_POSITION,
    INDEX_LAYER,
    index_name,
    page_name,
    write_scores,
)

# a sibling script, not a package: the same layout
from bench_compare import _drop, _pages, of_raw, phase_raw, raw_rates  # noqa: E402

__all__ = ["main"]

RUN = "run"
HEADS, TOKENS = 4, 64
NAN_EVERY, COLLAPSE_EVERY = 50, 40


def _summary(weights: np.ndarray) -> dict[str, Any]:
    """Per head, over every query row: what our AttentionDebugger keeps beside the map (``_attention_budget``)."""
    p = weights.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(-1).mean(-1)
    top = np.sort(p, axis=-1)[..., -8:]
    return {"entropy": entropy.astype(np.float32), "top_k_mass": top.sum(-1).mean(-1).astype(np.float32),
            "max": p.max(-1).max(-1).astype(np.float32), "k": 8, "queries": TOKENS}


def build(root: Path, datapoints: int, page_mb: float, maps_only: bool = False) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    att = rng.random((HEADS, TOKENS, TOKENS)).astype(np.float32) ** 4
    att /= att.sum(-1, keepdims=True)
    one_hot = np.zeros((TOKENS, TOKENS), dtype=np.float32)
    one_hot[:, 0] = 1.0
    fmap = rng.standard_normal((16, 16, 16)).astype(np.float16)
    collapsed = att.copy()
    collapsed[0] = one_hot
    summaries = {False: _summary(att), True: _summary(collapsed)}  # a roll of the keys keeps every row's entropy
    image = rng.integers(0, 255, (3, 32, 32), dtype=np.uint8)
    mask = rng.integers(0, 4, (32, 32), dtype=np.uint8)
    dp_bytes = att.size * 2 + fmap.nbytes + image.nbytes + mask.nbytes
    per_page = max(1, int(page_mb * 2**20 // dp_bytes))
    started = time.perf_counter()
    debug = root / RUN / DEBUGGER_DIR
    debug.mkdir(parents=True)
    miou = rng.random(datapoints)
    write_scores(root / RUN / EVALUATION_SCORES, {"miou": float(miou.mean())}, {"miou": miou})
    pages = {}
    for number, start in enumerate(range(0, datapoints, per_page)):
        chunk = range(start, min(start + per_page, datapoints))
        page = {}
        for i in chunk:
            weights = np.roll(att, i % TOKENS, axis=-1)
            if i % COLLAPSE_EVERY == 0:
                weights = weights.copy()
                weights[0] = one_hot
            features = fmap + np.float16(0.01 * (i % 7))
            if i % NAN_EVERY == 0:
                features = features.copy()
                features[0, :4] = np.nan
            attention: dict[str, Any] = {"weights": weights.astype(np.float16)}
            if not maps_only:
                attention.update(form="map", num_keys=TOKENS, num_queries=TOKENS, axes=["head", "query", "key"],
                                 summary=summaries[i % COLLAPSE_EVERY == 0])
            page[i] = {"record": {"inputs": {"image": image}, "labels": {"mask": mask},
                                  "outputs": {"mask": mask}, "meta_info": {"idx": i}},
                       "features": {"feature_map": features.astype(np.float16)},
                       "attention": {"attention": attention}}
        joblib.dump(page, debug / page_name(number))
        pages[page_name(number)] = {"indices": list(chunk), "bytes": (debug / page_name(number)).stat().st_size}
    (debug / index_name(None)).write_text(json.dumps({
        "format_version": FORMAT_VERSION, "rank": None, "pages": pages, "meta": {},
        "debuggers": {
            "record": {"class": "eval_viewer.debuggers.builtins.recorder.DatapointRecorder",
                       "kinds": {"inputs.image": "image", "labels.mask": "mask", "outputs.mask": "mask"}},
            "features": {"class": "bench", "kinds": {"feature_map": "feature_map"}, INDEX_LAYER: "backbone.layer3",
                         INDEX_FORWARD_POSITION: 0},
            "attention": {"class": "bench", "kinds": {"attention": "attention"}, INDEX_LAYER: "encoder.attn",
                          INDEX_FORWARD_POSITION: 1}}}))
    os.sync()
    total = sum(p.stat().st_size for p in _pages(root))
    return {"bytes": total, "per_page": per_page, "dp_bytes": dp_bytes, "build_s": time.perf_counter() - started,
            "pages": len(_pages(root))}


def phase_health(root: Path, cache: Path, server: bool = True) -> dict[str, Any]:
    """The summary three times in one process, pages evicted before each: the first job (``server``: as in the app,
    whose store starts the worker processes when the pass is opened; else as in a notebook, where they start with the
    job), the same job again (workers already running), and in-process (``workers=0``, the way before worker
    processes, for the ratio)."""
    import psutil

    from eval_viewer.backend import LogStore, PassKey
    from eval_viewer.backend.health_summary import compute_health
    from eval_viewer.backend.workers import job_workers

    key = PassKey(RUN, "test")
    _drop(_pages(root))
    with LogStore(root, cache_dir=cache, rescan_s=0, index_wait_s=600, prepare_workers=server) as store:
        store.scores(key)  # starts the index and the skeletons, which parse every page once
        store.wait_background(600)  # timed alone: not against that background parse of the same pages
        times, tables = {}, []
        for label, workers in (("first", None), ("warm", None), ("in_process", 0)):
            _drop(_pages(root))
            t0 = time.perf_counter()
            summary = compute_health(store, key, workers=workers)
            times[label] = time.perf_counter() - t0
            tables.append(summary.table())
            if label == "warm":
                workers_rss = sum(c.memory_info().rss for c in psutil.Process().children(recursive=True))
        count = job_workers(store.pass_pages(key))
    rows = {f"{r.layer}:{r.kind}": r.datapoints for r in summary.table()}
    return {"s": times, "workers": count, "workers_rss_mb": workers_rss / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rows": rows, "datapoints": int(summary.idx.size), "same": all(t == tables[0] for t in tables)}


def phase_bulk(root: Path, cache: Path) -> dict[str, Any]:
    """The bulk reader alone, reading what the summary reads (every page read and parsed, the checked debuggers'
    arrays handed out): the ceiling of the summary."""
    from eval_viewer.backend import LogStore, PassKey
    from eval_viewer.backend.bulk import iter_pages
    from eval_viewer.backend.health_summary import checked

    with LogStore(root, cache_dir=cache, rescan_s=0, index_wait_s=600) as store:
        store.scores(PassKey(RUN, "test"))
        store.wait_background(600)
        _drop(_pages(root))
        t0 = time.perf_counter()
        pages = store.pass_pages(PassKey(RUN, "test"))
        count = sum(len(page.values) for page in iter_pages(pages, select=checked(pages.debuggers)))
        return {"s": time.perf_counter() - t0, "datapoints": count}


def phase_naive(root: Path, cache: Path, n: int) -> dict[str, Any]:
    from eval_viewer.backend import LogStore, PassKey
    from eval_viewer.backend.health import health

    _drop(_pages(root))
    key = PassKey(RUN, "test")
    with LogStore(root, cache_dir=cache, rescan_s=0, index_wait_s=600) as store:
        store.scores(key)
        store.wait_background(600)
        _drop(_pages(root))
        info = store.debugger_info(key)
        t0 = time.perf_counter()
        for idx in range(n):
            health(store.datapoint(key, idx), info)
        seconds = time.perf_counter() - t0
    return {"s": seconds, "n": n}


def _run(args: argparse.Namespace, phase: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--phase", phase, "--dir", str(args.dir), "--naive", str(args.naive)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datapoints", type=int, default=20_000)
    parser.add_argument("--page-mb", type=float, default=100)
    parser.add_argument("--naive", type=int, default=500, help="datapoints read one by one for the naive figure")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--maps-only", action="store_true", help="attention without the capture's per-head summary")
    parser.add_argument("--repeats", type=int, default=3, help="summary runs, interleaved with raw reads")
    parser.add_argument("--phase", choices=["raw", "health", "health-notebook", "bulk", "naive"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        cache = args.dir / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        result = (phase_raw(args.dir / "logs") if args.phase == "raw" else
                  phase_health(args.dir / "logs", cache) if args.phase == "health" else
                  phase_health(args.dir / "logs", cache, server=False) if args.phase == "health-notebook" else
                  phase_bulk(args.dir / "logs", cache) if args.phase == "bulk" else
                  phase_naive(args.dir / "logs", cache, args.naive))
        print(json.dumps(result))
        return 0
    made = args.dir is None
    args.dir = args.dir or Path(tempfile.mkdtemp(prefix="bench-health-"))
    try:
        info = build(args.dir / "logs", args.datapoints, args.page_mb, args.maps_only)
        # raw and summary interleaved, medians: the disk's "cold" rate here varies 2x from read to read (the page
        # cache eviction is partial on this machine, and the machine is shared)
        raws, summaries, notebooks = [], [], []
        for _ in range(args.repeats):
            raws.append(_run(args, "raw"))
            summaries.append(_run(args, "health"))
            notebooks.append(_run(args, "health-notebook"))
        raws.append(_run(args, "raw"))
        bulk = _run(args, "bulk")
        naive = _run(args, "naive") if args.naive else None
    finally:
        if made and not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    mb = info["bytes"] / 2**20
    plain_rate, reused_rate, raw_line = raw_rates(raws, mb)
    summary = {**summaries[-1], "s": {label: statistics.median(run["s"][label] for run in summaries)
                                      for label in summaries[0]["s"]},
               "same": all(run["same"] for run in summaries + notebooks)}
    n = args.datapoints
    expected = {"backbone.layer3:nan": len(range(0, n, NAN_EVERY)),
                "encoder.attn:attention_collapsed": len(range(0, n, COLLAPSE_EVERY))}
    print(f"log: 1 pass x {n:,} datapoints, {mb:,.0f} MiB of pages ({info['pages']} pages, "
          f"{info['dp_bytes'] / 1024:.1f} KiB per datapoint: attention {HEADS}x{TOKENS}x{TOKENS} f16, "
          f"feature map 16x16x16 f16, image, mask; attention "
          f"{'maps only, entropies from the maps' if args.maps_only else 'with the capture summary'})")
    print(f"{raw_line} (summaries below: medians of {len(summaries)} runs, interleaved with these)")
    times = summary["s"]
    times["notebook"] = statistics.median(run["s"]["first"] for run in notebooks)
    for label, what in (("first", f"{summary['workers']} worker processes, the first job in the server (its store "
                                  "started them when the pass was opened)"),
                        ("notebook", f"{summary['workers']} worker processes, the first job in a notebook (they start "
                                     "with it)"),
                        ("warm", f"{summary['workers']} worker processes, already running (a second job)"),
                        ("in_process", "in-process (workers=0, as before)")):
        rate = mb / times[label]
        print(f"health summary, cold pages, {what}: {times[label]:.1f} s, {rate:,.0f} MiB/s = "
              f"{of_raw(rate, plain_rate, reused_rate)}, {n / times[label]:,.0f} datapoints/s")
    print(f"  peak RSS of the caller {summary['peak_rss_mb']:,.0f} MiB, of the workers together "
          f"{summary['workers_rss_mb']:,.0f} MiB after the job; in-process / warm workers: "
          f"{times['in_process'] / times['warm']:.2f}x")
    print(f"bulk reader alone (each page read into fresh memory, the checked debuggers' values built from its "
          f"columns; no checks), cold: {bulk['s']:.1f} s, {mb / bulk['s']:,.0f} MiB/s = "
          f"{of_raw(mb / bulk['s'], plain_rate, reused_rate)}")
    print(f"found: {summary['rows']} (planted: {expected})")
    if naive is not None:
        per = naive["s"] / naive["n"]
        print(f"naive (LogStore.datapoint + health, one by one), cold: {naive['n']} datapoints in {naive['s']:.1f} s, "
              f"{1000 * per:.2f} ms each, {per * n:.0f} s for the pass (x{per * n / times['warm']:.1f} the summary)")
    ok = all(summary["rows"].get(k) == v for k, v in expected.items()) and summary["datapoints"] == n
    print("workers and in-process: the same table" if summary["same"] else "MISMATCH between workers and in-process")
    ok = ok and summary["same"]
    print("planted problems found on the right layers and datapoints" if ok else "MISMATCH in the planted problems")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
