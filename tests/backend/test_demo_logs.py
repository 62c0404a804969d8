"""The backend on the example run that ``eval_viewer.demo`` writes with the built-in debuggers (a real model)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

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
        (PassKey("trainer_run", "val", 0), False), (PassKey("trainer_run", "val", 1), True)]
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
