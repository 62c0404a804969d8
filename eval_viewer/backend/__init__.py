"""Reading eval-viewer logs: discover runs and epochs, parse scores, index debug pages and read one datapoint.

Pure Python and numpy, never Dash: the app, a notebook or a report generator use the same :class:`LogStore`.

    from eval_viewer.backend import LogStore
    store = LogStore(["logs/"])                  # paths or URLs (s3://bucket/prefix, memory://..., file://...)
    run = store.runs()[0]
    key = run.default_pass.key                   # PassKey(run, split, step): ("trainer_run", "val", 9)
    scores = store.scores(key)
    worst = scores.ranking(scores.metrics[0])[:10]
    record = store.datapoint(key, int(worst[0]))

Errors are :class:`eval_viewer.errors.ViewerError` subclasses whose message is safe to show a user.
"""

from __future__ import annotations

from eval_viewer.backend.index import IndexStatus
from eval_viewer.backend.kinds import infer_kind
from eval_viewer.backend.model import DatapointRecord, Item, PassInfo, PassKey, RunInfo, Scores, rank_indices
from eval_viewer.backend.sources import FsspecSource, LocalSource, Source, open_source
from eval_viewer.backend.scores import higher_is_better
from eval_viewer.backend.store import LogStore, default_cache_dir

__all__ = [
    "LogStore",
    "RunInfo",
    "PassKey",
    "PassInfo",
    "Source",
    "LocalSource",
    "FsspecSource",
    "open_source",
    "Scores",
    "Item",
    "DatapointRecord",
    "IndexStatus",
    "infer_kind",
    "higher_is_better",
    "rank_indices",
    "default_cache_dir",
]
