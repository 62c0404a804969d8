"""Masks: overlay correctness on a tiny example, the forms a mask arrives in, legends, predictions beside labels."""

from __future__ import annotations

import numpy as np
import pytest

from display_helpers import legend, decode_png, figures, graphs, has_error, image_sources, text_of
from eval_viewer.backend.model import Item
from eval_viewer.display import PALETTE, RenderContext, mask_figure, mask_to_classes, overlay_mask, render_item
from eval_viewer.display.colors import class_color
from eval_viewer.display.compare import mask_agreement, pair_items, render_comparison
from eval_viewer.log_format import Kind


def test_overlay_mask_tiny_example() -> None:
    image = np.array([[[100, 100, 100], [200, 0, 0]],
                      [[0, 0, 0], [10, 20, 30]]], dtype=np.uint8)
    mask = np.array([[0, 1], [2, 0]])
    palette = ((0, 0, 0), (255, 0, 0), (0, 0, 255))
    out = overlay_mask(image, mask, 0.5, palette)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # background untouched
    np.testing.assert_array_equal(out[1, 1], [10, 20, 30])
    np.testing.assert_array_equal(out[0, 1], [228, 0, 0])  # 0.5 * 200 + 0.5 * 255 = 227.5 -> 228
    np.testing.assert_array_equal(out[1, 0], [0, 0, 128])
    np.testing.assert_array_equal(overlay_mask(image, mask, 1.0, palette)[0, 1], [255, 0, 0])
    np.testing.assert_array_equal(overlay_mask(image, mask, 0.0, palette), image)
    assert image[0, 1, 0] == 200  # input not modified


def test_overlay_mask_resizes_mask_nearest() -> None:
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    out = overlay_mask(image, np.array([[0, 1], [0, 0]]), 1.0)
    assert (out[:2, 2:] == class_color(1)).all() and (out[:2, :2] == 0).all() and (out[2:] == 0).all()


def test_palette_is_fixed_and_cycles_past_its_end() -> None:
    assert len(PALETTE) == 16 and len(set(PALETTE)) == 16
    assert class_color(1) == PALETTE[1] and class_color(16) == PALETTE[1] and class_color(15) == PALETTE[15]


@pytest.mark.parametrize("form", ["int", "bool", "float_ids", "prob", "logits", "onehot", "hw1"])
def test_mask_to_classes_forms(form: str) -> None:
    ids = np.array([[0, 1], [2, 1]])
    value = {
        "int": ids,
        "bool": ids == 1,
        "float_ids": ids.astype(np.float32),
        "prob": np.where(ids == 1, 0.9, 0.1),
        "logits": np.stack([ids == c for c in range(3)]).astype(np.float32) * 5 - 1,
        "onehot": np.stack([ids == c for c in range(3)]).astype(np.int64),
        "hw1": ids[..., None],
    }[form]
    expected = (ids == 1).astype(np.int64) if form in ("bool", "prob") else ids
    np.testing.assert_array_equal(mask_to_classes(value), expected)


def test_logits_with_nan_never_win() -> None:
    logits = np.zeros((2, 1, 1), dtype=np.float32)
    logits[0, 0, 0] = np.nan
    assert mask_to_classes(logits)[0, 0] == 1


def test_mask_renders_over_image_with_legend_names() -> None:
    image = np.full((60, 80, 3), 50, dtype=np.uint8)
    mask = np.zeros((30, 40), dtype=np.int64)
    mask[:10, :10] = 3
    ctx = RenderContext(image=image, class_names=["bg", "road", "car", "person"], mask_opacity=1.0)
    out = render_item(Item("labels.mask", Kind.MASK, mask), ctx)
    assert not has_error(out)
    png = decode_png(image_sources(out)[0])
    assert png.shape == (60, 80, 3)  # drawn at the image's size
    assert tuple(png[5, 5]) == class_color(3) and tuple(png[50, 70]) == (50, 50, 50)
    assert [text for _, text in legend(out)] == ["3 person · 8.3%"]  # background not in an overlay's legend
    assert "1 foreground classes: 3 person" in text_of(out)


def test_mask_alone_uses_palette_and_big_masks_are_downsampled() -> None:
    mask = np.zeros((2000, 1000), dtype=np.int32)
    mask[1000:] = 5
    fig = mask_figure(mask)
    png = decode_png(fig.data[0].source)
    assert max(png.shape[:2]) <= 512
    assert tuple(png[0, 0]) == PALETTE[0] and tuple(png[-1, -1]) == class_color(5)


def test_binary_mask_stack_gets_one_panel_per_mask_with_scores() -> None:
    masks = np.zeros((3, 20, 20), dtype=bool)
    masks[0, :5] = masks[1, :10] = masks[2] = True
    out = render_item(Item("sam", Kind.MASK, {"masks": masks, "iou_predictions": np.array([0.91, 0.5, 0.12])}))
    assert not has_error(out)
    assert graphs(out) == []  # a binary mask has nothing to hover: plain pictures, one per mask
    pictures = [decode_png(src) for src in image_sources(out)]
    assert len(pictures) == 3 and all(p.shape == (20, 20, 3) for p in pictures)
    assert tuple(pictures[1][9, 0]) == class_color(2) and tuple(pictures[1][10, 0]) == class_color(0)
    assert "mask 0 · score 0.91 · 25.0%" in text_of(out)

    image = np.full((40, 40, 3), 200, dtype=np.uint8)  # over the input image, at its size
    over = render_item(Item("sam", Kind.MASK, masks), RenderContext(image=image, mask_opacity=1.0))
    pictures = [decode_png(src) for src in image_sources(over)]
    assert pictures[0].shape == (40, 40, 3)
    assert tuple(pictures[0][0, 0]) == class_color(1) and tuple(pictures[0][39, 0]) == (200, 200, 200)


def test_mask_agreement_and_comparison_error_map() -> None:
    label = np.array([[0, 1], [1, 1]])
    pred = np.array([[0, 1], [0, 1]])
    scores = mask_agreement(label, pred)
    assert scores["pixel_accuracy"] == pytest.approx(0.75)
    assert scores["mean_iou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    out = render_comparison(Item("mask", Kind.MASK, label), Item("mask", Kind.MASK, pred),
                            RenderContext(image=np.full((2, 2, 3), 100, dtype=np.uint8)))
    assert not has_error(out) and len(image_sources(out)) == 3 and not graphs(out)  # plain pictures
    errors = decode_png(image_sources(out)[2])
    assert tuple(errors[1, 0]) == (255, 40, 40) and tuple(errors[0, 0]) == (60, 60, 60)
    assert "pixel accuracy 0.75" in text_of(out)


def test_class_id_comparison_and_fallback() -> None:
    ctx = RenderContext(class_names=["cat", "dog"])
    out = render_comparison(Item("y", Kind.SCALAR, 0), Item("y", Kind.SCALAR, np.int64(1)), ctx)
    assert "0 (cat)" in text_of(out) and "1 (dog)" in text_of(out) and "✗ wrong" in text_of(out)
    both = render_comparison(Item("boxes", Kind.UNKNOWN, [1, 2]), Item("boxes", Kind.TEXT, "a box"))
    assert "label · boxes" in text_of(both) and "prediction · boxes" in text_of(both)


def test_pair_items_by_key_then_by_kind() -> None:
    labels = (Item("mask", Kind.MASK, 0), Item("cls", Kind.SCALAR, 1), Item("extra", Kind.TEXT, "x"))
    preds = (Item("cls", Kind.SCALAR, 2), Item("seg_logits", Kind.MASK, 3), Item("other", Kind.SERIES, 4))
    pairs = [(a.key if a else None, b.key if b else None) for a, b in pair_items(labels, preds)]
    assert pairs == [("cls", "cls"), ("mask", "seg_logits"), ("extra", None), (None, "other")]
