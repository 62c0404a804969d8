"""Difference maps and the paired datapoint view, on hand-made records."""

from __future__ import annotations

import numpy as np
import pytest

from eval_viewer.backend.model import DatapointRecord, Item, PassKey
from eval_viewer.display import view as v
from eval_viewer.display.diff import diff_map, difference
from eval_viewer.display.html import to_html
from eval_viewer.display.paired import paired_view
from eval_viewer.log_format import Kind

RNG = np.random.default_rng(3)


def test_difference_of_each_kind() -> None:
    image = RNG.integers(0, 256, (3, 8, 8)).astype(np.uint8)
    other = image.copy()
    other[:, 2, 3] = 255 - other[:, 2, 3]
    values, what, signed = difference(Kind.IMAGE, image, other)  # type: ignore[misc]
    assert np.flatnonzero(values).tolist() == [2 * 8 + 3] and not signed and "RGB" in what
    mask = np.zeros((6, 6), np.int64)
    changed = mask.copy()
    changed[1:3, 1:3] = 2
    assert difference(Kind.MASK, mask, changed)[0].sum() == 4  # type: ignore[index]
    heat = RNG.random((5, 5)).astype(np.float32)
    values, _, signed = difference(Kind.HEATMAP, heat, heat + 0.5)  # type: ignore[misc]
    assert signed and np.allclose(values, 0.5)
    stack = RNG.standard_normal((4, 3, 3)).astype(np.float32)
    values, _, _ = difference(Kind.FEATURE_MAP, {"output": stack}, {"output": stack * 2})  # type: ignore[misc]
    np.testing.assert_allclose(values, np.sqrt((stack ** 2).sum(0)), rtol=1e-5)
    att = RNG.random((2, 4, 4)).astype(np.float32)
    values, _, _ = difference(Kind.ATTENTION, {"weights": att}, {"weights": att[::-1]})  # type: ignore[misc]
    np.testing.assert_allclose(values, np.abs(att[0] - att[1]), rtol=1e-6)
    assert difference(Kind.HEATMAP, heat, np.ones((4, 4))) is None
    assert difference(Kind.TEXT, "a", "b") is None


def test_diff_map_says_when_nothing_changed() -> None:
    heat = Item("gradcam", Kind.HEATMAP, RNG.random((8, 8)).astype(np.float32))
    same = diff_map(heat, heat)
    assert same is not None and any("no difference" in t for t in v.texts(same))
    assert "<img" not in to_html(same), "an all-background picture is not drawn: the caption says it"
    changed = Item("gradcam", Kind.HEATMAP, heat.value + 0.5)
    assert "<img" in to_html(diff_map(heat, changed))
    mask_a = Item("mask", Kind.MASK, np.zeros((8, 8), np.uint8))
    mask_b = Item("mask", Kind.MASK, np.eye(8, dtype=np.uint8))
    node = diff_map(mask_a, mask_b)
    assert node is not None and any("8 of 64 pixels changed class" in t for t in v.texts(node))
    assert diff_map(heat, mask_a) is None


def _record(key: PassKey, scale: float, with_gradcam: bool = True) -> DatapointRecord:
    rng = np.random.default_rng(0)
    att = rng.random((2, 4, 4)).astype(np.float32)
    att[1] = att[1] ** (1 + scale)
    att /= att.sum(-1, keepdims=True)
    debug = {"attn": (Item("attention", Kind.ATTENTION, {"weights": att}),)}
    if with_gradcam:
        debug["cam"] = (Item("", Kind.HEATMAP, rng.random((4, 4)).astype(np.float32)),)
    return DatapointRecord(key, 2, {"miou": 0.8 - scale, "loss": 0.1 + scale},
                           inputs=(Item("image", Kind.IMAGE, rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)),),
                           meta_info={"idx": 2, "name": "x<b>"}, debug=debug)


def test_paired_view_twins_scores_and_internals() -> None:
    a = _record(PassKey("r", "val", 1), 0.0)
    b = _record(PassKey("r", "val", 2), 0.5, with_gradcam=False)
    node = paired_view(a, b, "miou", {"miou": True, "loss": False})
    tables = [n for n in v.walk(node) if isinstance(n, v.Table)]
    scores = next(t for t in tables if "ev-delta-table" in t.cls)
    assert "ev-delta-worse" in scores.cls
    assert scores.rows[0] == ("miou ↑", "0.8", "0.3", "-0.5") and scores.rows[1][0] == "loss ↓"
    internals = next(t for t in tables if "ev-internals" in t.cls)
    assert internals.rows[0][1] == "0" and float(internals.rows[1][1]) > 0  # head 1 changed, head 0 did not
    missing = [n for n in v.walk(node) if isinstance(n, v.Group) and "ev-twin-missing" in n.cls]
    assert len(missing) == 1 and any("not saved in pass b" in t for t in v.texts(missing[0]))
    html = to_html(node)
    assert "x&lt;b&gt;" in html and "ev-pair-twins" in html


@pytest.mark.parametrize("metric", ["miou", "loss"])
def test_delta_class_respects_direction(metric: str) -> None:
    worse = _record(PassKey("r", "val", 1), 0.3)  # miou 0.5, loss 0.4
    better = _record(PassKey("r", "val", 2), 0.0)  # miou 0.8, loss 0.1: better by either metric
    for a, b, expected in ((worse, better, "ev-delta-better"), (better, worse, "ev-delta-worse")):
        node = paired_view(a, b, metric, {"miou": True, "loss": False})
        cls = next(n for n in v.walk(node) if isinstance(n, v.Table) and "ev-delta-table" in n.cls).cls
        assert expected in cls

