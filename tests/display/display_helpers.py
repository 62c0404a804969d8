"""Helpers for display tests: walk a view tree, read back figures and PNGs, measure the payload."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import plotly.utils
from PIL import Image

from eval_viewer.backend.model import DatapointRecord
from eval_viewer.display import view
from eval_viewer.display.view import Child, walk

__all__ = ["walk", "graphs", "figures", "image_sources", "legend", "colorbars", "decode_png", "class_names", "text_of", "payload_bytes",
           "has_error", "tables", "table_rows", "make_record"]


def graphs(node: Child) -> list[view.Figure]:
    """Every figure node in the tree."""
    return [c for c in walk(node) if isinstance(c, view.Figure)]


def figures(node: Child) -> list[Any]:
    return [g.figure for g in graphs(node)]


def image_sources(node: Child) -> list[str]:
    """PNG data URLs of the image traces of every figure, then of every plain image."""
    traced = [t.source for fig in figures(node) for t in fig.data if t.type == "image" and t.source]
    return traced + [c.src for c in walk(node) if isinstance(c, view.Image) and c.cls not in _KEYS]


_KEYS = ("ev-colorbar-strip", "ev-swatch")
"""Images that only key another (a colour bar's strip, a legend's swatch): not pictures of the data."""


def legend(node: Child) -> list[tuple[str, str]]:
    """``(colour, text)`` of every legend entry (:func:`eval_viewer.display.figures.legend_view`) in the tree."""
    return [(c.data["color"], " ".join(view.texts(c))) for c in walk(node)
            if isinstance(c, view.Group) and c.cls == "ev-legend-item"]


def colorbars(node: Child) -> list[tuple[str, str, str]]:
    """``(min, max, text)`` of every HTML colour bar (:func:`eval_viewer.display.figures.colorbar_view`)."""
    return [(c.data["min"], c.data["max"], " ".join(view.texts(c))) for c in walk(node)
            if isinstance(c, view.Group) and c.cls == "ev-colorbar"]


def decode_png(source: str) -> np.ndarray:
    assert source.startswith("data:image/png;base64,")
    data = base64.b64decode(source.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def class_names(node: Child) -> set[str]:
    names: set[str] = set()
    for c in walk(node):
        cls = getattr(c, "cls", "")
        if cls:
            names.update(cls.split())
    return names


def text_of(node: Child) -> str:
    return " ".join(view.texts(node))


def tables(node: Child) -> list[view.Table]:
    return [c for c in walk(node) if isinstance(c, view.Table)]


def table_rows(node: Child) -> dict[str, Any]:
    """``{first cell: second cell}`` of every key/value row of every table in the tree."""
    return {row[0]: row[1] for table in tables(node) for row in table.rows if len(row) == 2}


def payload_bytes(node: Child) -> int:
    """Size of what the app sends to the browser for this view: its figures' JSON plus its texts and images."""
    figs = sum(len(json.dumps(f.to_plotly_json(), cls=plotly.utils.PlotlyJSONEncoder)) for f in figures(node))
    rest = sum(len(t) for t in view.texts(node)) + sum(len(c.src) for c in walk(node) if isinstance(c, view.Image))
    return figs + rest


def has_error(node: Child) -> bool:
    return "ev-error" in class_names(node)


def make_record(idx: int = 0, **fields: Any) -> DatapointRecord:
    """A :class:`DatapointRecord` with ``fields`` (inputs, labels, predictions, meta_info, debug, scores, problems).

    Where the record says which pass it belongs to is being renamed (``run``/``epoch`` -> ``pass_key``); this builds
    it either way, since these tests are about the sections, not the pass."""
    import dataclasses

    from eval_viewer.backend import model

    names = {f.name for f in dataclasses.fields(model.DatapointRecord)}
    where: dict[str, Any] = (
        {"pass_key": model.PassKey("run", "val", 1)} if "pass_key" in names else {"run": "run", "epoch": 1}
    )
    fields.setdefault("scores", {})
    return model.DatapointRecord(idx=idx, **where, **fields)
