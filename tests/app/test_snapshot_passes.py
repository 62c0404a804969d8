"""Training snapshots in the header's selectors, without a browser: the Pass selector keeps a run's epochs readable
(snapshot steps are reached through the Training tab), a run of snapshots alone still opens, and one saved without
ground truth or predictions (no scores file) resolves to "no scores" instead of an error.

The snapshots are written by the real SnapshotWriter.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from eval_viewer import log_format as lf
from eval_viewer.app.callbacks.navigation import pass_options
from eval_viewer.app.state import NO_SCORES, ViewState, resolve
from eval_viewer.backend import LogStore, PassKey
from eval_viewer.debuggers.prompts import PromptData
from eval_viewer.debuggers.snapshots import SnapshotWriter
from eval_viewer.errors import NotFoundError, ScoresError


def snapshots(run: Path, steps: list[int], *, scored: bool = True) -> None:
    """Snapshots of two datapoints at ``steps``; without ``scored`` only the images and prompts (no scores file)."""
    gt = torch.zeros(2, 1, 24, 24)
    gt[:, 0, 4:16, 4:16] = 1
    with SnapshotWriter(run, every_n_steps=1, queue_size=len(steps)) as writer:
        for step in steps:
            prompts = [[PromptData.point([[8, 8]])], [PromptData.box_prompt([4, 4, 16, 16])]]
            labelled = {"gt": gt, "pred": torch.randn(2, 1, 24, 24)} if scored else {}
            assert writer(step, torch.rand(2, 3, 24, 24), prompts=prompts, **labelled)


def epochs(run: Path, count: int) -> None:
    for epoch in range(count):
        path = run / lf.epoch_dir_name(epoch) / lf.VALIDATION_SCORES
        path.parent.mkdir(parents=True)
        lf.write_scores(path, {}, {"iou": [0.2, 0.9, 0.5]})


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """``trainer``: 2 epochs, a test pass and 5 snapshots; ``snaps``: scored snapshots alone; ``bare``: snapshots
    with neither ground truth nor predictions."""
    root = tmp_path / "logs"
    epochs(root / "trainer", 2)
    lf.write_scores(root / "trainer" / lf.EVALUATION_SCORES, {}, {"iou": [0.4, 0.6, 0.1]})
    snapshots(root / "trainer", [0, 40, 80, 120, 160])
    snapshots(root / "snaps", [0, 50, 100])
    snapshots(root / "bare", [0, 30], scored=False)
    return root


@pytest.fixture
def store(logs: Path, tmp_path: Path) -> LogStore:
    with LogStore([logs], cache_dir=tmp_path / "cache", rescan_s=0) as store:
        yield store


def values(options: list[dict[str, object]]) -> list[object]:
    return [option["value"] for option in options]


def test_the_pass_selector_leaves_snapshot_steps_to_the_training_tab(store: LogStore) -> None:
    run = store.run("trainer")
    assert [p.split for p in run.passes].count(lf.SPLIT_TRAIN) == 5  # listed by the backend, every one
    assert values(pass_options(run)) == ["val:0", "val:1", "test"]
    # a link naming a snapshot opens it, and the selector shows it (only that one)
    resolved = resolve(store, ViewState(run="trainer", split=lf.SPLIT_TRAIN, step=40))
    assert resolved.state.pass_key == PassKey("trainer", lf.SPLIT_TRAIN, 40)
    assert values(pass_options(run, resolved.state.pass_key)) == ["val:0", "val:1", "test", "train:40"]
    assert values(pass_options(run, PassKey("trainer", "val", 1))) == ["val:0", "val:1", "test"]
    assert values(pass_options(run, PassKey("trainer", lf.SPLIT_TRAIN, 41))) == ["val:0", "val:1", "test"]


def test_a_run_of_snapshots_alone_lists_its_latest_and_opens_on_it(store: LogStore) -> None:
    run = store.run("snaps")
    options = pass_options(run)
    assert options == [{"label": "train step 100", "value": "train:100"}]
    resolved = resolve(store, ViewState(run="snaps"))
    assert resolved.state == ViewState(run="snaps", split=lf.SPLIT_TRAIN, step=100, metric="iou")
    assert resolved.scores.num_datapoints == 2
    assert values(pass_options(run, PassKey("snaps", lf.SPLIT_TRAIN, 0))) == ["train:100", "train:0"]


def test_snapshots_without_scores_resolve_to_no_scores_not_an_error(store: LogStore, logs: Path) -> None:
    run = store.run("bare")
    assert not (logs / "bare" / lf.TRAIN_DIR / lf.step_dir_name(30) / lf.TRAINING_SCORES).exists()
    assert [(p.step, p.has_scores, p.has_debug) for p in run.passes] == [(0, False, True), (30, False, True)]
    with pytest.raises(ScoresError, match="no scores file"):
        store.scores(run.default_pass.key)  # the store still says so when asked for them
    resolved = resolve(store, ViewState(run="bare"))
    assert resolved.scores is NO_SCORES
    assert resolved.state == ViewState(run="bare", split=lf.SPLIT_TRAIN, step=30, metric=None)
    assert resolve(store, ViewState(run="bare", split=lf.SPLIT_TRAIN, step=0)).scores is NO_SCORES
    assert pass_options(run) == [{"label": "train step 30  · no scores", "value": "train:30"}]
    with pytest.raises(NotFoundError, match="no metric 'iou'"):
        resolve(store, ViewState(run="bare", metric="iou"))
    lenient = resolve(store, ViewState(run="bare", metric="iou", idx=1), strict=False)
    assert lenient.state.metric is None and lenient.state.idx is None  # nothing to rank: the overview


def test_a_scores_file_that_cannot_be_read_is_still_an_error(store: LogStore, logs: Path) -> None:
    (logs / "trainer" / lf.epoch_dir_name(1) / lf.VALIDATION_SCORES).write_text("{not json")
    with pytest.raises(ScoresError, match=lf.VALIDATION_SCORES):
        resolve(store, ViewState(run="trainer", split="val", step=1))
