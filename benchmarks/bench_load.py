"""A group's load: 8 concurrent clients opening datapoint views of the 20,000-datapoint benchmark log, served by one
gunicorn worker and by four (``python -m eval_viewer --workers N``).

Loopback only, a fixed number of requests, stops by itself. Each client replays what the browser sends when a
datapoint is opened: the datapoint callback's request, built from the server's own ``/_dash-dependencies`` (so it is
the app's real request, whatever its inputs are today), for a seeded random datapoint. Reported per configuration:
throughput, p50/p95/p99 latency, errors (a non-200 answer, or a view that says "Internal error" or "Cannot show this"), and the total RSS of
the server's processes sampled every 0.25 s (after warm-up and at the end, to see that memory stays flat).

    python benchmarks/bench_load.py                      # builds the log in /tmp (about 0.7 GB), runs 1 and 4 workers
    python benchmarks/bench_load.py --dir /tmp/load-log --keep --requests 800
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backend import RUN, build  # noqa: E402  (the backend benchmark's synthetic log)

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return resp.read()


def _datapoint_request(base: str) -> dict[str, Any]:
    """The datapoint callback's request template, from the app's own dependency list."""
    deps = json.loads(_get(base + "_dash-dependencies"))
    for dep in deps:
        if "ev-datapoint-body.children" in dep["output"]:
            return dep
    raise SystemExit("no datapoint callback in /_dash-dependencies")


def _body(dep: dict[str, Any], query: str) -> bytes:
    def entry(d: dict[str, Any]) -> dict[str, Any]:
        ident = json.loads(d["id"]) if d["id"].startswith("{") else d["id"]
        value = query if (ident, d["property"]) == ("ev-url", "search") else None
        return {"id": ident, "property": d["property"], "value": value}

    outputs = []
    for part in dep["output"].strip(".").split("..."):
        ident, _, prop = part.rpartition(".")
        outputs.append({"id": json.loads(ident) if ident.startswith("{") else ident, "property": prop.split("@")[0]})
    return json.dumps({
        "output": dep["output"], "outputs": outputs if dep["output"].startswith("..") else outputs[0],
        "inputs": [entry(d) for d in dep["inputs"]], "state": [entry(d) for d in dep.get("state", [])],
        "changedPropIds": ["ev-url.search"],
    }).encode()


def _tree_rss_mb(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def run_config(log_dir: Path, workers: int, clients: int, requests: int, datapoints: int, seed: int,
               cache_dir: Path) -> dict[str, Any]:
    port = _free_port()
    base = f"http://{HOST}:{port}/"
    server = subprocess.Popen(
        [sys.executable, "-m", "eval_viewer", "--log-dir", str(log_dir), "--host", HOST, "--port", str(port),
         "--workers", str(workers), "--cache-dir", str(cache_dir), "--rescan", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _get(base)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start: {server.stderr.read() if server.stderr else ''}")
                time.sleep(0.2)
        dep = _datapoint_request(base)
        rng = random.Random(seed)
        jobs = [rng.randrange(datapoints) for _ in range(requests)]
        lock = threading.Lock()
        latencies: list[float] = []
        errors: list[str] = []
        rss: list[tuple[float, float]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                rss.append((time.monotonic(), _tree_rss_mb(server.pid)))
                done.wait(0.25)

        def client() -> None:
            while True:
                with lock:
                    if not jobs:
                        return
                    idx = jobs.pop()
                body = _body(dep, f"?run={RUN}&split=val&epoch=0&idx={idx}")
                req = urllib.request.Request(base + "_dash-update-component", data=body,
                                             headers={"Content-Type": "application/json"})
                start = time.perf_counter()
                try:
                    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - loopback only
                        text = resp.read().decode()
                        ok = resp.status == 200 and "Internal error" not in text and "Cannot show" not in text
                except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
                    ok, text = False, f"{type(exc).__name__}: {exc}"
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if not ok:
                        errors.append(text[:200])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    mems = [m for _, m in rss]
    half = mems[len(mems) // 2:] or mems
    return {"workers": workers, "clients": clients, "requests": len(latencies), "errors": len(errors),
            "error_samples": errors[:3], "wall_s": round(wall, 2), "throughput_rps": round(len(latencies) / wall, 1),
            "p50_ms": round(pct(50)), "p95_ms": round(pct(95)), "p99_ms": round(pct(99)),
            "mean_ms": round(statistics.fmean(latencies) * 1000),
            "rss_peak_mb": round(max(mems, default=0)), "rss_after_warmup_mb": round(half[0] if half else 0),
            "rss_end_mb": round(mems[-1] if mems else 0), "cpus": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datapoints", type=int, default=20_000)
    parser.add_argument("--size-gb", type=float, default=0.7, help="bytes of pages (one epoch)")
    parser.add_argument("--page-mb", type=float, default=100)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400, help="datapoint views per configuration")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=None, help="the log (built there when missing)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-load-"))
    try:
        if not (root / RUN).is_dir():
            info = build(root, args.size_gb, args.datapoints, 1, args.page_mb)
            print(f"built {info['pages']} pages, {info['bytes'] / 1e9:.2f} GB, in {info['build_s']:.0f} s", flush=True)
        results = []
        for workers in args.workers:
            cache = Path(tempfile.mkdtemp(prefix="bench-load-cache-"))  # cold caches for each configuration
            try:
                result = run_config(root, workers, args.clients, args.requests, args.datapoints, args.seed, cache)
            finally:
                shutil.rmtree(cache, ignore_errors=True)
            results.append(result)
            print(json.dumps(result), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    finally:
        if args.dir is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
