"""The backend on the example run that ``eval_viewer.demo`` writes with the built-in debuggers (a real model)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from eval_viewer.backend import LogStore
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
    assert set(runs) == {"trainer_run", "evaluator_run"}
    assert [(e.epoch, e.has_debug) for e in runs["trainer_run"].epochs] == [(0, False), (1, True)]
    assert runs["evaluator_run"].kind == "evaluator"
    for name, epoch in [("trainer_run", 0), ("trainer_run", 1), ("evaluator_run", None)]:
        scores = store.scores(name, epoch)
        assert scores.num_datapoints == 8 and scores.problems == ()
        assert scores.higher_is_better["loss"] is False and scores.higher_is_better["miou"] is True
        for metric in scores.metrics:
            assert scores.ranking(metric).shape == (8,)
            assert not np.isnan(store.metric_history(name, metric)[-1][1]) or metric not in scores.aggregated
        for idx in range(scores.num_datapoints):
            record = store.datapoint(name, epoch, idx)
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
    assert store.meta_table("evaluator_run", None)["num_shapes"][0] is not None
