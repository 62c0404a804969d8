"""Helpers for display tests: walk a Dash component tree, read back figures and PNGs, measure the payload."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import plotly.utils
from dash import dcc
from dash.development.base_component import Component
from PIL import Image

__all__ = ["walk", "graphs", "figures", "image_sources", "decode_png", "class_names", "text_of", "payload_bytes",
           "has_error"]


def walk(node: Any) -> Iterator[Any]:
    """Every component (and string) in the tree, depth first."""
    yield node
    children = getattr(node, "children", None) if isinstance(node, Component) else None
    if isinstance(children, (list, tuple)):
        for child in children:
            yield from walk(child)
    elif children is not None:
        yield from walk(children)


def graphs(node: Any) -> list[dcc.Graph]:
    return [c for c in walk(node) if isinstance(c, dcc.Graph)]


def figures(node: Any) -> list[Any]:
    return [g.figure for g in graphs(node)]


def image_sources(node: Any) -> list[str]:
    return [t.source for fig in figures(node) for t in fig.data if t.type == "image" and t.source]


def decode_png(source: str) -> np.ndarray:
    assert source.startswith("data:image/png;base64,")
    data = base64.b64decode(source.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def class_names(node: Any) -> set[str]:
    names: set[str] = set()
    for c in walk(node):
        cls = getattr(c, "className", None) if isinstance(c, Component) else None
        if cls:
            names.update(cls.split())
    return names


def text_of(node: Any) -> str:
    return " ".join(c for c in walk(node) if isinstance(c, str))


def payload_bytes(node: Component) -> int:
    """Size of what Dash sends to the browser for this component (its JSON)."""
    return len(json.dumps(node.to_plotly_json(), cls=plotly.utils.PlotlyJSONEncoder))


def has_error(node: Any) -> bool:
    return "ev-error" in class_names(node)
