"""image_to_rgb on every layout, and the image, depth and heatmap renderers on realistic values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from display_helpers import colorbars, decode_png, figures, has_error, image_sources, payload_bytes, text_of
from eval_viewer.backend.model import Item
from eval_viewer.display import INVALID_RGB, RenderContext, image_to_rgb, render_item
from eval_viewer.log_format import Kind

H, W = 6, 8


def _reference() -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.random((H, W, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("layout", ["hwc", "chw", "1chw", "hwc4", "list"])
def test_image_to_rgb_uint8_layouts(layout: str) -> None:
    ref = _reference()
    value = {
        "hwc": ref,
        "chw": np.moveaxis(ref, -1, 0),
        "1chw": np.moveaxis(ref, -1, 0)[None],
        "hwc4": np.concatenate([ref, np.full((H, W, 1), 7, np.uint8)], axis=-1),
        "list": ref.tolist(),
    }[layout]
    out = image_to_rgb(value)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("value", [np.full((H, W), 0.5), np.full((1, H, W), 0.5), np.full((H, W, 1), 0.5)])
def test_image_to_rgb_grey_float_in_unit_range(value: np.ndarray) -> None:
    out = image_to_rgb(value)
    assert out.shape == (H, W, 3)
    assert (out == 128).all()


def test_image_to_rgb_normalised_float_is_rescaled_by_min_max() -> None:
    x = np.linspace(-2.1, 2.6, 3 * H * W, dtype=np.float32).reshape(3, H, W)
    out = image_to_rgb(x)
    assert out.min() == 0 and out.max() == 255
    # one scale for all channels: colours keep their relative order
    assert out[0, 0, 0] < out[0, 0, 1] < out[0, 0, 2]


def test_image_to_rgb_wide_ints_and_bool() -> None:
    assert image_to_rgb(np.array([[0, 1000]], dtype=np.int32))[0, :, 0].tolist() == [0, 255]
    assert image_to_rgb(np.array([[10, 20]], dtype=np.int64))[0, :, 0].tolist() == [10, 20]
    assert image_to_rgb(np.array([[False, True]]))[0, :, 1].tolist() == [0, 255]


def test_image_to_rgb_torch_tensors_including_bfloat16() -> None:
    t = torch.rand(3, H, W)
    np.testing.assert_array_equal(image_to_rgb(t), image_to_rgb(t.numpy()))
    assert image_to_rgb(t.to(torch.bfloat16)).shape == (H, W, 3)


def test_image_to_rgb_marks_nan_and_inf() -> None:
    x = np.full((H, W, 3), 0.25, dtype=np.float32)
    x[1, 2, 0] = np.nan
    x[3, 4, :] = np.inf
    out = image_to_rgb(x)
    assert tuple(out[1, 2]) == INVALID_RGB and tuple(out[3, 4]) == INVALID_RGB
    assert tuple(out[0, 0]) == (64, 64, 64)


@pytest.mark.parametrize("bad", [np.zeros((5, 7, 9)), np.zeros((0, 4, 3)), np.zeros(5)])
def test_image_to_rgb_rejects_non_images(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        image_to_rgb(bad)


def test_big_image_is_downsampled_and_sent_as_png() -> None:
    yy, xx = np.mgrid[0:2048, 0:3072]
    image = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    out = render_item(Item("image", Kind.IMAGE, image))
    (source,) = image_sources(out)
    png = decode_png(source)
    assert max(png.shape[:2]) <= 512
    assert not figures(out)  # a picture that needs no zoom: a plain <img>
    assert payload_bytes(out) < 1_000_000
    assert "2048×3072×3 uint8" in text_of(out)


def test_normalised_chw_image_renders() -> None:
    x = np.random.default_rng(0).normal(size=(3, 224, 224)).astype(np.float32)
    out = render_item(Item("inputs.image", Kind.IMAGE, x))
    assert not has_error(out)
    assert decode_png(image_sources(out)[0]).shape == (224, 224, 3)


def test_multiband_image_goes_to_feature_renderer() -> None:
    out = render_item(Item("bands", Kind.IMAGE, np.random.default_rng(0).random((5, 32, 32))))
    assert not has_error(out)
    assert "channels by std" in text_of(out)


def test_depth_with_nan_and_inf() -> None:
    depth = np.tile(np.linspace(0.5, 80.0, 640, dtype=np.float32), (480, 1))
    depth[:100, :100] = np.nan
    depth[200, 300] = np.inf
    out = render_item(Item("depth", Kind.DEPTH, depth))
    assert not has_error(out)
    text = text_of(out)
    assert "10000 NaN, 1 Inf (magenta)" in text
    png = decode_png(image_sources(out)[0])
    assert tuple(png[0, 0]) == INVALID_RGB  # the NaN corner is marked
    assert tuple(png[-1, -1]) != INVALID_RGB
    assert [bar[:2] for bar in colorbars(out)] == [("0.5", "80")]


def test_all_nan_depth_does_not_crash() -> None:
    out = render_item(Item("depth", Kind.DEPTH, np.full((16, 16), np.nan, dtype=np.float32)))
    assert not has_error(out)
    assert "256 NaN" in text_of(out)


def test_heatmap_dict_over_image_with_caption() -> None:
    image = np.zeros((120, 160, 3), dtype=np.uint8)
    cam = np.zeros((7, 7), dtype=np.float32)
    cam[3, 3] = 1.0
    ctx = RenderContext(image=image, class_names=["cat", "dog", "bird", "fish"], mask_opacity=0.5)
    out = render_item(Item("gradcam", Kind.HEATMAP, {"cam": cam, "target_class": 3}), ctx)
    assert not has_error(out)
    assert "target_class 3 (fish)" in text_of(out)
    overlay = decode_png(image_sources(out)[0])
    assert overlay.shape == (120, 160, 3)  # same aspect as the input image
    centre, corner = overlay[60, 80].astype(int), overlay[0, 0].astype(int)
    assert centre.sum() > 0 and centre[0] > centre[2]  # the hot centre is drawn warm over the black image
    assert corner.sum() == 0  # zero heat leaves the image as it is (the overlay is weighted by the map)


def test_heatmap_colours_start_at_zero_for_a_non_negative_map() -> None:
    flat = np.full((8, 8), 0.6, dtype=np.float32)
    flat[0, 0] = 1.0
    out = render_item(Item("gradcam", Kind.HEATMAP, flat))
    assert [bar[:2] for bar in colorbars(out)] == [("0", "1")]
    assert "range [0.6, 1]" in text_of(out)


def test_heatmap_without_image_renders_alone() -> None:
    out = render_item(Item("saliency", Kind.HEATMAP, np.random.default_rng(0).random((1, 3, 64, 64))))
    assert not has_error(out)
    assert len(image_sources(out)) == 1
    assert "max |value| over 3 channels" in text_of(out)


@pytest.mark.parametrize(
    ("values", "dtype"),
    [([1e39, 2e39, 3e39], np.float64), ([-3e38, 0.0, 3e38], np.float32), ([-1.7e308, 0.0, 1.7e308], np.float64)],
    ids=["beyond-float32", "range-beyond-float32", "range-beyond-float64"],
)
def test_huge_finite_values_are_colour_mapped_not_painted_invalid(values: list[float], dtype: type) -> None:
    from eval_viewer.display.colors import SCALE_TOP, apply_colormap, colormap_indices

    x = np.asarray(values, dtype=dtype)
    lo, hi = float(x.min()), float(x.max())
    with np.errstate(all="raise"):
        indices = colormap_indices(x, lo, hi)
        rgb = apply_colormap(x, "Viridis", lo, hi)
    assert indices.tolist() == [0, SCALE_TOP // 2, SCALE_TOP]
    assert len({tuple(c) for c in rgb.tolist()}) == 3 and INVALID_RGB not in [tuple(c) for c in rgb.tolist()]
