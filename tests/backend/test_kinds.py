"""Kind inference: writer tags win, key names are checked against shapes, dtype and shape decide the rest."""

from __future__ import annotations

import numpy as np
import pytest

from eval_viewer.backend.kinds import infer_kind, items_of, resolve_kind
from eval_viewer.log_format import Kind

rng = np.random.default_rng(0)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [
        # names, confirmed by shape
        ("image", rng.random((3, 32, 32)), Kind.IMAGE),
        ("rgb", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), Kind.IMAGE),
        ("seg_mask", rng.integers(0, 5, (32, 32)), Kind.MASK),
        ("label", rng.integers(0, 5, (32, 32)).astype(np.uint8), Kind.MASK),
        ("depth", rng.random((32, 32)), Kind.DEPTH),
        ("gradcam", rng.random((32, 32)), Kind.HEATMAP),
        ("saliency_map", rng.random((1, 32, 32)), Kind.HEATMAP),
        ("attn", _softmax(rng.random((2, 5, 5))), Kind.ATTENTION),
        ("boxes", rng.random((5, 4)), Kind.PROMPTS),
        ("points", rng.random((3, 2)), Kind.PROMPTS),
        ("image_feats", rng.random((64, 8, 8)), Kind.FEATURE_MAP),
        ("pointcloud", rng.random((100, 3)), Kind.POINT_CLOUD),
        # a name whose shape does not fit falls through to shape rules
        ("image", rng.random((64, 8, 8)).astype(np.float32), Kind.FEATURE_MAP),
        ("seg_logits", rng.random((21, 8, 8)), Kind.LOGITS),
        # the reference layout: batch-first values of a batch of one, plain names
        ("image", rng.random((1, 3, 32, 32)).astype(np.float32), Kind.IMAGE),
        ("img", rng.integers(0, 255, (1, 32, 32, 3), dtype=np.uint8), Kind.IMAGE),
        ("gt", rng.integers(0, 3, (1, 32, 32)), Kind.MASK),
        ("pred", rng.integers(0, 3, (1, 32, 32)), Kind.MASK),
        ("target", rng.integers(0, 3, (1, 1, 32, 32)), Kind.MASK),
        ("logits", rng.standard_normal((1, 3, 32, 32)).astype(np.float32), Kind.LOGITS),
        ("pred", rng.standard_normal((1, 5, 16, 16)).astype(np.float32), Kind.LOGITS),
        ("feature_map", rng.standard_normal((1, 16, 8, 8)).astype(np.float32), Kind.FEATURE_MAP),
        ("x", np.moveaxis(_softmax(rng.random((8, 8, 4))), -1, 0), Kind.LOGITS),  # probabilities over classes
        ("x", rng.standard_normal((1, 4, 6, 8, 8)).astype(np.float32), Kind.FEATURE_MAP),  # any rank
        # dtype and shape alone
        ("x", rng.random((3, 32, 32)), Kind.IMAGE),
        ("x", rng.random((32, 32, 3)), Kind.IMAGE),
        ("x", rng.integers(0, 5, (32, 32)), Kind.MASK),
        ("x", rng.random((16, 8, 8)).astype(np.float32), Kind.FEATURE_MAP),
        ("x", _softmax(rng.random((4, 6, 9))), Kind.ATTENTION),
        ("x", rng.random((500, 3)), Kind.POINT_CLOUD),
        ("x", rng.random(10), Kind.SERIES),
        ("x", [1.0, 2.0, 3.0], Kind.SERIES),
        ("x", np.float32(1.5), Kind.SCALAR),
        ("x", np.array(2.0), Kind.SCALAR),
        ("x", 3, Kind.SCALAR),
        ("x", True, Kind.SCALAR),
        ("x", "hello", Kind.TEXT),
        ("x", {"mean": 1.0, "std": 2.0, "shape": (3, 4)}, Kind.STATS),
        ("x", {"nested": {"a": 1}}, Kind.UNKNOWN),
        ("x", None, Kind.UNKNOWN),
        ("x", object(), Kind.UNKNOWN),
        ("x", rng.random((2, 3, 4, 5)), Kind.FEATURE_MAP),
        ("x", rng.random((3, 2)), Kind.UNKNOWN),
    ],
)
def test_infer_kind(key: str, value: object, kind: str) -> None:
    assert infer_kind(key, value) == kind


def test_attention_needs_rows_that_sum_to_one() -> None:
    not_softmax = rng.random((4, 6, 6)).astype(np.float32) + 1.0
    assert infer_kind("x", not_softmax) != Kind.ATTENTION


def test_tag_wins_over_inference_and_bad_tags_are_ignored() -> None:
    arr = rng.random((3, 32, 32))
    assert resolve_kind("inputs.image", arr, {"inputs.image": Kind.DEPTH}) == Kind.DEPTH
    assert resolve_kind("inputs.image", arr, {"inputs.image": "not-a-kind"}) == Kind.IMAGE


def test_items_of_flattens_a_dict_one_level_with_dotted_tags() -> None:
    output = {"feature_map": rng.random((8, 4, 4)), "stats": {"mean": 1.0}, "layer_name": "layer4"}
    items = items_of(output, {"feature_map": Kind.HEATMAP})
    assert [(k, kind) for k, kind, _ in items] == [
        ("feature_map", Kind.HEATMAP), ("stats", Kind.STATS), ("layer_name", Kind.TEXT)
    ]
    section = items_of({"image": rng.random((3, 8, 8))}, {"inputs.image": Kind.IMAGE}, prefix="inputs.")
    assert section[0][:2] == ("image", Kind.IMAGE)


def test_items_of_a_bare_value_uses_the_whole_tag_or_the_debugger_name() -> None:
    heat = rng.random((16, 16))
    assert items_of(heat, {}, name_hint="gradcam")[0][:2] == ("", Kind.HEATMAP)
    assert items_of(heat, {"": Kind.DEPTH}, name_hint="gradcam")[0][:2] == ("", Kind.DEPTH)


def test_a_drawable_value_keeps_its_annotations_as_one_item() -> None:
    attention = _softmax(rng.random((2, 16, 16)))
    items = items_of({"attention": attention, "grid": [4, 4]}, {})
    assert [(k, kind) for k, kind, _ in items] == [("attention", Kind.ATTENTION)]
    assert items[0][2]["grid"] == [4, 4]  # the renderer places the map on the image with it
    cam = {"gradcam": rng.random((16, 16)), "target_class": 3, "score": np.float32(2.5)}
    assert [(k, kind) for k, kind, _ in items_of(cam, {"gradcam": Kind.HEATMAP, "target_class": Kind.SCALAR})] == [
        ("gradcam", Kind.HEATMAP)
    ]


def test_outputs_with_several_drawables_or_a_whole_tag_are_not_bundled() -> None:
    two = {"feature_map": rng.random((8, 4, 4)), "stats": {"mean": 1.0}, "channels": [0, 1]}
    assert [k for k, _, _ in items_of(two, {})] == ["feature_map", "stats", "channels"]
    stats_only = {"mean": 1.0, "std": 2.0}  # nothing drawable: a stats dict stays a stats table's rows
    assert [k for k, _, _ in items_of(stats_only, {})] == ["mean", "std"]
    assert items_of({"a": rng.random((3, 8, 8)), "b": 1}, {"": Kind.STATS})[0][:2] == ("", Kind.STATS)
    section = items_of({"image": rng.random((3, 8, 8)), "id": 4}, {}, prefix="inputs.")  # recorder sections: per key
    assert [k for k, _, _ in section] == ["image", "id"]
