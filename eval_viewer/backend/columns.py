"""A page's layout as columns, cached beside its skeletons, so a pass-wide job reads a page without parsing it again.

A bulk job (the health summary, the compare summary) reads every page of a pass whole. Parsing its pickle structure
costs more than reading its bytes: about 0.15 s for a 100 MB page of 2,300 datapoints (ten thousand array headers
checked one by one), against 0.06 s for the read. Yet the structure of a page does not change after it is written, and
the background indexer has already parsed it once (through the allow-list) to write its skeletons.

So at that parse the page's layout is written down as columns: every datapoint's value is walked once, and each
*leaf* (a path of string keys, e.g. ``("attention", "attention", "weights")``) gets, per datapoint, where its array
lies in the page (offset; dtype, shape and order as one shared *form*) or its plain value (a number, a string, a short
list of them, a numpy scalar with its type). A datapoint's *layout* is the sequence of its leaves in the order its
dicts hold them. A later bulk read of the same page version reads the page in one read and builds each datapoint's
selected values straight from the columns, the datapoints of one layout together: dicts in the same key order and
read-only array views of the page buffer, the same objects a parse gives (:func:`~.bulk.read_page`; tests hold the
two to equality), with no unpickler run at all: 0.02 s for a page that takes 0.15 s to parse.

What a column cannot hold (a torch tensor, an object array, a dict with non-string keys, a nested list) is an
*opaque* leaf: a read that selects one falls back to parsing the page, so nothing is ever left out.

The file is ours and holds no pickle: a magic line, a JSON header (paths, forms, layouts, plain values) and raw
little-endian int64 tables. Its name carries the page's size and version (like a skeleton file), and whether it was
written by a trusting process (``--trust-pickles``): a page that only a trusting parse accepts is never read through
columns by a process that does not trust it. Arrays built from it are checked like any other: dtypes rebuilt by numpy
and refused when they hold objects, offsets and sizes checked against the page by numpy's own constructor.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from eval_viewer.backend.pickles import LAZY_TYPES
from eval_viewer.backend.untrusted import MAX_NDIM, safe_dtype
from eval_viewer.errors import PageError

__all__ = ["PageColumns", "build_columns", "encode", "decode"]

logger = logging.getLogger(__name__)

_MAGIC = b"EVCOLS1\n"
_SCALARS = (str, int, float, bool, type(None))
_MAX_LIST = 64
"""Lists and tuples of plain values up to this length are held as values; longer ones are opaque."""

# a form: how one leaf is held in one datapoint
ARRAY, VALUE, NUMBER, LIST, TUPLE, EMPTY, OPAQUE = "a", "v", "n", "l", "t", "e", "o"


class _Builder:
    """Walks the datapoints of a parsed page once, interning leaf paths, forms and layouts."""

    def __init__(self) -> None:
        self.paths: dict[tuple[str, ...], int] = {}
        self.forms: dict[tuple[Any, ...], int] = {}
        self.layouts: dict[tuple[tuple[int, int], ...], int] = {}
        self.offsets: dict[tuple[int, int], int] = {}  # (row, leaf) -> offset
        self.values: dict[tuple[int, int], Any] = {}  # (row, leaf) -> plain value

    def row(self, row: int, value: Any) -> int:
        leaves: list[tuple[int, int]] = []
        if type(value) is dict and value and all(type(k) is str for k in value):
            self._walk(row, value, (), leaves)
        else:  # not a dict of debugger outputs: the whole value is one opaque leaf
            self._leaf(row, (), value, leaves)
        return self.layouts.setdefault(tuple(leaves), len(self.layouts))

    def _walk(self, row: int, node: dict[str, Any], path: tuple[str, ...], leaves: list[tuple[int, int]]) -> None:
        for key, value in node.items():
            here = (*path, key)
            if type(value) is dict and value and all(type(k) is str for k in value):
                self._walk(row, value, here, leaves)
            else:
                self._leaf(row, here, value, leaves)

    def _leaf(self, row: int, path: tuple[str, ...], value: Any, leaves: list[tuple[int, int]]) -> None:
        leaf = self.paths.setdefault(path, len(self.paths))
        kind = type(value)
        if kind in LAZY_TYPES and value.value is None and isinstance(value.dtype, np.dtype) \
                and value.dtype.fields is None and value.dtype.subdtype is None and not value.dtype.hasobject:
            form: tuple[Any, ...] = (ARRAY, value.dtype.str, tuple(value.shape), value.order)
            self.offsets[row, leaf] = value.offset
        elif kind in _SCALARS:
            form = (VALUE,)
            self.values[row, leaf] = value
        elif isinstance(value, np.generic) and value.dtype.kind in "biuf":  # a numpy scalar: its type and value
            form = (NUMBER, value.dtype.str)
            self.values[row, leaf] = value.item()
        elif kind in (list, tuple) and len(value) <= _MAX_LIST and all(type(v) in _SCALARS for v in value):
            form = (LIST if kind is list else TUPLE,)
            self.values[row, leaf] = list(value)
        elif kind is dict and not value:
            form = (EMPTY,)
        else:
            form = (OPAQUE,)
        leaves.append((leaf, self.forms.setdefault(form, len(self.forms))))


def build_columns(content: Mapping[int, Any]) -> PageColumns:
    """The columns of a parsed page's ``{idx: value}`` (arrays still :class:`~.pickles.LazyArray`)."""
    order = sorted(int(i) for i in content)
    builder = _Builder()
    layout = np.array([builder.row(row, content[idx]) for row, idx in enumerate(order)], dtype=np.int64)
    n, width = len(order), len(builder.paths)
    offsets = np.full((n, width), -1, dtype=np.int64)
    for (row, leaf), offset in builder.offsets.items():
        offsets[row, leaf] = offset
    values: dict[int, list[Any]] = {}
    for (row, leaf), value in builder.values.items():
        values.setdefault(leaf, [None] * n)[row] = value
    return PageColumns(np.array(order, dtype=np.int64), list(builder.paths), list(builder.forms),
                       [list(lay) for lay in builder.layouts], layout, offsets, values)


class PageColumns:
    """The columns of one page version (see the module docstring); :meth:`values` builds datapoints from them."""

    def __init__(self, idx: np.ndarray, paths: list[tuple[str, ...]], forms: list[tuple[Any, ...]],
                 layouts: list[list[tuple[int, int]]], layout: np.ndarray, offsets: np.ndarray,
                 values: Mapping[int, list[Any]]) -> None:
        self.idx, self.paths, self.forms, self.layouts = idx, paths, forms, layouts
        self.layout, self.offsets, self.plain_values = layout, offsets, values
        self._dtypes: dict[int, np.dtype] = {}

    def __len__(self) -> int:
        return len(self.idx)

    # ------------------------------------------------------------------------------------------------- reading
    def rows(self, wanted: Iterable[int], name: str) -> np.ndarray:
        """The rows of the datapoints ``wanted``; :class:`PageError` for one the page does not hold."""
        wanted = np.fromiter(wanted, dtype=np.int64)
        rows = np.searchsorted(self.idx, wanted)
        bad = (rows >= len(self.idx)) | (self.idx[np.minimum(rows, len(self.idx) - 1)] != wanted) \
            if len(self.idx) else np.ones(len(wanted), dtype=bool)
        if bad.any():
            raise PageError(f"{name}: does not hold datapoint {int(wanted[np.argmax(bad)])} as its index says "
                            "(rewritten since it was indexed?)")
        return rows

    def ranges(self, wanted: Collection[int], select: Mapping[str, Collection[str] | None] | None, name: str,
               gap: int = 1 << 20) -> list[tuple[int, int]] | None:
        """The byte ranges of the page that :meth:`values` reads for ``wanted`` and ``select`` (array bytes; ranges
        less than ``gap`` apart merged into one read), in order; None when a selected leaf is opaque."""
        rows = self.rows(wanted, name)
        spans: list[np.ndarray] = []
        layouts = self.layout[rows]
        for lay in np.unique(layouts).tolist():
            template = self._template(lay, select)
            if template is False:
                return None
            at = rows[layouts == lay]
            for leaf, form in self._array_leaves(template):
                starts = self.offsets[at, leaf]
                spec = self.forms[form]
                size = math.prod(spec[2]) * self._dtype(form, spec, name).itemsize
                spans.append(np.stack([starts, starts + size], axis=1))
        if not spans:
            return []
        edges = np.concatenate(spans)
        edges = edges[np.argsort(edges[:, 0], kind="stable")]
        merged: list[tuple[int, int]] = []
        for lo, hi in edges.tolist():
            if merged and lo <= merged[-1][1] + gap:
                if hi > merged[-1][1]:
                    merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        return merged

    def _array_leaves(self, node: Any) -> Iterator[tuple[int, int]]:
        if type(node) is dict:
            for child in node.values():
                yield from self._array_leaves(child)
        elif self.forms[node[1]][0] == ARRAY:
            yield node

    def values(self, data: bytes | memoryview, name: str, wanted: Collection[int],
               select: Mapping[str, Collection[str] | None] | None, base: int = 0) -> dict[int, Any] | None:
        """``{idx: value}`` for ``wanted``, only the parts ``select`` keeps (as :func:`~.bulk.read_page` selects),
        arrays as read-only views of ``data`` (the page's bytes from offset ``base`` on: the whole page, or the span
        of :meth:`ranges`); None when a selected leaf is opaque (the caller parses the page instead). Built column by
        column, the datapoints of one layout together, so the work per datapoint is numpy's array constructor and
        ``dict(zip(...))``."""
        wanted = list(wanted)
        rows = self.rows(wanted, name)
        layouts = self.layout[rows]
        built: list[Any] = [None] * len(wanted)
        for lay in np.unique(layouts).tolist():
            template = self._template(lay, select)
            if template is False:
                return None
            where = np.flatnonzero(layouts == lay)
            for pos, value in zip(where.tolist(), self._build(template, rows[where], data, name, base)):
                built[pos] = value
        return dict(zip(wanted, built))

    def _template(self, lay: int, select: Mapping[str, Collection[str] | None] | None) -> Any:
        """The tree of one layout, selected: nested ``{key: subtree}`` dicts in the value's key order with
        ``(leaf, form)`` at the leaves; False when a selected leaf is opaque."""
        tree: dict[str, Any] = {}
        root: Any = tree
        for leaf, form in self.layouts[lay]:
            path = self.paths[leaf]
            if not path:  # the whole value is one leaf
                root = (leaf, form)
                break
            node = tree
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = (leaf, form)
        if select is not None and isinstance(root, dict):
            picked: dict[str, Any] = {}
            for debugger, keys in select.items():
                if debugger not in root:
                    continue
                output = root[debugger]
                if keys is None or not isinstance(output, dict):  # (an empty dict selects to an empty dict)
                    picked[debugger] = output
                else:
                    picked[debugger] = {k: output[k] for k in keys if k in output}
            root = picked
        return False if self._opaque(root) else root

    def _opaque(self, node: Any) -> bool:
        if isinstance(node, dict):
            return any(self._opaque(v) for v in node.values())
        return self.forms[node[1]][0] == OPAQUE

    def _build(self, node: Any, rows: np.ndarray, data: bytes | memoryview, name: str, base: int) -> list[Any]:
        """The values of ``node`` (a template subtree) for the datapoints at ``rows``, one per row."""
        if type(node) is dict:
            keys = list(node)
            if not keys:
                return [{} for _ in range(len(rows))]
            children = [self._build(child, rows, data, name, base) for child in node.values()]
            return [dict(zip(keys, values)) for values in zip(*children)]
        leaf, form = node
        spec = self.forms[form]
        kind = spec[0]
        if kind == ARRAY:
            return self._arrays(form, spec, self.offsets[rows, leaf] - base, data, name)
        if kind == EMPTY:
            return [{} for _ in range(len(rows))]
        column = self.plain_values[leaf]
        picked = [column[r] for r in rows.tolist()]
        if kind == NUMBER:
            number = self._dtype(form, spec, name).type
            return [number(v) for v in picked]
        if kind == LIST:
            return [list(v) for v in picked]
        if kind == TUPLE:
            return [tuple(v) for v in picked]
        return picked  # VALUE

    def _dtype(self, form: int, spec: tuple[Any, ...], name: str) -> np.dtype:
        """The form's dtype, rebuilt by numpy from its description (once per form) and refused if it holds objects."""
        dtype = self._dtypes.get(form)
        if dtype is None:
            try:
                dtype = np.dtype(spec[1])
            except TypeError:
                raise PageError(f"{name}: damaged column cache (dtype {spec[1]!r})") from None
            dtype = self._dtypes[form] = safe_dtype(dtype, name)
        return dtype

    def _arrays(self, form: int, spec: tuple[Any, ...], offsets: np.ndarray, data: bytes | memoryview, name: str,
                ) -> list[np.ndarray]:
        """Read-only views of ``data`` at ``offsets`` (native byte order; others are copied to it)."""
        dtype = self._dtype(form, spec, name)
        shape, order = spec[2], spec[3]
        nbytes = math.prod(shape) * dtype.itemsize
        outside = (offsets < 0) | (offsets + nbytes > len(data))
        if outside.any():
            raise PageError(f"{name}: corrupt or truncated: an array (offset {int(offsets[np.argmax(outside)])}, "
                            f"{dtype}, shape {shape}) lies outside the page ({len(data)} bytes)")
        make = np.ndarray
        views = [make(shape, dtype, data, offset, None, order) for offset in offsets.tolist()]
        if dtype.isnative:
            return views  # (views of bytes are read-only)
        native = dtype.newbyteorder("=")
        out = [v.astype(native) for v in views]
        for v in out:
            v.flags.writeable = False
        return out


# --------------------------------------------------------------------------------------------------------- the file
def encode(columns: PageColumns) -> bytes:
    """The file bytes: magic, header length (8 bytes), JSON header, then idx, layout and offsets as int64."""
    header = json.dumps({
        "n": len(columns.idx), "paths": [list(p) for p in columns.paths], "forms": [list(f) for f in columns.forms],
        "layouts": columns.layouts, "values": {str(k): v for k, v in columns.plain_values.items()},
    }, separators=(",", ":")).encode()
    tables = [columns.idx.astype("<i8"), columns.layout.astype("<i8"), columns.offsets.astype("<i8")]
    return b"".join([_MAGIC, len(header).to_bytes(8, "little"), header, *(t.tobytes() for t in tables)])


def decode(data: bytes, name: str) -> PageColumns:
    """A column file's :class:`PageColumns`; :class:`ValueError` naming what is wrong when it is damaged."""
    if data[: len(_MAGIC)] != _MAGIC:
        raise ValueError("not a column cache file")
    start = len(_MAGIC) + 8
    length = int.from_bytes(data[len(_MAGIC):start], "little")
    try:
        head = json.loads(data[start:start + length])
        n = int(head["n"])
        paths = [tuple(str(k) for k in p) for p in head["paths"]]
        forms = [_form(f) for f in head["forms"]]
        layouts = [[(int(leaf), int(form)) for leaf, form in lay] for lay in head["layouts"]]
        values = {int(k): list(v) for k, v in head["values"].items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"damaged header ({exc})") from None
    width = len(paths)
    tables = np.frombuffer(data, dtype="<i8", offset=start + length)
    if tables.size != n * (2 + width):
        raise ValueError("truncated tables")
    idx, layout = tables[:n], tables[n:2 * n]
    offsets = tables[2 * n:].reshape(n, width)
    if any(len(v) != n for v in values.values()) or (n and (layout.min() < 0 or layout.max() >= len(layouts))) \
            or any(not 0 <= leaf < width or not 0 <= form < len(forms) for lay in layouts for leaf, form in lay) \
            or any(not 0 <= k < width for k in values):
        raise ValueError("inconsistent tables")
    return PageColumns(idx, paths, forms, layouts, layout.astype(np.intp), offsets, values)


def _form(raw: Any) -> tuple[Any, ...]:
    kind = raw[0]
    if kind == ARRAY:
        shape = [int(d) for d in raw[2]]
        if len(shape) > MAX_NDIM or any(d < 0 for d in shape) or raw[3] not in ("C", "F") or math.prod(shape) < 0:
            raise ValueError(f"bad array form {raw!r}")
        return (ARRAY, str(raw[1]), tuple(shape), raw[3])
    if kind == NUMBER:
        if np.dtype(str(raw[1])).kind not in "biuf":
            raise ValueError(f"bad number form {raw!r}")
        return (NUMBER, str(raw[1]))
    if kind in (VALUE, LIST, TUPLE, EMPTY, OPAQUE):
        return (kind,)
    raise ValueError(f"unknown form {raw!r}")


def load(path: Path, name: str) -> PageColumns | None:
    """The columns in ``path``, or None when there are none; a damaged file is ignored (and will be rewritten)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("Ignoring unreadable column cache %s (%s)", path, exc)
        return None
    try:
        return decode(data, name)
    except ValueError as exc:
        logger.warning("Ignoring damaged column cache %s (%s)", path, exc)
        return None
