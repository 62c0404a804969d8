"""Colours: the fixed class palette, one colour scale per kind of value, and colour-mapping of float maps to RGB.

Colour-mapping happens on the server (the result travels as a PNG), so the lookup tables are built here from Plotly's
own colour scales: a map drawn as a PNG and its colour bar drawn by Plotly agree exactly.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import plotly.colors as pc

__all__ = [
    "PALETTE",
    "ERROR_RGB",
    "INVALID_RGB",
    "SCALES",
    "class_color",
    "class_colors",
    "rgb_css",
    "colormap_lut",
    "apply_colormap",
    "colormap_indices",
    "indexed_palette",
    "GAP_INDEX",
    "INVALID_INDEX",
    "DEAD_INDEX",
    "DEAD_RGB",
    "SCALE_TOP",
]

DEAD_INDEX = 253
"""Palette index of tiles that hold no information (a channel zero or constant everywhere): :data:`DEAD_RGB`."""
DEAD_RGB: tuple[int, int, int] = (170, 170, 170)
"""Grey of dead tiles: absent from every scale used for maps here, so a dead channel never passes for a live one."""
SCALE_TOP = DEAD_INDEX - 1
"""The highest palette index of a colour scale's colours (0..SCALE_TOP)."""
GAP_INDEX = 254
"""Palette index of the white gaps between tiles of a mosaic."""
INVALID_INDEX = 255
"""Palette index of NaN / Inf cells (:data:`INVALID_RGB`)."""

PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),  # 0: background, transparent in overlays
    (86, 180, 233),  # sky blue      (Okabe & Ito)
    (230, 159, 0),  # orange
    (0, 158, 115),  # bluish green
    (204, 121, 167),  # reddish purple
    (0, 114, 178),  # blue
    (240, 228, 66),  # yellow
    (51, 34, 136),  # indigo        (Paul Tol, muted)
    (221, 204, 119),  # sand
    (68, 170, 153),  # teal
    (136, 34, 85),  # wine
    (153, 153, 51),  # olive
    (136, 204, 238),  # pale cyan
    (170, 68, 153),  # purple
    (17, 119, 51),  # green
    (221, 221, 221),  # pale grey
)
"""Fixed class palette, colour-blind safe: Okabe & Ito's qualitative colours for classes 1-6 (told apart with every
common colour-vision deficiency), then Paul Tol's muted scheme. Red and vermillion are left out: red is the error
colour of label-vs-prediction maps (:data:`ERROR_RGB`). Class ``c > 0`` gets ``PALETTE[1 + (c - 1) % 15]``, so a
class keeps its colour on every page and in every run; overlays outline each class region in black or white
(:func:`eval_viewer.display.masks.overlay_mask`), so a class stays visible on an image of its own colour."""

ERROR_RGB: tuple[int, int, int] = (255, 40, 40)
"""Colour of pixels where a prediction differs from its label: absent from :data:`PALETTE`."""

INVALID_RGB: tuple[int, int, int] = (255, 0, 255)
"""Colour of NaN / Inf pixels in colour-mapped maps and images (magenta: absent from every scale used here)."""

SCALES: dict[str, str] = {
    "feature": "Viridis",
    "attention": "Inferno",
    "depth": "Turbo",
    "heatmap": "Jet",
    "error": "Reds",
    "confidence": "Cividis",
}
"""One Plotly colour scale per kind of value, so the same kind looks the same everywhere."""


def class_color(cls: int, palette: tuple[tuple[int, int, int], ...] = PALETTE) -> tuple[int, int, int]:
    """Palette colour of class ``cls`` (cycling past the palette's end, never landing on the background colour)."""
    cls = int(cls)
    if cls <= 0 or len(palette) < 2:
        return palette[0] if cls == 0 else palette[int(cls) % len(palette)]
    return palette[1 + (cls - 1) % (len(palette) - 1)]


def class_colors(classes: np.ndarray, palette: tuple[tuple[int, int, int], ...] = PALETTE) -> np.ndarray:
    """Vectorised :func:`class_color`: an integer array of any shape to ``(..., 3)`` uint8."""
    table = np.asarray(palette, dtype=np.uint8)
    n = len(table)
    c = np.asarray(classes).astype(np.int64)
    if n < 2:
        return table[np.zeros_like(c)]
    idx = np.where(c > 0, 1 + (c - 1) % (n - 1), np.where(c == 0, 0, c % n))
    return table[idx]


def rgb_css(rgb: tuple[int, int, int]) -> str:
    return f"rgb({int(rgb[0])},{int(rgb[1])},{int(rgb[2])})"


def _parse_color(color: str) -> tuple[float, float, float]:
    if color.startswith("#"):
        return tuple(float(v) for v in pc.hex_to_rgb(color))  # type: ignore[return-value]
    return tuple(float(v) for v in pc.unlabel_rgb(color))  # type: ignore[return-value]


@lru_cache(maxsize=16)
def colormap_lut(name: str) -> np.ndarray:
    """A (256, 3) uint8 lookup table interpolated from Plotly's colour scale ``name``."""
    scale = pc.get_colorscale(name)
    positions = np.array([float(p) for p, _ in scale])
    colors = np.array([_parse_color(c) for _, c in scale])
    grid = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(grid, positions, colors[:, k]) for k in range(3)], axis=1)
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)


def _unit(values: np.ndarray, vmin: float, vmax: float) -> tuple[np.ndarray, np.ndarray]:
    """``values`` scaled to [0, 1] by ``vmin``..``vmax`` (0.5 for a constant or non-finite range), and where they are
    finite. In float64, on halves: huge finite values (a float64 map beyond float32, a range of +-3e38) neither become
    Inf nor overflow the difference."""
    x = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(x)
    if not np.isfinite(vmin) or not np.isfinite(vmax) or vmax <= vmin:
        return np.full(x.shape, 0.5), valid
    lo, span = 0.5 * float(vmin), 0.5 * float(vmax) - 0.5 * float(vmin)
    return (np.where(valid, x, vmin) * 0.5 - lo) / span, valid


def apply_colormap(values: np.ndarray, name: str, vmin: float, vmax: float) -> np.ndarray:
    """Colour-map a float array to ``(..., 3)`` uint8; NaN and Inf become :data:`INVALID_RGB`.

    A constant map (``vmax <= vmin``) maps to the scale's middle colour rather than dividing by zero.
    """
    t, valid = _unit(values, vmin, vmax)
    idx = np.clip(np.rint(t * 255), 0, 255).astype(np.uint8)
    out = colormap_lut(name)[idx]
    out[~valid] = INVALID_RGB
    return out


@lru_cache(maxsize=16)
def indexed_palette(name: str) -> np.ndarray:
    """A (256, 3) uint8 PNG palette: 253 colours of scale ``name`` (indices 0..:data:`SCALE_TOP`), the grey of dead
    tiles (:data:`DEAD_INDEX`), white (:data:`GAP_INDEX`) and :data:`INVALID_RGB` (:data:`INVALID_INDEX`).

    Colour-mapped maps travel as palette PNGs, one byte per pixel instead of three: a third of the payload for
    noisy maps (feature channels), with no visible loss.
    """
    lut = colormap_lut(name)
    picks = np.rint(np.linspace(0, 255, SCALE_TOP + 1)).astype(np.int64)
    return np.concatenate([lut[picks], np.asarray([DEAD_RGB, (255, 255, 255), INVALID_RGB], dtype=np.uint8)])


def colormap_indices(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Palette indices (uint8, 0..:data:`SCALE_TOP`; :data:`INVALID_INDEX` for NaN/Inf) of ``values`` for
    :func:`indexed_palette`."""
    t, valid = _unit(values, vmin, vmax)
    idx = np.clip(np.rint(t * SCALE_TOP), 0, SCALE_TOP).astype(np.uint8)
    idx[~valid] = INVALID_INDEX
    return idx
