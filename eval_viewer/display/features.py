"""Feature maps (C, H, W): the most varied channels as one mosaic, a PCA-to-RGB image, per-channel statistics.

A (256, 512, 512) float32 map is 256 MB; what reaches the browser is a palette-PNG mosaic of the top channels by
variance (each tile block-averaged to :data:`TILE` px), a PCA image computed on a strided subsample, and a statistics
chart binned past :data:`MAX_STAT_CHANNELS` channels: well under a megabyte. Statistics themselves are exact (computed
over every pixel, channel chunk by channel chunk so no full-size temporary is made).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import plotly.graph_objects as go

from eval_viewer.display.arrays import block_mean, first_array, scalar_extras, squeeze_leading, strided, to_numpy
from eval_viewer.display.colors import DEAD_INDEX, GAP_INDEX, SCALES, colormap_indices, indexed_palette
from eval_viewer.display.encode import png_data_url
from eval_viewer.display.figures import caption, fmt, image_figure, panel, picture, row
from eval_viewer.display.images import extras_caption
from eval_viewer.display.registry import RenderContext, register
from eval_viewer.display.view import Details, Group, Image, Node, Text
from eval_viewer.log_format import Kind

__all__ = ["channel_stats", "top_channels", "channel_mosaic", "mosaic_figure", "pca_rgb", "render_feature_map",
           "dead_channels", "stats_picture", "TOP_K", "TILE", "MAX_STAT_CHANNELS", "PCA_MIN_RATIO"]

TOP_K = 16
TILE = 96
PCA_SIDE = 128
PCA_MIN_RATIO = 0.01
"""A principal component explaining less than this share of the variance is not stretched to full colour: its RGB
channel stays dark (stretching 0.2 % of the variance over 0..255 would paint noise as structure)."""
MAX_STAT_CHANNELS = 256
_CHUNK_ELEMENTS = 8_000_000
_BIN_REDUCERS: dict[str, Callable[..., Any]] = {"mean": np.nanmean, "min": np.nanmin, "max": np.nanmax}
_GAP = 2


def _as_chw(value: Any) -> tuple[np.ndarray, str | None]:
    array = squeeze_leading(to_numpy(value), 3)
    note = None
    if array.ndim > 3:  # (C, D, H, W), (T, C, H, W)...: every leading axis becomes channels
        note = "channels are the " + "×".join(map(str, array.shape[:-2])) + " leading axes, flattened"
        array = array.reshape(-1, *array.shape[-2:])
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"a feature map needs shape (C, H, W) or (H, W), got {tuple(array.shape)}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"a feature map needs a numeric dtype, got {array.dtype}")
    return array, note


def channel_stats(fmap: np.ndarray) -> dict[str, np.ndarray]:
    """Exact per-channel ``mean``, ``std``, ``min``, ``max`` over finite values, and ``n_nan``, ``n_inf``, each (C,).

    Works through channel chunks of at most ~8M elements, so memory stays bounded for memory-mapped inputs.
    """
    c = fmap.shape[0]
    per = max(1, int(np.prod(fmap.shape[1:])))
    step = max(1, _CHUNK_ELEMENTS // per)
    out = {k: np.empty(c, dtype=np.float64) for k in ("mean", "std", "min", "max")}
    out["n_nan"] = np.zeros(c, dtype=np.int64)
    out["n_inf"] = np.zeros(c, dtype=np.int64)
    for start in range(0, c, step):
        x = np.asarray(fmap[start:start + step]).reshape(-1, per).astype(np.float32, copy=False)
        sl = slice(start, start + len(x))
        finite = np.isfinite(x)
        if finite.all():
            out["mean"][sl] = x.mean(axis=1, dtype=np.float64)
            out["std"][sl] = x.std(axis=1, dtype=np.float64)
            out["min"][sl], out["max"][sl] = x.min(axis=1), x.max(axis=1)
            continue
        nan = np.isnan(x)
        out["n_nan"][sl] = nan.sum(axis=1)
        out["n_inf"][sl] = (~finite & ~nan).sum(axis=1)
        masked = np.where(finite, x, np.nan)
        with np.errstate(all="ignore"), _quiet():
            out["mean"][sl] = np.nanmean(masked, axis=1, dtype=np.float64)
            out["std"][sl] = np.nanstd(masked, axis=1, dtype=np.float64)
            out["min"][sl], out["max"][sl] = np.nanmin(masked, axis=1), np.nanmax(masked, axis=1)
    return out


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's 'all-NaN slice' RuntimeWarnings: an all-NaN channel is reported, not warned about."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def top_channels(stats: Mapping[str, np.ndarray], k: int = TOP_K) -> np.ndarray:
    """Indices of the ``k`` channels with the largest standard deviation (ties by index; NaN std last)."""
    std = np.nan_to_num(np.asarray(stats["std"], dtype=np.float64), nan=-1.0, posinf=-1.0)
    order = np.argsort(-std, kind="stable")
    return order[: min(k, len(order))]


def channel_mosaic(fmap: np.ndarray, channels: np.ndarray, tile: int = TILE) -> tuple[np.ndarray, int, tuple[int, int]]:
    """Palette indices of a mosaic of ``channels`` (each block-averaged to ``tile`` px and scaled to its own finite
    min/max; NaN/Inf cells get the invalid colour), ``_GAP`` px apart. Returns (indices, columns, tile shape)."""
    tiles = [block_mean(np.asarray(fmap[int(c)]), tile) for c in channels]
    th, tw = tiles[0].shape
    cols = max(1, math.ceil(math.sqrt(len(tiles))))
    rows = math.ceil(len(tiles) / cols)
    mosaic = np.full((rows * (th + _GAP) - _GAP, cols * (tw + _GAP) - _GAP), GAP_INDEX, dtype=np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        finite = t[np.isfinite(t)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        cell = (slice(r * (th + _GAP), r * (th + _GAP) + th), slice(c * (tw + _GAP), c * (tw + _GAP) + tw))
        if finite.size and hi <= lo:  # constant: nothing to stretch; grey, never a colour of the scale
            mosaic[cell] = np.where(np.isfinite(t), DEAD_INDEX, colormap_indices(t, lo, hi))
        else:
            mosaic[cell] = colormap_indices(t, lo, hi)
    return mosaic, cols, (th, tw)


def dead_channels(stats: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(dead, constant)`` boolean masks over channels: zero everywhere, and one non-zero value everywhere."""
    flat = (np.asarray(stats["max"]) == np.asarray(stats["min"])) & np.isfinite(stats["min"])
    dead = flat & (np.asarray(stats["max"]) == 0)
    return dead, flat & ~dead


def mosaic_figure(stack: np.ndarray, picks: np.ndarray, labels: list[str], scale_name: str, tile: int = TILE,
                  height: int = 320) -> go.Figure:
    """Small multiples as one palette PNG: ``stack[picks]`` tiled by :func:`channel_mosaic`, each tile labelled."""
    indices, cols, (th, tw) = channel_mosaic(stack, picks, tile)
    notes = []
    for i, label in enumerate(labels):
        r, c = divmod(i, cols)
        notes.append({"x": c * (tw + _GAP) - 0.5, "y": r * (th + _GAP) - 0.5, "text": label, "showarrow": False,
                      "xanchor": "left", "yanchor": "top", "font": {"size": 9, "color": "white"},
                      "bgcolor": "rgba(0,0,0,0.45)", "borderpad": 1})
    return image_figure(indices, palette=indexed_palette(scale_name), height=height, trace={"hoverinfo": "skip"},
                        annotations=notes)


def pca_rgb(fmap: np.ndarray, max_side: int = PCA_SIDE,
            min_ratio: float = PCA_MIN_RATIO) -> tuple[np.ndarray, np.ndarray]:
    """The first three principal components over channels, per pixel, as an RGB uint8 image (computed on a strided
    subsample of at most ``max_side`` px). Each component explaining at least ``min_ratio`` of the variance is
    stretched between its 1st and 99th percentile, the others stay dark; a component's sign is fixed by its largest
    loading so colours do not flip between redraws. Returns (rgb, explained variance ratios).
    """
    x = np.asarray(strided(fmap, max_side), dtype=np.float32)
    c, h, w = x.shape
    flat = x.reshape(c, -1).astype(np.float64)
    finite = np.isfinite(flat)
    counts = np.maximum(finite.sum(axis=1, keepdims=True), 1)
    means = np.where(finite, flat, 0.0).sum(axis=1, keepdims=True) / counts
    centred = np.where(finite, flat - means, 0.0)
    cov = centred @ centred.T / max(centred.shape[1], 1)
    eigvals, eigvecs = np.linalg.eigh(cov)
    order = np.argsort(eigvals)[::-1][:3]
    vecs = eigvecs[:, order]
    vecs *= np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(vecs.shape[1])])
    comps = vecs.T @ centred
    total = float(np.clip(eigvals, 0, None).sum())
    ratios = np.clip(eigvals[order], 0, None) / total if total > 0 else np.zeros(len(order))
    rgb = np.zeros((3, comps.shape[1]), dtype=np.float64)
    for i, comp in enumerate(comps):
        if ratios[i] < min_ratio:
            continue  # too little variance to show: the channel stays dark rather than stretched
        lo, hi = np.percentile(comp, [1, 99])
        rgb[i] = np.clip((comp - lo) / (hi - lo), 0, 1) if hi > lo else 0.0
    image = np.rint(rgb.T.reshape(h, w, 3) * 255).astype(np.uint8)
    invalid = ~finite.all(axis=0).reshape(h, w)
    image[invalid] = (255, 0, 255)
    return image, ratios


def _binned(stats: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """Per-channel statistics in at most :data:`MAX_STAT_CHANNELS` bins (mean of means and stds, min of mins, max of
    maxes), and the bin size."""
    c = len(stats["mean"])
    group = max(1, math.ceil(c / MAX_STAT_CHANNELS))
    n = math.ceil(c / group)
    pad = n * group - c
    out = {}
    for key, how in (("mean", "mean"), ("std", "mean"), ("min", "min"), ("max", "max")):
        v = np.concatenate([np.asarray(stats[key], dtype=np.float64), np.full(pad, np.nan)]).reshape(n, group)
        with np.errstate(all="ignore"), _quiet():
            out[key] = np.asarray(_BIN_REDUCERS[how](v, axis=1), dtype=np.float64)
    return out, group


_STATS_HEIGHT = 90
_STATS_WIDTH = 512
_BAND_RGB = {"range": (225, 228, 235), "std": (160, 196, 230), "mean": (31, 119, 180)}


def stats_picture(stats: Mapping[str, np.ndarray]) -> Group:
    """Per-channel statistics as one small PNG (a chart nobody needs to hover): for each channel (or bin of
    channels) its min–max in grey, mean ± std in light blue and its mean in dark blue, with the y range written."""
    binned, group = _binned(stats)
    n = len(binned["mean"])
    with _quiet():
        lo, hi = float(np.nanmin(binned["min"])), float(np.nanmax(binned["max"]))
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        lo, hi = (lo - 1.0, lo + 1.0) if np.isfinite(lo) else (0.0, 1.0)
    width = max(1, _STATS_WIDTH // n)
    rows = np.arange(_STATS_HEIGHT, dtype=np.float64)[:, None]

    def y(values: np.ndarray) -> np.ndarray:  # value -> pixel row (0 at the top)
        return (_STATS_HEIGHT - 1) * (1 - (np.nan_to_num(values, nan=lo) - lo) / (hi - lo))

    pixels = np.full((_STATS_HEIGHT, n, 3), 255, dtype=np.uint8)
    std = np.nan_to_num(binned["std"])
    for name, top, bottom in (("range", binned["max"], binned["min"]),
                              ("std", binned["mean"] + std, binned["mean"] - std)):
        inside = (rows >= np.floor(y(top))[None]) & (rows <= np.ceil(y(bottom))[None])
        pixels[inside] = _BAND_RGB[name]
    mean_row = np.clip(np.rint(y(binned["mean"])), 0, _STATS_HEIGHT - 1).astype(np.int64)
    pixels[mean_row, np.arange(n)] = _BAND_RGB["mean"]
    pixels = np.repeat(pixels, width, axis=1)
    what = "channel" if group == 1 else f"bins of {group} channels"
    return Group([
        Image(png_data_url(pixels), width=int(pixels.shape[1]), height=_STATS_HEIGHT, alt="per-channel statistics",
              cls="ev-stats-chart"),
        caption(f"per {what}, left to right: min–max (grey), mean ± std (light blue), mean (blue)",
                f"y from {fmt(lo)} (bottom) to {fmt(hi)} (top)"),
    ], cls="ev-stats-picture")


def _top_table(stats: Mapping[str, np.ndarray], channels: np.ndarray) -> Details:
    """The statistics of the channels shown as one preformatted block: a hundred table cells would cost the browser
    more to lay out than the rest of the card."""
    header = ("channel", "mean", "std", "min", "max", "NaN", "Inf")
    rows = [(str(int(c)), *(fmt(float(stats[k][c])) for k in ("mean", "std", "min", "max")),
             str(int(stats["n_nan"][c])), str(int(stats["n_inf"][c]))) for c in channels]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in (header, *rows)]
    return Details(f"statistics of the {len(channels)} channels shown",
                   [Text("\n".join(lines), cls="ev-channel-stats", style="pre")])


@register(Kind.FEATURE_MAP)
def render_feature_map(value: Any, ctx: RenderContext) -> Node:
    """Channel mosaic of the top-k channels by variance, PCA-to-RGB image, per-channel statistics chart and table."""
    extras: dict[str, Any] = {}
    if isinstance(value, Mapping):
        mapping = value
        key, value = first_array(mapping, ("features", "feature_map", "feats", "activation", "output"), min_ndim=2)
        extras = scalar_extras(mapping, skip=(key,))
    fmap, note = _as_chw(value)
    stats = channel_stats(fmap)
    channels = top_channels(stats)
    dead, constant = dead_channels(stats)
    labels = [f"c{int(c)}" + (" dead" if dead[c] else " const" if constant[c] else "") for c in channels]
    indices, _, _ = channel_mosaic(fmap, channels)
    mosaic = picture(indices, palette=indexed_palette(SCALES["feature"]), alt="channel mosaic", cls="ev-mosaic")
    panels = [panel(f"top {len(channels)} of {fmap.shape[0]} channels by std", [
        mosaic, caption("tiles, row by row: " + ", ".join(labels))])]
    if fmap.shape[0] >= 2:
        rgb, ratios = pca_rgb(fmap)
        panels.append(panel(_pca_title(ratios), picture(rgb, alt="PCA of the channels", cls="ev-mosaic")))
    total_nan, total_inf = int(stats["n_nan"].sum()), int(stats["n_inf"].sum())
    with _quiet():
        lo, hi = float(np.nanmin(stats["min"])), float(np.nanmax(stats["max"]))
    n_dead, n_const = int(dead.sum()), int(constant.sum())
    return Group([
        Text(f"{n_dead} of {fmap.shape[0]} channels are dead (zero everywhere)", cls="ev-dead-note")
        if n_dead else None,
        row(panels),
        stats_picture(stats),
        caption("×".join(map(str, fmap.shape)) + f" {fmap.dtype}",
                f"range [{fmt(lo)}, {fmt(hi)}]",
                f"{n_dead} dead" + (" (grey)" if dead[channels].any() else "") if n_dead else None,
                f"{n_const} constant" if n_const else None,
                "each tile scaled to its own range",
                note,
                f"{total_nan} NaN, {total_inf} Inf (magenta)" if total_nan or total_inf else None,
                extras_caption(extras, ctx)),
        _top_table(stats, channels),
    ])


def _pca_title(ratios: np.ndarray) -> str:
    """``PCA → RGB · R 61% · G 22% · B 0.2% (too little, dark)``: what each colour explains."""
    parts = []
    for name, ratio in zip("RGB", ratios):
        pct = 100 * float(ratio)
        text = f"{name} {pct:.0f}%" if pct >= 10 else f"{name} {pct:.1f}%"
        parts.append(text + (" (too little, dark)" if ratio < PCA_MIN_RATIO else ""))
    return "PCA → RGB · " + " · ".join(parts) + " of variance"
