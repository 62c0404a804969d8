"""Comparing two passes on a large log: the pass-wide layer × head summary against the raw read rate, and the paired
view's server time.

Writes two evaluator-style passes of ``--datapoints`` datapoints each (an "fp" run and a perturbed "q8" copy): per
datapoint an image, a mask, attention ``(heads, 64, 64)`` float16 and a feature map ``(16, 16, 16)`` float16, in
100 MB joblib pages with our index. Then, in fresh processes with the pages evicted from the OS cache:

* raw: every page of both passes read from disk into memory, the bytes per second the disk gives: the plain way
  (``read_bytes``, fresh memory per page), ``preadv`` into one reused buffer, and each page mapped and populated by
  the kernel (``MADV_POPULATE_READ``); the fastest of the last two is the bar;
* summary: :func:`eval_viewer.backend.summary.compute_summary` over both passes (every datapoint read, every layer and
  head compared; pages read whole by :mod:`eval_viewer.backend.bulk`, a task per page in worker processes), its
  time, rate over the same page bytes and peak RSS: with the store's own start-up work (page index, skeletons) done
  first, as in the app, as the server's first job (its store started the workers when the pass was opened), a
  second job (workers running), in-process (``workers=0``, the way before) and a notebook's first job (workers
  start with it); and once started the moment a notebook's store opens, beside that work;
* the per-datapoint way, for comparison: 1,000 consecutive pairs read through ``LogStore.datapoint`` and compared by
  ``compare_items`` (what the summary did before), extrapolated to the pass;
* paired view: the app's ``paired`` callback POSTed through Flask's test client for 20 random datapoints (each opened
  for the first time, from the app's store), the server time a user waits for.

``PYTHONPATH=. python benchmarks/bench_compare.py [--datapoints 20000]`` (from the repository root)
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import random
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
    index_name,
    page_name,
    write_scores,
)

__all__ = ["main"]

RUNS = ("fp", "q8")
HEADS, TOKENS = 4, 64


def _drop(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _pages(root: Path) -> list[Path]:
    return sorted(root.glob(f"*/{DEBUGGER_DIR}/page_*.pkl"))


def build(root: Path, datapoints: int, page_mb: float) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    att = rng.random((HEADS, TOKENS, TOKENS)).astype(np.float32) ** 4
    att /= att.sum(-1, keepdims=True)
    fmap = rng.standard_normal((16, 16, 16)).astype(np.float16)
    image = rng.integers(0, 255, (3, 32, 32), dtype=np.uint8)
    mask = rng.integers(0, 4, (32, 32), dtype=np.uint8)
    noise = rng.random((HEADS, TOKENS, TOKENS)).astype(np.float32)
    noise /= noise.sum(-1, keepdims=True)
    dp_bytes = att.size * 2 + fmap.nbytes + image.nbytes + mask.nbytes
    per_page = max(1, int(page_mb * 2**20 // dp_bytes))
    started = time.perf_counter()
    for shift, run in zip((0.0, 0.05), RUNS):
        debug = root / run / DEBUGGER_DIR
        debug.mkdir(parents=True)
        miou = rng.random(datapoints)
        write_scores(root / run / EVALUATION_SCORES, {"miou": float(miou.mean())}, {"miou": miou})
        pages = {}
        for number, start in enumerate(range(0, datapoints, per_page)):
            chunk = range(start, min(start + per_page, datapoints))
            page = {}
            for i in chunk:
                roll = np.roll(att, i % TOKENS, axis=-1)
                weights = ((1 - shift * (1 + i % 3)) * roll + shift * (1 + i % 3) * noise).astype(np.float16)
                page[i] = {"record": {"inputs": {"image": image}, "labels": {"mask": mask},
                                      "outputs": {"mask": mask}, "meta_info": {"idx": i}},
                           "attention": {"attention": {"weights": weights}},
                           "features": {"feature_map": (fmap + np.float16(shift * (i % 7))).astype(np.float16)}}
            joblib.dump(page, debug / page_name(number))
            pages[page_name(number)] = {"indices": list(chunk), "bytes": (debug / page_name(number)).stat().st_size}
        (debug / index_name(None)).write_text(json.dumps({
            "format_version": FORMAT_VERSION, "rank": None, "pages": pages, "meta": {},
            "debuggers": {"attention": {"class": "bench", "kinds": {"attention": "attention"}},
                          "features": {"class": "bench", "kinds": {"feature_map": "feature_map"}}}}))
    os.sync()
    total = sum(p.stat().st_size for p in _pages(root))
    return {"bytes": total, "per_page": per_page, "dp_bytes": dp_bytes, "build_s": time.perf_counter() - started,
            "pages": len(_pages(root))}


def phase_raw(root: Path) -> dict[str, Any]:
    """The pages read from disk (evicted from the OS cache before each way): ``s``, the plain way (``read_bytes``, a
    fresh buffer per page); ``s_reused``, ``os.preadv`` into one buffer reused for every page (no page faults for
    fresh memory); ``s_mapped``, each page mapped and populated by the kernel (``madvise(MADV_POPULATE_READ)``,
    Linux 5.14+: large read-ahead and no copy out of the OS cache; on this VM it needs a tenth of the CPU of a
    ``read`` and reads about twice as fast). The fastest of the three is the bar."""
    pages = _pages(root)
    _drop(pages)
    t0 = time.perf_counter()
    total = sum(len(p.read_bytes()) for p in pages)
    plain = time.perf_counter() - t0
    _drop(pages)
    t0 = time.perf_counter()
    buffer = bytearray(max(p.stat().st_size for p in pages))
    for p in pages:
        fd = os.open(p, os.O_RDONLY)
        try:
            view, done = memoryview(buffer)[:os.fstat(fd).st_size], 0
            while done < len(view):
                done += os.preadv(fd, [view[done:]], done) or len(view)
        finally:
            os.close(fd)
    reused = time.perf_counter() - t0
    _drop(pages)
    t0 = time.perf_counter()
    for p in pages:
        fd = os.open(p, os.O_RDONLY)
        try:
            with mmap.mmap(fd, os.fstat(fd).st_size, prot=mmap.PROT_READ) as mapped:
                mapped.madvise(getattr(mmap, "MADV_POPULATE_READ", 22))
        finally:
            os.close(fd)
    return {"s": plain, "s_reused": reused, "s_mapped": time.perf_counter() - t0, "bytes": total}


def raw_rates(raws: list[dict[str, Any]], mb: float) -> tuple[float, float, str]:
    """Median rates (MiB/s) of the plain read and of the fastest way (the faster median of the other two), and a
    line that says all three."""
    ways = ("s", "s_reused", "s_mapped")
    median = {k: statistics.median(r[k] for r in raws) for k in ways}
    each = {k: ", ".join(f"{r[k]:.1f}" for r in raws) for k in ways}
    line = (f"raw read of every page, cold: the plain way (read_bytes, fresh memory per page) {each['s']} s, median "
            f"{mb / median['s']:,.0f} MiB/s; preadv into one reused buffer {each['s_reused']} s, median "
            f"{mb / median['s_reused']:,.0f} MiB/s; mapped and populated (MADV_POPULATE_READ) {each['s_mapped']} s, "
            f"median {mb / median['s_mapped']:,.0f} MiB/s")
    return mb / median["s"], mb / min(median["s_reused"], median["s_mapped"]), line


def of_raw(rate: float, plain: float, reused: float) -> str:
    return f"{100 * rate / plain:.0f} % of the plain read rate, {100 * rate / reused:.0f} % of the fastest"


def phase_summary(root: Path, cache: Path, indexed: bool, server: bool = True) -> dict[str, Any]:
    """``indexed``: the store has finished its own start-up work (page index, per-datapoint skeletons, kept in the
    cache dir across restarts) before the summary starts, as in the app once a pass has been opened. ``server``:
    the store is the app's (``prepare_workers``: worker processes started, and the comparison's compiled loop
    loaded, when the pass is opened); the summary is then timed three times, pages evicted from the OS cache before
    each: the first job, the same job again (workers running, as in an app that has run a job before), and
    in-process (``workers=0``, the way before worker processes). Else the store is a notebook's and only its first
    job is timed (its worker processes start with it). Not ``indexed``: the summary starts the moment a notebook's
    store opens, beside that work (timed once, a first job)."""
    import psutil

    from eval_viewer.backend import LogStore, PassKey
    from eval_viewer.backend.summary import compute_summary
    from eval_viewer.backend.workers import job_workers

    a, b = PassKey("fp", "test"), PassKey("q8", "test")
    _drop(_pages(root))
    server = server and indexed
    with LogStore(root, cache_dir=cache, rescan_s=0, index_wait_s=600, prepare_workers=server) as store:
        if indexed:
            store.scores(a)
            store.scores(b)
            store.wait_background(600)
        times, cpu, tables = {}, {}, []
        workers_rss = 0
        for label, workers in (("first", None), ("warm", None), ("in_process", 0)) if server else (("first", None),):
            _drop(_pages(root))
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            summary = compute_summary(store, a, b, workers=workers)
            times[label] = time.perf_counter() - t0
            cpu[label] = time.process_time() - cpu0
            tables.append(summary.table())
            if label == "first":
                workers_rss = sum(c.memory_info().rss for c in psutil.Process().children(recursive=True))
        count = job_workers(store.pass_pages(a), store.pass_pages(b))
    rows = tables[-1]
    return {"s": times, "cpu_s": cpu, "workers": count, "workers_rss_mb": workers_rss / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rows": len(rows), "worst": [rows[0].layer, rows[0].head, rows[0].score],
            "same": all(t == tables[0] for t in tables)}


def phase_naive(root: Path, cache: Path, pairs: int = 1000) -> dict[str, Any]:
    """The per-datapoint way, for comparison in the same run: ``pairs`` consecutive datapoint pairs (in index order,
    as the summary walked them before) read through ``LogStore.datapoint`` and compared by ``compare_items`` (the
    store indexed first, pages evicted)."""
    from eval_viewer.backend import LogStore, PassKey
    from eval_viewer.backend.compare import compare_items

    a, b = PassKey("fp", "test"), PassKey("q8", "test")
    with LogStore(root, cache_dir=cache, rescan_s=0, index_wait_s=600) as store:
        n = store.scores(a).num_datapoints
        store.scores(b)
        store.wait_background(600)
        _drop(_pages(root))
        picks = list(range(max(0, n // 2 - pairs // 2), min(n, n // 2 - pairs // 2 + pairs)))
        t0 = time.perf_counter()
        for i in picks:
            compare_items(store.datapoint(a, i), store.datapoint(b, i))
        seconds = time.perf_counter() - t0
    return {"s": seconds, "pairs": len(picks)}


def phase_paired(root: Path, cache: Path, n: int, seed: int) -> dict[str, Any]:
    from eval_viewer.app import create_app, ids
    from eval_viewer.backend import LogStore

    with LogStore(root, cache_dir=cache, rescan_s=0, index_wait_s=600, prepare_workers=True) as store:  # the app's
        store.scores(("fp", "test"))
        store.scores(("q8", "test"))
        store.wait_background(600)
        count = store.scores(("fp", "test")).num_datapoints
        app = create_app(store)
        client = app.server.test_client()
        deps = client.get("/_dash-dependencies").json
        out = next(d for d in deps if d["output"] == f"{ids.PAIRED_BODY}.children")
        times, sizes = [], []
        for idx in random.Random(seed).sample(range(count), n):
            search = f"?run=fp&split=test&metric=miou&idx={idx}&vs_run=q8&vs_split=test"
            payload = {"output": out["output"], "outputs": {"id": ids.PAIRED_BODY, "property": "children"},
                       "inputs": [{"id": ids.URL, "property": "search", "value": search}],
                       "changedPropIds": [f"{ids.URL}.search"], "state": []}
            t0 = time.perf_counter()
            response = client.post("/_dash-update-component", json=payload)
            times.append(time.perf_counter() - t0)
            assert response.status_code == 200 and b"ev-paired" in response.data, response.data[:300]
            sizes.append(len(response.data))
    return {"times": times, "sizes": sizes}


def _run(args: argparse.Namespace, phase: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--phase", phase, "--dir", str(args.dir), "--seed", str(args.seed),
           "--opens", str(args.opens)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datapoints", type=int, default=20_000)
    parser.add_argument("--page-mb", type=float, default=100)
    parser.add_argument("--opens", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="summary runs, interleaved with raw reads")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--phase", choices=["raw", "summary", "summary-notebook", "summary-cold-store", "naive",
                                            "paired"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        cache = args.dir / "cache"
        if args.phase == "summary-cold-store":
            shutil.rmtree(cache, ignore_errors=True)  # nothing indexed or cached yet
        result = (phase_raw(args.dir / "logs") if args.phase == "raw" else
                  phase_summary(args.dir / "logs", cache, args.phase != "summary-cold-store",
                                server=args.phase == "summary") if args.phase.startswith("summary")
                  else phase_naive(args.dir / "logs", cache) if args.phase == "naive"
                  else phase_paired(args.dir / "logs", cache, args.opens, args.seed))
        print(json.dumps(result))
        return 0
    made = args.dir is None
    args.dir = args.dir or Path(tempfile.mkdtemp(prefix="bench-compare-"))
    try:
        info = build(args.dir / "logs", args.datapoints, args.page_mb)
        raws = [_run(args, "raw")]
        fresh = _run(args, "summary-cold-store")
        summaries, notebooks = [], []
        for _ in range(args.repeats):  # interleaved with raw reads, medians: the "cold" read varies 2x here
            summaries.append(_run(args, "summary"))
            raws.append(_run(args, "raw"))
            notebooks.append(_run(args, "summary-notebook"))
        naive = _run(args, "naive")
        paired = _run(args, "paired")
    finally:
        if made and not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    mb = info["bytes"] / 2**20
    plain_rate, reused_rate, raw_line = raw_rates(raws, mb)
    summary = {**summaries[-1], "same": all(run["same"] for run in summaries),
               "s": {label: statistics.median(run["s"][label] for run in summaries) for label in summaries[0]["s"]},
               "cpu_s": {label: statistics.median(run["cpu_s"][label] for run in summaries)
                         for label in summaries[0]["cpu_s"]}}
    notebook = {"s": {"first": statistics.median(run["s"]["first"] for run in notebooks)},
                "cpu_s": {"first": statistics.median(run["cpu_s"]["first"] for run in notebooks)}}
    t = sorted(x * 1000 for x in paired["times"])
    print(f"log: 2 passes x {args.datapoints:,} datapoints, {mb:,.0f} MiB of pages ({info['pages']} pages, "
          f"{info['dp_bytes'] / 1024:.1f} KiB per datapoint: attention {HEADS}x{TOKENS}x{TOKENS} f16, "
          f"feature map 16x16x16 f16)")
    print(f"{raw_line} (the summaries below: medians of {len(summaries)} runs interleaved with these reads; the "
          "store-just-opened run once, first)")
    runs = [(f"store indexed first, {summary['workers']} worker processes, the server's first job (workers started "
             "when the pass was opened)", summary, "first"),
            (f"store indexed first, {summary['workers']} worker processes already running (a second job)", summary,
             "warm"),
            ("store indexed first, in-process (workers=0, as before)", summary, "in_process"),
            (f"store indexed first, {summary['workers']} worker processes, a notebook's first job (workers start "
             "with it)", notebook, "first"),
            (f"store just opened, {fresh['workers']} worker processes, the first job", fresh, "first")]
    for what, run, label in runs:
        seconds = run["s"][label]
        speed = mb / seconds
        print(f"layer x head summary, cold pages, {what}: {seconds:.1f} s (CPU of the caller "
              f"{run['cpu_s'][label]:.1f} s), {speed:,.0f} MiB/s = {of_raw(speed, plain_rate, reused_rate)}, "
              f"{args.datapoints / seconds:,.0f} datapoint pairs/s")
    print(f"  {summary['rows']} rows, worst {summary['worst']}; peak RSS of the caller {summary['peak_rss_mb']:,.0f} "
          f"MiB, of the workers together {summary['workers_rss_mb']:,.0f} MiB after the first job; in-process / warm "
          f"workers: {summary['s']['in_process'] / summary['s']['warm']:.2f}x; "
          + ("workers and in-process: the same table" if summary["same"] else "MISMATCH between workers and "
             "in-process"))
    per_pair = naive["s"] / naive["pairs"]
    print(f"the per-datapoint way (LogStore.datapoint + compare_items, {naive['pairs']} pairs, cold pages): "
          f"{1 / per_pair:,.0f} datapoint pairs/s, {args.datapoints * per_pair:.1f} s for the pass; the page-level "
          f"summary (warm workers) is {args.datapoints * per_pair / summary['s']['warm']:.1f}x faster")
    print(f"open a paired view (server time, first open of each): p50 {statistics.median(t):.0f} ms, "
          f"p95 {t[int(0.95 * (len(t) - 1))]:.0f} ms, max {t[-1]:.0f} ms (n={len(t)}), "
          f"response p50 {statistics.median(paired['sizes']) / 1024:.0f} KiB")
    return 0 if summary["same"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
