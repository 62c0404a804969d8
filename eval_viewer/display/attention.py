"""Attention maps: per-head and head-averaged heatmaps, per-head entropy, and one query's attention over the image.

Accepted values (documented here because other tools write attention in many shapes):

* a bare array ``(heads, Lq, Lk)`` or ``(Lq, Lk)``; leading axes of 1 are dropped, a batch shows its first element;
* a dict: the weights under ``attention`` (or ``attn``, ``attn_weights``, ``attention_weights``, ``attention_probs``,
  ``weights``, ``probs``; else the first numeric array with 2+ axes whose key does not end in ``index``), and
  optionally ``grid`` / ``key_grid`` ((h, w) of the spatial keys, or None), ``query_grid``, ``query_index`` ((Lq,)
  token index of each kept query row), ``key_index`` ((Lk,) token index of each kept key), ``n_prefix`` /
  ``num_prefix_tokens`` (tokens before the grid, e.g. CLS and registers), ``layer_name``. The token description
  may also sit in a nested ``tokens`` dict. The built-in attention debugger writes ``{"weights": ..., "query_index":
  ..., "query_grid": ..., "key_grid": ..., "num_prefix_tokens": ..., "key_pool": ...}``; its keys may be pooled onto
  a coarser ``key_grid``, and queries are then mapped from ``query_grid`` onto it.

Keys form a spatial grid when ``grid`` says so: the last ``h*w`` keys are the grid in row-major order, the ones before
are prefix tokens (or, with ``key_index``, key ``j`` sits at cell ``key_index[j] - n_prefix``). When no grid key is
present at all (an explicit ``grid: None`` means "not spatial") and there is an input image, a grid is inferred when
``Lk`` less 0, 1, 4 or 5 prefix tokens is a square, or factors with the image's aspect; the caption says so.

With a grid, queries have a cell too when they are the key tokens (``query_index`` given: cell
``query_index[r] - n_prefix``; ``Lq == Lk``: cell ``r - n_prefix``) or exactly the grid (``Lq == h*w``: cell ``r``).
Then the selected query (:attr:`RenderContext.attention_query`) is the grid cell a click on the image chose
(:func:`attention_query_from_click`): the row of that cell (or of the nearest kept cell) is shown and marked on the
image. Otherwise (cross-attention: text or mask tokens attending to image keys; or no grid) the selected query is a
query token: the row whose ``query_index`` is nearest, else the row itself. None selects the query whose
head-averaged attention is the most peaked (lowest entropy): usually the most informative one to look at first.

The map laid over the image is one head's (:attr:`RenderContext.attention_head`) or the mean over heads (None); with
ids (the app), a head picker (``ev-head-picker``: one chip per head and "mean", each with the id of role
``head:<h>`` / ``head:mean``) lets the user choose it.

Windowed attention kept over each query's own window (the capture's ``windows`` with ``form: "local"``:
``key_window_origin`` gives the (row, column) of every kept query's window on the image's key grid ``image_grid``)
is placed in image coordinates: the grid is the image's key grid, each row's window map sits at its origin (padding
keys past the image dropped, NaN elsewhere), and queries are cells of the image's query grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import plotly.graph_objects as go

from eval_viewer.display.arrays import block_mean, finite_mean, first_array, scalar_extras, squeeze_leading, to_numpy
from eval_viewer.display.colors import SCALES, colormap_indices, indexed_palette
from eval_viewer.display.encode import fit_rgb
from eval_viewer.display.features import channel_mosaic
from eval_viewer.display.figures import (
    IMAGE_MAX_SIDE,
    add_colorbar,
    colorbar_view,
    add_hover_layer,
    caption,
    figure_view,
    fmt,
    image_figure,
    panel,
    picture,
    row,
)
from eval_viewer.display.images import context_rgb, extras_caption, heatmap_overlay
from eval_viewer.display.registry import RenderContext, register
from eval_viewer.display.view import Group, Node, Table, Text
from eval_viewer.log_format import Kind

__all__ = ["Attention", "parse_attention", "attention_query_from_click", "select_row",
           "row_entropy", "query_grid_map", "render_attention", "MAX_HEADS", "HEAD_ROLE"]

MAX_HEADS = 16
_MATRIX_SIDE = 128
_HEAD_TILE = 64
_WEIGHT_KEYS = ("attention", "attn", "attn_weights", "attention_weights", "attention_probs", "weights", "probs")
_GRID_KEYS = ("key_grid", "grid", "grid_size", "grid_shape", "hw", "spatial_shape", "feat_size")
_PREFIX_CANDIDATES = (0, 1, 4, 5)
HEAD_ROLE = "head:"
"""Prefix of the roles of the head picker's chips (``head:mean``, ``head:0``...), see :meth:`RenderContext.id_for`."""


@dataclass(frozen=True)
class Attention:
    """Attention weights with what is known of their tokens."""

    weights: np.ndarray
    """(heads, Lq, Lk) float32."""
    query_tokens: np.ndarray
    """(Lq,) token index of each row."""
    grid: tuple[int, int] | None = None
    n_prefix: int = 0
    key_cells: np.ndarray | None = None
    """(Lk,) grid cell of each key, -1 for keys off the grid; None without a grid."""
    grid_inferred: bool = False
    query_cells: np.ndarray | None = None
    """(Lq,) grid cell of each query row (-1 off the grid), when queries have a place on the grid; else None."""
    layer_name: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    window: tuple[int, int] | None = None
    """Windowed attention kept per query's own window: the window's key size (``grid`` is then the image's)."""
    window_origin: np.ndarray | None = None
    """(Lq, 2) (row, column) on ``grid`` of each row's window's top-left key; None unless ``window`` is set."""


def _pick(value: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in value and value[key] is not None:
            return value[key]
    return None


def _infer_grid(n_keys: int, image_shape: tuple[int, int]) -> tuple[tuple[int, int], int] | None:
    """A key grid for ``n_keys`` keys less 0, 1, 4 or 5 prefix tokens (CLS, registers): square (models usually see
    a square resize of the image), else the factorisation closest to the image's aspect within 10 %."""
    aspect = image_shape[0] / max(image_shape[1], 1)
    for prefix in _PREFIX_CANDIDATES:
        n = n_keys - prefix
        if n < 4:
            continue
        side = math.isqrt(n)
        if side * side == n:
            return (side, side), prefix
        best = None
        for h in range(2, n // 2 + 1):
            if n % h == 0:
                error = abs(math.log((h / (n // h)) / aspect))
                if error < 0.1 and (best is None or error < best[0]):
                    best = (error, (h, n // h))
        if best is not None:
            return best[1], prefix
    return None


def _dense_top_k(top_k: Mapping[str, Any], num_keys: Any) -> tuple[np.ndarray, int]:
    """A ``(..., Lq, Lk)`` map with each query's kept top-k weights at their keys and zeros elsewhere (the capture's
    ``form="top_k"``: exact values, the rest of each row not kept)."""
    index = to_numpy(top_k["index"]).astype(np.int64)
    values = to_numpy(top_k["values"]).astype(np.float32)
    if index.shape != values.shape or index.ndim < 2:
        raise ValueError(f"top_k index {index.shape} and values {values.shape} do not match")
    n_keys = int(num_keys) if num_keys is not None else int(index.max(initial=-1)) + 1
    if index.size and (index.min() < 0 or index.max() >= n_keys):
        raise ValueError(f"top_k indices outside 0..{n_keys - 1}")
    dense = np.zeros((*index.shape[:-1], n_keys), dtype=np.float32)
    np.put_along_axis(dense, index, values, axis=-1)
    return dense, int(index.shape[-1])


def parse_attention(value: Any, image_shape: tuple[int, int] | None = None) -> Attention:
    """Read an attention value (see the module docstring for what is accepted); ``image_shape`` enables grid
    inference when the value names no grid."""
    notes: list[str] = []
    info: Mapping[str, Any] = value if isinstance(value, Mapping) else {}
    if isinstance(info.get("tokens"), Mapping):  # the attention debugger's token description, bundled
        info = {**{k: v for k, v in info.items() if k != "tokens"}, **info["tokens"]}
    if info and not any(info.get(k) is not None for k in _WEIGHT_KEYS) and isinstance(info.get("top_k"), Mapping):
        dense, k = _dense_top_k(info["top_k"], info.get("num_keys"))  # the capture's budget kept top-k keys only
        info = {**info, "weights": dense}
        notes.append(f"top-{k} keys of each query only (the map did not fit the capture's budget)")
    if info:
        key, array = first_array(info, _WEIGHT_KEYS, min_ndim=2)
        extras = scalar_extras(info, skip=(key, "layer_name", "n_prefix", "num_prefix_tokens", "num_queries",
                                           "num_keys", "key_pool"))
    else:
        array, extras = to_numpy(value), {}
    array = squeeze_leading(array, 3)
    while array.ndim > 3:
        notes.append(f"first of {array.shape[0]}")
        array = squeeze_leading(array[0], 3)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.dtype.kind not in "biuf":
        raise ValueError(f"attention needs a numeric (heads, Lq, Lk) or (Lq, Lk) array, got {array.dtype} "
                         f"{tuple(array.shape)}")
    weights = np.asarray(array, dtype=np.float32)
    _, n_q, n_k = weights.shape
    query_index = _pick(info, "query_index", "query_indices", "query_idx")
    query_tokens = np.arange(n_q)
    if query_index is not None and to_numpy(query_index).size == n_q:
        query_tokens = to_numpy(query_index).reshape(-1).astype(np.int64)
    key_index = _pick(info, "key_index", "key_indices", "key_idx")
    key_index = to_numpy(key_index).reshape(-1).astype(np.int64) if key_index is not None else None
    if key_index is not None and key_index.size != n_k:
        key_index = None
    prefix_given = _pick(info, "n_prefix", "num_prefix_tokens")
    grid_value = _pick(info, *_GRID_KEYS)
    explicit_none = any(k in info and info[k] is None for k in _GRID_KEYS)
    grid: tuple[int, int] | None = None
    inferred = False
    n_prefix = int(prefix_given) if prefix_given is not None else 0
    if grid_value is not None:
        g = to_numpy(grid_value).reshape(-1)
        if g.size == 2 and int(g[0]) > 0 and int(g[1]) > 0:
            grid = (int(g[0]), int(g[1]))
    elif image_shape is not None and key_index is None and not explicit_none:
        found = _infer_grid(n_k, image_shape)
        if found is not None:
            (grid, n_prefix), inferred = found, True
    key_cells = None
    if grid is not None:
        cells = grid[0] * grid[1]
        if key_index is not None:
            key_cells = key_index - n_prefix
        elif n_k >= cells:
            n_prefix = n_prefix if prefix_given is not None else n_k - cells
            key_cells = np.arange(n_k) - n_prefix
        else:
            notes.append(f"grid {grid[0]}×{grid[1]} does not fit {n_k} keys: not drawn on the image")
            grid = None
        if key_cells is not None:
            key_cells = np.where((key_cells >= 0) & (key_cells < cells), key_cells, -1)
    layer = _pick(info, "layer_name", "layer")
    query_cells = None
    if grid is not None:
        if "query_grid" in info:  # the attention debugger says where queries sit (None: nowhere)
            qg = info["query_grid"]
            query_grid = (int(qg[0]), int(qg[1])) if qg is not None and len(qg) == 2 else None
            if query_grid is not None:
                query_cells = _to_key_cells(query_tokens - n_prefix, query_grid, grid)
        elif query_index is not None or n_q == n_k:
            query_cells = _to_key_cells(query_tokens - n_prefix, grid, grid)
        elif n_q == grid[0] * grid[1]:
            query_cells = np.arange(n_q)
    attention = Attention(weights, query_tokens, grid, n_prefix if grid is not None else 0, key_cells, inferred,
                          query_cells, str(layer) if layer is not None else None, extras, tuple(notes))
    windows = info.get("windows")
    if isinstance(windows, Mapping) and windows.get("form") == "local":
        return _placed_windows(attention, windows, info.get("query_grid"))
    return attention


def _placed_windows(att: Attention, windows: Mapping[str, Any], query_grid: Any) -> Attention:
    """Attention kept over each query's own window, placed on the image's key grid (module docstring); unchanged,
    with a note, when the recorded layout does not fit the weights."""
    _, n_q, n_k = att.weights.shape
    try:
        image_grid = tuple(int(v) for v in windows["image_grid"])
        window = tuple(int(v) for v in windows["window_size"])
        origin = to_numpy(windows["key_window_origin"]).reshape(-1, 2).astype(np.int64)
    except (KeyError, TypeError, ValueError):
        return replace(att, notes=(*att.notes, "windowed, with an unreadable window layout: drawn over one window"))
    if len(image_grid) != 2 or len(window) != 2 or window[0] * window[1] != n_k or len(origin) != n_q:
        return replace(att, notes=(*att.notes, f"window layout {windows.get('window_size')} does not fit {n_k} "
                                               f"keys of {n_q} queries: drawn over one window"))
    query_cells = None
    if query_grid is not None and len(query_grid) == 2:
        query_cells = _to_key_cells(att.query_tokens, (int(query_grid[0]), int(query_grid[1])), image_grid)
    return replace(att, grid=(image_grid[0], image_grid[1]), n_prefix=0, key_cells=np.arange(n_k),
                   grid_inferred=False, query_cells=query_cells, window=(window[0], window[1]),
                   window_origin=origin)


def _to_key_cells(cells: np.ndarray, query_grid: tuple[int, int], key_grid: tuple[int, int]) -> np.ndarray:
    """Query cells on ``query_grid`` to cells of the (possibly pooled, coarser) key grid; -1 off the grid."""
    qh, qw = query_grid
    kh, kw = key_grid
    valid = (cells >= 0) & (cells < qh * qw)
    qr, qc = np.divmod(np.where(valid, cells, 0), qw)
    return np.where(valid, (qr * kh // qh) * kw + (qc * kw // qw), -1).astype(np.int64)


def attention_query_from_click(x: float, y: float, image_shape: tuple[int, int], grid: tuple[int, int]) -> int:
    """The grid cell under pixel (``x``, ``y``) of an image of ``image_shape`` (H, W) split into ``grid`` (h, w) key
    cells: ``row * w + col``, clamped to the grid. Coordinates are Plotly's for an image: pixel ``i`` is centred on
    ``i`` (so it spans ``i - 0.5`` to ``i + 0.5``), which is what clicks on the attention image report."""
    height, width = image_shape
    gh, gw = grid
    col = min(max(int(math.floor((x + 0.5) * gw / width)), 0), gw - 1)
    r = min(max(int(math.floor((y + 0.5) * gh / height)), 0), gh - 1)
    return r * gw + col


def row_entropy(weights: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of ``(..., Lk)`` attention, rows renormalised; NaN for rows that are not
    finite or sum to zero."""
    p = np.clip(np.asarray(weights, dtype=np.float32), 0.0, None)
    total = p.sum(axis=-1, keepdims=True, dtype=np.float64)
    with np.errstate(all="ignore"):
        p = p / total.astype(np.float32)
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=-1, dtype=np.float64)
    return np.where(np.isfinite(total[..., 0]) & (total[..., 0] > 0), ent, np.nan)


def select_row(att: Attention, query: int | None, mean: np.ndarray) -> int:
    """The row shown for the selected ``query`` (module docstring), or the most peaked row when None."""
    if query is None:
        ent = row_entropy(mean)
        return int(np.nanargmin(ent)) if np.isfinite(ent).any() else 0
    if att.grid is not None and att.query_cells is not None and (att.query_cells >= 0).any():
        w = att.grid[1]
        (qr, qc), (rr, rc) = divmod(int(query), w), np.divmod(att.query_cells, w)
        distance = np.where(att.query_cells >= 0, (rr - qr) ** 2 + (rc - qc) ** 2, np.iinfo(np.int64).max)
        return int(np.argmin(distance))  # the kept query nearest the clicked cell
    return int(np.argmin(np.abs(att.query_tokens - int(query))))


def query_grid_map(att: Attention, row_weights: np.ndarray, row: int | None = None) -> np.ndarray:
    """One row of weights over keys placed on the key grid, (h, w); cells no key covers are NaN. Windowed attention
    (``att.window``) needs the ``row``: its window is placed at that row's origin on the image's grid."""
    assert att.grid is not None and att.key_cells is not None
    h, w = att.grid
    if att.window is not None and att.window_origin is not None:
        if row is None:
            raise ValueError("windowed attention: which row's window to place was not given")
        placed = np.full((h, w), np.nan, dtype=np.float32)
        (wh, ww), (y0, x0) = att.window, (int(v) for v in att.window_origin[row])
        block = np.asarray(row_weights, dtype=np.float32).reshape(wh, ww)
        dh, dw = max(0, min(wh, h - y0)), max(0, min(ww, w - x0))  # padding keys past the image are dropped
        placed[y0:y0 + dh, x0:x0 + dw] = block[:dh, :dw]
        return placed
    flat = np.full(h * w, np.nan, dtype=np.float32)
    on_grid = att.key_cells >= 0
    flat[att.key_cells[on_grid]] = row_weights[on_grid]
    return flat.reshape(h, w)


def _overlay(att: Attention, image: np.ndarray, r: int, shown: np.ndarray, ctx: RenderContext) -> go.Figure:
    grid_map = query_grid_map(att, shown[r], r)
    finite = grid_map[np.isfinite(grid_map)]
    vmax = float(finite.max()) if finite.size else 1.0
    small, scale = fit_rgb(image, IMAGE_MAX_SIDE)
    overlay = heatmap_overlay(small, grid_map, ctx.mask_opacity, SCALES["attention"], 0.0, vmax, weighted=True)
    fig = image_figure(overlay, scale=scale)
    add_hover_layer(fig, grid_map, "attention", max_side=min(max(att.grid or (1,)), 128), extent=image.shape[:2])
    add_colorbar(fig, SCALES["attention"], 0.0, vmax, "")
    cell = int(att.query_cells[r]) if att.query_cells is not None else -1
    h, w = att.grid or (1, 1)
    if cell >= 0:
        gy, gx = divmod(cell, w)
        fig.add_trace(go.Scatter(
            x=[(gx + 0.5) * image.shape[1] / w - 0.5], y=[(gy + 0.5) * image.shape[0] / h - 0.5], mode="markers",
            marker={"symbol": "circle-open", "size": 14, "color": "#00e5ff", "line": {"width": 3}},
            hoverinfo="skip", name="query",
        ))
    return fig


def _top(values: np.ndarray) -> float:
    """The largest finite value (1 when there is none or it is not above 0): the top of a [0, top] colour scale."""
    finite = values[np.isfinite(values)]
    top = float(finite.max()) if finite.size else 1.0
    return top if top > 0 else 1.0


def _heads_picture(stack: np.ndarray, alt: str) -> Node:
    """Small multiples of a stack of maps (one per head), each scaled to its own range, as one plain picture."""
    indices, _, _ = channel_mosaic(stack, np.arange(len(stack)), _HEAD_TILE)
    return picture(indices, palette=indexed_palette(SCALES["attention"]), alt=alt, cls="ev-mosaic")


def _tile_order(n: int) -> str:
    return f"heads h0–h{n - 1}, row by row, each scaled to its own range"


def _matrix_view(mean: np.ndarray, r: int) -> Node:
    """The query × key matrix as a plain picture with its colour bar; the selected query's row marked by a cyan
    tick at both ends."""
    small = block_mean(mean, _MATRIX_SIDE)
    top = _top(small)
    indices = colormap_indices(small, 0.0, top)
    rgb = indexed_palette(SCALES["attention"])[indices]
    row_px = min(int(r * small.shape[0] / max(mean.shape[0], 1)), small.shape[0] - 1)
    rgb[row_px, : max(1, small.shape[1] // 16)] = (0, 229, 255)
    rgb[row_px, -max(1, small.shape[1] // 16):] = (0, 229, 255)
    return Group([picture(rgb, alt="attention matrix (queries down, keys across)", cls="ev-mosaic"),
                  caption("queries down, keys across; the chosen query's row is marked in cyan"),
                  colorbar_view(SCALES["attention"], 0.0, top, "weight")])


def _entropy_table(weights: np.ndarray) -> Node:
    per_head = finite_mean(row_entropy(weights), axis=1)
    uniform = math.log(max(weights.shape[2], 1))
    rows = [(f"h{h}", fmt(float(v)), f"{100 * float(v) / uniform:.0f}%" if uniform > 0 else "–")
            for h, v in enumerate(per_head[:MAX_HEADS])]
    return Group([Table(rows, header=("head", "mean entropy (nats)", "of uniform"), cls="ev-table ev-entropy"),
                  caption(f"uniform over {weights.shape[2]} keys: {fmt(uniform)} nats")])


def _head_picker(heads: int, chosen: int | None, ctx: RenderContext) -> Group | None:
    """Chips choosing the head laid over the image ("mean" and h0...), only where the app listens to them."""
    if heads < 2 or ctx.graph_id is None:
        return None
    choices = [("mean", "mean over heads", None)] + [(f"h{h}", f"head {h}", h) for h in range(min(heads, MAX_HEADS))]
    chips = [Group([Text(label, style="inline")], id=ctx.id_for(f"{HEAD_ROLE}{'mean' if h is None else h}"),
                   cls="ev-head-choice" + (" ev-chosen" if h == chosen else ""),
                   data={"head": "mean" if h is None else str(h), "title": title})
             for label, title, h in choices]
    return Group([Text("head", cls="ev-head-picker-label", style="inline"), *chips], cls="ev-head-picker")


@register(Kind.ATTENTION)
def render_attention(value: Any, ctx: RenderContext) -> Node:
    """Selected query over the image (clickable) for the chosen head or the mean (a head picker in the app), that
    head's or the mean matrix, per-head matrices and per-head entropy."""
    image = context_rgb(ctx)
    att = parse_attention(value, image.shape[:2] if image is not None else None)
    heads, n_q, n_k = att.weights.shape
    mean = finite_mean(att.weights, axis=0).astype(np.float32) if heads > 1 else att.weights[0]
    head = ctx.attention_head
    head_note = None
    if head is not None and not 0 <= head < min(heads, MAX_HEADS):
        head_note, head = f"no head {head} (heads 0–{min(heads, MAX_HEADS) - 1}): the mean is shown", None
    if heads == 1:
        head = None
    shown = att.weights[head] if head is not None else mean
    which = f"head {head}" if head is not None else ("mean over heads" if heads > 1 else "attention")
    r = select_row(att, ctx.attention_query, shown)
    token = int(att.query_tokens[r])
    top: list[Node] = []
    picker = _head_picker(heads, head, ctx)
    if att.grid is not None and image is not None:
        hint = " (click to choose)" if att.query_cells is not None else ""
        overlay = figure_view(_overlay(att, image, r, shown, ctx), graph_id=ctx.id_for("attention-image"))
        top.append(panel(f"query {token}, {which}, over the image{hint}",
                         [part for part in (picker, overlay) if part is not None]))
    elif picker is not None:
        top.append(panel("head shown", picker))
    if att.grid is not None and heads > 1:
        maps = np.stack([query_grid_map(att, att.weights[h, r], r) for h in range(min(heads, MAX_HEADS))])
        top.append(panel(f"query {token}, per head", [
            _heads_picture(maps, "per-head maps of the query"), caption(_tile_order(len(maps)))]))
    top.append(panel(which, _matrix_view(shown, r)))
    bottom: list[Node] = []
    if heads > 1:
        shown = min(heads, MAX_HEADS)
        bottom.append(panel(f"per head{'' if shown == heads else f' (first {shown} of {heads})'}", [
            _heads_picture(att.weights[:shown], "per-head attention matrices"), caption(_tile_order(shown))]))
    bottom.append(panel("entropy per head", _entropy_table(att.weights)))
    finite = np.isfinite(att.weights)
    n_bad = int(finite.size - np.count_nonzero(finite))
    with np.errstate(all="ignore"):
        sums = np.nansum(att.weights, axis=-1)
    grid_text = None
    if att.grid is not None:
        grid_text = f"grid {att.grid[0]}×{att.grid[1]}" + (" (inferred)" if att.grid_inferred else "") + \
            (f", {att.n_prefix} prefix tokens" if att.n_prefix else "")
    if att.window is not None and att.window_origin is not None:
        y0, x0 = (int(v) for v in att.window_origin[r])
        grid_text = (f"key grid {att.grid[0]}×{att.grid[1]}; each query's own {att.window[0]}×{att.window[1]} "
                     f"window, this one at ({y0}, {x0})") if att.grid is not None else grid_text
    return Group([
        row(top),
        row(bottom),
        caption(att.layer_name, f"{heads} heads × {n_q} queries × {n_k} keys", grid_text,
                f"query {token} (row {r}{', most peaked' if ctx.attention_query is None else ''})", head_note,
                f"row sums [{fmt(float(sums.min()))}, {fmt(float(sums.max()))}]",
                f"{n_bad} NaN/Inf weights" if n_bad else None, *att.notes, extras_caption(att.extras, ctx)),
    ])
