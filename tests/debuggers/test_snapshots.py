"""The snapshot writer never holds up or fails a training step: a full queue drops (and counts) instead of waiting, a
logger that raises or has no image method costs one warning, files appear whole; composites reach a real
TensorBoard event file and a real Lightning Trainer's logger."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import torch
from PIL import Image

from eval_viewer import log_format as lf
from eval_viewer.debuggers.prompts import PromptData
from eval_viewer.debuggers.snapshots import SNAPSHOT, SnapshotWriter, forward_image

WRITER_LOG = "eval_viewer.debuggers.snapshots"


def batch(n: int = 2, size: int = 24) -> dict[str, Any]:
    gt = torch.zeros(n, 1, size, size)
    gt[:, 0, 4:12, 4:12] = 1
    return {"image": torch.rand(n, 3, size, size), "gt": gt, "pred": torch.randn(n, 1, size, size),
            "prompts": [[PromptData.point([[6, 6]])] for _ in range(n)]}


class BlockingLogger:
    """A TensorBoard-like logger whose ``add_image`` waits until released: it holds the writer thread."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.images: list[tuple[str, int, tuple[int, ...]]] = []

    def add_image(self, tag: str, img: np.ndarray, global_step: int, dataformats: str = "CHW") -> None:
        assert dataformats == "HWC"
        self.entered.set()
        self.release.wait(30)
        self.images.append((tag, global_step, img.shape))


def test_a_full_queue_drops_the_snapshot_instead_of_waiting(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = BlockingLogger()
    writer = SnapshotWriter(tmp_path, every_n_steps=10, logger=sink, queue_size=2)
    try:
        assert writer(0, **batch())
        assert sink.entered.wait(30)  # the thread is inside the logger with step 0: the queue itself is empty
        assert writer(10, **batch()) and writer(20, **batch())  # queue_size snapshots wait
        with caplog.at_level(logging.WARNING, logger=WRITER_LOG):
            taken = [writer(step, **batch()) for step in (30, 40, 50)]  # the step goes on: nothing is waited for
        assert taken == [False, False, False]
        assert not writer(35, **batch())  # not a snapshot step at all
        assert writer.stats.dropped == 3 and writer.stats.queued == 3
        assert sum("dropped" in r.message for r in caplog.records) == 1  # one warning, the rest counted
    finally:
        sink.release.set()
        writer.close()
    assert writer.stats.written == 3 and writer.stats.failed == 0
    assert sorted((step, tag) for tag, step, _ in sink.images) == [
        (s, f"snapshots/{i}") for s in (0, 10, 20) for i in (0, 1)]
    steps = sorted(int(p.name.split("_")[1]) for p in (tmp_path / lf.TRAIN_DIR).iterdir())
    assert steps == [0, 10, 20]


class RaisingLogger:
    def __init__(self) -> None:
        self.calls = 0

    def log_image(self, key: str, images: list[np.ndarray], step: int | None = None) -> None:
        self.calls += 1
        raise RuntimeError("the logging service is down")


@pytest.mark.parametrize("sink, method", [(RaisingLogger(), "raises"), (object(), "has none of the methods")])
def test_a_failing_logger_warns_once_and_the_snapshots_are_still_saved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sink: Any, method: str
) -> None:
    with caplog.at_level(logging.WARNING, logger=WRITER_LOG), SnapshotWriter(tmp_path, 1, logger=sink) as writer:
        for step in range(3):
            assert writer(step, **batch())
            writer.flush(30)
    warnings = [r.getMessage() for r in caplog.records if r.name == WRITER_LOG]
    assert len(warnings) == 1, warnings
    assert "still saved" in warnings[0] and type(sink).__name__ in warnings[0]
    if method == "raises":
        assert "the logging service is down" in warnings[0] and sink.calls == 6
    else:
        assert "none of add_image" in warnings[0]
    assert writer.stats.written == 3 and writer.stats.log_failures == 6 and writer.stats.logged == 0
    assert all((tmp_path / lf.TRAIN_DIR / f"step_{s}" / "snapshot_1.png").exists() for s in range(3))


def test_known_logger_signatures_are_tried_in_order() -> None:
    seen: list[str] = []

    class Experiment:
        def add_image(self, tag: str, img: np.ndarray, global_step: int, dataformats: str = "CHW") -> None:
            seen.append(f"experiment {tag} {global_step} {dataformats}")

    class LightningTensorBoard:  # Lightning's TensorBoardLogger: the SummaryWriter is .experiment
        experiment = Experiment()

        def log_image(self, **kwargs: Any) -> None:
            raise AssertionError("add_image comes first")

    class WandbStyle:
        def log_image(self, key: str, images: list[np.ndarray], step: int | None = None) -> None:
            seen.append(f"log_image {key} {step} {images[0].shape}")

    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    assert forward_image(LightningTensorBoard(), "a", rgb, 3) == "experiment.add_image"
    assert forward_image(WandbStyle(), "b", rgb, 4) == "log_image"
    assert seen == ["experiment a 3 HWC", "log_image b 4 (4, 5, 3)"]
    with pytest.raises(AttributeError, match="none of"):
        forward_image(object(), "c", rgb, 5)


def test_a_reader_never_sees_half_a_file(tmp_path: Path) -> None:
    """Pages, index, PNGs and scores are read while 12 steps are written: every file that exists reads whole."""
    stop = threading.Event()
    errors: list[str] = []
    reads = {"pages": 0, "pngs": 0}

    def read_all() -> None:
        while not stop.is_set():
            for step_dir in list((tmp_path / lf.TRAIN_DIR).glob("step_*")):
                try:
                    for page in step_dir.glob("debugger/page_*.pkl"):
                        assert joblib.load(page)[0][SNAPSHOT]["composite"].ndim == 3
                        reads["pages"] += 1
                    for png in step_dir.glob("snapshot_*.png"):
                        Image.open(png).load()
                        reads["pngs"] += 1
                    for name in ("debugger/index.json", lf.TRAINING_SCORES):
                        if (step_dir / name).exists():
                            json.loads((step_dir / name).read_text())
                except FileNotFoundError:
                    continue  # listed, then replaced by its rename: the next loop reads it
                except Exception as exc:  # noqa: BLE001 - every other failure is a partial file
                    errors.append(f"{step_dir.name}: {exc!r}")

    reader = threading.Thread(target=read_all)
    reader.start()
    try:
        with SnapshotWriter(tmp_path, every_n_steps=1, queue_size=12, max_side=128) as writer:
            for step in range(12):
                writer(step, **batch(4, 96))
    finally:
        stop.set()
        reader.join()
    assert errors == [] and reads["pages"] > 0 and reads["pngs"] > 0
    assert writer.stats.written == 12
    assert not list(tmp_path.rglob("*.tmp"))  # no temp file left behind


def test_clips_keep_strided_frames_and_the_step_input_is_copied(tmp_path: Path) -> None:
    clip = torch.rand(3, 9, 3, 20, 20)
    labels = torch.randint(0, 3, (3, 9, 20, 20))
    logits = torch.randn(3, 9, 3, 20, 20)
    with SnapshotWriter(tmp_path, 5, activation="argmax", max_videos=2, frame_stride=3, max_frames=2) as writer:
        assert writer(5, clip, gt=labels, pred=logits)
        clip.zero_()  # training reuses its buffers: the snapshot holds its own copy
    page = joblib.load(tmp_path / lf.TRAIN_DIR / "step_5" / lf.DEBUGGER_DIR / "page_0.pkl")
    assert sorted(page) == [0, 1]  # max_videos
    snap = page[1][SNAPSHOT]
    assert snap["frame_numbers"].tolist() == [0, 3]
    assert snap["frames"].shape == (2, 20, 20, 3) and snap["frames"].max() > 0
    assert np.array_equal(snap["gt_frames"], labels[1, [0, 3]].numpy())
    assert np.array_equal(snap["pred_frames"], logits[1, [0, 3]].argmax(dim=1).numpy())
    assert page[1]["record"]["meta_info"]["frames"] == "0,3"


def test_tensorboard_summary_writer_receives_every_composite(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    events = tmp_path / "tb"
    summary = SummaryWriter(str(events))
    with SnapshotWriter(tmp_path / "run", every_n_steps=2, logger=summary) as writer:
        for step in range(5):
            writer(step, **batch(2, 32))
    summary.close()
    assert writer.stats.logged == 6 and writer.stats.log_failures == 0
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
    accumulator.Reload()
    assert sorted(accumulator.Tags()["images"]) == ["snapshots/0", "snapshots/1"]
    saved = np.asarray(Image.open(tmp_path / "run" / lf.TRAIN_DIR / "step_4" / "snapshot_1.png"))
    logged = accumulator.Images("snapshots/1")
    assert [e.step for e in logged] == [0, 2, 4]
    assert (logged[-1].height, logged[-1].width) == saved.shape[:2]
    import io

    assert np.array_equal(np.asarray(Image.open(io.BytesIO(logged[-1].encoded_image_string)).convert("RGB")), saved)


def test_lightning_callback_writes_snapshots_and_logs_them_to_the_trainers_logger(tmp_path: Path) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    pytest.importorskip("tensorboard")
    import torch.nn.functional as F
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.data import DataLoader

    from eval_viewer import demo
    from eval_viewer.debuggers.lightning import EvalViewerCallback

    class Segmenter(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = demo.TinySegNet()

        def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
            logits = self.net(batch["inputs"])
            return {"loss": F.cross_entropy(logits, batch["labels"]["mask"]), "outputs": logits.detach()}

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    torch.manual_seed(0)
    logger = pl.loggers.TensorBoardLogger(str(tmp_path / "tb"), name="", version="")
    writer = SnapshotWriter(tmp_path / "run", every_n_steps=2, activation="argmax", max_videos=2)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_train_batches=5,
                         log_every_n_steps=1, callbacks=[EvalViewerCallback(snapshots=writer)],
                         default_root_dir=tmp_path)
    trainer.fit(Segmenter(), DataLoader(demo.ShapesDataset(20, seed=1), batch_size=4))
    writer.close()
    steps = sorted(int(p.name.split("_")[1]) for p in (tmp_path / "run" / lf.TRAIN_DIR).iterdir())
    assert steps == [2, 4]  # global_step after each optimizer step: 1..5, every 2nd
    page = joblib.load(tmp_path / "run" / lf.TRAIN_DIR / "step_4" / lf.DEBUGGER_DIR / "page_0.pkl")
    assert sorted(page) == [0, 1] and page[0]["record"]["meta_info"]["sample"] == 12  # batch 4 of a sequential loader
    scores = json.loads((tmp_path / "run" / lf.TRAIN_DIR / "step_4" / lf.TRAINING_SCORES).read_text())
    assert len(scores["per_datapoint"]["iou"]) == 2
    accumulator = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    accumulator.Reload()
    assert [e.step for e in accumulator.Images("snapshots/0")] == [2, 4]


def test_large_inputs_are_shrunk_on_the_step_and_prompts_follow(tmp_path: Path) -> None:
    gt = torch.zeros(1, 1, 200, 300)
    gt[0, 0, 50:100, 100:200] = 1
    with SnapshotWriter(tmp_path, 1, max_side=64) as writer:
        writer(0, torch.rand(1, 3, 200, 300), gt=gt, pred=torch.randn(1, 1, 200, 300),
               prompts=[[PromptData.point([[150, 75]]), PromptData.box_prompt([100, 50, 200, 100])]])
    entry = joblib.load(tmp_path / lf.TRAIN_DIR / "step_0" / lf.DEBUGGER_DIR / "page_0.pkl")[0]
    height, width = round(200 * 64 / 300), 64  # the longest side to max_side, the aspect kept
    assert entry["record"]["inputs"]["image"].shape == (height, width, 3)
    rows = ((np.arange(height) + 0.5) * 200 / height).astype(int)  # nearest input pixel of each output pixel
    cols = ((np.arange(width) + 0.5) * 300 / width).astype(int)
    assert np.array_equal(entry["record"]["labels"]["masks"][0], gt[0, 0].numpy()[rows][:, cols])
    point, box = entry[SNAPSHOT]["prompts"]
    assert np.allclose(point["points"], [[150 * width / 300, 75 * height / 200]])
    assert np.allclose(box["box"], [100 * width / 300, 50 * height / 200, 200 * width / 300, 100 * height / 200])
