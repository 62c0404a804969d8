"""The plain values the backend hands out: what the app, the notebook API and the HTML report all consume.

Frozen dataclasses of plain Python and numpy values, no Dash, no file handles. Every run, epoch and datapoint has a
stable name: ``RunInfo.name`` (URL-safe), ``epoch`` (an int, or ``None`` for an evaluator run) and ``idx`` (the
datapoint's position in the scores lists, equal to the ``datapoint_idx`` key of the debug pages).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = ["RunInfo", "EpochInfo", "Scores", "Item", "DatapointRecord", "rank_indices"]

RunKind = Literal["trainer", "evaluator"]


@dataclass(frozen=True)
class EpochInfo:
    """One scored pass over the data: an ``epoch_N`` folder of a trainer run, or an evaluator run's root."""

    epoch: int | None
    path: Path
    has_debug: bool


@dataclass(frozen=True)
class RunInfo:
    name: str
    """Stable, URL-safe name: the path relative to the ``--log-dir`` it was found under (folder name for a run dir)."""
    path: Path
    kind: RunKind
    epochs: tuple[EpochInfo, ...]
    """Sorted numerically; gaps allowed. One entry with ``epoch=None`` for an evaluator run."""

    def epoch(self, epoch: int | None) -> EpochInfo:
        for info in self.epochs:
            if info.epoch == epoch:
                return info
        from eval_viewer.errors import NotFoundError

        known = ", ".join(str(e.epoch) for e in self.epochs) or "none"
        raise NotFoundError(f"Run {self.name!r} has no epoch {epoch!r} (epochs: {known})")


@dataclass(frozen=True)
class Scores:
    """Every metric of one epoch (or evaluator run), per datapoint and aggregated.

    Per-class list metrics ``m`` are expanded into ``m[0]``, ``m[1]``, ...; missing values and NaN are NaN, and NaN
    always ranks as a failure, never as a success.
    """

    num_datapoints: int
    per_datapoint: Mapping[str, np.ndarray]
    """metric -> float64 array of length ``num_datapoints``."""
    aggregated: Mapping[str, float]
    """metric -> float (NaN where the file has null); per-class lists expanded like ``per_datapoint``."""
    higher_is_better: Mapping[str, bool]
    problems: tuple[str, ...] = ()
    """User-facing notes on values that could not be read (kept as NaN) or counts that differ from other epochs."""
    path: Path | None = None
    """The scores file these came from."""
    _rankings: dict[tuple[str, bool], np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.per_datapoint)

    def ranking(self, metric: str, worst_first: bool = True) -> np.ndarray:
        """Datapoint indices ordered worst-first (or best-first); NaN counts as worst either way. Stable on ties.

        Computed once per (metric, direction) and kept: the table re-sorts on every click, so the second call is a
        dictionary lookup. The returned array is read-only because it is shared.
        """
        key = (metric, bool(worst_first))
        cached = self._rankings.get(key)
        if cached is not None:
            return cached
        if metric not in self.per_datapoint:
            from eval_viewer.errors import NotFoundError

            known = ", ".join(self.per_datapoint) or "none"
            raise NotFoundError(f"No metric {metric!r} in {self.path or 'these scores'} (metrics: {known})")
        order = rank_indices(self.per_datapoint[metric], self.higher_is_better.get(metric, True), worst_first)
        order.flags.writeable = False
        self._rankings[key] = order
        return order


def rank_indices(values: np.ndarray, higher_is_better: bool, worst_first: bool = True) -> np.ndarray:
    """Indices of ``values`` from worst to best (or best to worst), NaN always worst, stable on ties.

    NaN means "no score" (a failed datapoint, a missing value): it must never look like a success, so it comes first
    worst-first and last best-first. One ``lexsort`` (O(n log n), stable): a few ms for 100k datapoints.
    """
    values = np.asarray(values, dtype=np.float64)
    nan = np.isnan(values)
    goodness = values if higher_is_better else -values
    if worst_first:
        # Primary key: NaN first (False sorts before True, so sort on ~nan); secondary: goodness ascending.
        return np.lexsort((np.where(nan, 0.0, goodness), ~nan)).astype(np.int64)
    return np.lexsort((np.where(nan, 0.0, -goodness), nan)).astype(np.int64)


@dataclass(frozen=True)
class Item:
    """One saved value with its semantic kind (:class:`eval_viewer.log_format.Kind`)."""

    key: str
    """Dotted path inside its section or debugger output (``"image"``, ``"stats.mean"``); ``""`` for the whole."""
    kind: str
    value: Any


@dataclass(frozen=True)
class DatapointRecord:
    """Everything saved about one datapoint of one epoch of one run."""

    run: str
    epoch: int | None
    idx: int
    scores: Mapping[str, float]
    inputs: tuple[Item, ...] = ()
    labels: tuple[Item, ...] = ()
    predictions: tuple[Item, ...] = ()
    meta_info: Mapping[str, Any] = field(default_factory=dict)
    debug: Mapping[str, tuple[Item, ...]] = field(default_factory=dict)
    """debugger name -> its items, in the order the debuggers ran."""
    problems: tuple[str, ...] = ()
    """User-facing messages for what could not be read (a corrupt page...); the rest of the record is still valid."""
