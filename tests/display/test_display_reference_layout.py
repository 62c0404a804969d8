"""A log in the plain reference layout draws as well as ours: kinds inferred through the batch-of-one axis, the image,
the label and the prediction found in a debugger's output fill Inputs and Labels (saying where they came from),
class maps are coloured masks with a legend, and a viewer sidecar names the classes and their colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from display_helpers import decode_png, image_sources, legend, text_of
from eval_viewer.backend import LogStore
from eval_viewer.display import datapoint_view
from eval_viewer.display.view import Group, Problem, walk
from eval_viewer.log_format import VIEWER_FILE, Kind
from reference_pages import CLASS_NAMES, write_pages


def _record(root: Path, cache: Path, idx: int = 1):  # noqa: ANN202
    with LogStore([str(root)], cache_dir=cache, index_wait_s=30, rescan_s=0) as store:
        return store.datapoint(("ref_run", "val", 0), idx)


def _section(view: Group, slug: str) -> Group:
    return next(n for n in walk(view) if isinstance(n, Group) and f"ev-section-{slug}" in n.cls.split())


def _legend_names(node: Group) -> list[str]:
    return [text for _, text in legend(node)]


def test_reference_values_get_their_kinds_and_fill_the_sections(tmp_path: Path) -> None:
    record = _record(write_pages(tmp_path / "logs"), tmp_path / "cache")
    assert [(i.key, i.kind) for i in record.inputs] == [("image", Kind.IMAGE)]
    assert [(i.key, i.kind) for i in record.labels] == [("gt", Kind.MASK)]
    assert [(i.key, i.kind) for i in record.predictions] == [("pred", Kind.MASK)]
    kinds = {(name, item.key): item.kind for name, items in record.debug.items() for item in items}
    assert kinds == {("sample", "logits"): Kind.LOGITS, ("backbone", "feature_map"): Kind.FEATURE_MAP,
                     ("attention", "attn"): Kind.ATTENTION, ("stats", "mean"): Kind.SCALAR,
                     ("stats", "std"): Kind.SCALAR, ("stats", "max"): Kind.SCALAR,
                     ("stats", "dead_fraction"): Kind.SCALAR}
    assert "debugger 'sample'" in record.notes["inputs"] and "'gt'" in record.notes["labels"]


def test_reference_datapoint_view_draws_image_masks_with_legend_and_feature_map(tmp_path: Path) -> None:
    record = _record(write_pages(tmp_path / "logs"), tmp_path / "cache")
    view = datapoint_view(record, "iou")
    inputs = _section(view, "inputs")
    assert "found in the output of debugger 'sample'" in text_of(inputs)
    assert "No inputs were saved" not in text_of(view)
    picture = decode_png(image_sources(inputs)[0])
    assert picture.std() > 10  # a real picture, not a flat or black one

    labels = _section(view, "labels")
    assert "found in the output of debugger 'sample'" in text_of(labels)
    names = _legend_names(labels)
    assert any(name.startswith("1 ") for name in names) and any(name.startswith("2 ") for name in names)
    overlay = decode_png(image_sources(labels)[0])
    assert overlay.shape[-1] == 3 and overlay.std() > 10
    assert "differ" in text_of(labels)  # label and prediction were paired and compared

    debug = _section(view, "debug-outputs")
    kinds = {n.cls for n in walk(debug) if isinstance(n, Group) and n.cls.startswith("ev-item ev-kind-")}
    assert {"ev-item ev-kind-feature_map", "ev-item ev-kind-logits", "ev-item ev-kind-attention",
            "ev-item ev-kind-scalar"} <= kinds
    assert "ev-item ev-kind-unknown" not in kinds
    assert not [n for n in walk(view) if isinstance(n, Problem)]  # every item drew
    assert "top 8" in text_of(debug) or "of 16 channels" in text_of(debug)


def test_viewer_sidecar_names_classes_colours_them_and_overrides_kinds(tmp_path: Path) -> None:
    viewer = {"class_names": CLASS_NAMES, "palette": [[0, 0, 0], "#112233", [10, 200, 30]],
              "kinds": {"stats": {"": "series"}, "sample": {"logits": "feature_map"}}}
    record = _record(write_pages(tmp_path / "logs", viewer=viewer), tmp_path / "cache")
    assert record.class_names == tuple(CLASS_NAMES)
    assert record.palette == ((0, 0, 0), (0x11, 0x22, 0x33), (10, 200, 30))
    assert {i.key: i.kind for i in record.debug["sample"]} == {"logits": Kind.FEATURE_MAP}
    labels = _section(datapoint_view(record, "iou"), "labels")
    names = _legend_names(labels)
    assert any("disc" in name for name in names) and any("edge" in name for name in names)
    assert "rgb(17,34,51)" in {colour for colour, _ in legend(labels)}


def test_a_malformed_sidecar_is_reported_and_ignored(tmp_path: Path) -> None:
    root = write_pages(tmp_path / "logs")
    (root / "ref_run" / VIEWER_FILE).write_text('{"class_names": 3, "palette": ["red"], "kinds": {"a": {"b": "?"}}}')
    record = _record(root, tmp_path / "cache")
    assert record.class_names is None and record.palette is None
    assert any("class_names" in p for p in record.problems) and any("palette" in p for p in record.problems)
    assert any("unknown kind" in p for p in record.problems)


@pytest.mark.parametrize("layout", ["chw_float", "hwc_uint8", "hw_float", "chw_uint8"])
def test_images_in_any_layout_with_a_batch_axis(layout: str, tmp_path: Path) -> None:
    from eval_viewer.backend.kinds import infer_kind
    from eval_viewer.display.images import image_to_rgb

    rng = np.random.default_rng(1)
    value = {"chw_float": rng.random((1, 3, 20, 24)).astype(np.float32),
             "hwc_uint8": rng.integers(0, 255, (1, 20, 24, 3), dtype=np.uint8),
             "hw_float": rng.random((1, 20, 24)).astype(np.float32),
             "chw_uint8": rng.integers(0, 255, (1, 3, 20, 24), dtype=np.uint8)}[layout]
    assert infer_kind("image", value) == Kind.IMAGE
    assert image_to_rgb(value).shape == (20, 24, 3)
