"""The renderer registry: semantic kind -> function turning one value into a neutral view node.

Renderers are found here, never through if-chains in callbacks (the Spotlight pattern): a kind is a string from
:class:`eval_viewer.log_format.Kind`, a renderer is ``(value, ctx) -> Node`` (:mod:`eval_viewer.display.view`).
:func:`render_item` is the one entry point the app, a notebook and a report need; it never raises: a renderer that
fails becomes a :class:`~eval_viewer.display.view.Problem` naming the item and the problem, and a kind nobody
registered is drawn by the summary renderer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from eval_viewer.backend.model import Item
from eval_viewer.display.view import Group, Node, Problem
from eval_viewer.log_format import Kind

__all__ = ["RenderContext", "Renderer", "register", "unregister", "renderer_for", "registered_kinds", "render_item",
           "error_box"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderContext:
    """What a renderer may know beyond the value itself; all optional, so every renderer also works alone."""

    image: np.ndarray | None = None
    """The datapoint's input image (HxWx3 uint8 preferred; any layout :func:`image_to_rgb` accepts), for overlays."""
    mask_opacity: float = 0.5
    """Opacity of masks, heatmaps and attention drawn over ``image``."""
    class_names: Sequence[str] | None = None
    """Names of class ids, for mask legends and class-id scalars."""
    palette: Sequence[tuple[int, int, int]] | None = None
    """Class colours a log declares (its viewer sidecar); None: :data:`eval_viewer.display.colors.PALETTE`."""
    attention_query: int | None = None
    """Selected query of attention renderers. When the queries sit on the key grid: the grid cell (what
    :func:`attention_query_from_click` returns); otherwise the query token index (see
    :mod:`eval_viewer.display.attention`). None: the query with the most peaked attention."""
    attention_head: int | None = None
    """Head whose map attention renderers lay over the image; None: the mean over heads."""
    graph_id: Callable[[str], Any] | None = None
    """When given, interactive figures get ``id=graph_id(role)`` (role e.g. ``"attention-image"``; a plain JSON value)
    so the app can listen to them with pattern-matching callbacks; None: no ids."""

    def id_for(self, role: str) -> Any:
        """The id for the graph playing ``role``, or None when the app asked for none."""
        return self.graph_id(role) if self.graph_id is not None else None

    def class_name(self, cls: int) -> str | None:
        """Name of class ``cls`` when known."""
        names = self.class_names
        if names is not None and 0 <= int(cls) < len(names):
            return str(names[int(cls)])
        return None


Renderer = Callable[[Any, RenderContext], Node]

_RENDERERS: dict[str, Renderer] = {}


def register(kind: str) -> Callable[[Renderer], Renderer]:
    """Decorator registering a renderer for ``kind``; a later registration replaces an earlier one (so a user's own
    renderer can override a built-in)."""

    def decorator(renderer: Renderer) -> Renderer:
        if kind in _RENDERERS and _RENDERERS[kind] is not renderer:
            logger.debug("renderer for %r replaced by %s", kind, getattr(renderer, "__qualname__", renderer))
        _RENDERERS[kind] = renderer
        return renderer

    return decorator


def unregister(kind: str) -> Renderer | None:
    """Remove the renderer of ``kind`` (tests, plugins); returns it, or None if there was none."""
    return _RENDERERS.pop(kind, None)


def registered_kinds() -> tuple[str, ...]:
    return tuple(_RENDERERS)


def renderer_for(kind: str) -> Renderer:
    """The renderer of ``kind``, falling back to the summary renderer (:data:`Kind.UNKNOWN`) for unknown kinds."""
    renderer = _RENDERERS.get(kind)
    if renderer is not None:
        return renderer
    fallback = _RENDERERS.get(Kind.UNKNOWN)
    if fallback is None:  # only if someone unregistered the summary renderer
        raise LookupError(f"no renderer for kind {kind!r} and no summary renderer registered")
    return fallback


def error_box(item: Item, error: BaseException) -> Problem:
    """What a failed renderer shows: which item, which kind, what went wrong; the rest of the page keeps working."""
    message = f"{type(error).__name__}: {error}"
    if len(message) > 2000:
        message = message[:2000] + " …"
    return Problem(f"Could not render {item.key or '(whole output)'!r} as {item.kind!r}", message)


def render_item(item: Item, ctx: RenderContext = RenderContext()) -> Group:
    """Render one item through the registry, wrapped in a ``Group(cls="ev-item ev-kind-<kind>")``.

    Never raises: any exception inside the renderer (or a renderer returning something that is not a view node) is
    logged and shown as an :func:`error_box`.
    """
    kind = str(item.kind)
    try:
        content = renderer_for(kind)(item.value, ctx)
        if not isinstance(content, Node):
            raise TypeError(f"the renderer of {kind!r} returned a {type(content).__name__}, not a view node")
    except Exception as error:  # noqa: BLE001 - one bad value must not take the page down
        logger.warning("rendering %r (%s) failed", item.key, kind, exc_info=True)
        content = error_box(item, error)
    safe_kind = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in kind) or "unknown"
    return Group((content,), cls=f"ev-item ev-kind-{safe_kind}")
