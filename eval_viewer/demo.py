"""The example run: a tiny real model, trained on the CPU in seconds, captured with the built-in debuggers.

``python -m eval_viewer.demo --out DIR`` writes::

    DIR/trainer_run/epoch_N/validation_scores.json      every epoch
    DIR/trainer_run/epoch_N/debugger/                   the capture epochs (checkpoint_method)
    DIR/trainer_run/train/step_N/                       training snapshots every ``snapshot_every`` steps
    DIR/evaluator_run/evaluation_scores.json            the final model on a noisier test set
    DIR/evaluator_run/debugger/
    DIR/quantized_run/evaluation_scores.json            the same final model, int8 fake-quantized, same test set
    DIR/quantized_run/debugger/

The task is segmenting synthetic shapes (background, circle, square, triangle) on noisy 48x48 images; the model is a
small conv encoder, one self-attention block over the 6x6 feature grid (``F.scaled_dot_product_attention``, so the
attention debugger has to recover the maps from q and k) and a decoder with skip connections. Everything is
deterministic by ``--seed``: regenerating gives the same scores.

``quantized_run`` is the full-precision/quantized pair to compare (:func:`fake_quantize`): every conv and linear layer
gets per-output-channel symmetric int8 weights and int8 inputs (per-tensor, symmetric, static scales calibrated on the
validation set, which is less noisy than the test set: values beyond the calibrated range clip, as in deployment), and
the attention inputs (q, k, v, the output of ``attention.qkv``) are int8 too; rounding passes gradients straight
through so GradCAM still works.

The trainer run also holds training snapshots (:class:`~eval_viewer.debuggers.SnapshotWriter`, the app's Training tab):
every ``snapshot_every`` optimizer steps, the first four validation datapoints with illustrative prompts (a click per
shape, a box around the first, a negative click on the background; the model itself takes none), their ground truth
and the model's prediction. The snapshot forward runs in eval mode under ``no_grad`` on that fixed batch, between two
steps, and draws nothing from any random generator, so training, the scores and the captured pages are the same with
or without snapshots.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, default_collate

from eval_viewer.debuggers.builtins import (
    ActivationStatsDebugger,
    AttentionDebugger,
    DatapointRecorder,
    FeatureMapDebugger,
    GradCAMDebugger,
    LayerOutputDebugger,
)
from eval_viewer.debuggers.loop import evaluate_run, train
from eval_viewer.debuggers.prompts import PromptData
from eval_viewer.debuggers.snapshots import SnapshotWriter

__all__ = ["CLASSES", "make_shapes", "ShapesDataset", "TinySegNet", "segmentation_metrics", "debuggers_config",
           "fake_quantize", "snapshot_prompts", "SnapshotLoader", "generate", "main"]

logger = logging.getLogger(__name__)

CLASSES = ("background", "circle", "square", "triangle")
_HUES = {1: np.array([0.85, 0.3, 0.3]), 2: np.array([0.3, 0.8, 0.35]), 3: np.array([0.3, 0.4, 0.85])}
"""Class-dependent but widely overlapping shape colours: a cue, not an answer, so a tiny model learns in seconds and
still fails on shapes of the "wrong" colour (the failures the viewer is for)."""
SIZE = 48


def make_shapes(count: int, seed: int, noise: tuple[float, float] = (0.02, 0.12), size: int = SIZE) -> tuple[
        np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """``count`` images ``(N, 3, size, size)`` in [0, 1], masks ``(N, size, size)`` and scalar meta_info per image.

    One to three shapes of random type, size and colour (see ``_HUES``) on a noisy random background; later shapes
    occlude earlier ones. Deterministic by ``seed``.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((count, 3, size, size), np.float32)
    masks = np.zeros((count, size, size), np.int64)
    meta: list[dict[str, Any]] = []
    for n in range(count):
        background = rng.uniform(0.1, 0.9, 3).astype(np.float32)
        sigma = float(rng.uniform(*noise))
        image = background[:, None, None] + rng.normal(0, sigma, (3, size, size)).astype(np.float32)
        kinds = rng.integers(1, 4, int(rng.integers(1, 4)))
        painted = 0
        for kind in kinds:
            r = rng.uniform(5, 11)
            cx, cy = rng.uniform(r, size - r, 2)
            if kind == 1:
                inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            elif kind == 2:
                inside = (np.abs(xx - cx) <= 0.85 * r) & (np.abs(yy - cy) <= 0.85 * r)
            else:  # apex up: below the two slanted edges and above the base
                inside = (yy <= cy + 0.8 * r) & (np.abs(xx - cx) <= (yy - (cy - r)) * r / (1.8 * r))
            colour = np.clip(_HUES[kind] + rng.uniform(-0.4, 0.4, 3), 0, 1).astype(np.float32)
            if np.abs(colour - background).max() < 0.35:  # keep every shape visible
                colour = np.where(background > 0.5, background - 0.45, background + 0.45).astype(np.float32)
            image[:, inside] = colour[:, None] + rng.normal(0, sigma, (3, int(inside.sum()))).astype(np.float32)
            masks[n][inside] = kind
            painted += int(inside.sum())
        images[n] = np.clip(image, 0, 1)
        areas = [int((masks[n] == k).sum()) for k in sorted(set(kinds.tolist()))]
        meta.append({
            "num_shapes": int(len(kinds)),
            "shapes": ",".join(CLASSES[k] for k in kinds),
            "noise": round(sigma, 4),
            "background": round(float(background.mean()), 4),
            "smallest_area": int(min(areas)),
            "occluded": bool(int((masks[n] > 0).sum()) < painted),
        })
    return images, masks, meta


class ShapesDataset(Dataset):
    """Datapoints in the eval loop's format: ``{"inputs": {"image"}, "labels": {"mask"}, "meta_info": {"idx", ...}}``."""

    def __init__(self, count: int, seed: int, noise: tuple[float, float] = (0.02, 0.12)) -> None:
        images, masks, self.meta = make_shapes(count, seed, noise)
        self.images, self.masks = torch.from_numpy(images), torch.from_numpy(masks)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return {"inputs": {"image": self.images[idx]}, "labels": {"mask": self.masks[idx]},
                "meta_info": {"idx": idx, **self.meta[idx]}}


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(4, c_out), nn.ReLU())


class AttentionBlock(nn.Module):
    """Pre-norm multi-head self-attention over the feature grid, via the fused kernel (no weights materialised)."""

    def __init__(self, dim: int, heads: int, grid: int) -> None:
        super().__init__()
        self.heads = heads
        self.pos = nn.Parameter(torch.zeros(1, grid * grid, dim))
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2) + self.pos
        q, k, v = self.qkv(self.norm(tokens)).reshape(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        return (tokens + self.proj(attended)).transpose(1, 2).reshape(b, c, h, w)


class TinySegNet(nn.Module):
    """Conv encoder (48 -> 6 px) -> attention block -> decoder with skips -> per-pixel class logits."""

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.encoder = nn.Sequential(_conv(3, 16), _conv(16, 24, 2), _conv(24, 32, 2), _conv(32, 48, 2))
        self.attention = AttentionBlock(48, heads=2, grid=SIZE // 8)
        self.decoder = nn.ModuleList([_conv(48 + 32, 32), _conv(32 + 24, 24), _conv(24 + 16, 16)])
        self.head = nn.Conv2d(16, num_classes, 1)

    def forward(self, inputs: dict[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        x = inputs["image"] if isinstance(inputs, dict) else inputs
        x = (x - 0.5) / 0.25
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = self.attention(x)
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip], dim=1))
        return self.head(x)


def segmentation_metrics(logits: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per datapoint: mIoU, pixel accuracy, per-class IoU (NaN where a class is in neither mask) and the loss."""
    target = labels["mask"]
    predicted = logits.argmax(dim=1)
    classes = torch.arange(logits.shape[1]).view(1, -1, 1, 1)
    pred_c, true_c = predicted.unsqueeze(1) == classes, target.unsqueeze(1) == classes
    inter = (pred_c & true_c).flatten(2).sum(-1).float()
    union = (pred_c | true_c).flatten(2).sum(-1).float()
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(union, float("nan")))
    return {
        "miou": iou.nanmean(dim=1),
        "pixel_accuracy": (predicted == target).flatten(1).float().mean(dim=1),
        "iou": iou,
        "loss": F.cross_entropy(logits, target, reduction="none").flatten(1).mean(dim=1),
    }


def debuggers_config() -> list[dict[str, Any]]:
    """The demo's SequentialDebugger config: one of each built-in kind, sized to keep the example a few MB."""
    half = torch.float16

    def entry(name: str, cls: type, **args: Any) -> dict[str, Any]:
        return {"name": name, "debugger_config": {"class": cls, "args": args}}

    return [
        entry("record", DatapointRecorder, max_side=SIZE),
        entry("encoder_features", FeatureMapDebugger, layer_name="encoder.2", max_channels=8, max_side=16, dtype=half),
        entry("bottleneck_stats", ActivationStatsDebugger, layer_name="encoder.3"),
        entry("attention_output", LayerOutputDebugger, layer_name="attention", downsample_factor=2, dtype=half),
        entry("attention", AttentionDebugger, layer_name="attention", max_tokens=64, dtype=half),
        entry("gradcam", GradCAMDebugger, target_layer="decoder.0", dtype=half),
    ]


def snapshot_prompts(mask: torch.Tensor) -> list[PromptData]:
    """Prompts to draw on a training snapshot of ``mask`` (H, W) class ids: a positive click at each shape's centre
    (object = class id - 1, so it shares the class's colour), a box around the first shape and a negative click on
    the background near the lower left. Deterministic: computed from the mask alone."""
    prompts: list[PromptData] = []
    for cls in torch.unique(mask).tolist():
        if cls == 0:
            continue
        ys, xs = torch.nonzero(mask == cls, as_tuple=True)
        prompts.append(PromptData.point([[float(xs.float().mean()), float(ys.float().mean())]], labels=[1],
                                        object_id=cls - 1))
        if not any(p.type == "box" for p in prompts):
            prompts.append(PromptData.box_prompt([xs.min(), ys.min(), xs.max(), ys.max()], object_id=cls - 1))
    by, bx = torch.nonzero(mask == 0, as_tuple=True)
    if len(bx):
        near = torch.argmin((bx - 0.2 * mask.shape[1]) ** 2 + (by - 0.8 * mask.shape[0]) ** 2)
        prompts.append(PromptData.point([[float(bx[near]), float(by[near])]], labels=[0], object_id=0))
    return prompts


class SnapshotLoader:
    """The training loader, taking a training snapshot of a fixed batch after every due optimizer step.

    The training loop (:func:`eval_viewer.debuggers.loop.train`) knows nothing of snapshots: it asks this loader for
    its next batch only once the previous step's ``optimizer.step()`` is done, so that is where the snapshot of that
    step is taken (the last step of an epoch: before validation). The snapshot forward runs in eval mode under
    ``no_grad`` and the loader is iterated exactly as the wrapped one, so the training is unchanged.
    """

    def __init__(self, loader: DataLoader, model: nn.Module, writer: SnapshotWriter,
                 shown: dict[str, Any]) -> None:
        self.loader, self.model, self.writer = loader, model, writer
        self.shown = shown
        self.prompts = [snapshot_prompts(mask) for mask in shown["labels"]["mask"]]
        self.step = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        for batch in self.loader:
            yield batch
            self._snapshot()  # the loop asked for the next batch: this step's update is done
            self.step += 1

    def _snapshot(self) -> None:
        if not self.writer.due(self.step):
            return
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                logits = self.model(self.shown["inputs"])
                loss = F.cross_entropy(logits, self.shown["labels"]["mask"], reduction="none").flatten(1).mean(1)
        finally:
            self.model.train(was_training)
        self.writer(self.step, self.shown["inputs"]["image"], gt=self.shown["labels"]["mask"], pred=logits,
                    prompts=self.prompts, indices=self.shown["meta_info"]["idx"], scores={"loss": loss})


def _int8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 fake quantization with ``scale`` (broadcast), rounding passed straight through backwards."""
    scale = scale.clamp_min(1e-12)
    q = torch.clamp(torch.round(x / scale), -127, 127) * scale
    return x + (q - x).detach()


class _ActivationQuant:
    """Symmetric per-tensor int8 for one activation: ``dynamic`` (the scale of each batch) until :meth:`calibrate`
    has seen data, then the static scale of the largest magnitude seen (a min-max observer, as static post-training
    quantization does: larger values clip)."""

    def __init__(self) -> None:
        self.observing = False
        self.amax: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            seen = x.detach().abs().amax()
            self.amax = seen if self.amax is None else torch.maximum(self.amax, seen)
            return x
        return _int8(x, (self.amax if self.amax is not None else x.detach().abs().amax()) / 127)


def fake_quantize(model: nn.Module, calibration: Any = None) -> nn.Module:
    """A copy of ``model`` with int8 fake-quantized weights (per output channel, symmetric) and int8 inputs on every
    conv and linear layer, and int8 attention inputs (the q, k, v that ``attention.qkv`` produces). Activation scales
    are calibrated on the batches of ``calibration`` (a loader of datapoint dicts), else taken from each batch."""
    import copy  # noqa: PLC0415

    quantized = copy.deepcopy(model).eval()
    with torch.no_grad():
        for module in quantized.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                w = module.weight
                scale = w.abs().flatten(1).amax(dim=1).view(-1, *([1] * (w.dim() - 1))) / 127
                w.copy_(_int8(w, scale))
    quants: list[_ActivationQuant] = []
    for module in quantized.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            quants.append(_ActivationQuant())
            module.register_forward_pre_hook(lambda _m, args, q=quants[-1]: (q(args[0]), *args[1:]))
    attention = getattr(quantized, "attention", None)
    if attention is not None and hasattr(attention, "qkv"):
        quants.append(_ActivationQuant())
        attention.qkv.register_forward_hook(lambda _m, _args, out, q=quants[-1]: q(out))
    if calibration is not None:
        for q in quants:
            q.observing = True
        with torch.no_grad():
            for batch in calibration:
                quantized(batch["inputs"])
        for q in quants:
            q.observing = False
    return quantized


def generate(
    out: str | Path, epochs: int = 10, seed: int = 0, train_size: int = 320, val_size: int = 48,
    checkpoint_method: str | int = 5, batch_size: int = 8, quantized: bool = True, snapshot_every: int = 160,
) -> dict[str, Path]:
    """Train, validate every epoch (capturing on the checkpoint epochs) and write an evaluator run under ``out``; with
    ``quantized``, also the final model int8 fake-quantized on the same test set (``quantized_run``). Every
    ``snapshot_every`` steps (0: never) a training snapshot of the first four validation datapoints is saved in the
    trainer run (:class:`SnapshotLoader`)."""
    from eval_viewer.debuggers.sequential import SequentialDebugger  # noqa: PLC0415 - heavy, only for capture

    out = Path(out)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        model = TinySegNet()
        train_set, val_set = ShapesDataset(train_size, seed + 1), ShapesDataset(val_size, seed + 2)
        test_set = ShapesDataset(val_size, seed + 3, noise=(0.1, 0.25))
        generator = torch.Generator().manual_seed(seed)
        train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=generator)
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))

        def loss_fn(logits: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
            return F.cross_entropy(logits, labels["mask"])

        every = max(snapshot_every, 1)
        writer = SnapshotWriter(out / "trainer_run", every_n_steps=every, activation="argmax", class_names=CLASSES,
                                max_side=SIZE, min_side=SIZE,  # kept at 48 px: a small example
                                queue_size=epochs * len(train_loader) // every + 1)  # never drops one
        loader: Any = train_loader
        if snapshot_every > 0:  # collated by hand: iterating a DataLoader would draw its seed from torch's generator
            shown = default_collate([val_set[i] for i in range(min(4, len(val_set)))])
            loader = SnapshotLoader(train_loader, model, writer, shown)
        with SequentialDebugger(debuggers_config(), model, page_size_mb=4) as debugger, writer:
            train(model, loader, DataLoader(val_set, batch_size=16), loss_fn=loss_fn,
                  optimizer=optimizer, metrics_fn=segmentation_metrics, run_dir=out / "trainer_run", epochs=epochs,
                  debugger=debugger, checkpoint_method=checkpoint_method, scheduler=scheduler)
            evaluate_run(model, DataLoader(test_set, batch_size=16), segmentation_metrics,
                         out / "evaluator_run", debugger=debugger)
        paths = {"trainer_run": out / "trainer_run", "evaluator_run": out / "evaluator_run"}
        if quantized:
            int8_model = fake_quantize(model, DataLoader(val_set, batch_size=16))  # calibrated on the val set
            with SequentialDebugger(debuggers_config(), int8_model, page_size_mb=4) as debugger:
                evaluate_run(int8_model, DataLoader(test_set, batch_size=16), segmentation_metrics,
                             out / "quantized_run", debugger=debugger)
            paths["quantized_run"] = out / "quantized_run"
    finally:
        torch.use_deterministic_algorithms(deterministic)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval_viewer.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to write trainer_run/ and evaluator_run/ into")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=320)
    parser.add_argument("--val-size", type=int, default=48, help="validation and test datapoints")
    parser.add_argument("--checkpoint-method", default="5", help="'all', 'latest' or N (every N-th epoch)")
    parser.add_argument("--no-quantized", action="store_true", help="do not write the int8 quantized_run")
    parser.add_argument("--snapshot-every", type=int, default=160,
                        help="a training snapshot every N optimizer steps (0: none)")
    args = parser.parse_args(argv)
    method: str | int = int(args.checkpoint_method) if args.checkpoint_method.isdigit() else args.checkpoint_method
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    paths = generate(args.out, args.epochs, args.seed, args.train_size, args.val_size, method,
                     quantized=not args.no_quantized, snapshot_every=args.snapshot_every)
    print(f"wrote {', '.join(str(p) for p in paths.values())} in {time.perf_counter() - start:.1f} s")
    print(f"view it: python -m eval_viewer --log-dir {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
