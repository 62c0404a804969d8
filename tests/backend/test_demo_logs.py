"""The backend on the example run that ``eval_viewer.demo`` writes with the built-in debuggers (a real model)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from eval_viewer import log_format as lf
from eval_viewer.backend import LogStore, PassKey
from eval_viewer.log_format import Kind


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from eval_viewer.demo import generate

    out = tmp_path_factory.mktemp("demo")
    generate(out, epochs=2, train_size=16, val_size=8, checkpoint_method="latest", batch_size=8)
    return out


def test_every_run_epoch_metric_and_datapoint_is_readable(demo_dir: Path,
                                                          make_store: Callable[..., LogStore]) -> None:
    store = make_store(demo_dir)
    runs = {r.name: r for r in store.runs()}
    assert set(runs) == {"trainer_run", "evaluator_run", "quantized_run"}
    assert [(p.key, p.has_debug) for p in runs["trainer_run"].passes] == [
        (PassKey("trainer_run", "val", 0), False), (PassKey("trainer_run", "val", 1), True),
        (PassKey("trainer_run", "train", 0), True)]  # a training snapshot after the first step
    assert runs["evaluator_run"].kind == "evaluator"
    assert [p.key for p in runs["evaluator_run"].passes] == [PassKey("evaluator_run", "test", None)]
    for name, epoch in [("trainer_run", 0), ("trainer_run", 1), ("evaluator_run", None), ("quantized_run", None)]:
        key = PassKey(name, "val" if epoch is not None else "test", epoch)
        scores = store.scores(key)
        assert scores.num_datapoints == 8 and scores.problems == ()
        assert scores.higher_is_better["loss"] is False and scores.higher_is_better["miou"] is True
        for metric in scores.metrics:
            assert scores.ranking(metric).shape == (8,)
            history = store.metric_history(name, metric, split=key.split)
            assert key in dict(history)
            assert not np.isnan(history[-1][1]) or metric not in scores.aggregated
        for idx in range(scores.num_datapoints):
            record = store.datapoint(key, idx)
            assert record.problems == () and set(record.scores) == set(scores.metrics)
            if epoch == 0:
                assert record.debug == {}
                continue
            assert {i.key: i.kind for i in record.inputs} == {"image": Kind.IMAGE}
            assert record.labels[0].kind == Kind.MASK and record.predictions[0].kind == Kind.MASK
            assert record.meta_info["idx"] == idx
            kinds = {(n, i.key): i.kind for n, items in record.debug.items() for i in items}
            assert kinds[("attention", "attention")] == Kind.ATTENTION
            assert kinds[("gradcam", "gradcam")] == Kind.HEATMAP
            assert kinds[("encoder_features", "feature_map")] == Kind.FEATURE_MAP
    assert store.meta_table(("evaluator_run", "test", None))["num_shapes"][0] is not None


def test_the_trainer_run_has_training_snapshots_of_four_validation_datapoints(
        demo_dir: Path, make_store: Callable[..., LogStore]) -> None:
    store = make_store(demo_dir)
    key = PassKey("trainer_run", lf.SPLIT_TRAIN, 0)
    scores = store.scores(key)
    assert scores.num_datapoints == 4 and set(scores.metrics) == {"iou", "loss"}
    for idx in range(4):
        record = store.datapoint(key, idx)
        assert record.problems == () and record.meta_info["sample"] == idx  # validation datapoint idx
        val = store.datapoint(("trainer_run", "val", 1), idx)
        shown = next(i.value for i in record.inputs if i.key == "image")
        assert np.array_equal(np.asarray(shown), np.asarray(val.inputs[0].value).transpose(1, 2, 0))  # same picture
        composite = record.debug_item(lf.SNAPSHOT_DEBUGGER, lf.SNAPSHOT_COMPOSITE).value
        assert composite.dtype == np.uint8 and composite.shape[0] < 100  # kept at the input's 48 px: small
        prompts = next(i.value for i in record.inputs if i.key == "prompts")
        assert 0 in prompts["labels"] and 1 in prompts["labels"] and len(prompts["boxes"]) == 1
        assert (demo_dir / "trainer_run" / lf.TRAIN_DIR / lf.step_dir_name(0) / f"snapshot_{idx}.png").is_file()


def test_snapshots_leave_the_training_and_every_other_file_unchanged(demo_dir: Path, tmp_path: Path) -> None:
    from eval_viewer.demo import generate

    generate(tmp_path, epochs=2, train_size=16, val_size=8, checkpoint_method="latest", batch_size=8, snapshot_every=0)
    without = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    with_snapshots = sorted(p.relative_to(demo_dir) for p in demo_dir.rglob("*") if p.is_file())
    assert [p for p in with_snapshots if p not in without] and all(
        p.parts[:2] == ("trainer_run", lf.TRAIN_DIR) for p in with_snapshots if p not in without)
    assert set(without) <= set(with_snapshots)
    for path in without:  # scores, pages and indexes byte for byte: the snapshot forward changed nothing
        assert (tmp_path / path).read_bytes() == (demo_dir / path).read_bytes(), path
