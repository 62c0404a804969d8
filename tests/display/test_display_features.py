"""Feature maps: exact statistics, top channels, PCA, and a huge map staying small on the wire."""

from __future__ import annotations


import numpy as np
import pytest

from display_helpers import decode_png, figures, has_error, image_sources, payload_bytes, text_of
from eval_viewer.backend.model import Item
from eval_viewer.display import INVALID_RGB, render_item
from eval_viewer.display.features import channel_stats, pca_rgb, top_channels
from eval_viewer.log_format import Kind


def test_channel_stats_exact_with_nan_and_inf() -> None:
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    x[1, 0, 0] = np.nan
    x[1, 0, 1] = -np.inf
    stats = channel_stats(x)
    finite1 = x[1][np.isfinite(x[1])]
    np.testing.assert_allclose(stats["mean"], [x[0].mean(), finite1.mean()])
    np.testing.assert_allclose(stats["std"], [x[0].std(), finite1.std()], rtol=1e-6)
    np.testing.assert_array_equal(stats["min"], [0, finite1.min()])
    np.testing.assert_array_equal(stats["max"], [11, 23])
    np.testing.assert_array_equal(stats["n_nan"], [0, 1])
    np.testing.assert_array_equal(stats["n_inf"], [0, 1])


def test_all_nan_channel_is_reported_not_crashed() -> None:
    x = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
    x[2] = np.nan
    stats = channel_stats(x)
    assert np.isnan(stats["mean"][2]) and stats["n_nan"][2] == 64
    assert 2 not in top_channels(stats, 3)
    out = render_item(Item("f", Kind.FEATURE_MAP, x))
    assert not has_error(out)
    assert "64 NaN, 0 Inf" in text_of(out)
    pca = decode_png(image_sources(out)[1])
    assert (pca == INVALID_RGB).all(axis=-1).all()  # every pixel has a NaN channel


def test_top_channels_by_std() -> None:
    base = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    x = np.stack([scale * base for scale in (1.0, 5.0, 0.0, 3.0, 2.0)])
    assert top_channels(channel_stats(x), 3).tolist() == [1, 3, 4]


def test_pca_separates_two_regions() -> None:
    x = np.zeros((8, 16, 16), dtype=np.float32)
    x[:, :, 8:] = np.linspace(1, 2, 8)[:, None, None]  # right half differs along one direction
    rgb, ratios = pca_rgb(x)
    assert rgb.shape == (16, 16, 3)
    assert ratios[0] == pytest.approx(1.0)
    assert not np.array_equal(rgb[0, 0], rgb[0, 15])
    assert (rgb[:, :8] == rgb[0, 0]).all() and (rgb[:, 8:] == rgb[0, 15]).all()


def test_huge_feature_map_renders_small() -> None:
    x = np.random.default_rng(0).standard_normal((256, 512, 512), dtype=np.float32)
    out = render_item(Item("backbone.layer4", Kind.FEATURE_MAP, x))
    assert not has_error(out)
    assert payload_bytes(out) < 1_000_000
    mosaic, pca, chart = (decode_png(s) for s in image_sources(out))
    assert max(mosaic.shape[:2]) <= 4 * 96 + 3 * 2 and max(pca.shape[:2]) <= 128
    assert chart.shape[1] <= 512 and "bins of" not in text_of(out)  # 256 channels: one column each
    assert "top 16 of 256 channels by std" in text_of(out)


def test_single_channel_and_dict_values() -> None:
    out = render_item(Item("f", Kind.FEATURE_MAP, {"features": np.ones((1, 1, 6, 6)), "layer": "conv1"}))
    assert not has_error(out)
    assert "layer conv1" in text_of(out)
    assert len(image_sources(out)) == 2 and "PCA" not in text_of(out)  # mosaic and chart, no PCA for one channel
