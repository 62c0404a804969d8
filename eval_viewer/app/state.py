"""What the user is looking at, as it lives in the URL: ``?run=NAME&epoch=N&metric=M&idx=I``.

The query string is the app's single source of truth, so a reload or a shared link opens the same view. This module
turns it into a :class:`ViewState` and back, and resolves a partial state (``?run=a``) against the store into a
complete one (latest epoch, first metric). It knows nothing of Dash, so it is tested without a browser.

Run names come from the store's index of the ``--log-dir`` paths named on the command line; a URL can only pick one
of those names and never carries a filesystem path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import parse_qs, urlencode

import numpy as np

from eval_viewer.backend import LogStore, RunInfo, Scores
from eval_viewer.errors import NotFoundError

__all__ = ["ViewState", "Resolved", "Position", "parse_query", "to_query", "resolve", "position", "with_idx"]


@dataclass(frozen=True)
class ViewState:
    """Run, epoch, metric and datapoint; ``None`` means "not chosen" (or, for ``epoch``, an evaluator run)."""

    run: str | None = None
    epoch: int | None = None
    metric: str | None = None
    idx: int | None = None


@dataclass(frozen=True)
class Resolved:
    """A complete, checked state with what the store said about it."""

    state: ViewState
    run: RunInfo
    scores: Scores


@dataclass(frozen=True)
class Position:
    """Where a datapoint sits in the worst-first ranking of the chosen metric (``rank`` counts from 1)."""

    rank: int
    total: int
    prev_idx: int | None
    next_idx: int | None


def _int_param(query: dict[str, list[str]], name: str) -> int | None:
    values = query.get(name)
    if not values or values[-1] == "":
        return None
    try:
        return int(values[-1])
    except ValueError:
        raise NotFoundError(f"The URL's {name}={values[-1]!r} is not a whole number") from None


def parse_query(search: str | None) -> ViewState:
    """The state named by a query string (with or without the leading ``?``); unknown parameters are ignored."""
    query = parse_qs((search or "").lstrip("?"), keep_blank_values=False)
    run = query.get("run", [None])[-1]
    metric = query.get("metric", [None])[-1]
    return ViewState(run=run, epoch=_int_param(query, "epoch"), metric=metric, idx=_int_param(query, "idx"))


def to_query(state: ViewState) -> str:
    """The query string of ``state``, parameters in a fixed order and ``None`` left out (no epoch for an evaluator)."""
    params = [("run", state.run), ("epoch", state.epoch), ("metric", state.metric), ("idx", state.idx)]
    kept = [(k, str(v)) for k, v in params if v is not None]
    return "?" + urlencode(kept) if kept else ""


def resolve(store: LogStore, state: ViewState, *, strict: bool = True) -> Resolved:
    """Fill in what ``state`` leaves open and check the rest against the store.

    Defaults: the first run, its latest epoch, the first metric, no datapoint. With ``strict`` a named run, epoch,
    metric or datapoint that does not exist raises :class:`NotFoundError` (a stale shared link should say so, not
    show something else); without it they fall back to the defaults, which is what switching runs or epochs wants.
    """
    runs = store.runs()
    if not runs:
        raise NotFoundError("No runs found in the log directories")
    if state.run is None:
        run = runs[0]
    elif strict or state.run in {r.name for r in runs}:
        run = store.run(state.run)
    else:
        run = runs[0]
    epoch = _resolve_epoch(run, state.epoch, strict)
    scores = store.scores(run.name, epoch)
    metric = state.metric
    if metric not in scores.metrics:
        if metric is not None and strict:
            known = ", ".join(scores.metrics) or "none"
            raise NotFoundError(f"Run {run.name!r} has no metric {metric!r} (metrics: {known})")
        metric = scores.metrics[0] if scores.metrics else None
    idx = state.idx
    if idx is not None and not 0 <= idx < scores.num_datapoints:
        if strict:
            raise NotFoundError(
                f"Run {run.name!r} has no datapoint {idx} (it has {scores.num_datapoints}, numbered from 0)"
            )
        idx = None
    return Resolved(ViewState(run=run.name, epoch=epoch, metric=metric, idx=idx), run, scores)


def _resolve_epoch(run: RunInfo, epoch: int | None, strict: bool) -> int | None:
    if run.kind == "evaluator" or not run.epochs:
        return run.epochs[0].epoch if run.epochs else None
    known = [info.epoch for info in run.epochs]
    if epoch in known:
        return epoch
    if epoch is not None and strict:
        run.epoch(epoch)  # raises NotFoundError naming the epochs there are
    return known[-1]


def position(scores: Scores, metric: str | None, idx: int) -> Position:
    """Rank of ``idx`` in the worst-first ranking by ``metric`` (index order without a metric) and its neighbours."""
    order = scores.ranking(metric, worst_first=True) if metric else np.arange(scores.num_datapoints)
    where = np.flatnonzero(order == idx)
    if where.size == 0:
        raise NotFoundError(f"Datapoint {idx} is not in the ranking by {metric!r}")
    pos = int(where[0])
    prev_idx = int(order[pos - 1]) if pos > 0 else None
    next_idx = int(order[pos + 1]) if pos + 1 < len(order) else None
    return Position(rank=pos + 1, total=len(order), prev_idx=prev_idx, next_idx=next_idx)


def with_idx(state: ViewState, idx: int | None) -> ViewState:
    """``state`` looking at datapoint ``idx`` (``None``: back to the overview)."""
    return replace(state, idx=idx)

