"""Answer the failure table's block requests on the server: filter, sort, then slice.

The table runs AG Grid's infinite row model, so the browser never holds more than the blocks a user has scrolled to.
For every block it asks for rows ``[startRow, endRow)`` under the grid's ``sortModel`` and ``filterModel``; this module
applies both to plain arrays, one per column, and returns the block's datapoints and how many rows match. It knows
nothing of Dash or of the store (the callback in :mod:`eval_viewer.app.callbacks.table` builds the :class:`Table`), so
its tests need no browser.

What the grid's own client-side model did, and what this keeps (AG Grid's documented defaults):

* **Default order** is the worst-first ranking of the chosen metric (:attr:`Table.default_order`); every sort is
  stable, so rows that tie on the sorted columns stay in ranking order (sort by a meta field: worst first within each
  value).
* **Blanks when sorting** (NaN, missing): in a *metric* column a blank is a failure and sorts at the worst end, as in
  the store's ranking: first when the sort puts the worst values first (ascending a higher-is-better metric,
  descending a lower-is-better one), last otherwise. In any other column (rank, idx, meta info) blanks sort last in
  both directions.
* **Number filters** (``equals``, ``notEqual``, ``lessThan``, ``lessThanOrEqual``, ``greaterThan``,
  ``greaterThanOrEqual``, ``inRange``, ``blank``, ``notBlank``) compare the stored float64 values, not the rounded
  ones a cell shows. A blank (NaN) matches only ``blank``, as in AG Grid, where every ``includeBlanksIn*`` option
  defaults to false. ``inRange`` excludes both ends (AG Grid's ``inRangeInclusive`` defaults to false).
* **Text filters** (``contains``, ``notContains``, ``equals``, ``notEqual``, ``startsWith``, ``endsWith``, ``blank``,
  ``notBlank``) ignore case. A missing value matches ``notEqual``, ``notContains`` and ``blank``; an empty or
  whitespace-only string counts as blank too. Values that are not strings are compared as ``str(value)``.
* **Combined conditions** (``{"operator": "AND" | "OR", "conditions": [...]}``) and filters on several columns
  (always AND) both work. A filter or sort on a column the table does not have (kept from a run with more metrics)
  is skipped, and so is a filter whose type (number/text) no longer fits its column; both are logged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["Column", "Table", "Block", "number_column", "text_column", "filter_mask", "sort_rows", "query",
           "row_dicts", "NUMBER_OPS", "TEXT_OPS", "BLOCK_ROWS"]

log = logging.getLogger(__name__)

Kind = Literal["number", "text"]
NUMBER_OPS = ("equals", "notEqual", "lessThan", "lessThanOrEqual", "greaterThan", "greaterThanOrEqual", "inRange",
              "blank", "notBlank")
TEXT_OPS = ("contains", "notContains", "equals", "notEqual", "startsWith", "endsWith", "blank", "notBlank")
BLOCK_ROWS = 100
"""Rows per block the grid asks for (its ``cacheBlockSize``): a few screens of the table, some 10 KiB of JSON."""
SIGNIFICANT_DIGITS = 7
"""What a float cell is sent with: more than a cell shows, about half the JSON of a full float64."""


@dataclass(frozen=True)
class Column:
    """One column, indexed by datapoint.

    ``values`` is a float or int array for a number column (NaN = blank) and an object array of ``str`` (or other
    scalars) and ``None`` for a text column. ``higher_is_better`` is set for metric columns only: it says which end
    is "worst", where blanks sort (see the module docstring)."""

    values: np.ndarray
    kind: Kind
    higher_is_better: bool | None = None

    def blank(self) -> np.ndarray:
        """Which rows have no value: NaN in a number column; ``None`` or a blank string in a text column."""
        if self.kind == "number":
            return np.isnan(self.values) if self.values.dtype.kind == "f" else np.zeros(len(self.values), bool)
        return np.fromiter((v is None or (isinstance(v, str) and not v.strip()) for v in self.values), bool,
                           count=len(self.values))


def number_column(values: Sequence[float | int | None] | np.ndarray, higher_is_better: bool | None = None) -> Column:
    """A number column from an array or a list with ``None`` for missing values (kept as int if all are ints)."""
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        array = np.array([np.nan if v is None else v for v in values], dtype=float)
    return Column(array, "number", higher_is_better)


def text_column(values: Sequence[Any]) -> Column:
    """A text column from a list of strings (or other scalars) and ``None``."""
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return Column(array, "text")


def list_column(values: Sequence[Sequence[str] | None]) -> Column:
    """A text column whose cells are lists of names (the layers where a datapoint has a problem): shown joined by
    ``", "``, and a text filter tests each name, so "equals backbone.layer3" keeps a row listing it beside others and
    never one listing only ``backbone.layer30`` (which a "contains" on the joined text would)."""
    array = np.empty(len(values), dtype=object)
    array[:] = [tuple(v) if v else None for v in values]
    return Column(array, "text")


def _cell_text(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)


@dataclass(frozen=True)
class Table:
    """Every column of one run/epoch by row key, and the default (worst-first) order of the datapoints."""

    columns: Mapping[str, Column]
    default_order: np.ndarray

    @property
    def num_rows(self) -> int:
        return len(self.default_order)


@dataclass(frozen=True)
class Block:
    """The datapoints of one requested block, in display order, and how many rows match the filters in all."""

    rows: np.ndarray
    count: int


# -- filtering ----------------------------------------------------------------------------------------------------

def _blank_condition(op: Any, blank: np.ndarray) -> np.ndarray | None:
    """The rows an AG Grid ``blank`` / ``notBlank`` condition keeps (the same for number and text columns)."""
    return {"blank": blank, "notBlank": ~blank}.get(op)


def _number_condition(column: Column, condition: Mapping[str, Any]) -> np.ndarray:
    op = condition.get("type")
    blank = column.blank()
    if (kept := _blank_condition(op, blank)) is not None:
        return kept
    if op not in NUMBER_OPS:
        raise ValueError(f"unknown number filter {op!r} (known: {', '.join(NUMBER_OPS)})")
    low = condition.get("filter")
    if low is None:  # a condition still being typed filters nothing, as in the grid
        return np.ones(len(blank), bool)
    values = column.values
    with np.errstate(invalid="ignore"):
        if op == "inRange":
            high = condition.get("filterTo")
            if high is None:
                return np.ones(len(blank), bool)
            low, high = min(low, high), max(low, high)
            match = (values > low) & (values < high)
        else:
            compare: dict[str, Callable[[np.ndarray], np.ndarray]] = {
                "equals": lambda v: v == low, "notEqual": lambda v: v != low,
                "lessThan": lambda v: v < low, "lessThanOrEqual": lambda v: v <= low,
                "greaterThan": lambda v: v > low, "greaterThanOrEqual": lambda v: v >= low,
            }
            match = compare[op](values)
    return match & ~blank


def _text_condition(column: Column, condition: Mapping[str, Any]) -> np.ndarray:
    op = condition.get("type")
    blank = column.blank()
    if (kept := _blank_condition(op, blank)) is not None:
        return kept
    if op not in TEXT_OPS:
        raise ValueError(f"unknown text filter {op!r} (known: {', '.join(TEXT_OPS)})")
    needle = condition.get("filter")
    if needle is None:
        return np.ones(len(blank), bool)
    needle = str(needle).lower()
    test: Callable[[str], bool] = {
        "contains": lambda s: needle in s, "notContains": lambda s: needle not in s,
        "equals": lambda s: s == needle, "notEqual": lambda s: s != needle,
        "startsWith": lambda s: s.startswith(needle), "endsWith": lambda s: s.endswith(needle),
    }[op]
    negative = op in ("notEqual", "notContains")  # also what a missing value gives
    every = all if negative else any  # a list cell: none of its names may match / one of them must

    def keep(value: Any) -> bool:
        if value is None:
            return negative
        if isinstance(value, tuple):
            return every(test(str(v).lower()) for v in value)
        return test(str(value).lower())

    return np.fromiter((keep(v) for v in column.values), bool, count=len(column.values))


def _column_filter(column: Column, model: Mapping[str, Any]) -> np.ndarray | None:
    """The rows one column's filter model keeps; ``None`` when the model does not fit the column."""
    if model.get("filterType", column.kind) != column.kind:
        return None
    condition = _number_condition if column.kind == "number" else _text_condition
    if "conditions" in model:
        masks = [condition(column, c) for c in model["conditions"]]
        if not masks:
            return np.ones(len(column.values), bool)
        operator = str(model.get("operator", "AND")).upper()
        if operator not in ("AND", "OR"):
            raise ValueError(f"unknown filter operator {operator!r} (known: AND, OR)")
        return np.logical_and.reduce(masks) if operator == "AND" else np.logical_or.reduce(masks)
    return condition(column, model)


def filter_mask(table: Table, filter_model: Mapping[str, Mapping[str, Any]] | None) -> np.ndarray:
    """Which datapoints pass every column's filter (a boolean array indexed by datapoint)."""
    mask = np.ones(table.num_rows, bool)
    for field, model in (filter_model or {}).items():
        column = table.columns.get(field)
        if column is None:
            log.info("filter on unknown column %r skipped", field)
            continue
        kept = _column_filter(column, model)
        if kept is None:
            log.info("%s filter on %s column %r skipped", model.get("filterType"), column.kind, field)
            continue
        mask &= kept
    return mask


# -- sorting ------------------------------------------------------------------------------------------------------

def _sort_key(column: Column, rows: np.ndarray) -> np.ndarray:
    """A float key per row whose negation is the reverse order (text becomes its position among the values)."""
    values = column.values[rows]
    if column.kind == "number":
        return values.astype(float)
    codes = np.unique(np.array([_cell_text(v) for v in values], dtype=str), return_inverse=True)[1]
    return codes.astype(float)


def _blanks_first(column: Column, ascending: bool) -> bool:
    """A metric's blanks are failures: first when the sort starts at the worst end. Elsewhere blanks go last."""
    if column.higher_is_better is None:
        return False
    return column.higher_is_better == ascending


def _sort_by(column: Column, rows: np.ndarray, ascending: bool) -> np.ndarray:
    blank = column.blank()[rows]
    filled = np.flatnonzero(~blank)
    key = _sort_key(column, rows[filled])
    filled = filled[np.argsort(key if ascending else -key, kind="stable")]
    empty = np.flatnonzero(blank)
    parts = (empty, filled) if _blanks_first(column, ascending) else (filled, empty)
    return rows[np.concatenate(parts)]


def sort_rows(table: Table, rows: np.ndarray, sort_model: Sequence[Mapping[str, Any]] | None) -> np.ndarray:
    """``rows`` (datapoint indices, in default order) sorted by the grid's sort model, first entry most significant.

    Each column is a stable sort, applied from the least significant entry up, so ties fall back to the next entry
    and finally to the order ``rows`` came in."""
    for entry in reversed(list(sort_model or ())):
        column = table.columns.get(entry.get("colId", ""))
        if column is None:
            log.info("sort on unknown column %r skipped", entry.get("colId"))
            continue
        direction = entry.get("sort")
        if direction not in ("asc", "desc"):
            raise ValueError(f"unknown sort direction {direction!r} (known: asc, desc)")
        rows = _sort_by(column, rows, direction == "asc")
    return rows


def query(table: Table, start: int, end: int, sort_model: Sequence[Mapping[str, Any]] | None = None,
          filter_model: Mapping[str, Mapping[str, Any]] | None = None) -> Block:
    """Rows ``[start, end)`` of the table filtered by ``filter_model`` and sorted by ``sort_model``."""
    order = table.default_order
    if filter_model:
        order = order[filter_mask(table, filter_model)[order]]
    if sort_model:
        order = sort_rows(table, order, sort_model)
    start = max(0, int(start))
    return Block(rows=order[start:max(start, int(end))], count=len(order))


# -- sending ------------------------------------------------------------------------------------------------------

def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(value) else None
    if isinstance(value, tuple):
        return _cell_text(value)
    return value


def row_dicts(table: Table, rows: np.ndarray) -> list[dict[str, Any]]:
    """One JSON-ready dict per row of ``rows``: floats to seven significant digits, NaN and Inf as ``None``."""
    picked = {field: column.values[rows].tolist() for field, column in table.columns.items()}
    return [{field: _json_scalar(values[i]) for field, values in picked.items()} for i in range(len(rows))]
