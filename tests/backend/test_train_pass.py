"""Training snapshots are an ordinary pass: split ``train`` keyed by step, listed next to the evaluation passes, read
by the same ``datapoint`` call; never the pass a run opens on while it has another; a run of snapshots alone opens.

The snapshots are written by the real writer; expected values (IoU, shapes, steps) are computed here from the inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eval_viewer import log_format as lf
from eval_viewer.backend import LogStore, PassKey
from eval_viewer.debuggers.prompts import PromptData
from eval_viewer.debuggers.snapshots import RECORD, SNAPSHOT, SnapshotWriter


def write_scores(path: Path, per_datapoint: dict[str, list[float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lf.write_scores(path, {}, per_datapoint)


def snapshots(run: Path, steps: list[int], *, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Snapshots of a 2-object batch at ``steps``; returns the ground truth and logits written."""
    gt = torch.zeros(batch, 2, 32, 40)
    gt[:, 0, 4:20, 4:20] = 1
    gt[:, 1, 16:30, 20:38] = 1
    logits = torch.full((batch, 2, 32, 40), -3.0)
    logits[:, 0, 4:20, 4:12] = 3.0  # half of object 0 found, object 1 missed
    with SnapshotWriter(run, every_n_steps=1, queue_size=len(steps)) as writer:
        for step in steps:
            prompts = [[PromptData.point([[8, 8]], object_id=0), PromptData.box_prompt([20, 16, 38, 30], 1)]] * batch
            assert writer(step, torch.rand(batch, 3, 32, 40), gt=gt, pred=logits, prompts=prompts,
                          indices=torch.arange(batch) + 100)
    return gt, logits


@pytest.fixture
def store_of(tmp_path: Path):  # noqa: ANN201
    stores: list[LogStore] = []

    def open_store(root: Path) -> LogStore:
        store = LogStore([root], cache_dir=tmp_path / "cache", rescan_s=0, index_wait_s=10)
        stores.append(store)
        return store

    yield open_store
    for store in stores:
        store.close()


def test_snapshots_are_train_passes_beside_the_evaluation_passes(tmp_path: Path, store_of) -> None:  # noqa: ANN001
    run = tmp_path / "logs" / "run_a"
    for epoch in (0, 1):
        write_scores(run / lf.epoch_dir_name(epoch) / lf.VALIDATION_SCORES, {"iou": [0.5, 0.6]})
    snapshots(run, [0, 100, 50])
    info = store_of(tmp_path / "logs").run("run_a")
    assert info.kind == "trainer"
    assert [(p.split, p.step) for p in info.passes] == [("val", 0), ("val", 1), ("train", 0), ("train", 50),
                                                        ("train", 100)]
    assert info.steps(lf.SPLIT_TRAIN) == (0, 50, 100)
    assert all(p.has_scores and p.has_debug for p in info.passes if p.split == lf.SPLIT_TRAIN)
    assert info.default_pass.key == PassKey("run_a", "val", 1)  # never a training snapshot
    assert info.choose(lf.SPLIT_TRAIN).key.step == 100  # the split alone: its latest step
    assert info.find(lf.SPLIT_TRAIN, 50).label == "train step 50"


def test_a_snapshot_datapoint_reads_like_any_other(tmp_path: Path, store_of) -> None:  # noqa: ANN001
    run = tmp_path / "run_b"
    gt, logits = snapshots(run, [7])
    store = store_of(run)
    key = PassKey("run_b", lf.SPLIT_TRAIN, 7)
    scores = store.scores(key)
    assert scores.num_datapoints == 2
    # object 0: 16x8 found of 16x16; object 1: missed: mean IoU (0.5 + 0) / 2, computed from the inputs above
    truth, found = gt[0].bool().numpy(), (torch.sigmoid(logits[0]) > 0.5).numpy()
    expected = np.mean([(truth[k] & found[k]).sum() / (truth[k] | found[k]).sum() for k in range(2)])
    assert scores.per_datapoint["iou"][1] == pytest.approx(expected) == pytest.approx(0.25)
    record = store.datapoint(key, 1)
    assert record.problems == ()
    assert record.meta_info["step"] == 7 and record.meta_info["sample"] == 101 and record.meta_info["objects"] == 2
    assert {i.key: i.kind for i in record.inputs} == {"image": lf.Kind.IMAGE, "prompts": lf.Kind.PROMPTS}
    assert [i.key for i in record.labels] == ["masks"] and [i.key for i in record.predictions] == ["masks"]
    assert np.array_equal(record.predictions[0].value.astype(bool), found)
    picture = record.debug_item(SNAPSHOT, "composite")
    assert picture.kind == lf.Kind.IMAGE and picture.value.dtype == np.uint8 and picture.value.shape[2] == 3
    assert store.meta_table(key)["sample"] == [100, 101]
    assert RECORD not in record.debug  # the record fills the Inputs / Labels / Predictions sections instead
    assert (run / lf.TRAIN_DIR / "step_7" / "snapshot_1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_class_names_reach_the_record(tmp_path: Path, store_of) -> None:  # noqa: ANN001
    logits = torch.zeros(1, 3, 16, 16)
    logits[:, 2, 4:12, 4:12] = 5.0
    with SnapshotWriter(tmp_path / "run_d", 1, activation="argmax", class_names=["bg", "cat", "dog"]) as writer:
        writer(0, torch.rand(1, 3, 16, 16), gt=torch.full((1, 16, 16), 2), pred=logits)
    record = store_of(tmp_path / "run_d").datapoint(PassKey("run_d", lf.SPLIT_TRAIN, 0), 0)
    assert record.class_names == ("bg", "cat", "dog")
    assert record.predictions[0].value[8, 8] == 2 and record.predictions[0].value[0, 0] == 0


def test_a_run_of_snapshots_alone_opens_on_its_latest_one(tmp_path: Path, store_of) -> None:  # noqa: ANN001
    snapshots(tmp_path / "only_train", [3, 9])
    info = store_of(tmp_path).run("only_train")
    assert info.kind == "trainer"
    assert info.default_pass.key == PassKey("only_train", "train", 9)


def test_a_folder_named_train_that_holds_runs_is_still_a_folder_of_runs(
    tmp_path: Path, store_of  # noqa: ANN001
) -> None:
    for name in ("exp1", "exp2"):  # logs/train/expN/epoch_0: "train" is a container here, not snapshots
        write_scores(tmp_path / "logs" / "train" / name / "epoch_0" / lf.VALIDATION_SCORES, {"iou": [1.0]})
    store = store_of(tmp_path / "logs")
    assert [r.name for r in store.runs()] == ["train/exp1", "train/exp2"]
    assert all(p.split == "val" for r in store.runs() for p in r.passes)


def test_a_step_being_written_appears_when_its_files_do(tmp_path: Path, store_of) -> None:  # noqa: ANN001
    run = tmp_path / "run_c"
    snapshots(run, [0])
    store = store_of(run)
    assert store.run("run_c").steps(lf.SPLIT_TRAIN) == (0,)
    (run / lf.TRAIN_DIR / "step_5" / lf.DEBUGGER_DIR).mkdir(parents=True)  # a writer that has only made the folder
    store.refresh()
    assert store.run("run_c").steps(lf.SPLIT_TRAIN) == (0,)
    snapshots(run, [5])
    store.refresh()
    assert store.run("run_c").steps(lf.SPLIT_TRAIN) == (0, 5)
