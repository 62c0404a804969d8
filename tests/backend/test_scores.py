"""Scores parsing, metric direction and ranking: NaN is never a success, ranking is instant at 100k datapoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from eval_viewer.backend.model import rank_indices
from eval_viewer.backend.scores import higher_is_better, load_scores, parse_scores
from eval_viewer.errors import NotFoundError, ScoresError

P = Path("epoch_0/validation_scores.json")


def test_scalar_and_per_class_metrics_with_missing_values() -> None:
    payload = {
        "aggregated": {"acc": 0.5, "iou": [0.1, None]},
        "per_datapoint": {
            "acc": [1.0, None, 0.0, float("nan")],
            "iou": [[0.1, 0.2], None, [0.3], [0.4, 0.5]],
        },
    }
    s = parse_scores(payload, P)
    assert s.num_datapoints == 4
    assert s.metrics == ("acc", "iou[0]", "iou[1]")
    np.testing.assert_array_equal(s.per_datapoint["acc"], [1.0, np.nan, 0.0, np.nan])
    np.testing.assert_array_equal(s.per_datapoint["iou[0]"], [0.1, np.nan, 0.3, 0.4])
    np.testing.assert_array_equal(s.per_datapoint["iou[1]"], [0.2, np.nan, np.nan, 0.5])
    assert s.aggregated["acc"] == 0.5 and s.aggregated["iou[0]"] == 0.1 and math.isnan(s.aggregated["iou[1]"])
    assert s.problems == ()


def test_values_that_are_not_numbers_become_nan_and_are_reported() -> None:
    s = parse_scores({"per_datapoint": {"acc": [1.0, "oops", {"a": 1}], "f1": [0.1, 0.2, 0.3]}}, P)
    np.testing.assert_array_equal(s.per_datapoint["acc"], [1.0, np.nan, np.nan])
    np.testing.assert_array_equal(s.per_datapoint["f1"], [0.1, 0.2, 0.3])
    assert len(s.problems) == 2 and all(str(P) in p and "'acc'" in p for p in s.problems)
    assert "datapoint 1" in s.problems[0]


def test_numeric_strings_are_not_numbers_in_a_flat_list_either() -> None:
    """numpy would parse "1.5" into 1.5; the file's value is a string, so it is NaN and reported like any other."""
    s = parse_scores({"per_datapoint": {"acc": ["1.5", "nan", 3]}}, P)
    np.testing.assert_array_equal(s.per_datapoint["acc"], [np.nan, np.nan, 3.0])
    assert len(s.problems) == 2 and "str '1.5' is not a number" in s.problems[0]


def test_integers_beyond_the_float_range_are_infinite(tmp_path: Path) -> None:
    huge = "1" + "0" * 400
    path = tmp_path / "validation_scores.json"
    path.write_text(
        f'{{"aggregated": {{"a": -{huge}, "c": [{huge}]}}, '
        f'"per_datapoint": {{"a": [1, {huge}], "c": [[-{huge}], [2]]}}}}'
    )
    s = load_scores(path)
    np.testing.assert_array_equal(s.per_datapoint["a"], [1.0, np.inf])
    np.testing.assert_array_equal(s.per_datapoint["c[0]"], [-np.inf, 2.0])
    assert s.aggregated == {"a": -np.inf, "c[0]": np.inf} and s.problems == ()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "not valid JSON (empty file"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"aggregated": {}}', "'per_datapoint' is missing"),
        ('{"per_datapoint": {"a": [1, 2], "b": [1]}}', "different numbers of datapoints (b: 1, a: 2)"),
    ],
)
def test_malformed_files_raise_scores_error_naming_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "validation_scores.json"
    path.write_text(content)
    with pytest.raises(ScoresError) as err:
        load_scores(path)
    assert str(path) in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(
    "content",
    ['{"per_datapoint": {"a": [1%s]}}' % ("0" * 5000), "[" * 100_000],
    ids=["int-beyond-python-int-string-limit", "nested-beyond-recursion-limit"],
)
def test_json_that_python_refuses_to_decode_is_a_scores_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "validation_scores.json"
    path.write_text(content)
    with pytest.raises(ScoresError, match="not valid JSON") as err:
        load_scores(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScoresError, match="scores file is missing"):
        load_scores(tmp_path / "evaluation_scores.json")


@pytest.mark.parametrize(
    ("metric", "higher"),
    [("accuracy", True), ("mIoU", True), ("val_loss", False), ("EPE", False), ("chamfer_dist", False),
     ("abs_rel", False), ("RMSE", False), ("top1_error", False), ("f1", True), ("iou[2]", True),
     ("focalLoss", False), ("mae[0]", False), ("delta1", True)],
)
def test_direction_from_the_name(metric: str, higher: bool) -> None:
    assert higher_is_better(metric) is higher


def test_direction_override_also_covers_per_class_metrics() -> None:
    assert higher_is_better("score[3]", {"score": False}) is False
    assert higher_is_better("loss", {"loss": True}) is True
    s = parse_scores({"per_datapoint": {"score": [[1, 2]]}}, P, overrides={"score": False})
    assert s.higher_is_better == {"score[0]": False, "score[1]": False}


def test_ranking_nan_is_worst_in_both_directions_and_ties_are_stable() -> None:
    values = np.array([0.5, np.nan, 0.1, 0.5, -np.inf, np.nan, 0.9])
    assert rank_indices(values, higher_is_better=True).tolist() == [1, 5, 4, 2, 0, 3, 6]
    assert rank_indices(values, higher_is_better=True, worst_first=False).tolist() == [6, 0, 3, 2, 4, 1, 5]
    assert rank_indices(values, higher_is_better=False).tolist() == [1, 5, 6, 0, 3, 2, 4]
    assert rank_indices(values, higher_is_better=False, worst_first=False).tolist() == [4, 2, 0, 3, 6, 1, 5]


def test_constant_metric_ranks_in_index_order() -> None:
    assert rank_indices(np.ones(5), True).tolist() == [0, 1, 2, 3, 4]


def test_scores_ranking_uses_the_direction_and_is_cached() -> None:
    s = parse_scores({"per_datapoint": {"loss": [0.1, 0.9, None], "acc": [0.9, 0.1, 0.5]}}, P)
    assert s.ranking("loss").tolist() == [2, 1, 0]
    assert s.ranking("acc").tolist() == [1, 2, 0]
    assert s.ranking("acc") is s.ranking("acc")
    with pytest.raises(NotFoundError, match="No metric 'nope'"):
        s.ranking("nope")


def test_ranking_100k_datapoints_puts_nan_first_then_worst(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.random(100_000)
    values[rng.integers(0, 100_000, 1000)] = np.nan
    path = tmp_path / "validation_scores.json"
    path.write_text(json.dumps({"per_datapoint": {"loss": [None if np.isnan(v) else v for v in values.tolist()]}}))
    s = load_scores(path)
    order = s.ranking("loss")  # its speed is measured in benchmarks/bench_backend.py, not asserted here
    nans = int(np.isnan(values).sum())
    assert np.isnan(s.per_datapoint["loss"][order[:nans]]).all()
    finite = s.per_datapoint["loss"][order[nans:]]
    assert not np.isnan(finite).any()
    assert np.all(np.diff(finite) <= 0)  # lower-is-better: worst (largest) first
