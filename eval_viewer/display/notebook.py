"""What a notebook (or a report) draws: one item of a datapoint, or the whole datapoint view, as neutral view nodes.

Every node shows itself inline in Jupyter (``_repr_html_``, through :func:`eval_viewer.display.html.notebook_html`:
plotly.js inline once per kernel, so no internet is needed); :func:`eval_viewer.display.html.page` writes the same
nodes as a standalone offline HTML file.

    from eval_viewer.display.notebook import item_view, datapoint_view
    item_view(record, record.debug["attention"][0])     # one item, over the datapoint's input image
    datapoint_view(record, "miou")                      # what the app shows for this datapoint
"""

from __future__ import annotations

from eval_viewer.backend.model import DatapointRecord, Item
from eval_viewer.display.datapoint import datapoint_view, input_image
from eval_viewer.display.html import page, reset_notebook, to_html
from eval_viewer.display.registry import RenderContext, render_item
from eval_viewer.display.view import Group

__all__ = ["item_view", "datapoint_view", "to_html", "page", "reset_notebook"]


def item_view(record: DatapointRecord, item: Item, *, attention_query: int | None = None,
              mask_opacity: float = 0.5) -> Group:
    """``item`` (one of ``record``'s) rendered as the app renders it: masks, heatmaps and attention drawn over the
    datapoint's input image. Never raises: a value that cannot be drawn becomes a problem box naming it."""
    ctx = RenderContext(image=input_image(record), attention_query=attention_query, mask_opacity=mask_opacity)
    return render_item(item, ctx)
