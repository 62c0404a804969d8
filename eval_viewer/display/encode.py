"""Pixels to PNG data URLs, and the resizing done before: every image travels to the browser as a compressed PNG.

Pillow does the work (already a dependency, fast, lossless). Nothing here touches a file.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

__all__ = ["png_bytes", "png_data_url", "fit_rgb", "resize_rgb", "resize_nearest", "resize_float"]


def png_bytes(pixels: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """PNG encoding of an ``(H, W, 3|4)`` or ``(H, W)`` uint8 array; with ``palette`` ((256, 3) uint8), ``pixels``
    are palette indices and the PNG is an indexed one (one byte per pixel)."""
    array = np.ascontiguousarray(pixels, dtype=np.uint8)
    image = Image.fromarray(array)
    if palette is not None:
        if array.ndim != 2:
            raise ValueError(f"an indexed image must be (H, W), got {array.shape}")
        image = image.convert("P")
        image.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def png_data_url(pixels: np.ndarray, palette: np.ndarray | None = None) -> str:
    """A ``data:image/png;base64,...`` URL, what ``go.Image(source=...)`` and an ``<img src=...>`` take."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels, palette)).decode("ascii")


def resize_rgb(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 image to ``shape`` = (height, width): area filter down, bilinear up."""
    h, w = int(shape[0]), int(shape[1])
    if rgb.shape[:2] == (h, w):
        return rgb
    smaller = h * w < rgb.shape[0] * rgb.shape[1]
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    resized = image.resize((w, h), Image.Resampling.BOX if smaller else Image.Resampling.BILINEAR)
    return np.asarray(resized)


def fit_rgb(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downsample ``rgb`` so its longest side is at most ``max_side``; returns the image and the scale factor
    (original pixels per output pixel, 1.0 when untouched), so figures keep the original pixel coordinates."""
    h, w = rgb.shape[:2]
    longest = max(h, w)
    if longest <= max_side:
        return rgb, 1.0
    scale = longest / max_side
    out_h, out_w = max(1, round(h / scale)), max(1, round(w / scale))
    return resize_rgb(rgb, (out_h, out_w)), w / out_w


def resize_nearest(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes (class maps, validity masks): no invented classes."""
    h, w = array.shape[:2]
    rows = np.minimum((np.arange(shape[0]) + 0.5) * h / shape[0], h - 1).astype(np.int64)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * w / shape[1], w - 1).astype(np.int64)
    return array[rows[:, None], cols[None, :]]


def resize_float(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map to ``shape``; NaN/Inf cells stay NaN (nearest) instead of smearing."""
    x = np.asarray(values, dtype=np.float32)
    if x.shape == tuple(shape):
        return x
    valid = np.isfinite(x)
    fill = float(x[valid].mean()) if valid.any() else 0.0
    image = Image.fromarray(np.ascontiguousarray(np.where(valid, x, fill), dtype=np.float32))  # mode "F"
    out = np.asarray(image.resize((int(shape[1]), int(shape[0])), Image.Resampling.BILINEAR), dtype=np.float32)
    if not valid.all():
        out = np.where(resize_nearest(valid, shape), out, np.nan).astype(np.float32)
    return out
