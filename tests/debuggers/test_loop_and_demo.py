"""The loop helper, the Lightning hooks and the demo, end to end into tmp_path, read back with plain joblib/json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import joblib
import pytest
import torch
from torch.utils.data import DataLoader

from eval_viewer import demo
from eval_viewer import log_format as lf
from eval_viewer.debuggers.loop import ScoreCollector, evaluate_run, mean_aggregate, validate_epoch
from eval_viewer.debuggers.sequential import SequentialDebugger


def test_score_collector_orders_by_dataset_index_and_aggregates_per_class() -> None:
    scores = ScoreCollector()
    scores.add(torch.tensor([2, 0]), {"acc": torch.tensor([0.5, 1.0]), "iou": [[1.0, float("nan")], [0.0, 0.5]]})
    per = scores.per_datapoint(4)
    assert per["acc"] == [1.0, None, 0.5, None]
    agg = mean_aggregate(per)
    assert agg["acc"] == pytest.approx(0.75) and agg["iou"] == pytest.approx([0.5, 0.5])


def test_demo_metrics_on_a_known_prediction() -> None:
    labels = {"mask": torch.tensor([[[0, 1], [1, 1]]])}
    logits = torch.nn.functional.one_hot(torch.tensor([[[0, 1], [0, 1]]]), 4).permute(0, 3, 1, 2).float() * 10
    metrics = demo.segmentation_metrics(logits, labels)
    assert float(metrics["pixel_accuracy"][0]) == 0.75
    iou = metrics["iou"][0].tolist()
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(2 / 3) and math.isnan(iou[2])
    assert float(metrics["miou"][0]) == pytest.approx((0.5 + 2 / 3) / 2)


def test_demo_end_to_end_writes_loadable_scores_and_pages(tmp_path: Path) -> None:
    paths = demo.generate(tmp_path, epochs=2, train_size=16, val_size=6, checkpoint_method="latest")
    trainer, evaluator = paths["trainer_run"], paths["evaluator_run"]
    assert not (trainer / "epoch_0" / lf.DEBUGGER_DIR).exists()  # only the capture epoch has pages
    for scores_file, debug_dir in (
        (trainer / "epoch_1" / lf.VALIDATION_SCORES, trainer / "epoch_1" / lf.DEBUGGER_DIR),
        (evaluator / lf.EVALUATION_SCORES, evaluator / lf.DEBUGGER_DIR),
    ):
        scores = json.loads(scores_file.read_text())
        assert set(scores["per_datapoint"]) == {"miou", "pixel_accuracy", "iou", "loss"}
        assert len(scores["per_datapoint"]["miou"]) == 6 and len(scores["aggregated"]["iou"]) == 4
        pages = {}
        for page in sorted(debug_dir.glob("page_*.pkl")):
            pages.update(joblib.load(page))
        assert sorted(pages) == list(range(6))
        point = pages[3]
        assert set(point) == {c["name"] for c in demo.debuggers_config()}
        assert point["record"]["inputs"]["image"].shape == (3, demo.SIZE, demo.SIZE)
        assert point["record"]["meta_info"]["idx"] == 3 and isinstance(point["record"]["meta_info"]["shapes"], str)
        attn = point["attention"]["attention"]["weights"]
        assert attn.shape == (2, 36, 36) and abs(float(attn.astype("float32").sum(-1).mean()) - 1) < 1e-2
        assert point["gradcam"]["gradcam"].shape == (demo.SIZE, demo.SIZE)
        assert float(point["gradcam"]["gradcam"].min()) >= 0
        index = json.loads((debug_dir / "index.json").read_text())
        assert index["debuggers"]["attention"]["kinds"]["attention"] == lf.Kind.ATTENTION


def _tiny_setup() -> tuple[torch.nn.Module, DataLoader]:
    torch.manual_seed(0)
    return demo.TinySegNet().eval(), DataLoader(demo.ShapesDataset(5, seed=9), batch_size=2)


def test_validate_epoch_and_evaluate_run_put_files_where_runs_keep_them(tmp_path: Path) -> None:
    model, loader = _tiny_setup()
    config = [demo.debuggers_config()[0]]
    with SequentialDebugger(config, model) as debugger:
        quiet = validate_epoch(model, loader, demo.segmentation_metrics, tmp_path / "run", 0, debugger=debugger)
        loud = validate_epoch(model, loader, demo.segmentation_metrics, tmp_path / "run", 1, debugger=debugger,
                              capture=True)
        evaluated = evaluate_run(model, loader, demo.segmentation_metrics, tmp_path / "eval", debugger=debugger)
        assert not debugger.enabled
    assert quiet.pages == () and (tmp_path / "run" / "epoch_0" / lf.VALIDATION_SCORES).is_file()
    assert loud.pages and all(p.parent == tmp_path / "run" / "epoch_1" / lf.DEBUGGER_DIR for p in loud.pages)
    assert evaluated.scores_path == tmp_path / "eval" / lf.EVALUATION_SCORES
    assert loud.per_datapoint["miou"] == quiet.per_datapoint["miou"] == evaluated.per_datapoint["miou"]
