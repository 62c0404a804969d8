"""Step benchmark: the server time of one arrow press (→) on a log of 50 runs x 100 epochs against 1 run x 10 epochs,
for the current package ("after") and for commit 69621c2 ("before", whose ``LogStore.runs()`` walked the log tree
on every call), in one run.

Run from the repository root::

    python benchmarks/bench_step.py                  # 1 to 2.5 minutes on 2 cores, with the load
    python benchmarks/bench_step.py --presses 10     # a quick look

An arrow press in the browser is the ``step`` callback (the click on NEXT -> a new URL search), then the new URL fires
``sync`` (selectors), ``show`` (view switch and position) and ``render`` (the datapoint body). The requests are made by
:mod:`dash_browser` from the app's own callback map, exactly as the renderer sends them (Inputs and States with the
page's current values, ``changedPropIds``), POSTed to ``/_dash-update-component`` through Flask's test client; a press
is timed as the sum of its requests (the browser sends sync/show/render in parallel, the server does the same work).

Logs (in a temporary folder, deleted afterwards): ``big`` = 50 runs x 100 epochs, ``small`` = 1 run x 10 epochs; each
epoch has a ``validation_scores.json`` (``--datapoints`` datapoints, metrics ``loss`` and ``accuracy``) and a
``debugger/`` folder with one joblib page (a recorder record with a 3x32x32 image and two 32x32 masks, a 8x16x16
feature map and a 32x32 GradCAM map per datapoint; written once and hard-linked into every epoch) and our
``index.json``.

Each version runs in its own subprocess (``before``: ``git archive 69621c2 eval_viewer assets`` extracted to a
temporary folder, first on ``PYTHONPATH``; ``after``: the ``eval_viewer`` this interpreter imports, i.e. the
repository, or a snapshot named by ``PYTHONPATH``), which opens both logs, one app per log with prefetching off, opens the
worst datapoint of the latest epoch of run 25 (big) / run 0 (small), then alternates presses of → on the two apps, so
both sizes see the same machine load. What is warm: the OS page cache, the store's parsed scores of the shown pass,
its page index and parsed page (after the first open); every press draws a datapoint never drawn before in that
process (prefetch off, the ranking walked forward), so no view is cached. The "after" store renews its listing snapshot
in the background every 10 s (the CLI's default ``--rescan``), as it would in use.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from dash_browser import Browser  # noqa: E402  (a sibling script, not a package)

__all__ = ["main"]

BEFORE = "69621c2"
SIZES = {"small": (1, 10), "big": (50, 100)}  # runs x epochs
SHOWN_RUN = {"small": 0, "big": 25}
METRIC = "loss"
RESCAN_S = 10.0
TARGET_RATIO = 1.2
PRESS = ["step", "sync", "show", "render"]
"""The callbacks one press must fire (checked on every press); others a feature adds (the comparison's, the
training tab's) are timed with them and named in the output."""


# ---------------------------------------------------------------------------------------------------- the logs
def _datapoint(idx: int, base: dict[str, np.ndarray]) -> dict[str, Any]:
    return {
        "recorder": {
            "inputs": {"image": base["image"] + np.uint8(idx % 200)},
            "labels": {"mask": base["mask"]},
            "outputs": {"mask": (base["mask"] + np.uint8(idx % 3)) % 4},
            "meta_info": {"idx": idx, "name": f"img_{idx:05d}.png"},
        },
        "features": {"feature_map": base["fmap"] + np.float32(idx % 97)},
        "gradcam": base["cam"] + np.float16(idx % 5),
    }


def build(root: Path, datapoints: int) -> dict[str, Any]:
    """Write both logs under ``root``: one scores file, page and index.json made once, linked into every epoch."""
    import joblib

    from eval_viewer.log_format import DEBUGGER_DIR, FORMAT_VERSION, VALIDATION_SCORES, epoch_dir_name, page_name, \
        write_scores

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    master = root / "master"
    master.mkdir(parents=True)
    loss = rng.random(datapoints)
    write_scores(master / VALIDATION_SCORES, {"loss": float(loss.mean()), "accuracy": float(1 - loss.mean())},
                 {"loss": loss, "accuracy": 1 - loss})
    base = {"image": rng.integers(0, 55, (3, 32, 32), dtype=np.uint8),
            "mask": rng.integers(0, 4, (32, 32), dtype=np.uint8),
            "fmap": rng.standard_normal((8, 16, 16)).astype(np.float32),
            "cam": rng.random((32, 32)).astype(np.float16)}
    page = page_name(0)
    joblib.dump({i: _datapoint(i, base) for i in range(datapoints)}, master / page)
    index = {"format_version": FORMAT_VERSION, "rank": None,
             "pages": {page: {"indices": list(range(datapoints)), "bytes": (master / page).stat().st_size}},
             "meta": {str(i): {"name": f"img_{i:05d}.png"} for i in range(datapoints)},
             "debuggers": {"features": {"class": "bench.Features", "kinds": {"feature_map": "feature_map"}}}}
    (master / "index.json").write_text(json.dumps(index))
    (root / "worst.json").write_text(json.dumps(int(np.argmax(loss))))  # rank 1 of the loss ranking, worst first
    files = 0
    for size, (runs, epochs) in SIZES.items():
        for run in range(runs):
            for epoch in range(epochs):
                folder = root / size / f"run_{run:02d}" / epoch_dir_name(epoch)
                (folder / DEBUGGER_DIR).mkdir(parents=True)
                os.link(master / VALIDATION_SCORES, folder / VALIDATION_SCORES)
                os.link(master / page, folder / DEBUGGER_DIR / page)
                os.link(master / "index.json", folder / DEBUGGER_DIR / "index.json")
                files += 3
    return {"files": files, "page_bytes": (master / page).stat().st_size, "build_s": time.perf_counter() - started}


# ---------------------------------------------------------------------------------------------------- one version
def _start(log_dir: Path, cache: Path, size: str) -> tuple[Any, Browser, str]:
    """A store and an app on ``log_dir``, the page opened on the worst datapoint of the shown run's last epoch."""
    from eval_viewer.app import create_app, ids
    from eval_viewer.backend import LogStore

    new = hasattr(ids, "PASS")
    kwargs: dict[str, Any] = {"rescan_s": RESCAN_S} if new else {}
    store = LogStore([log_dir], cache_dir=cache, **kwargs)
    app = create_app(store, prefetch=False, rescan_s=RESCAN_S)
    run, epoch = f"run_{SHOWN_RUN[size]:02d}", SIZES[size][1] - 1
    params = [("run", run), ("split", "val")] if new else [("run", run)]
    worst = json.loads((log_dir.parent / "worst.json").read_text())
    search = "?" + urlencode([*params, ("epoch", epoch), ("metric", METRIC), ("idx", worst)])
    # Opening the link: the overview's panels are left out (hidden behind the datapoint view, and on the big log
    # they read all 5,000 passes' scores, after which the store parses every page in the background for minutes).
    browser = Browser(app, skip=lambda key: {"id": ids.SELECTION, "property": "data"} in app.callback_map[key]["inputs"])
    browser.act({(ids.RESCAN, "n_intervals"): 1})  # the page's first rescan tick: LOG_VERSION as the page holds it
    browser.act({(ids.URL, "search"): search})  # open the worst datapoint (loads scores, index, page)
    store.wait_background()
    browser.skip = lambda key: False
    return store, browser, search


def _press(browser: Browser) -> dict[str, Any]:
    from eval_viewer.app import ids

    search = browser.props.get((ids.URL, "search"))
    clicks = (browser.props.get((ids.NEXT, "n_clicks")) or 0) + 1
    requests = browser.act({(ids.NEXT, "n_clicks"): clicks})
    for r in requests:
        if b"ev-error" in r.body or b"still indexing" in r.body:
            raise RuntimeError(f"{r.output} shows an error or an unfinished index: {r.body[:600]!r}")
    names = [_name(r.output) for r in requests]
    if set(PRESS) - set(names) or search == browser.props.get((ids.URL, "search")):
        raise RuntimeError(f"a press sent {names} and went from {search!r} to "
                           f"{browser.props.get((ids.URL, 'search'))!r}; expected {PRESS} and a new datapoint")
    return {"ms": sum(r.ms for r in requests), "by": {n: r.ms for n, r in zip(names, requests)},
            "bytes": sum(r.nbytes for r in requests), "callbacks": names}


def _name(output: str) -> str:
    """The callback's name by its outputs (both versions): step, sync, show or render."""
    if output.startswith("ev-url.search@"):
        return "step"
    if output.startswith(("..ev-url.search...", "..ev-url-set.search...")):  # it writes the address through URL_SET
        return "sync"
    if "ev-position.children" in output:
        return "show"
    if "ev-datapoint-body.children" in output:
        return "render"
    return output[:40]


def phase(work: Path, presses: int, warmup: int) -> dict[str, Any]:
    import eval_viewer

    opened = {}
    for size in SIZES:
        t0 = time.perf_counter()
        opened[size] = _start(work / size, work / f"cache-{size}", size)
        opened[size] = (*opened[size], time.perf_counter() - t0)
    results: dict[str, Any] = {"package": str(Path(eval_viewer.__file__).parent), "open_s": {},
                               **{size: [] for size in SIZES}}
    for size, (_, browser, _, took) in opened.items():
        results["open_s"][size] = took
    for n in range(warmup + presses):
        for size, (_, browser, _, _) in opened.items():
            press = _press(browser)
            if n >= warmup:
                results[size].append(press)
    for store, *_ in opened.values():
        store.close()
    return results


# ---------------------------------------------------------------------------------------------------- driver
def _run_version(label: str, pythonpath: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", "--work", str(work),
           "--presses", str(args.presses), "--warmup", str(args.warmup)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{label} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _importable_root() -> Path:
    """The folder holding the ``eval_viewer`` this interpreter imports (the repository, or what ``PYTHONPATH``
    names, e.g. a ``git archive HEAD`` snapshot while the working tree has edits in progress)."""
    spec = importlib.util.find_spec("eval_viewer")
    if spec is None or spec.origin is None:
        raise RuntimeError("eval_viewer is not importable: pip install -e . or set PYTHONPATH")
    return Path(spec.origin).resolve().parent.parent


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def report(results: dict[str, dict[str, Any]], info: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"logs: small = 1 run x 10 epochs, big = 50 runs x 100 epochs; {args.datapoints} datapoints per epoch, "
          f"one page of {info['page_bytes'] / 2**10:.0f} KiB per epoch; {info['files']:,} files, written in "
          f"{info['build_s']:.1f} s")
    fired = {" -> ".join(p["callbacks"]) for result in results.values() for size in SIZES for p in result[size]}
    print(f"{args.presses} presses of → per version and log (after {args.warmup} untimed), the two logs alternating; "
          f"server time of the requests each press sent: {' | '.join(sorted(fired))}")
    print(f"{'version':8} {'log':6} {'median':>9} {'p90':>9}   {'step':>7} {'sync':>7} {'show':>7} {'render':>7}  "
          f"(medians, ms)  response")
    medians: dict[tuple[str, str], float] = {}
    for version, result in results.items():
        for size in SIZES:
            presses = result[size]
            ms = [p["ms"] for p in presses]
            medians[(version, size)] = statistics.median(ms)
            parts = "  ".join(f"{statistics.median(p['by'].get(n, 0) for p in presses):7.1f}"
                              for n in ("step", "sync", "show", "render"))
            print(f"{version:8} {size:6} {statistics.median(ms):7.1f} ms {_pct(ms, 90):6.1f} ms   {parts}"
                  f"                 {statistics.median(p['bytes'] for p in presses) / 2**10:.0f} KiB")
    print("growth, median big / median small:")
    for version in results:
        ratio = medians[(version, "big")] / medians[(version, "small")]
        note = f"  (target <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'MISSED'})" \
            if version == "after" else ""
        print(f"  {version:8} {ratio:6.2f}x{note}")
    if "before" in results:
        print(f"before / after on the big log: {medians[('before', 'big')] / medians[('after', 'big')]:.1f}x "
              f"({medians[('before', 'big')]:.0f} ms -> {medians[('after', 'big')]:.0f} ms per press)")
    for version, result in results.items():
        opened = ", ".join(f"{s} {t:.2f} s" for s, t in result["open_s"].items())
        print(f"  {version}: package {result['package']}; open store + app + first datapoint: {opened}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presses", type=int, default=40, help="timed presses per version and log")
    parser.add_argument("--warmup", type=int, default=2, help="untimed presses first")
    parser.add_argument("--datapoints", type=int, default=300, help="datapoints per epoch")
    parser.add_argument("--before", default=BEFORE, help="the commit to compare with ('' to skip)")
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--phase", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps(phase(args.work, args.presses, args.warmup)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="eval_viewer_bench_step_", dir="/tmp"))
    try:
        info = build(work, args.datapoints)
        results = {}
        if args.before:
            old = work / "before"
            old.mkdir()
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.before, "eval_viewer", "assets"],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            results["before"] = _run_version("before", old, work, args)
        results["after"] = _run_version("after", _importable_root(), work, args)
        report(results, info, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
