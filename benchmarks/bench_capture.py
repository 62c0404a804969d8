"""Capture benchmark: what the SequentialDebugger costs the eval loop, and how fast its writer fills the disk.

Run from the repository root::

    python benchmarks/bench_capture.py            # defaults finish in about two minutes on 2 CPU cores

Part 1 times one eval pass of a small conv net on CPU over synthetic batches, interleaving three modes round by round
(so drift of a shared machine hits all three alike) and reports medians:

    (a) no debugger;
    (b) a SequentialDebugger with forward debuggers on several layers, disabled (called every batch all the same);
    (c) the same debugger enabled, keeping every hooked layer's output and writing pages (loop time, then loop +
        save_all).

Part 2 pushes ``--write-mb`` of arrays through the whole capture path (snapshot, split, numpy, pages with fsync,
index) and compares its sustained MB/s with a plain sequential write of the same bytes to the same folder with one
fsync at the end (dd-like), measured before and after in the same run. It also reports the longest time one call
waited on the writer's bounded queue.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eval_viewer.debuggers import BaseDebugger, ForwardDebugger, SequentialDebugger

__all__ = ["main"]

_MB = 1024 * 1024


class KeepOutput(ForwardDebugger):
    """A feature-map style debugger: keeps the hooked layer's whole output."""

    def process_forward(self, module: torch.nn.Module, input: Any, output: Any) -> Any:
        return {"feature_map": output.detach()}


class Payload(BaseDebugger):
    """Returns a prepared batch of arrays, to drive the writer at full speed without a model in the way."""

    def __init__(self, batch: torch.Tensor) -> None:
        self.batch = batch

    def __call__(self, datapoint: Any, model: Any) -> Any:
        return {"feature_map": self.batch}


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.LazyLinear(10),
    ).eval()


HOOKED = ["0", "2", "5", "8"]


def eval_pass(model: torch.nn.Module, batches: list[dict[str, Any]], debugger: SequentialDebugger | None) -> float:
    """One eval loop, as a trainer's validation would run it; the seconds it took."""
    start = time.perf_counter()
    with torch.no_grad():
        for batch in batches:
            batch["outputs"] = model(batch["inputs"])
            if debugger is not None:
                batch["debug"] = debugger(batch, model)
    return time.perf_counter() - start


def disabled_call_ns(debugger: SequentialDebugger, model: torch.nn.Module, batch: dict[str, Any]) -> float:
    """Nanoseconds one call of a disabled debugger takes (a tight loop; the only work (b) adds to (a))."""
    debugger.enabled = False
    n = 200_000
    start = time.perf_counter_ns()
    for _ in range(n):
        debugger(batch, model)
    return (time.perf_counter_ns() - start) / n


def bench_overhead(args: argparse.Namespace, root: Path) -> None:
    torch.manual_seed(0)
    model = make_model()
    batches = []
    for b in range(args.batches):
        idx = torch.arange(b * args.batch_size, (b + 1) * args.batch_size)
        batches.append({"inputs": torch.randn(args.batch_size, 3, args.image_size, args.image_size),
                        "meta_info": {"idx": idx}})
    eval_pass(model, batches[:1], None)  # materialise the lazy layer
    cfg = [{"name": f"fm{layer}", "debugger_config": {"class": KeepOutput, "args": {"layer_name": layer}}}
           for layer in HOOKED]
    times: dict[str, list[float]] = {"a": [], "b": [], "c": [], "c+save": []}
    paired_b: list[float] = []
    paired_c: list[float] = []
    paired_save: list[float] = []
    captured_mb = 0.0
    with SequentialDebugger(cfg, model, page_size_mb=args.page_mb, max_queue_mb=args.queue_mb) as dbg:
        for _ in range(args.warmup):
            eval_pass(model, batches, None)
        for round_ in range(args.rounds):
            with_capture = round_ % args.capture_every == 0
            order = ["a", "b", "c"] if with_capture else ["a", "b"]
            random.Random(round_).shuffle(order)
            this: dict[str, float] = {}
            for mode in order:
                if mode == "a":
                    this["a"] = eval_pass(model, batches, None)
                elif mode == "b":
                    this["b"] = eval_pass(model, batches, dbg)
                    assert not any(m._forward_hooks for m in model.modules()), "a disabled debugger left a hook"
                else:
                    out = root / f"epoch_{round_}" / "debugger"
                    dbg.start_epoch(out)
                    start = time.perf_counter()
                    this["c"] = eval_pass(model, batches, dbg)
                    dbg.save_all()
                    this["c+save"] = time.perf_counter() - start
                    dbg.enabled = False
                    captured_mb = sum(p.stat().st_size for p in out.glob("page_*.pkl")) / _MB
                    shutil.rmtree(out.parent)
            for key, value in this.items():
                times[key].append(value)
            paired_b.append(this["b"] / this["a"])
            if with_capture:
                paired_c.append(this["c"] / this["a"])
                paired_save.append(this["c+save"] / this["a"])
        call_ns = disabled_call_ns(dbg, model, batches[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    q1, _, q3 = statistics.quantiles(paired_b, n=4)
    print(f"eval loop: {args.batches} batches of {args.batch_size}x3x{args.image_size}x{args.image_size}, "
          f"{len(HOOKED)} hooked layers, {args.rounds} interleaved rounds ((c) in {len(paired_c)}), "
          f"torch threads {torch.get_num_threads()}")
    print(f"  (a) no debugger         median {med['a'] * 1e3:7.1f} ms per pass")
    print(f"  (b) disabled debuggers  median {med['b'] * 1e3:7.1f} ms   (b)/(a) = {statistics.median(paired_b):.4f} "
          f"(median of paired ratios; quartiles {q1:.4f} .. {q3:.4f})")
    print(f"      a disabled call costs {call_ns:.0f} ns; x {args.batches} calls = "
          f"{call_ns * args.batches / (med['a'] * 1e9) * 100:.4f} % of a pass; hooks attached while disabled: 0")
    print(f"  (c) capture on          median {med['c'] * 1e3:7.1f} ms   (c)/(a) = {statistics.median(paired_c):.3f} "
          f"(loop only), {statistics.median(paired_save):.3f} with save_all; {captured_mb:.1f} MB of pages per pass")


def disk_write(path: Path, total: int, chunk: bytes) -> float:
    """A plain sequential write of ``total`` bytes with one fsync at the end (what ``dd conv=fsync`` does); MB/s."""
    start = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        written = 0
        while written < total:
            written += f.write(chunk[: min(len(chunk), total - written)])
        os.fsync(f.fileno())
    seconds = time.perf_counter() - start
    path.unlink()
    return total / _MB / seconds


def writer_pass(args: argparse.Namespace, root: Path, per_batch: torch.Tensor, n_batches: int) -> dict[str, float]:
    """Push ``n_batches`` calls through a capturing SequentialDebugger as fast as the writer lets them in."""
    cfg = [{"name": "payload", "debugger_config": {"class": Payload, "args": {"batch": per_batch}}}]
    model = torch.nn.Identity()
    with SequentialDebugger(cfg, model, page_size_mb=args.page_mb, max_queue_mb=args.queue_mb) as dbg:
        out = root / "writer" / "debugger"
        dbg.start_epoch(out)
        start = time.perf_counter()
        for b in range(n_batches):
            dbg({"meta_info": {"idx": list(range(b * args.write_batch, (b + 1) * args.write_batch))}}, model)
        paths = dbg.save_all()
        seconds = time.perf_counter() - start
        stats = dbg.stats
    written = sum(p.stat().st_size for p in paths)
    shutil.rmtree(out.parent)
    return {"mbps": written / _MB / seconds, "mb": written / _MB, "pages": len(paths), "stall": stats.max_stall_s}


def bench_writer(args: argparse.Namespace, root: Path) -> None:
    rng = np.random.default_rng(0)
    per_batch = torch.from_numpy(rng.standard_normal((args.write_batch, 64, 32, 32), dtype=np.float32))
    batch_bytes = per_batch.numel() * 4
    n_batches = max(1, int(args.write_mb * _MB) // batch_bytes)
    total = n_batches * batch_bytes
    chunk = rng.integers(0, 256, 4 * _MB, dtype=np.uint8).tobytes()
    disk: list[float] = []
    runs: list[dict[str, float]] = []
    for _ in range(args.write_repeats):  # alternate, so the shared disk's drift hits both alike
        disk.append(disk_write(root / "dd.bin", total, chunk))
        runs.append(writer_pass(args, root, per_batch, n_batches))
    ratios = [r["mbps"] / d for r, d in zip(runs, disk)]
    mbps = statistics.median(r["mbps"] for r in runs)
    stall = max(r["stall"] for r in runs)
    print(f"writer: {runs[0]['mb']:.0f} MB per run in {runs[0]['pages']:.0f} pages of <= {args.page_mb:g} MB, "
          f"queue bound {args.queue_mb:g} MB, {args.write_repeats} runs alternating with the disk test")
    print(f"  writer sustained      median {mbps:6.1f} MB/s  {[round(r['mbps']) for r in runs]}")
    print(f"  disk (dd-like, fsync) median {statistics.median(disk):6.1f} MB/s  {[round(d) for d in disk]}")
    print(f"  writer/disk           median {statistics.median(ratios):6.2f}       {[round(r, 2) for r in ratios]}")
    print(f"  longest eval-loop stall {stall * 1e3:.0f} ms; one queue bound drains in "
          f"{args.queue_mb / mbps * 1e3:.0f} ms at the median speed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=10, help="batches per eval pass")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=60, help="interleaved rounds of (a) and (b)")
    parser.add_argument("--capture-every", type=int, default=4, help="run (c) in every N-th round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the writer needs a core too)")
    parser.add_argument("--page-mb", type=float, default=64)
    parser.add_argument("--queue-mb", type=float, default=256)
    parser.add_argument("--write-mb", type=float, default=512, help="MB pushed through the writer in part 2")
    parser.add_argument("--write-repeats", type=int, default=5)
    parser.add_argument("--write-batch", type=int, default=16, help="datapoints per call in part 2 (256 KiB each)")
    parser.add_argument("--dir", type=Path, default=None, help="folder on the disk to test (default: system temp)")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-writer", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench_capture_", dir=args.dir))
    print(f"folder: {root}")
    try:
        if not args.skip_overhead:
            bench_overhead(args, root)
        if not args.skip_writer:
            bench_writer(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
