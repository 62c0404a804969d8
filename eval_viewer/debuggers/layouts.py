"""Leading-dimension layouts: which datapoint each row of a ``(N, ...)`` tensor belongs to when ``N`` is not the batch.

Attention kernels see whatever their module flattened into the leading dimension. Swin/ViTDet/Hiera-style windowed
attention (SAM2's image encoder) runs on ``batch × windows``; SAM2's mask decoder on ``batch × prompts``. Filing such a
tensor as if ``N`` were the batch would give every datapoint every image's windows, so the rows are mapped back here:

* :class:`Windows`: the module gets ``(N, wh, ww, C)`` windows and its parent module the image ``(B, H, W, C)``
  (channels last, as in every ``window_partition``); ``N = B · ⌈H/wh⌉ · ⌈W/ww⌉`` in batch-major, row-major order,
  the image padded at the bottom and right. Queries may be pooled inside each window (Hiera's q-pooling blocks).
* :class:`Groups`: the module or its parent gets ``(B, G, ...)`` and ``N = B · G`` (a ``view(B * G, ...)``): ``G``
  prompts or objects per datapoint, kept as their own axis.
* otherwise ``N`` must equal the batch, or the capture is refused with :class:`~eval_viewer.errors.CaptureError`.

Shapes are read from the first tensor argument of the module and of its parent (forward pre-hooks); the candidates
are checked against the batch size given by ``meta_info["idx"]`` when the capture is handed over, so a wrong guess
fails instead of filing a window under the wrong datapoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch

__all__ = [
    "Windows",
    "Groups",
    "Layout",
    "first_tensor_shape",
    "window_layout",
    "group_layouts",
    "stitch_windows",
    "window_rows",
]


@dataclass(frozen=True)
class Windows:
    """Non-overlapping windows of an image token grid, ``batch`` images, in batch-major then row-major order."""

    batch: int
    windows: tuple[int, int]
    """Windows down and across (``n_h, n_w``)."""
    key_window: tuple[int, int]
    """Key tokens per window (``wh, ww``)."""
    query_window: tuple[int, int]
    """Query tokens per window: the key window, or smaller when queries are pooled (Hiera's q-pooling)."""
    key_grid: tuple[int, int]
    """The image's key token grid before padding (``H, W``)."""
    query_grid: tuple[int, int]
    """The image's query token grid before padding (``H // stride, W // stride`` with q-pooling)."""

    @property
    def per_image(self) -> int:
        return self.windows[0] * self.windows[1]

    @property
    def padding(self) -> tuple[int, int]:
        """Key tokens of padding added at the bottom and right of the image before partitioning."""
        return (self.windows[0] * self.key_window[0] - self.key_grid[0],
                self.windows[1] * self.key_window[1] - self.key_grid[1])

    def describe(self) -> dict[str, Any]:
        """The layout as plain data for a page (the viewer and readers need nothing else to place a window)."""
        return {
            "windows": list(self.windows),
            "window_size": list(self.key_window),
            "query_window_size": list(self.query_window),
            "image_grid": list(self.key_grid),
            "query_image_grid": list(self.query_grid),
            "padding": list(self.padding),
            "shift": [0, 0],
            "order": "batch, window row, window column; tokens row-major inside a window",
        }

    def key_cells(self) -> torch.Tensor:
        """``(windows per image, wh * ww)``: the flat cell on the key grid of every window token, -1 for padding."""
        return _cells(self.windows, self.key_window, self.key_grid)

    def query_slots(self) -> tuple[torch.Tensor, torch.Tensor]:
        """For every cell of the query grid (row-major): its window and its token inside the window."""
        qh, qw = self.query_window
        rows = torch.arange(self.query_grid[0]).repeat_interleave(self.query_grid[1])
        cols = torch.arange(self.query_grid[1]).repeat(self.query_grid[0])
        window = (rows // qh) * self.windows[1] + cols // qw
        token = (rows % qh) * qw + cols % qw
        return window, token


@dataclass(frozen=True)
class Groups:
    """``N = batch · groups`` in batch-major order; the group axis is kept and named (``prompt``, ``object``...)."""

    batch: int
    groups: int


Layout = Union[Windows, Groups]


def _cells(windows: tuple[int, int], window: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    n_h, n_w = windows
    wh, ww = window
    win_r = torch.arange(n_h).repeat_interleave(n_w)[:, None]
    win_c = torch.arange(n_w).repeat(n_h)[:, None]
    tok_r = torch.arange(wh).repeat_interleave(ww)[None, :]
    tok_c = torch.arange(ww).repeat(wh)[None, :]
    rows, cols = win_r * wh + tok_r, win_c * ww + tok_c
    inside = (rows < grid[0]) & (cols < grid[1])
    return torch.where(inside, rows * grid[1] + cols, torch.full_like(rows, -1))


def first_tensor_shape(args: Sequence[Any], kwargs: Mapping[str, Any] | None = None) -> tuple[int, ...] | None:
    """Shape of the first tensor among a call's positional, then keyword arguments (None when there is none)."""
    for value in list(args) + list((kwargs or {}).values()):
        if isinstance(value, torch.Tensor):
            return None if value.is_nested else tuple(value.shape)  # a nested tensor has no single shape
    return None


def window_layout(
    n: int,
    num_queries: int,
    num_keys: int,
    module_shape: tuple[int, ...] | None,
    parent_shape: tuple[int, ...] | None,
    query_stride: int | None = None,
) -> Windows | None:
    """The window layout that explains an attention call over ``n`` rows, or None (rule in the module docstring).

    Pooled queries: the stride is ``query_stride`` when the module says (Hiera's ``attn.query_stride``; an odd
    window pools with floor, so its stride cannot be read from the token counts), else the one the counts imply.
    """
    if module_shape is None or parent_shape is None or len(module_shape) != 4 or len(parent_shape) != 4:
        return None
    _, wh, ww, channels = module_shape
    batch, height, width, parent_channels = parent_shape
    if channels != parent_channels or (wh, ww) == (height, width) or wh * ww != num_keys:
        return None
    n_h, n_w = math.ceil(height / wh), math.ceil(width / ww)
    if batch * n_h * n_w != n:
        return None
    if num_queries == num_keys:
        query_window, stride = (wh, ww), 1
    else:
        stride = query_stride or (math.isqrt(num_keys // num_queries) if num_queries else 0)
        if stride < 2 or (wh // stride) * (ww // stride) != num_queries:
            return None
        query_window = (wh // stride, ww // stride)
    return Windows(batch, (n_h, n_w), (wh, ww), query_window, (height, width), (height // stride, width // stride))


def group_layouts(n: int, *shapes: tuple[int, ...] | None) -> list[Groups]:
    """Every ``(B, G, ...)`` reading of the given input shapes with ``B · G = n`` and ``G > 1``, in order."""
    found: list[Groups] = []
    for shape in shapes:
        if shape is not None and len(shape) >= 3 and shape[1] > 1 and shape[0] * shape[1] == n:
            candidate = Groups(int(shape[0]), int(shape[1]))
            if candidate not in found:
                found.append(candidate)
    return found


def stitch_windows(attn: torch.Tensor, layout: Windows, query_cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-window attention ``(B · windows, heads, Lq_w, Lk_w)`` -> per-image rows over the image's key grid.

    ``query_cells``: the cells of the query grid to keep (row-major). Returns ``(B, heads, len(query_cells), H · W)``,
    each row the query's attention placed where its window's keys lie in the image, and ``(B, heads, queries)``: the
    mass each row gave to padding tokens, which lie outside the image (padding takes part in the model's softmax).
    """
    batch, per_image = layout.batch, layout.per_image
    heads, _, lk = attn.shape[1:]
    windows = attn.reshape(batch, per_image, heads, attn.shape[2], lk)
    window_of, token_of = layout.query_slots()
    window_of, token_of = window_of[query_cells], token_of[query_cells]
    rows = windows.permute(0, 2, 1, 3, 4)[:, :, window_of, token_of, :]  # (B, heads, q, Lk_w)
    key_cells = layout.key_cells()[window_of].to(attn.device)  # (q, Lk_w)
    inside = key_cells >= 0
    grid_size = layout.key_grid[0] * layout.key_grid[1]
    placed = attn.new_zeros(batch, heads, len(query_cells), grid_size)
    index = key_cells.clamp_min(0).expand(batch, heads, *key_cells.shape)
    placed.scatter_add_(-1, index, rows * inside)
    padding_mass = (rows * ~inside).sum(dim=-1)
    return placed, padding_mass


def window_rows(attn: torch.Tensor, layout: Windows, query_cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-window attention -> each kept query's row over its own window's keys, and where that window lies.

    Returns ``(B, heads, len(query_cells), wh * ww)`` (rows sum to 1, padding keys included: they are part of the
    window) and ``(len(query_cells), 2)``: the (row, column) of the query's window's top-left key on the image's key
    grid. Exact at any image size, where :func:`stitch_windows` onto a pooled image grid would blur whole windows.
    """
    batch, per_image = layout.batch, layout.per_image
    heads, lq, lk = attn.shape[1:]
    windows = attn.reshape(batch, per_image, heads, lq, lk).permute(0, 2, 1, 3, 4)
    window_of, token_of = layout.query_slots()
    window_of, token_of = window_of[query_cells], token_of[query_cells]
    rows = windows[:, :, window_of.to(attn.device), token_of.to(attn.device), :]
    origin = torch.stack([(window_of // layout.windows[1]) * layout.key_window[0],
                          (window_of % layout.windows[1]) * layout.key_window[1]], dim=1)
    return rows, origin
