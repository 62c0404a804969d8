"""Honest figures: one test per rule. A flat map says so and is drawn empty; dead channels are marked; PCA says what
each colour explains and does not stretch noise; the mask palette is colour-blind safe, apart from the error colour
and visible on an image of its own colour; every colour bar states its range."""

from __future__ import annotations

import numpy as np
import pytest

from display_helpers import colorbars, legend, decode_png, figures, image_sources, text_of
from eval_viewer.backend.model import Item
from eval_viewer.display import RenderContext, render_item
from eval_viewer.display.colors import DEAD_RGB, ERROR_RGB, PALETTE, class_color, colormap_lut
from eval_viewer.display.features import PCA_MIN_RATIO, channel_mosaic, channel_stats, pca_rgb
from eval_viewer.display.masks import overlay_mask
from eval_viewer.log_format import Kind

rng = np.random.default_rng(0)


@pytest.mark.parametrize("kind", [Kind.HEATMAP, Kind.DEPTH])
def test_an_all_zero_map_says_so_and_is_drawn_empty(kind: str) -> None:
    image = np.full((16, 16, 3), 100, dtype=np.uint8)
    out = render_item(Item("gradcam", kind, np.zeros((16, 16), np.float32)), RenderContext(image=image))
    assert "zero everywhere" in text_of(out)
    assert not figures(out)  # no colour scale, no colour bar: nothing is drawn as if it were data
    for src in image_sources(out):
        assert (decode_png(src) == 100).all()  # at most the input image, untouched


def test_a_constant_map_says_its_value() -> None:
    out = render_item(Item("cam", Kind.HEATMAP, np.full((8, 8), 0.7, np.float32)))
    assert "0.7 everywhere" in text_of(out) and not figures(out)


def test_a_map_that_varies_is_drawn_with_a_colour_bar() -> None:
    heat = np.zeros((16, 16), np.float32)
    heat[4:8, 4:8] = 1.0
    out = render_item(Item("cam", Kind.HEATMAP, heat))
    assert "everywhere" not in text_of(out) and colorbars(out) and image_sources(out)


def test_dead_channels_are_counted_and_drawn_grey_not_in_the_scale() -> None:
    fmap = np.zeros((4, 12, 12), np.float32)
    fmap[0] = rng.standard_normal((12, 12))
    out = render_item(Item("feat", Kind.FEATURE_MAP, fmap))
    assert "3 of 4 channels are dead" in text_of(out)
    assert "tiles, row by row: c0, c1 dead, c2 dead, c3 dead" in text_of(out)
    pixels = decode_png(image_sources(out)[0])
    tile = pixels.shape[0] // 2 - 1
    dead_tile = pixels[:tile, -tile:]  # top right: the second channel, a dead one
    assert (dead_tile == DEAD_RGB).all()
    viridis = {tuple(c) for c in colormap_lut("Viridis").tolist()}
    assert DEAD_RGB not in viridis


def test_a_constant_tile_is_grey_in_the_mosaic() -> None:
    fmap = np.stack([rng.standard_normal((8, 8)), np.full((8, 8), 3.0)]).astype(np.float32)
    indices, _, (th, tw) = channel_mosaic(fmap, np.array([0, 1]))
    from eval_viewer.display.colors import DEAD_INDEX

    assert (indices[:th, -tw:] == DEAD_INDEX).all() and not (indices[:th, :tw] == DEAD_INDEX).any()


def test_pca_states_each_components_share_and_leaves_a_negligible_one_dark() -> None:
    h = w = 16
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    big, mid = yy - yy.mean(), (xx - xx.mean()) * 0.5
    tiny = rng.standard_normal((h, w)).astype(np.float32) * 1e-3  # far below the threshold
    fmap = np.stack([big, mid, tiny, big * 0.5 + mid, tiny * 0.5]).astype(np.float32)
    rgb, ratios = pca_rgb(fmap)
    assert ratios[0] > ratios[1] > PCA_MIN_RATIO > ratios[2]
    assert rgb[..., 2].max() == 0 and rgb[..., 0].std() > 20  # blue never stretched, red is
    text = text_of(render_item(Item("feat", Kind.FEATURE_MAP, fmap)))
    assert "PCA → RGB · R" in text and "B 0.0% (too little, dark)" in text


def _deuteranopia(rgb: np.ndarray) -> np.ndarray:
    """Machado et al. (2009) simulation of deuteranopia (severity 1), on linear-ish [0, 1] RGB."""
    m = np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]])
    return np.clip(rgb @ m.T, 0, 1)


def _protanopia(rgb: np.ndarray) -> np.ndarray:
    m = np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]])
    return np.clip(rgb @ m.T, 0, 1)


def test_the_first_classes_stay_apart_with_colour_blindness_and_away_from_the_error_colour() -> None:
    colours = np.array([class_color(c) for c in range(1, 7)], dtype=np.float64) / 255
    for simulate in (lambda x: x, _deuteranopia, _protanopia):
        seen = simulate(colours)
        gaps = [np.linalg.norm(seen[i] - seen[j]) for i in range(6) for j in range(i + 1, 6)]
        assert min(gaps) > 0.18, simulate  # the old 20-colour palette fell to 0.15 with protanopia
    error = np.array(ERROR_RGB, dtype=np.float64)
    assert min(np.linalg.norm(np.array(c, dtype=np.float64) - error) for c in PALETTE[1:]) > 100
    assert len(set(PALETTE)) == len(PALETTE)


def test_a_class_is_visible_on_an_image_of_its_own_colour() -> None:
    colour = class_color(6)  # yellow, on a yellow image: the case that used to vanish
    image = np.tile(np.array(colour, dtype=np.uint8), (32, 32, 1))
    mask = np.zeros((32, 32), np.int64)
    mask[8:24, 8:24] = 6
    out = overlay_mask(image, mask, 0.5)
    boundary = out[8, 8:24]
    assert np.abs(boundary.astype(int) - np.array(colour)).sum(axis=-1).min() > 200  # outlined in black
    assert (out[0, 0] == colour).all()  # background untouched


def test_mask_legends_name_classes_and_overlays_are_outlined() -> None:
    mask = np.zeros((32, 32), np.int64)
    mask[4:12, 4:12] = 1
    mask[20:28, 20:28] = 2
    grey = np.full((32, 32, 3), 120, dtype=np.uint8)
    out = render_item(Item("mask", Kind.MASK, mask), RenderContext(image=grey, class_names=["bg", "road", "car"]))
    names = [text for _, text in legend(out)]
    assert any("road" in n for n in names) and any("car" in n for n in names)
    picture = decode_png(image_sources(out)[0])
    assert tuple(picture[4, 4]) != tuple(picture[6, 6])  # the region's edge is outlined


@pytest.mark.parametrize("kind,value", [
    (Kind.HEATMAP, rng.random((16, 16)).astype(np.float32)),
    (Kind.DEPTH, rng.random((16, 16)).astype(np.float32) * 7 + 2),
    (Kind.LOGITS, rng.standard_normal((3, 16, 16)).astype(np.float32)),
    (Kind.ATTENTION, (lambda a: a / a.sum(-1, keepdims=True))(rng.random((2, 16, 16)).astype(np.float32))),
])
def test_every_colour_bar_states_its_range(kind: str, value: np.ndarray) -> None:
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    out = render_item(Item("x", kind, value), RenderContext(image=image))
    for low, high, text in colorbars(out):  # HTML colour bars beside plain pictures: both ends written
        assert low in text and high in text and float(high) > float(low)
    bars = []
    for fig in figures(out):
        for trace in fig.data:
            marker = getattr(trace, "marker", None)
            if marker is not None and getattr(marker, "showscale", None):
                bars.append((marker.cmin, marker.cmax, marker.colorbar))
            elif trace.type == "heatmap" and trace.showscale is not False:
                bars.append((trace.zmin, trace.zmax, trace.colorbar))
    assert bars or colorbars(out)
    for low, high, bar in bars:
        assert bar.tickvals[0] == pytest.approx(low) and bar.tickvals[-1] == pytest.approx(high)
        assert bar.ticktext[0] and bar.ticktext[-1]
