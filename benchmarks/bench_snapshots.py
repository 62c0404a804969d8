"""What a training snapshot costs the training step: the writer's call against drawing and writing in the step.

A SAM-like batch (``--batch`` images of ``--side`` pixels, 3 objects: per-object ground truth and logits, a click and
a box per object) is handed to :class:`eval_viewer.debuggers.snapshots.SnapshotWriter` every step (``every_n_steps=1``,
so every call is a snapshot), the worst case. Printed per call, over ``--steps`` calls:

* writer: the time the step spends in ``writer(step, ...)`` when the snapshot is queued (slicing, shrinking to
  ``max_side``, copying to the CPU, queueing) and when it is dropped because ``queue_size`` snapshots still wait
  (the step never waits for them), and how many were dropped;
* naive: the same snapshot drawn and written in the step itself (what hand-written logging code does): the writer's
  own preparation plus its drawing and writing, all on the calling thread;

``python benchmarks/bench_snapshots.py [--side 1024] [--batch 8] [--steps 20]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from eval_viewer.debuggers.prompts import PromptData
from eval_viewer.debuggers.snapshots import SnapshotWriter


def inputs(batch: int, side: int) -> dict[str, object]:
    gt = torch.zeros(batch, 3, side, side)
    for k in range(3):
        lo, hi = side // 8 * (k + 1), side // 8 * (k + 3)
        gt[:, k, lo:hi, lo:hi] = 1
    prompts = [[PromptData.point([[side / 8 * (k + 2)] * 2], object_id=k) for k in range(3)]
               + [PromptData.box_prompt([side / 8, side / 8, side / 2, side / 2], object_id=0)]] * batch
    return {"image": torch.rand(batch, 3, side, side), "gt": gt, "pred": torch.randn(batch, 3, side, side),
            "prompts": prompts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    data = inputs(args.batch, args.side)
    with tempfile.TemporaryDirectory() as tmp:
        writer = SnapshotWriter(Path(tmp) / "writer", every_n_steps=1, queue_size=4)
        writer(0, **data)  # warm-up (torch's first pooling call), not counted
        writer.flush()
        queued, dropped = [], []
        for step in range(1, args.steps + 1):
            started = time.perf_counter()
            taken = writer(step, **data)
            (queued if taken else dropped).append(time.perf_counter() - started)
        started = time.perf_counter()
        writer.close()
        drain = time.perf_counter() - started
        stats = writer.stats

        naive_writer = SnapshotWriter(Path(tmp) / "naive", every_n_steps=1)
        naive = []
        for step in range(max(3, args.steps // 4)):
            started = time.perf_counter()
            job = naive_writer._job(step, data["image"], data["gt"], data["pred"], data["prompts"], None, None,
                                    None)
            naive_writer._write(job)  # what the thread does, here in the step
            naive.append(time.perf_counter() - started)
        naive_writer.close()
    print(f"batch {args.batch} x 3 x {args.side}^2, 3 objects, max_videos 4, max_side 256, {args.steps} steps")
    print(f"writer, a snapshot queued: {1e3 * statistics.median(queued):.1f} ms per call (median of {len(queued)}), "
          f"max {1e3 * max(queued):.1f} ms")
    if dropped:
        print(f"writer, dropped (queue full): {1e3 * statistics.median(dropped):.3f} ms per call "
              f"(median of {len(dropped)})")
    print(f"{stats.written} written, {stats.dropped} dropped, {drain:.2f} s to drain at close")
    print(f"naive (drawn and written in the step): {1e3 * statistics.median(naive):.1f} ms per call (median)")


if __name__ == "__main__":
    main()
