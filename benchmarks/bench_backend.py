"""Backend benchmark: opening a large log and reading one datapoint, against the reference viewer's naive loader.

Run from the repository root::

    python benchmarks/bench_backend.py                       # 2 GB over 20k datapoints x 3 epochs, a few minutes
    python benchmarks/bench_backend.py --size-gb 0.2         # a quick look

It writes a synthetic trainer run under ``--dir`` (default: a new folder in /tmp, deleted afterwards): per epoch a
scores file and pages of ``--page-mb`` (plain ``joblib.dump`` of ``{idx: {debugger: output}}``, as the reference
writer does); epoch 0 also gets our writer's ``index.json``, the other epochs none (other tools' logs). Each datapoint
holds a recorder record (image, masks, meta_info), a feature map sized to reach ``--size-gb`` and a GradCAM map.

Each measurement runs in a fresh subprocess, so peak RSS is that approach's alone:

* ``naive``: the reference loader, ``joblib.load`` of every page of the epoch and a merge, for each click;
* ``first``: LogStore on a never-seen log: time until every epoch's index is ready (epoch 0 from index.json, the
  others scanned in the background), then until background work (skeleton caches) is done;
* ``cached``: a new LogStore once caches exist: time until the index is ready, then datapoint reads, *cold* (page
  files and cache files dropped from the OS page cache with ``posix_fadvise(DONTNEED)`` and the store's memory cache
  cleared before each read), *warm page* (another datapoint of a page just read) and *warm* (the same datapoint).

Bytes read come from ``/proc/self/io`` (``rchar``: bytes through read calls; ``read_bytes``: bytes from the disk).
"""

from __future__ import annotations

import argparse
import json
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
    FORMAT_VERSION,
    VALIDATION_SCORES,
    epoch_dir_name,
    page_name,
    write_scores,
)

__all__ = ["main"]

RUN = "bench_run"
FIXED_BYTES = 3 * 32 * 32 + 2 * 32 * 32 + 32 * 32 * 2  # image, two masks, float16 gradcam


def _io() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _drop(paths: list[Path]) -> None:
    """Evict files from the OS page cache (no root needed); dirty pages are synced first by the caller."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _outputs(idx: int, channels: int, base: dict[str, np.ndarray]) -> dict[str, Any]:
    k = np.float32(idx % 997)
    return {
        "recorder": {
            "inputs": {"image": base["image"] + np.uint8(idx % 200)},
            "labels": {"mask": base["mask"]},
            "outputs": {"mask": (base["mask"] + np.uint8(idx % 3)) % 4},
            "meta_info": {"idx": idx, "name": f"img_{idx:06d}.png", "difficulty": float(idx % 10) / 10},
        },
        "features": {"feature_map": base["fmap"][:channels] + k, "stats": {"mean": float(k), "std": 1.0}},
        "gradcam": base["cam"] + np.float16(idx % 5),
    }


def build(root: Path, size_gb: float, datapoints: int, epochs: int, page_mb: float) -> dict[str, Any]:
    """Write the synthetic run; returns what was written."""
    per_dp = size_gb * 1e9 / (epochs * datapoints)
    channels = max(1, round((per_dp - FIXED_BYTES) / (16 * 16 * 4)))
    rng = np.random.default_rng(0)
    base = {
        "image": rng.integers(0, 55, (3, 32, 32), dtype=np.uint8),
        "mask": rng.integers(0, 4, (32, 32), dtype=np.uint8),
        "fmap": rng.standard_normal((channels, 16, 16)).astype(np.float32),
        "cam": rng.random((32, 32)).astype(np.float16),
    }
    dp_bytes = FIXED_BYTES + channels * 16 * 16 * 4
    per_page = max(1, int(page_mb * 2**20 // dp_bytes))
    started = time.perf_counter()
    for epoch in range(epochs):
        epoch_dir = root / RUN / epoch_dir_name(epoch)
        loss = rng.random(datapoints)
        loss[rng.integers(0, datapoints, datapoints // 100)] = np.nan
        iou = rng.random((datapoints, 3))
        write_scores(epoch_dir / VALIDATION_SCORES, {"loss": np.nanmean(loss), "iou": iou.mean(0)},
                     {"loss": loss, "accuracy": 1 - loss, "iou": iou})
        debug = epoch_dir / DEBUGGER_DIR
        debug.mkdir(parents=True, exist_ok=True)
        pages: dict[str, dict[str, Any]] = {}
        for number, start in enumerate(range(0, datapoints, per_page)):
            indices = list(range(start, min(start + per_page, datapoints)))
            name = page_name(number)
            joblib.dump({i: _outputs(i, channels, base) for i in indices}, debug / name)
            pages[name] = {"indices": indices, "bytes": (debug / name).stat().st_size}
        if epoch == 0:  # our writer's index; the other epochs have none, like other tools' logs
            meta = {str(i): {"name": f"img_{i:06d}.png", "difficulty": float(i % 10) / 10} for i in range(datapoints)}
            (debug / "index.json").write_text(json.dumps(
                {"format_version": FORMAT_VERSION, "rank": None, "pages": pages, "meta": meta,
                 "debuggers": {"features": {"class": "bench.Features", "kinds": {"feature_map": "feature_map"}}}}))
    os.sync()
    total = sum(p.stat().st_size for p in (root / RUN).rglob("page_*.pkl"))
    return {"bytes": total, "channels": channels, "datapoint_bytes": dp_bytes, "per_page": per_page,
            "pages": len(list((root / RUN).rglob("page_*.pkl"))), "build_s": time.perf_counter() - started}


def _pages(root: Path, epoch: int) -> list[Path]:
    return sorted((root / RUN / epoch_dir_name(epoch) / DEBUGGER_DIR).glob("page_*.pkl"),
                  key=lambda p: int(p.stem.split("_")[-1]))


def phase_naive(root: Path, clicks: list[tuple[int, int]]) -> dict[str, Any]:
    """The reference viewer: load and merge every page of the epoch, on every click."""
    times, rchar = [], []
    for n, (epoch, idx) in enumerate(clicks):
        if n == 0:
            _drop(_pages(root, epoch))
        before, t0 = _io(), time.perf_counter()
        merged: dict[int, Any] = {}
        for page in _pages(root, epoch):
            merged.update(joblib.load(page))
        value = merged[idx]
        times.append(time.perf_counter() - t0)
        rchar.append(_io()["rchar"] - before["rchar"])
        del merged, value
    return {"times": times, "rchar": rchar, "peak_rss_mb": _peak_rss_mb()}


def _store(root: Path, cache: Path) -> Any:
    from eval_viewer.backend import LogStore

    # rescan_s=0: no background listing while reads are timed (the run does not change during the benchmark)
    return LogStore([root], cache_dir=cache, rescan_s=0)


def _key(epoch: int) -> Any:
    """The pass of validation epoch ``epoch`` of the synthetic run."""
    from eval_viewer.backend import PassKey

    return PassKey(RUN, "val", epoch)


def phase_first(root: Path, cache: Path, epochs: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    store = _store(root, cache)
    opened = time.perf_counter() - t0
    ready = {}
    for epoch in range(epochs):
        store.wait_for_index(_key(epoch))
        ready[epoch] = time.perf_counter() - t0
    store.wait_background()
    idle = time.perf_counter() - t0
    store.close()
    return {"open_s": opened, "ready_s": ready, "background_done_s": idle, "peak_rss_mb": _peak_rss_mb()}


def _array_bytes(record: Any) -> int:
    items = [*record.inputs, *record.labels, *record.predictions, *(i for v in record.debug.values() for i in v)]
    return sum(i.value.nbytes for i in items if isinstance(i.value, np.ndarray))


def phase_cached(root: Path, cache: Path, epochs: int, reads: int, seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    store = _store(root, cache)
    for epoch in range(epochs):
        store.wait_for_index(_key(epoch))
    index_ready = time.perf_counter() - t0
    scores = {e: store.scores(_key(e)) for e in range(epochs)}
    ranking_t = time.perf_counter()
    worst = scores[0].ranking("accuracy")[:10]
    ranking_s = time.perf_counter() - ranking_t
    rng = random.Random(seed)
    all_files = [p for e in range(epochs) for p in _pages(root, e)] + list(cache.rglob("*.skel"))
    cold, warm_page, warm, rchar, disk, own = [], [], [], [], [], []
    for _ in range(reads):
        epoch, idx = rng.randrange(epochs), rng.randrange(scores[0].num_datapoints - 1)
        store.clear_cache()
        store.scores(_key(epoch))  # scores are loaded once per epoch shown, not per click: keep them out of this
        _drop(all_files)
        before, t = _io(), time.perf_counter()
        record = store.datapoint(_key(epoch), idx)
        cold.append(time.perf_counter() - t)
        after = _io()
        rchar.append(after["rchar"] - before["rchar"])
        disk.append(after["read_bytes"] - before["read_bytes"])
        own.append(_array_bytes(record))
        assert not record.problems, record.problems
        t = time.perf_counter()
        store.datapoint(_key(epoch), idx + 1)
        warm_page.append(time.perf_counter() - t)
        t = time.perf_counter()
        store.datapoint(_key(epoch), idx)
        warm.append(time.perf_counter() - t)
    store.close()
    return {"index_ready_s": index_ready, "ranking_s": ranking_s, "worst": worst.tolist(), "cold": cold,
            "warm_page": warm_page, "warm": warm, "rchar": rchar, "disk": disk, "own": own,
            "peak_rss_mb": _peak_rss_mb()}


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def _run_phase(args: argparse.Namespace, phase: str, **extra: Any) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--phase", phase, "--dir", str(args.dir), "--epochs", str(args.epochs),
           "--reads", str(args.reads), "--seed", str(args.seed), "--naive-clicks", str(args.naive_clicks)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def report(info: dict[str, Any], naive: dict[str, Any], first: dict[str, Any], cached: dict[str, Any],
           args: argparse.Namespace) -> None:
    ms = 1000
    print(f"log: {info['bytes'] / 1e9:.2f} GB of pages, {args.datapoints} datapoints x {args.epochs} epochs, "
          f"{info['pages']} pages of ~{args.page_mb:g} MB ({info['per_page']} datapoints each), "
          f"{info['datapoint_bytes'] / 1024:.1f} KiB per datapoint; written in {info['build_s']:.0f} s")
    print("naive (load + merge every page of the epoch per click):")
    print(f"  per click: {', '.join(f'{t:.2f} s' for t in naive['times'])} (first one cold); "
          f"{statistics.median(naive['rchar']) / 1e6:.0f} MB read per click; peak RSS {naive['peak_rss_mb']:.0f} MB")
    ready = ", ".join(f"epoch {e}: {t:.2f} s" for e, t in first["ready_s"].items())
    print("LogStore, first open (no cache):")
    print(f"  open {first['open_s'] * ms:.0f} ms; index ready {ready} (epoch 0 from index.json, others scanned); "
          f"background skeletons done at {first['background_done_s']:.1f} s; peak RSS {first['peak_rss_mb']:.0f} MB")
    print("LogStore, later opens (cached):")
    print(f"  index ready for all {args.epochs} epochs: {cached['index_ready_s'] * ms:.0f} ms "
          f"(includes opening the store); ranking {args.datapoints} datapoints: {cached['ranking_s'] * ms:.1f} ms")
    for name in ("cold", "warm_page", "warm"):
        values = cached[name]
        print(f"  read one datapoint {name:9s}: p50 {_pct(values, 50) * ms:7.2f} ms   p95 {_pct(values, 95) * ms:7.2f} ms"
              f"   (n={len(values)})")
    print(f"  bytes per cold read: {statistics.median(cached['rchar']) / 1024:.1f} KiB through read calls, "
          f"{statistics.median(cached['disk']) / 1024:.1f} KiB from disk (median); the datapoint's arrays: "
          f"{statistics.median(cached['own']) / 1024:.1f} KiB")
    print(f"  peak RSS {cached['peak_rss_mb']:.0f} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="bytes of pages over all epochs")
    parser.add_argument("--datapoints", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--page-mb", type=float, default=100, help="page size (the reference writer's default)")
    parser.add_argument("--reads", type=int, default=40, help="cold reads measured (each followed by two warm)")
    parser.add_argument("--naive-clicks", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the log (default: a new /tmp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the log afterwards")
    parser.add_argument("--phase", choices=["naive", "first", "cached"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        cache = args.dir / "cache"
        if args.phase == "naive":
            rng = random.Random(args.seed)
            clicks = [(0, rng.randrange(1000)) for _ in range(args.naive_clicks)]
            result = phase_naive(args.dir, clicks)
        elif args.phase == "first":
            result = phase_first(args.dir, cache, args.epochs)
        else:
            result = phase_cached(args.dir, cache, args.epochs, args.reads, args.seed)
        print(json.dumps(result))
        return 0
    owned = args.dir is None
    args.dir = args.dir or Path(tempfile.mkdtemp(prefix="eval_viewer_bench_", dir="/tmp"))
    try:
        info = build(args.dir, args.size_gb, args.datapoints, args.epochs, args.page_mb)
        naive = _run_phase(args, "naive")
        first = _run_phase(args, "first")
        cached = _run_phase(args, "cached")
        report(info, naive, first, cached, args)
    finally:
        if owned and not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
