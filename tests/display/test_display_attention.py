"""Attention: click -> query mapping, parsing the shapes other tools write, the overlay following the query and the
chosen head, windowed maps placed in image coordinates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from display_helpers import decode_png, figures, graphs, has_error, image_sources, payload_bytes, text_of
from eval_viewer.backend.model import Item
from eval_viewer.display import (
    RenderContext,
    attention_query_from_click,
    parse_attention,
    render_item,
)
from eval_viewer.display.attention import query_grid_map, row_entropy
from eval_viewer.display.view import Group, Image, walk
from eval_viewer.log_format import Kind


def test_click_maps_corners_and_centre() -> None:
    shape, grid = (480, 640), (12, 16)  # 40 px cells
    assert attention_query_from_click(0, 0, shape, grid) == 0
    assert attention_query_from_click(639, 479, shape, grid) == 12 * 16 - 1
    assert attention_query_from_click(639, 0, shape, grid) == 15
    assert attention_query_from_click(0, 479, shape, grid) == 11 * 16
    assert attention_query_from_click(320, 240, shape, grid) == 6 * 16 + 8
    # pixel i spans [i - 0.5, i + 0.5): the last pixel of cell 0 is 39, the first of cell 1 is 40
    assert attention_query_from_click(39, 0, shape, grid) == 0
    assert attention_query_from_click(40, 0, shape, grid) == 1
    # clicks just outside the image clamp to the border cells
    assert attention_query_from_click(-3, 500, shape, grid) == 11 * 16


def _local_attention(heads: int, side: int, prefix: int = 0, width: float = 1.5) -> np.ndarray:
    """Self-attention where every spatial query attends around its own cell (prefix tokens attend uniformly)."""
    n = side * side + prefix
    cells = np.arange(side * side)
    r, c = np.divmod(cells, side)
    att = np.full((heads, n, n), 1e-3, dtype=np.float32)
    for q in range(side * side):
        d2 = (r - r[q]) ** 2 + (c - c[q]) ** 2
        att[:, prefix + q, prefix:] += np.exp(-d2 / width)[None]
    return att / att.sum(-1, keepdims=True)


def _overlay_png(out: object) -> np.ndarray:
    return decode_png(image_sources(out)[0])


def test_overlay_follows_selected_query_and_marks_it() -> None:
    image = np.zeros((80, 80, 3), dtype=np.uint8)
    value = {"attention": _local_attention(4, 8), "grid": (8, 8), "layer_name": "blocks.2.attn"}
    top_left = render_item(Item("attn", Kind.ATTENTION, value), RenderContext(image=image, attention_query=0,
                                                                               mask_opacity=1.0))
    bottom_right = render_item(Item("attn", Kind.ATTENTION, value), RenderContext(image=image, attention_query=63,
                                                                                   mask_opacity=1.0))
    a, b = _overlay_png(top_left).astype(int), _overlay_png(bottom_right).astype(int)
    assert a.shape == (80, 80, 3)
    assert a[5, 5].sum() > a[75, 75].sum() + 100  # bright where the query attends
    assert b[75, 75].sum() > b[5, 5].sum() + 100
    marker = [t for t in figures(top_left)[0].data if t.type == "scatter" and t.name == "query"][0]
    assert (marker.x[0], marker.y[0]) == pytest.approx((4.5, 4.5))  # centre of cell (0, 0): 10 px cells
    assert "blocks.2.attn" in text_of(top_left) and "query 0" in text_of(top_left)


def test_click_result_selects_query_with_prefix_tokens() -> None:
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    att = _local_attention(2, 4, prefix=1)  # CLS + 4x4 grid, keys 17
    cell = attention_query_from_click(60, 60, (64, 64), (4, 4))
    assert cell == 15
    out = render_item(Item("a", Kind.ATTENTION, {"attention": att, "grid": [4, 4]}),
                      RenderContext(image=image, attention_query=cell, mask_opacity=1.0))
    assert "query 16 (row 16)" in text_of(out)  # token = cell + 1 prefix token
    png = _overlay_png(out).astype(int)
    assert png[60, 60].sum() > png[4, 4].sum()


def test_graph_id_on_the_clickable_image() -> None:
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    value = {"attention": _local_attention(2, 4), "grid": (4, 4)}
    out = render_item(Item("a", Kind.ATTENTION, value),
                      RenderContext(image=image, graph_id=lambda role: {"type": "ev-graph", "role": role}))
    ids = [getattr(g, "id", None) for g in graphs(out)]
    assert ids[0] == {"type": "ev-graph", "role": "attention-image"}


def test_default_query_is_the_most_peaked_row() -> None:
    att = np.full((2, 3, 5), 0.2, dtype=np.float32)
    att[:, 1] = [0.96, 0.01, 0.01, 0.01, 0.01]
    out = render_item(Item("a", Kind.ATTENTION, att))
    assert "query 1 (row 1, most peaked)" in text_of(out)
    ent = row_entropy(att)
    assert ent[0, 0] == pytest.approx(np.log(5)) and ent[0, 1] < ent[0, 0]


def test_query_index_maps_tokens_to_rows() -> None:
    att = np.random.default_rng(0).random((1, 3, 16)).astype(np.float32)
    value = {"attention": att, "query_index": np.array([2, 9, 14]), "grid": (4, 4)}
    out = render_item(Item("a", Kind.ATTENTION, value), RenderContext(attention_query=10))
    assert "query 9 (row 1)" in text_of(out)  # nearest kept query to token 10


@pytest.mark.parametrize("form", ["lq_lk", "batch", "torch", "other_key"])
def test_parse_attention_forms(form: str) -> None:
    base = _local_attention(3, 4)
    value = {
        "lq_lk": base[0],
        "batch": base[None],
        "torch": torch.from_numpy(base),
        "other_key": {"probs_of_layer": base, "grid": None, "query_index": np.arange(16)},
    }[form]
    att = parse_attention(value)
    assert att.weights.shape == ((1, 16, 16) if form == "lq_lk" else (3, 16, 16))
    assert att.grid is None


def test_grid_is_inferred_only_with_an_image() -> None:
    att = _local_attention(1, 14, prefix=1)  # 197 keys: CLS + 14x14
    assert parse_attention(att).grid is None
    inferred = parse_attention(att, image_shape=(480, 640))  # non-square image, square model input
    assert inferred.grid == (14, 14) and inferred.n_prefix == 1 and inferred.grid_inferred
    out = render_item(Item("a", Kind.ATTENTION, att), RenderContext(image=np.zeros((48, 64, 3), np.uint8)))
    assert "grid 14×14 (inferred), 1 prefix tokens" in text_of(out)


def test_nan_attention_and_mismatched_grid_do_not_crash() -> None:
    att = _local_attention(2, 4)
    att[0, 3, :] = np.nan
    att[1, 5, 2] = np.inf
    out = render_item(Item("a", Kind.ATTENTION, {"attention": att, "grid": (5, 5)}),
                      RenderContext(image=np.zeros((20, 20, 3), np.uint8)))
    assert not has_error(out)
    text = text_of(out)
    assert "17 NaN/Inf weights" in text and "does not fit 16 keys" in text


def test_big_attention_is_downsampled() -> None:
    rng = np.random.default_rng(0)
    att = rng.random((16, 1024, 1025)).astype(np.float32)
    att /= att.sum(-1, keepdims=True)
    out = render_item(Item("a", Kind.ATTENTION, {"attention": att, "grid": (32, 32)}),
                      RenderContext(image=(rng.random((512, 512, 3)) * 255).astype(np.uint8)))
    assert not has_error(out)
    matrix = next(n for n in walk(out) if isinstance(n, Image) and n.alt.startswith("attention matrix"))
    assert max(decode_png(matrix.src).shape[:2]) <= 128
    assert payload_bytes(out) < 2_000_000


def test_cross_attention_uses_rows_and_explicit_none_grid_is_respected() -> None:
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    att = np.random.default_rng(0).random((2, 5, 16)).astype(np.float32)  # 5 text tokens -> 4x4 image keys
    parsed = parse_attention({"attention": att, "grid": (4, 4)})
    assert parsed.query_cells is None
    out = render_item(Item("x", Kind.ATTENTION, {"attention": att, "grid": (4, 4)}),
                      RenderContext(image=image, attention_query=3))
    assert "query 3 (row 3)" in text_of(out)
    assert not [t for t in figures(out)[0].data if t.type == "scatter" and t.name == "query"]  # no place to mark
    assert parse_attention({"attention": att[:, :, :16], "grid": None}, image_shape=(64, 64)).grid is None
    assert parse_attention({"attention": att}, image_shape=(64, 64)).grid == (4, 4)


def test_spatial_queries_against_prefixed_keys_have_cells() -> None:
    att = _local_attention(2, 4, prefix=1)[:, 1:, :]  # 16 spatial queries, keys CLS + 4x4
    parsed = parse_attention({"attention": att, "grid": (4, 4)})
    assert parsed.n_prefix == 1 and parsed.query_cells.tolist() == list(range(16))
    out = render_item(Item("a", Kind.ATTENTION, {"attention": att, "grid": (4, 4)}),
                      RenderContext(image=np.zeros((40, 40, 3), np.uint8), attention_query=6))
    assert "query 6 (row 6)" in text_of(out)
    marker = [t for t in figures(out)[0].data if t.type == "scatter" and t.name == "query"][0]
    assert (marker.x[0], marker.y[0]) == pytest.approx((24.5, 14.5))  # cell (1, 2) of 10 px cells


def _debugger_output() -> tuple[np.ndarray, dict[str, object]]:
    """What the built-in attention debugger keeps of a ViT block: CLS + 8x8 tokens, every 4th query kept, keys
    pooled in 2x2 blocks onto a 4x4 grid (CLS kept apart)."""
    full = _local_attention(3, 8, prefix=1)  # (3, 65, 65)
    kept = list(range(0, 65, 4))
    spatial = full[:, kept, 1:].reshape(3, len(kept), 4, 2, 4, 2).sum(axis=(3, 5)).reshape(3, len(kept), 16)
    pooled = np.concatenate([full[:, kept, :1], spatial], axis=-1)
    tokens = {"query_index": kept, "num_queries": 65, "num_keys": 65, "query_grid": [8, 8], "key_grid": [4, 4],
              "num_prefix_tokens": 1, "key_pool": 2}
    return pooled, tokens


def test_debugger_output_with_pooled_keys_and_subsampled_queries() -> None:
    pooled, tokens = _debugger_output()
    att = parse_attention({"weights": pooled, **tokens})  # the attention debugger's item
    assert att.grid == (4, 4) and att.n_prefix == 1
    assert att.query_cells[0] == -1  # the CLS query has no place
    # kept tokens 4, 8, 12 sit at query cells 3, 7, 11 of the 8x8 grid: (0, 3), (0, 7), (1, 3) -> key cells on 4x4
    assert att.query_cells[1:4].tolist() == [1, 3, 1]
    image = np.zeros((80, 80, 3), dtype=np.uint8)
    cell = attention_query_from_click(70, 70, (80, 80), att.grid)  # bottom-right key cell 15
    out = render_item(Item("attention", Kind.ATTENTION, {"weights": pooled, **tokens}),
                      RenderContext(image=image, attention_query=cell, mask_opacity=1.0))
    assert not has_error(out)
    # kept tokens 56 and 64 (query cells (6, 7) and (7, 7)) both lie in key cell (3, 3): the first kept one is shown
    assert "query 56 (row 14)" in text_of(out)
    png = _overlay_png(out).astype(int)
    assert png[70, 50].sum() > png[5, 5].sum()


def test_top_k_form_from_the_capture_budget_is_drawn_with_its_kept_keys_only() -> None:
    """The capture keeps only each query's top-k keys when a map does not fit its byte budget (``form="top_k"``):
    the viewer draws exactly those weights at their keys, zero elsewhere, and says so."""
    rng = np.random.default_rng(3)
    full = rng.random((2, 16, 16)).astype(np.float32)
    full /= full.sum(-1, keepdims=True)
    index = np.argsort(-full, axis=-1)[..., :4]
    values = np.take_along_axis(full, index, axis=-1)
    value = {"form": "top_k", "top_k": {"index": index.astype(np.int8), "values": values, "k": 4},
             "num_keys": 16, "grid": (4, 4), "summary": {"entropy": np.ones(2), "k": 4, "queries": 16}}
    parsed = parse_attention(value, (32, 32))
    np.testing.assert_array_equal(np.take_along_axis(parsed.weights, index, -1), values)
    assert np.count_nonzero(parsed.weights) == index.size  # nothing but the kept weights
    out = render_item(Item("attention", Kind.ATTENTION, value))
    assert not has_error(out)
    assert "top-4 keys of each query only" in text_of(out)
    broken = {"form": "top_k", "top_k": {"index": index.astype(np.int8) + 20, "values": values, "k": 4}, "num_keys": 16}
    assert has_error(render_item(Item("attention", Kind.ATTENTION, broken)))  # indices past the keys: a clear problem


def _corner_heads(side: int) -> np.ndarray:
    """Two heads over a ``side`` x ``side`` grid: every query of head 0 looks at the top-left cell, of head 1 at the
    bottom-right one."""
    n = side * side
    att = np.full((2, n, n), 1e-4, dtype=np.float32)
    att[0, :, 0] = 1.0
    att[1, :, n - 1] = 1.0
    return att / att.sum(-1, keepdims=True)


def test_the_chosen_head_is_laid_over_the_image_and_picked_with_chips() -> None:
    image = np.zeros((80, 80, 3), dtype=np.uint8)
    value = {"attention": _corner_heads(8), "grid": (8, 8)}
    item = Item("attn", Kind.ATTENTION, value)
    ids = lambda role: {"role": role}  # noqa: E731 - the app's ids, as RenderContext.graph_id gives them
    by_head = {h: render_item(item, RenderContext(image=image, attention_query=27, attention_head=h, mask_opacity=1.0,
                                                  graph_id=ids)) for h in (0, 1, None)}
    first, second, mean = (_overlay_png(by_head[h]).astype(int) for h in (0, 1, None))
    assert first[4, 4].sum() > first[75, 75].sum() + 100 and second[75, 75].sum() > second[4, 4].sum() + 100
    assert abs(mean[4, 4].sum() - mean[75, 75].sum()) < 30  # the mean: both corners alike
    assert "query 27, head 1, over the image" in text_of(by_head[1])
    assert "query 27, mean over heads, over the image" in text_of(by_head[None])

    chips = [n for n in walk(by_head[1]) if isinstance(n, Group) and "ev-head-choice" in n.cls]
    assert [c.id for c in chips] == [{"role": "head:mean"}, {"role": "head:0"}, {"role": "head:1"}]
    assert [c.data["head"] for c in chips if "ev-chosen" in c.cls] == ["1"]
    # without ids (a notebook, a report) nothing would listen to chips: none are drawn, the title says the head
    plain = render_item(item, RenderContext(image=image, attention_head=1))
    assert not [n for n in walk(plain) if isinstance(n, Group) and "ev-head-choice" in n.cls]
    assert "head 1" in text_of(plain)
    # a head the value does not have: the mean, said in words
    missing = render_item(item, RenderContext(image=image, attention_head=5))
    assert "no head 5 (heads 0–1): the mean is shown" in text_of(missing) and not has_error(missing)
    assert (_overlay_png(missing) == _overlay_png(render_item(item, RenderContext(image=image)))).all()


def _windowed(image_grid: tuple[int, int], origins: list[list[int]], query_index: list[int]) -> dict[str, object]:
    """What the capture keeps for windowed attention in its local form: each kept query's row over its own 4x4
    window (peaked at the window's top-left key), and where that window lies on the image's key grid."""
    weights = np.full((1, len(query_index), 16), 1e-4, dtype=np.float32)
    weights[:, :, 0] = 1.0
    windows = {"windows": [-(-image_grid[0] // 4), -(-image_grid[1] // 4)], "window_size": [4, 4],
               "query_window_size": [4, 4], "image_grid": list(image_grid), "query_image_grid": list(image_grid),
               "padding": [0, 0], "form": "local", "key_window_origin": origins}
    return {"weights": weights / weights.sum(-1, keepdims=True), "query_index": query_index,
            "query_grid": list(image_grid), "key_grid": [4, 4], "num_prefix_tokens": 0, "key_pool": 1,
            "windows": windows}


def test_windowed_maps_are_placed_in_image_coordinates() -> None:
    value = _windowed((8, 8), [[0, 0], [4, 4]], [0, 63])  # the top-left query's window, the bottom-right one's
    image = np.zeros((80, 80, 3), dtype=np.uint8)
    att = parse_attention(value, image.shape[:2])
    assert att.grid == (8, 8) and att.window == (4, 4) and list(att.query_cells) == [0, 63]
    placed = query_grid_map(att, att.weights[0, 1], 1)
    assert np.isnan(placed[:4]).all() and np.isnan(placed[:, :4]).all()  # only its own window is drawn
    assert placed[4, 4] == pytest.approx(float(att.weights[0, 1, 0])) and np.isfinite(placed[4:, 4:]).all()

    # a click at the bottom-right of the image picks the query whose window is there, drawn at that place
    query = attention_query_from_click(75, 75, image.shape[:2], att.grid)
    out = render_item(Item("attn", Kind.ATTENTION, value), RenderContext(image=image, attention_query=query,
                                                                         mask_opacity=1.0))
    png = _overlay_png(out).astype(int)
    assert png[45, 45].sum() > png[5, 5].sum() + 100  # the window's top-left key is cell (4, 4): pixels 40-49
    assert "each query's own 4×4 window, this one at (4, 4)" in text_of(out) and not has_error(out)

    padded = parse_attention(_windowed((6, 6), [[4, 4]], [35]), (60, 60))  # the last window hangs over the image
    placed = query_grid_map(padded, padded.weights[0, 0], 0)
    assert placed.shape == (6, 6) and np.isfinite(placed).sum() == 4 and np.isfinite(placed[4:, 4:]).all()
    bad = parse_attention({**value, "windows": {**value["windows"], "key_window_origin": [[0, 0]]}}, (80, 80))
    assert bad.window is None and "does not fit" in " ".join(bad.notes)
