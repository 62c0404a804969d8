"""Prompts over the image and point clouds."""

from __future__ import annotations

import numpy as np
import pytest

from display_helpers import figures, has_error, payload_bytes, text_of
from eval_viewer.backend.model import Item
from eval_viewer.display import RenderContext, render_item
from eval_viewer.display.points import MAX_POINTS, parse_prompts
from eval_viewer.log_format import Kind


def test_sam_style_prompts_over_image() -> None:
    value = {"point_coords": np.array([[[10, 20], [30, 40], [0, 0]]]), "point_labels": np.array([[1, 0, -1]]),
             "boxes": np.array([5, 5, 50, 60]), "multimask_output": True}
    out = render_item(Item("prompts", Kind.PROMPTS, value), RenderContext(image=np.zeros((64, 64, 3), np.uint8)))
    assert not has_error(out)
    traces = {t.name: t for t in figures(out)[0].data if t.type == "scatter"}
    assert list(traces["positive"].x) == [10] and list(traces["negative"].y) == [40]
    assert "box" in traces and list(traces["box"].x)[:5] == [5, 50, 50, 5, 5]
    assert "2 points (1 positive)" in text_of(out) and "1 padding" in text_of(out)
    assert "multimask_output True" in text_of(out)


@pytest.mark.parametrize("value, points, boxes", [
    (np.zeros((3, 2)), 3, 0), (np.zeros((2, 4)), 0, 2), (np.array([[1, 2, 1], [3, 4, 0]]), 2, 0),
])
def test_bare_prompt_arrays(value: np.ndarray, points: int, boxes: int) -> None:
    p = parse_prompts(value)
    assert (0 if p.points is None else len(p.points)) == points
    assert (0 if p.boxes is None else len(p.boxes)) == boxes


def test_normalised_prompts_are_scaled_to_the_image() -> None:
    out = render_item(Item("p", Kind.PROMPTS, {"points": [[0.5, 0.25]]}),
                      RenderContext(image=np.zeros((100, 200, 3), np.uint8)))
    pts = [t for t in figures(out)[0].data if t.type == "scatter"][0]
    assert (pts.x[0], pts.y[0]) == (100, 25)
    assert "normalised coordinates" in text_of(out)


def test_prompts_without_image_get_a_canvas() -> None:
    out = render_item(Item("p", Kind.PROMPTS, np.array([[100.0, 40.0]])))
    assert not has_error(out)


def test_point_cloud_is_downsampled_and_drops_nonfinite() -> None:
    rng = np.random.default_rng(0)
    cloud = rng.standard_normal((200_000, 4)).astype(np.float32)
    cloud[:7, 0] = np.nan
    cloud[7, 2] = np.inf
    out = render_item(Item("lidar", Kind.POINT_CLOUD, cloud))
    assert not has_error(out)
    trace = figures(out)[0].data[0]
    assert trace.type == "scatter3d" and len(trace.x) == MAX_POINTS
    assert np.isfinite(np.asarray(trace.x)).all() and np.isfinite(np.asarray(trace.z)).all()
    assert "20,000 of 200,000 points" in text_of(out) and "8 non-finite dropped" in text_of(out)
    assert payload_bytes(out) < 1_000_000


def test_point_cloud_rgb_columns_and_channels_first() -> None:
    xyz = np.random.default_rng(1).random((100, 3))
    rgb = np.tile([[255, 0, 0]], (100, 1))
    out = render_item(Item("pc", Kind.POINT_CLOUD, np.concatenate([xyz, rgb], axis=1)))
    assert figures(out)[0].data[0].marker.color[0] == "#ff0000"
    out_t = render_item(Item("pc", Kind.POINT_CLOUD, xyz.T))
    assert len(figures(out_t)[0].data[0].x) == 100
