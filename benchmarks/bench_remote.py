"""Remote benchmark: reading one datapoint cold from an S3-compatible server on loopback against the local disk, for
the same log, in one run, with the bytes fetched and the requests made, against the naive way (fetch the whole page,
``joblib.load`` it).

Run from the repository root::

    python benchmarks/bench_remote.py                    # 150 MB in 6 pages of 25 MB (100 KiB per datapoint), about a minute
    python benchmarks/bench_remote.py --size-gb 0.05     # a quick look

The log is ``bench_backend.py``'s ``build`` (one epoch with our writer's ``index.json``; plain ``joblib.dump`` pages of
a recorder record, a feature map and a GradCAM map per datapoint), written to a temporary folder and uploaded to moto's
S3 server (``ThreadedMotoServer`` on 127.0.0.1, in its own process so it does not share this one's interpreter lock;
objects held in its memory). The same log is opened as ``LogStore("s3://...")`` and ``LogStore(local folder)``.

Three ways of reading one datapoint, each *cold*: the store's memory cache cleared before every read (scores are
re-read before the clock starts: they are loaded once per pass shown, not per click), and locally the page and cache
files dropped from the OS page cache (``posix_fadvise(DONTNEED)``):

* ``first read of a page``: no skeleton cache (a store whose skeleton store is switched off, so nothing is built in
  the background either): the page's pickle structure is parsed through range reads (64 KiB each), then the
  datapoint's arrays are read;
* ``cold, skeletons built``: the page's skeleton cache exists (built by the store's background work beforehand), so a
  read is one local skeleton lookup plus one range read per array of the datapoint;
* ``naive``: the whole page object fetched (``s3fs.cat_file``) and ``joblib.load``-ed, the datapoint taken from it;
  locally ``joblib.load(path)``.

Bytes and reads come from counting wrappers around the sources' ``read_at`` (``_FsspecFile`` remotely, ``_LocalFile``
locally); HTTP requests (HEAD, GET, LIST) from the server's own request log. Local and S3 reads alternate, so both see
the same machine load.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_backend import RUN, _array_bytes, _drop, build  # noqa: E402  (a sibling script, not a package)

__all__ = ["main"]

BUCKET = "bench-logs"
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


# ---------------------------------------------------------------------------------------------------- the server
def serve(request_log: Path) -> None:
    """Run moto's S3 server on a free loopback port, one line per request into ``request_log``; print the port and
    serve until stdin closes."""
    from moto.server import ThreadedMotoServer

    handler = logging.FileHandler(request_log)
    handler.setFormatter(logging.Formatter("%(message)s"))
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.addHandler(handler)
    werkzeug.setLevel(logging.INFO)
    werkzeug.propagate = False
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(server.get_host_and_port()[1], flush=True)
    sys.stdin.read()
    server.stop()


class Requests:
    """HTTP requests the server logged: ``'127.0.0.1 - - [date] "GET /bucket/key HTTP/1.1" 206 -'``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    _LINE = re.compile(r'"([A-Z]+) /')
    _COLOUR = re.compile(r"\x1b\[[0-9;]*m")

    def count(self) -> Counter[str]:
        text = self._COLOUR.sub("", self.path.read_text()) if self.path.exists() else ""
        return Counter(m.group(1) for m in self._LINE.finditer(text))


# ---------------------------------------------------------------------------------------------------- counting reads
class Reads:
    """Counts ``read_at`` calls and their bytes on both source kinds."""

    def __init__(self) -> None:
        from eval_viewer.backend import sources

        self.calls, self.bytes = Counter(), Counter()
        for kind, cls in (("s3", sources._FsspecFile), ("local", sources._LocalFile)):
            original = cls.read_at

            def counted(fobj: Any, offset: int, n: int, _original: Any = original, _kind: str = kind) -> bytes:
                data = _original(fobj, offset, n)
                self.calls[_kind] += 1
                self.bytes[_kind] += len(data)
                return data

            cls.read_at = counted


# ---------------------------------------------------------------------------------------------------- measuring
class Side:
    """One source of the log (local or s3) with what each read cost."""

    def __init__(self, name: str, location: str, local_root: Path, reads: Reads, requests: Requests) -> None:
        self.name, self.location, self.local_root = name, location, local_root
        self.reads, self.requests = reads, requests
        self.results: dict[str, list[dict[str, Any]]] = {}

    def _before(self) -> tuple[float, int, int, Counter[str]]:
        return time.perf_counter(), self.reads.calls[self.name], self.reads.bytes[self.name], self.requests.count()

    def _after(self, mode: str, started: tuple[float, int, int, Counter[str]], own: int, nbytes: int | None = None,
               calls: int | None = None) -> None:
        elapsed = time.perf_counter() - started[0]
        http = self.requests.count() - started[3] if self.name == "s3" else Counter()
        self.results.setdefault(mode, []).append({
            "ms": elapsed * 1000,
            "calls": calls if calls is not None else self.reads.calls[self.name] - started[1],
            "bytes": nbytes if nbytes is not None else self.reads.bytes[self.name] - started[2],
            "http": dict(http), "own": own,
        })

    def drop_os_cache(self, cache: Path) -> None:
        if self.name == "local":
            os.sync()
            _drop([p for p in [*self.local_root.rglob("*.pkl"), *cache.rglob("*")] if p.is_file()])

    def store_read(self, mode: str, store: Any, key: Any, idx: int, cache: Path) -> None:
        store.clear_cache()
        store.scores(key)  # once per pass shown, not per click: outside the clock
        self.drop_os_cache(cache)
        started = self._before()
        record = store.datapoint(key, idx)
        own = _array_bytes(record)
        if record.problems:
            raise RuntimeError(f"{self.name}: {record.problems}")
        self._after(mode, started, own)

    def naive_read(self, fs: Any, page: str, idx: int) -> None:
        import joblib

        local_page = self.local_root / page
        self.drop_os_cache(Path("/nonexistent"))
        started = self._before()
        if self.name == "s3":
            data = fs.cat_file(f"{BUCKET}/{page}")
            content = joblib.load(io.BytesIO(data))
            nbytes = len(data)
        else:
            content = joblib.load(local_page)
            nbytes = local_page.stat().st_size
        value = content[idx]
        own = sum(a.nbytes for a in _leaves(value) if isinstance(a, np.ndarray))
        self._after("naive", started, own, nbytes=nbytes, calls=1)
        del content, value


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    return [value]


def _page_of(local_root: Path) -> dict[int, str]:
    index = json.loads((local_root / RUN / "epoch_0" / "debugger" / "index.json").read_text())
    return {i: f"{RUN}/epoch_0/debugger/{name}" for name, page in index["pages"].items() for i in page["indices"]}


def measure(local_root: Path, url: str, work: Path, args: argparse.Namespace, requests: Requests) -> dict[str, Any]:
    import s3fs

    from eval_viewer.backend import LogStore, PassKey

    reads = Reads()
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    sides = [Side("local", str(local_root), local_root, reads, requests),
             Side("s3", url, local_root, reads, requests)]
    key = PassKey(RUN, "val", 0)
    page_of = _page_of(local_root)
    pages = sorted(set(page_of.values()), key=lambda p: int(p.rsplit("_", 1)[-1].split(".")[0]))
    rng = random.Random(args.seed)
    opened: dict[str, float] = {}

    # 1. the very first read of a page: no skeleton, the page's structure parsed over range reads
    stores = {}
    for side in sides:
        cache = work / f"cache-noskel-{side.name}"
        started = time.perf_counter()
        store = LogStore([side.location], cache_dir=cache, rescan_s=0)
        store._skeletons = None  # benchmark only: no skeleton cache, so no background parse either
        store.wait_for_index(key)
        opened[side.name] = time.perf_counter() - started
        stores[side.name] = (store, cache)
    by_page = {p: [i for i, q in page_of.items() if q == p] for p in pages}
    for n in range(args.first_reads):
        idx = rng.choice(by_page[pages[n % len(pages)]])
        for side in sides:
            store, cache = stores[side.name]
            side.store_read("first read of a page", store, key, idx, cache)
    for store, _ in stores.values():
        store.close()

    # 2. cold reads once the skeleton caches exist
    stores = {}
    for side in sides:
        cache = work / f"cache-{side.name}"
        store = LogStore([side.location], cache_dir=cache, rescan_s=0)
        store.wait_for_index(key)
        store.wait_background()  # every page's skeleton file written
        stores[side.name] = (store, cache)
    for _ in range(args.reads):
        idx = rng.randrange(len(page_of))
        for side in sides:
            store, cache = stores[side.name]
            side.store_read("cold, skeletons built", store, key, idx, cache)
    for store, _ in stores.values():
        store.close()

    # the server's round trip, to read the figures above by: one 1-byte range request (as read_at makes it)
    sample = f"{BUCKET}/{pages[0]}"
    latency = []
    for _ in range(20):
        started_rt = time.perf_counter()
        fs.cat_file(sample, start=0, end=1)
        latency.append((time.perf_counter() - started_rt) * 1000)

    # 3. naive: the whole page fetched and unpickled
    for _ in range(args.naive_reads):
        idx = rng.randrange(len(page_of))
        for side in sides:
            side.naive_read(fs, page_of[idx], idx)
    return {"opened_s": opened, "latency_ms": latency, "results": {side.name: side.results for side in sides}}


# ---------------------------------------------------------------------------------------------------- report
def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def _kib(n: float) -> str:
    return f"{n / 2**10:,.0f} KiB" if n < 10 * 2**20 else f"{n / 2**20:,.1f} MiB"


def report(info: dict[str, Any], measured: dict[str, Any], args: argparse.Namespace, upload_s: float) -> None:
    results = measured["results"]
    print(f"log: {info['bytes'] / 1e6:.0f} MB of pages, {args.datapoints} datapoints in {info['pages']} pages of "
          f"~{args.page_mb:g} MB ({info['per_page']} datapoints each), {info['datapoint_bytes'] / 2**10:.1f} KiB of "
          f"arrays per datapoint; written in {info['build_s']:.1f} s, uploaded to moto in {upload_s:.1f} s")
    print("open store + index ready (index.json): " + ", ".join(
        f"{side} {t * 1000:.0f} ms" for side, t in measured["opened_s"].items()))
    print(f"{'read one datapoint, cold':26} {'source':6} {'n':>3} {'p50':>9} {'p90':>9}  {'fetched (p50)':>14}  "
          f"{'read_at calls':>13}  {'HTTP requests (p50)':20}")
    p50: dict[tuple[str, str], float] = {}
    fetched: dict[tuple[str, str], float] = {}
    for mode in ("first read of a page", "cold, skeletons built", "naive"):
        for side in ("local", "s3"):
            rows = results[side][mode]
            ms = [r["ms"] for r in rows]
            p50[(mode, side)] = statistics.median(ms)
            fetched[(mode, side)] = statistics.median(r["bytes"] for r in rows)
            http = ""
            if side == "s3":
                methods = sorted({m for r in rows for m in r["http"]})
                http = ", ".join(f"{m} {statistics.median(r['http'].get(m, 0) for r in rows):g}" for m in methods)
            calls = "1 load" if mode == "naive" else f"{statistics.median(r['calls'] for r in rows):g}"
            print(f"{mode:26} {side:6} {len(rows):3d} {statistics.median(ms):7.1f} ms {_pct(ms, 90):6.1f} ms  "
                  f"{_kib(fetched[(mode, side)]):>14}  {calls:>13}  {http}")
    own = statistics.median(r["own"] for r in results["s3"]["cold, skeletons built"])
    print(f"the datapoint's own arrays: {_kib(own)} (median); one 1-byte range GET to the server: "
          f"p50 {statistics.median(measured['latency_ms']):.1f} ms (n={len(measured['latency_ms'])})")
    print("ratios (p50):")
    for side in ("local", "s3"):
        naive, cold, first = (p50[(m, side)] for m in ("naive", "cold, skeletons built", "first read of a page"))
        print(f"  {side:5}: naive / cold = {naive / cold:6.1f}x time, "
              f"{fetched[('naive', side)] / fetched[('cold, skeletons built', side)]:6.0f}x bytes;  "
              f"naive / first read = {naive / first:5.2f}x time, "
              f"{fetched[('naive', side)] / fetched[('first read of a page', side)]:5.1f}x bytes")
    for mode in ("cold, skeletons built", "first read of a page", "naive"):
        print(f"  s3 / local, {mode:22}: {p50[(mode, 's3')] / p50[(mode, 'local')]:5.1f}x time")


# ---------------------------------------------------------------------------------------------------- driver
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=0.15, help="bytes of pages")
    parser.add_argument("--datapoints", type=int, default=1500)
    parser.add_argument("--page-mb", type=float, default=25)
    parser.add_argument("--reads", type=int, default=30, help="cold reads with skeletons, per source")
    parser.add_argument("--first-reads", type=int, default=6, help="first reads of a page (parse), per source")
    parser.add_argument("--naive-reads", type=int, default=5, help="naive reads (whole page), per source")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    work = Path(tempfile.mkdtemp(prefix="eval_viewer_bench_remote_", dir="/tmp"))
    server = None
    try:
        local_root = work / "log"
        info = build(local_root, args.size_gb, args.datapoints, 1, args.page_mb)
        request_log = work / "requests.log"
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(request_log)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=dict(os.environ, **ENV))
        port = int(server.stdout.readline())
        os.environ.update(ENV, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
        import s3fs

        started = time.perf_counter()
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir(BUCKET)
        for path in sorted(p for p in local_root.rglob("*") if p.is_file()):
            fs.pipe_file(f"{BUCKET}/{path.relative_to(local_root).as_posix()}", path.read_bytes())
        upload_s = time.perf_counter() - started
        measured = measure(local_root, f"s3://{BUCKET}", work, args, Requests(request_log))
        report(info, measured, args, upload_s)
    finally:
        if server is not None:
            server.stdin.close()
            server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
