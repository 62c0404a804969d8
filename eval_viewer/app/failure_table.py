"""The failure table's data: one :class:`~eval_viewer.app.table_query.Table` per pass and metric, kept.

The grid asks for its rows one block at a time, and every block is filtered and sorted over all datapoints, so the
columns behind it (every metric, every scalar meta field, the rank in the worst-first ranking) are built once per
selection and kept while their sources are unchanged: the store hands back the same :class:`Scores` object until the
scores file changes, and the epoch's page index reports the same status until pages are added or re-indexed. A block
then costs a filter, a sort and a slice, whatever it took the store to assemble the meta fields.

Row keys (``field`` in the grid's column definitions) are short, ``m<i>`` for the i-th metric and ``i<j>`` for the
j-th meta field, because they are repeated in every row sent; the headers show the real names.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eval_viewer.app.state import ViewState
from eval_viewer.app.table_query import Table, list_column, number_column, text_column
from eval_viewer.backend import LogStore, Scores
from eval_viewer.backend.health_summary import HealthJobs, HealthSummary, previous_pass, scale_jump_rows

__all__ = ["LoadedTable", "TableCache", "table_data", "metric_field", "meta_field", "is_number_column",
           "without_index_copy", "health_field", "health_of", "HEALTH_COUNT"]

log = logging.getLogger(__name__)


def metric_field(scores: Scores, metric: str) -> str:
    """Row key of a metric column, prefixed so that a meta field cannot collide with a metric of the same name.

    O(1): the positions of a Scores' metrics are computed once (a 20,000-class per-class metric made the table build
    quadratic, 10 s, when each call searched the tuple)."""
    with _POSITIONS_LOCK:
        hit = _POSITIONS.get(id(scores))
        if hit is None or hit[0] is not scores:
            hit = (scores, {m: i for i, m in enumerate(scores.metrics)})
            _POSITIONS[id(scores)] = hit
            while len(_POSITIONS) > 16:
                _POSITIONS.pop(next(iter(_POSITIONS)))
    return f"m{hit[1][metric]}"


_POSITIONS: dict[int, tuple[Scores, dict[str, int]]] = {}
_POSITIONS_LOCK = threading.Lock()


def meta_field(meta: Mapping[str, Sequence[Any]], name: str) -> str:
    return f"i{list(meta).index(name)}"


HEALTH_COUNT = "health"
"""Row key of the number of health problems (layer × kind) of each datapoint."""


def health_field(kind: str) -> str:
    """Row key of a health kind's column: the layers (forward order) where a datapoint has that problem."""
    return f"h_{kind}"


def is_number_column(values: Sequence[Any]) -> bool:
    """Numbers (not booleans) or missing everywhere: filtered and sorted as numbers; anything else as text."""
    return all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values)


def without_index_copy(meta: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
    """Drop a meta field that only repeats the datapoint index (recorders often save ``idx``; the table has it) or
    that is empty everywhere."""
    return {name: values for name, values in meta.items()
            if not all(v is None or v == i for i, v in enumerate(values))}


def table_data(scores: Scores, metric: str | None, meta: Mapping[str, Sequence[Any]],
               health: Mapping[str, Sequence[Any]] | None = None) -> Table:
    """Every column by row key, ranked worst first by ``metric`` (index order without one); meta fields shorter
    than the scores are padded with missing values. ``health``: the pass health summary's per-datapoint columns
    (:meth:`~eval_viewer.backend.health_summary.HealthSummary.layer_columns`), when it is done."""
    n = scores.num_datapoints
    order = np.asarray(scores.ranking(metric, worst_first=True) if metric else np.arange(n))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    columns = {"rank": number_column(rank), "idx": number_column(np.arange(n))}
    for m in scores.metrics:
        columns[metric_field(scores, m)] = number_column(scores.per_datapoint[m], scores.higher_is_better.get(m, True))
    for name, values in meta.items():
        padded = list(values[:n]) + [None] * (n - len(values))
        columns[meta_field(meta, name)] = number_column(padded) if is_number_column(padded) else text_column(padded)
    for kind, values in (health or {}).items():
        columns[HEALTH_COUNT if kind == HEALTH_COUNT else health_field(kind)] = (
            number_column(values) if kind == HEALTH_COUNT else list_column(values))
    return Table(columns=columns, default_order=order)


@dataclass(frozen=True)
class LoadedTable:
    """What the table's callbacks need about one selection: the scores, the meta fields shown, the built table."""

    scores: Scores
    metric: str | None
    meta: dict[str, list[Any]]
    table: Table
    health: dict[str, list[Any]] | None = None
    """The health summary's columns when it was done as the table was built (None: not yet, or no debug outputs)."""


def health_of(store: LogStore, state: ViewState) -> tuple[HealthSummary | None, HealthSummary | None]:
    """The finished health summary of the state's pass under its thresholds, and that of the previous captured epoch
    (the reference of its scale jumps), each None until it is done."""
    jobs = HealthJobs.of(store)
    summary = jobs.ready(state.pass_key, state.health)
    before = previous_pass(store, state.pass_key) if summary is not None else None
    return summary, jobs.ready(before, state.health) if before is not None else None


class TableCache:
    """``get(state)``: the :class:`LoadedTable` of a resolved state's run, epoch and metric, its health columns
    flagged under the state's thresholds; the last few are kept.

    One lock covers lookups and builds, so the columns callback and the first block request, which arrive together
    when the selection changes, build a table once between them rather than twice side by side."""

    def __init__(self, store: LogStore, *, size: int = 4) -> None:
        self._store = store
        self._size = size
        self._entries: OrderedDict[tuple[Any, ...], tuple[Any, LoadedTable]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, state: ViewState) -> LoadedTable:
        assert state.run is not None
        key = (state.pass_key, state.metric, state.health)
        with self._lock:
            scores = self._store.scores(state.pass_key)
            status = self._store.debug_status(state.pass_key)  # before reading meta: a change means rebuild
            summary, reference = health_of(self._store, state)
            status = (status, id(summary), id(reference))  # a finished health summary (and its reference) too
            cached = self._entries.get(key)
            if cached is not None and cached[0] == status and cached[1].scores is scores:
                self._entries.move_to_end(key)
                return cached[1]
            meta = without_index_copy(self._store.meta_table(state.pass_key))
            jumps = scale_jump_rows(reference, summary)[1] if summary is not None and reference is not None else None
            health = summary.layer_columns(scores.num_datapoints, jumps) if summary is not None else None
            loaded = LoadedTable(scores, state.metric, meta, table_data(scores, state.metric, meta, health), health)
            self._entries[key] = (status, loaded)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
            log.debug("built the table of %s (%d rows, %d meta fields)", key, scores.num_datapoints, len(meta))
            return loaded
