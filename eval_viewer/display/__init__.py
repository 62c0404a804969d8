"""Display: one saved value -> a neutral view (figures, images, tables, captions, problems), found through a registry
keyed by semantic kind, and drawn by three adapters: the Dash app, a notebook and static HTML.

:func:`render_item` takes an :class:`~eval_viewer.backend.model.Item` and a :class:`RenderContext` (the datapoint's
input image for overlays, the selected attention query, an id factory for clickable figures) and returns a tree of
frozen dataclasses (:mod:`.view`); :func:`datapoint_view` composes a whole datapoint the same way. Renderers never touch
files and never raise through :func:`render_item`; big arrays are downsampled here and images travel as PNG, so one
datapoint view stays well under a few megabytes. Nothing in this package imports Dash.

    from eval_viewer.display import render_item, datapoint_view, to_html, page
    html_text = to_html(render_item(item))                        # a fragment (figures need plotly.js on the page)
    document = page([datapoint_view(record)], title="idx 3")     # a whole offline page: plotly.js and CSS inline
    render_item(item)                                              # in Jupyter: shown inline (``_repr_html_``)

Modules: ``view`` (the node types), ``html`` (the static-HTML and notebook adapter; the Dash one is
:mod:`eval_viewer.app.dash_view`), ``registry`` (RenderContext, register, render_item), ``datapoint`` (the whole
datapoint view and its item keys), ``arrays``/``encode``/``colors``/``figures`` (plumbing), and one module per family
of kinds: ``images`` (image, depth, heatmap), ``masks``, ``points`` (prompts, point clouds), ``features``,
``attention``, ``tables`` (stats, series, scalar, text), ``unknown`` (summaries), ``compare`` (predictions beside
labels). Importing this package registers every built-in renderer.

CSS classes for the app's stylesheet: ``ev-item ev-kind-<kind>`` (every rendered item), ``ev-figure`` (graphs),
``ev-caption``, ``ev-row`` (side-by-side, wrapping), ``ev-grid`` (a row of small multiples), ``ev-panel`` /
``ev-panel-title``, ``ev-table`` (``ev-stats``, ``ev-summary-table``, ``ev-summary-keys``), ``ev-details``,
``ev-summary`` / ``ev-summary-title``, ``ev-error`` / ``ev-error-title`` / ``ev-error-message``, ``ev-text``,
``ev-scalar`` / ``ev-scalar-value`` / ``ev-scalar-name``, ``ev-comparison`` / ``ev-class-comparison`` /
``ev-label`` / ``ev-prediction`` / ``ev-match`` / ``ev-mismatch``; the datapoint view's are listed in ``datapoint``.
"""

from __future__ import annotations

# Importing the renderer modules registers the built-in renderers.
from eval_viewer.display import attention, compare, features, images, masks, points, tables, unknown  # noqa: F401
from eval_viewer.display.attention import attention_query_from_click, parse_attention
from eval_viewer.display.colors import INVALID_RGB, PALETTE, SCALES
from eval_viewer.display.compare import pair_items, render_comparison
from eval_viewer.display.datapoint import ViewIds, datapoint_view, find_item, item_key, render_keyed
from eval_viewer.display.figures import figure_view, image_figure
from eval_viewer.display.html import notebook_html, page, to_html
from eval_viewer.display.images import image_to_rgb
from eval_viewer.display.masks import mask_figure, mask_to_classes, overlay_mask
from eval_viewer.display.registry import (
    RenderContext,
    Renderer,
    register,
    registered_kinds,
    render_item,
    renderer_for,
    unregister,
)
from eval_viewer.display.unknown import summary, summary_card
from eval_viewer.display.view import (
    Badge,
    Caption,
    Details,
    Figure,
    Group,
    Image,
    Node,
    Problem,
    Table,
    Text,
)

__all__ = [
    "RenderContext",
    "Renderer",
    "render_item",
    "register",
    "unregister",
    "renderer_for",
    "registered_kinds",
    "datapoint_view",
    "render_keyed",
    "find_item",
    "item_key",
    "ViewIds",
    "Node",
    "Group",
    "Text",
    "Caption",
    "Badge",
    "Figure",
    "Image",
    "Table",
    "Details",
    "Problem",
    "to_html",
    "page",
    "notebook_html",
    "image_to_rgb",
    "attention_query_from_click",
    "parse_attention",
    "overlay_mask",
    "mask_to_classes",
    "mask_figure",
    "figure_view",
    "image_figure",
    "PALETTE",
    "INVALID_RGB",
    "SCALES",
    "summary",
    "summary_card",
    "pair_items",
    "render_comparison",
]
