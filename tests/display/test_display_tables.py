"""Stats tables, series, scalars and text: small values shown honestly."""

from __future__ import annotations

import math

import numpy as np

from display_helpers import class_names, figures, has_error, table_rows, text_of, walk
from eval_viewer.backend.model import Item
from eval_viewer.display import RenderContext, Text, render_item, to_html
from eval_viewer.display.tables import MAX_TEXT, decimate, flatten_stats, format_cell, looks_ordered
from eval_viewer.log_format import Kind


def test_stats_table_flattens_and_formats() -> None:
    value = {"loss": 0.123456, "acc": {"top1": 0.5, "top5": float("nan")}, "per_class": [1, 2, 3],
             "hist": np.arange(1000.0), "inf": math.inf, "name": "run-3"}
    out = render_item(Item("stats", Kind.STATS, value))
    assert not has_error(out)
    rows = table_rows(out)
    assert rows == {"loss": "0.1235", "acc.top1": "0.5", "acc.top5": "NaN", "per_class": "[1, 2, 3]",
                    "hist": "1000: [0, 999] mean 499.5", "inf": "Inf", "name": "run-3"}
    assert flatten_stats({"a": {"b": {"c": 1}}}) == [("a.b", {"c": 1})]
    assert format_cell(np.array([np.nan, 1.0] * 10)).endswith("10 NaN, 0 Inf")


def test_decimate_keeps_spikes() -> None:
    y = np.zeros(100_000)
    y[54_321] = 7.0
    y[12_345] = -3.0
    x, yd = decimate(y, 1000)
    assert len(x) <= 1000 and yd.max() == 7.0 and yd.min() == -3.0 and 54_321 in x


def test_histogram_only_for_long_unordered_series() -> None:
    rng = np.random.default_rng(0)
    assert looks_ordered(np.arange(500.0)) and looks_ordered(np.cumsum(rng.standard_normal(500)))
    assert not looks_ordered(rng.standard_normal(500))
    noisy = render_item(Item("losses", Kind.SERIES, rng.standard_normal(500)))
    curve = render_item(Item("lr", Kind.SERIES, np.linspace(1, 0, 500)))
    assert len(figures(noisy)) == 2 and len(figures(curve)) == 1


def test_series_with_nan_and_inf_is_drawn_with_gaps() -> None:
    y = np.linspace(0, 1, 300)
    y[10], y[20] = np.nan, np.inf
    out = render_item(Item("s", Kind.SERIES, y))
    assert not has_error(out)
    line = figures(out)[0].data[0]
    ys = np.asarray(line.y, dtype=float)
    assert np.isnan(ys[10]) and np.isnan(ys[20])  # Inf is a gap too (JSON has no Inf)
    assert "1 NaN, 1 Inf (gaps)" in text_of(out)


def test_short_series_is_a_bar_chart_with_class_names() -> None:
    probs = np.array([0.1, 0.7, 0.2])
    out = render_item(Item("probs", Kind.SERIES, probs), RenderContext(class_names=["cat", "dog", "bird"]))
    bar = figures(out)[0].data[0]
    assert bar.type == "bar" and list(bar.x) == ["cat", "dog", "bird"]
    assert bar.marker.color[1] != bar.marker.color[0]  # arg-max highlighted


def test_short_integer_series_is_written_out_not_drawn() -> None:
    out = render_item(Item("original_shape", Kind.SERIES, np.array([4, 16, 24, 24])))
    assert not figures(out) and "[4, 16, 24, 24]" in text_of(out)


def test_series_of_wrong_shape_gets_a_summary() -> None:
    out = render_item(Item("s", Kind.SERIES, np.zeros((50, 50, 50))))
    assert not has_error(out) and "ev-summary" in class_names(out)


def test_scalars() -> None:
    assert text_of(render_item(Item("x", Kind.SCALAR, float("nan")))) == "NaN"
    assert text_of(render_item(Item("x", Kind.SCALAR, np.float32(-np.inf)))) == "-Inf"
    assert text_of(render_item(Item("x", Kind.SCALAR, np.array([0.123456])))) == "0.1235"
    assert text_of(render_item(Item("y", Kind.SCALAR, 2), RenderContext(class_names=["a", "b", "car"]))) == "2 car"
    assert text_of(render_item(Item("b", Kind.SCALAR, True))) == "True"


def test_text_is_escaped_and_truncated() -> None:
    out = render_item(Item("caption", Kind.TEXT, "<script>alert(1)</script>"))
    pre = [c for c in walk(out) if isinstance(c, Text) and c.style == "pre"][0]
    assert pre.text == "<script>alert(1)</script>" and pre.cls == "ev-text"  # text, which every adapter escapes
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in to_html(out) and "<script>" not in to_html(out)
    big = render_item(Item("log", Kind.TEXT, "x" * (MAX_TEXT * 3)))
    pre = [c for c in walk(big) if isinstance(c, Text) and c.style == "pre"][0]
    assert len(pre.text) == MAX_TEXT
    assert "showing the first 20,000 of 60,000 characters" in text_of(big)
    assert "a\nb" in text_of(render_item(Item("t", Kind.TEXT, ["a", "b"])))
    assert "ev-summary" in class_names(render_item(Item("t", Kind.TEXT, np.zeros(10))))
