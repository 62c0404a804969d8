"""SAM2 capture benchmark: forward time with capture off, disabled and on, and bytes written per image, in one run.

Run from the repository root (``transformers`` needed; random weights from the default ``Sam2Config``, no download)::

    python benchmarks/bench_capture_sam2.py                          # 1024 px, batch 2, CPU: a few minutes
    python benchmarks/bench_capture_sam2.py --device cuda --reps 10  # where a GPU is lent

The model is ``Sam2Model`` (Hiera image encoder with its 12 windowed / q-pooled / global attention blocks, FPN neck,
prompt encoder, two-way mask decoder with 7 attention modules: 19 attention modules), batch of ``--batch`` images
with ``--prompts`` point prompts each. Three modes are interleaved round by round (so drift of a shared machine hits
all alike) and medians reported:

    (a) no debugger;
    (b) a SequentialDebugger with an AttentionDebugger (default arguments: 256 queries, top-8 keys, maps within
        96 KiB per module and image) on each of the 19 modules, disabled and called every batch all the same;
    (c) the same debugger enabled: forward + capture call, then ``save_all`` (pages fsynced).

It also checks what the issue found broken: each datapoint's windowed-attention map is its own (the two images'
maps differ), and reports the bytes of the pages per image, per module kind and part (maps, top-k rows, summaries),
and which form each module's value got under the budget.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import torch

from eval_viewer.debuggers import AttentionDebugger, SequentialDebugger

__all__ = ["main"]

_MB = 1024 * 1024


def _model(device: str, size: int) -> torch.nn.Module:
    from transformers import Sam2Config, Sam2Model

    config = Sam2Config()
    config.vision_config.backbone_config._attn_implementation = "sdpa"
    if size != 1024:  # the default config's feature sizes are for 1024 px: scale them (stride 4, 8, 16)
        config.vision_config.backbone_config.image_size = [size, size]
        config.vision_config.backbone_feature_sizes = [[size // s, size // s] for s in (4, 8, 16)]
        config.prompt_encoder_config.image_size = size
    torch.manual_seed(0)
    return Sam2Model(config).eval().to(device)


def _attention_modules(model: torch.nn.Module) -> list[str]:
    kinds = ("Sam2MultiScaleAttention", "Sam2Attention")
    return [name for name, module in model.named_modules() if type(module).__name__ in kinds]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 8


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="image side (a multiple of 64; feature sizes scaled)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=2, help="point prompts per image")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--float16", action="store_true", help="store attention maps as float16")
    parser.add_argument("--max-bytes", type=int, default=None,
                        help="AttentionDebugger max_bytes per module and image (default: the debugger's default)")
    parser.add_argument("--top-k", type=int, default=None, help="AttentionDebugger top_k (default: its default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    model = _model(args.device, args.size)
    names = _attention_modules(model)
    torch.manual_seed(1)
    pixels = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
    points = torch.randint(0, args.size, (args.batch, args.prompts, 1, 2), device=args.device).float()
    labels = torch.ones(args.batch, args.prompts, 1, dtype=torch.long, device=args.device)
    extra: dict[str, Any] = {"dtype": torch.float16} if args.float16 else {}
    if args.max_bytes is not None:
        extra["max_bytes"] = args.max_bytes
    if args.top_k is not None:
        extra["top_k"] = args.top_k
    entries = [{"name": name, "debugger_config": {"class": AttentionDebugger, "args": {"layer_name": name, **extra}}}
               for name in names]
    out_root = Path(tempfile.mkdtemp(prefix="bench_sam2_"))
    debugger = SequentialDebugger(entries, model)

    def forward() -> Any:
        with torch.no_grad():
            return model(pixel_values=pixels, input_points=points, input_labels=labels).pred_masks

    batch = {"inputs": pixels, "meta_info": {"idx": list(range(args.batch))}}
    forward()  # warm-up
    times: dict[str, list[float]] = {"off": [], "disabled": [], "on": [], "on+save": []}
    try:
        for rep in range(args.reps):
            _sync(args.device)
            started = time.perf_counter()
            forward()
            _sync(args.device)
            times["off"].append(time.perf_counter() - started)

            started = time.perf_counter()
            forward()
            debugger(batch, model)
            _sync(args.device)
            times["disabled"].append(time.perf_counter() - started)

            folder = out_root / f"rep{rep}"
            debugger.start_epoch(folder)
            started = time.perf_counter()
            outputs = forward()
            debugger({**batch, "outputs": outputs}, model)
            _sync(args.device)
            times["on"].append(time.perf_counter() - started)
            debugger.save_all()
            times["on+save"].append(time.perf_counter() - started)
            debugger.enabled = False
        page: dict[int, dict[str, Any]] = {}
        for path in sorted(folder.glob("page_*.pkl")):
            page.update(joblib.load(path))
        written = sum(p.stat().st_size for p in folder.glob("*") if p.is_file())
    finally:
        debugger.close()
    _report(args, names, times, page, written)
    shutil.rmtree(out_root, ignore_errors=True)


def _report(args: argparse.Namespace, names: list[str], times: dict[str, list[float]],
            page: dict[int, dict[str, Any]], written: int) -> None:
    median = {mode: statistics.median(values) for mode, values in times.items()}
    print(f"SAM2 (default Sam2Config, random weights), {args.size} px, batch {args.batch}, {args.prompts} prompts, "
          f"{args.device}, {len(names)} attention modules, {args.reps} rounds (medians)")
    for mode in ("off", "disabled", "on", "on+save"):
        overhead = 100 * (median[mode] / median["off"] - 1)
        print(f"  {mode:9s} {median[mode]:8.3f} s per batch   ({overhead:+.1f} % vs off)")
    print(f"  pages on disk: {written / _MB:.2f} MB for {len(page)} images = {written / _MB / len(page):.2f} MB/image")
    first = page[min(page)]
    for kind in ("encoder", "mask_decoder"):
        mine = [n for n in names if ("vision_encoder" in n) == (kind == "encoder")]
        parts = {part: sum(_nbytes(first[n]["attention"].get(part, {})) for n in mine)
                 for part in ("weights", "top_k", "summary")}
        forms = [first[n]["attention"]["form"] for n in mine]
        counted = ", ".join(f"{forms.count(f)} {f}" for f in ("map", "top_k") if f in forms)
        print(f"    {kind:13s} {sum(_nbytes(first[n]) for n in mine) / _MB:6.2f} MB/image in memory "
              f"(maps {parts['weights'] / _MB:.2f}, top-k {parts['top_k'] / _MB:.2f}, summaries "
              f"{parts['summary'] / _MB:.3f}); forms: {counted}")
    attention = first[names[0]]["attention"]
    kept = attention.get("weights", attention.get("top_k", {}).get("values"))
    layout = {k: v for k, v in attention["windows"].items() if k not in ("key_window_origin", "order")}
    print(f"  {names[0]}: form {attention['form']}, per image {kept.shape}, windows {layout}")
    if len(page) > 1:
        other = page[max(page)][names[0]]["attention"]
        mine = other.get("weights", other.get("top_k", {}).get("values"))
        print(f"  datapoints' own windows: max |image0 - image1| = {float(np.abs(kept - mine).max()):.3g} "
              "(0 would mean every datapoint got the same windows)")


if __name__ == "__main__":
    main()
