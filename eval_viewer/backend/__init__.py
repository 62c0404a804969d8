"""Reading eval-viewer logs: discover runs and epochs, parse scores, index debug pages and read one datapoint.

Pure Python and numpy, never Dash: the app, a notebook or a report generator use the same :class:`LogStore`.

    from eval_viewer.backend import LogStore
    store = LogStore(["logs/"])
    run = store.runs()[0]
    scores = store.scores(run.name, run.epochs[-1].epoch)
    worst = scores.ranking(scores.metrics[0])[:10]
    record = store.datapoint(run.name, run.epochs[-1].epoch, int(worst[0]))

Errors are :class:`eval_viewer.errors.ViewerError` subclasses whose message is safe to show a user.
"""

from __future__ import annotations

from eval_viewer.backend.index import IndexStatus
from eval_viewer.backend.kinds import infer_kind
from eval_viewer.backend.model import DatapointRecord, EpochInfo, Item, RunInfo, Scores, rank_indices
from eval_viewer.backend.scores import higher_is_better
from eval_viewer.backend.store import LogStore, default_cache_dir

__all__ = [
    "LogStore",
    "RunInfo",
    "EpochInfo",
    "Scores",
    "Item",
    "DatapointRecord",
    "IndexStatus",
    "infer_kind",
    "higher_is_better",
    "rank_indices",
    "default_cache_dir",
]
