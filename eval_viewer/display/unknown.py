"""What an unknown value looks like: a summary card (type, shape, dtype, min/max/mean, NaN/Inf counts), never a dump.

``str()`` of a big array is useless on screen and can be megabytes on the wire; a summary answers the first questions
a researcher asks of an unexpected value (what is it, how big, is it finite, what range) in a few hundred bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


from eval_viewer.display.arrays import finite_stats, is_arraylike, to_numpy
from eval_viewer.display.figures import fmt
from eval_viewer.display.registry import RenderContext, register
from eval_viewer.display.view import Group, Node, Table, Text
from eval_viewer.log_format import Kind

__all__ = ["summary", "summary_card", "render_unknown"]

_PREVIEW_CHARS = 120
_MAX_KEYS = 40


def _type_name(value: Any) -> str:
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", "numpy") else f"{module.split('.')[0]}.{cls.__qualname__}"


def summary(value: Any) -> dict[str, Any]:
    """A small dict describing ``value``: always ``type``; for arrays and tensors ``shape``, ``dtype`` and (numeric)
    ``min``, ``max``, ``mean``, ``n_nan``, ``n_inf``; ``len`` (and ``keys``) for containers; a short ``preview`` for
    strings and scalars. Cheap to serialise whatever the size of ``value``."""
    info: dict[str, Any] = {"type": _type_name(value)}
    if value is None:
        return info
    if isinstance(value, (str, bytes)):
        info["len"] = len(value)
        text = value if isinstance(value, str) else value[:_PREVIEW_CHARS].decode("utf-8", "replace")
        info["preview"] = text[:_PREVIEW_CHARS] + ("…" if len(value) > _PREVIEW_CHARS else "")
        return info
    if isinstance(value, Mapping):
        keys = [str(k) for k in value]
        info["len"] = len(keys)
        info["keys"] = keys[:_MAX_KEYS] + (["…"] if len(keys) > _MAX_KEYS else [])
        return info
    if isinstance(value, (list, tuple, set)) and not is_arraylike(value):
        info["len"] = len(value)
        try:
            array = to_numpy(list(value))
        except (ValueError, TypeError):
            return info
        if array.dtype.kind not in "biufc":
            return info
        value = array
    elif not (is_arraylike(value) or isinstance(value, (int, float, complex))):
        text = repr(value)
        info["preview"] = text[:_PREVIEW_CHARS] + ("…" if len(text) > _PREVIEW_CHARS else "")
        return info
    array = to_numpy(value)
    info["shape"] = tuple(int(s) for s in array.shape)
    info["dtype"] = str(array.dtype)
    if array.dtype.kind in "biufc" and array.size:
        stats = finite_stats(array)
        info.update({k: stats[k] for k in ("min", "max", "mean", "n_nan", "n_inf")})
    elif array.size and array.size <= 8:
        info["preview"] = repr(array.tolist())[:_PREVIEW_CHARS]
    return info


def _rows(info: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in info.items():
        if key == "shape":
            text = "(" + ", ".join(str(s) for s in value) + ("," if len(value) == 1 else "") + ")"
        elif key == "keys":
            text = ", ".join(value)
        else:
            text = fmt(value)
        rows.append((key, text))
    return rows


def summary_card(value: Any, title: str | None = None) -> Group:
    """The summary of ``value`` as a two-column table (``ev-summary``); a dict also gets one line per key."""
    info = summary(value)
    children: list[Node] = []
    if title:
        children.append(Text(title, cls="ev-summary-title"))
    children.append(Table(_rows(info), cls="ev-table ev-summary-table", row_headers=True))
    if isinstance(value, Mapping) and value:
        lines: list[tuple[str, str]] = []
        for i, (key, item) in enumerate(value.items()):
            if i >= _MAX_KEYS:
                lines.append(("…", f"{len(value) - _MAX_KEYS} more keys"))
                break
            sub = summary(item)
            parts = [sub["type"]]
            if "shape" in sub:
                parts.append(f"{sub['shape']} {sub['dtype']}")
            if "min" in sub:
                parts.append(f"[{fmt(sub['min'])}, {fmt(sub['max'])}] mean {fmt(sub['mean'])}")
            if sub.get("n_nan") or sub.get("n_inf"):
                parts.append(f"{sub['n_nan']} NaN, {sub['n_inf']} Inf")
            if "preview" in sub:
                parts.append(sub["preview"])
            elif "len" in sub:
                parts.append(f"len {sub['len']}")
            lines.append((str(key), " · ".join(parts)))
        children.append(Table(lines, cls="ev-table ev-summary-keys", row_headers=True))
    return Group(children, cls="ev-summary")


@register(Kind.UNKNOWN)
def render_unknown(value: Any, ctx: RenderContext) -> Node:
    """Unknown kinds: a summary card."""
    return summary_card(value)
