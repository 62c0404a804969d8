"""The notebook API: ``logs = eval_viewer.open("work_dir")``, then runs, passes, scores, rankings and datapoints.

It is the same provider the app uses (:class:`~eval_viewer.backend.LogStore`), with the same errors
(:mod:`eval_viewer.errors`) and the same safety defaults (pages unpickled through the allow-list unless
``trust_pickles=True``), and the same views: every debug item's figure comes from the display registry and shows
inline in Jupyter (``_repr_html_``). Two differences suit a notebook: a read waits for background indexing
(``index_wait_s``), and the listing is not renewed in the background (call :meth:`Logs.refresh`).

    import eval_viewer
    logs = eval_viewer.open("work_dir")                 # paths or URLs (s3://bucket/prefix ...), several allowed
    logs.runs                                           # (RunInfo, ...)
    key = logs.pass_("trainer_run")                     # its default pass: PassKey("trainer_run", "val", 9)
    logs.scores(key).to_pandas()                        # one column per metric (pandas optional)
    worst = logs.ranking(key, "miou")[:10]
    dp = logs.datapoint(key, int(worst[0]))             # shows the whole datapoint view inline
    dp.item("attention", "attention")                   # one debug item by (debugger name, item key)
    dp.figure("attention")                              # the views of that debugger's items
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eval_viewer.backend import DatapointRecord, Item, LogStore, PassKey, RunInfo, Scores
from eval_viewer.backend.store import PassLike

__all__ = ["open", "Logs", "Datapoint"]


@dataclass(frozen=True)
class Datapoint:
    """One datapoint of one pass: the record (inputs, labels, predictions, meta_info, debug items, problems) and its
    views. Shown inline in a notebook as the same datapoint view the app draws."""

    record: DatapointRecord
    higher_is_better: Mapping[str, bool]
    metric: str | None = None

    @property
    def key(self) -> PassKey:
        return self.record.pass_key

    @property
    def idx(self) -> int:
        return self.record.idx

    @property
    def scores(self) -> Mapping[str, float]:
        return self.record.scores

    @property
    def problems(self) -> tuple[str, ...]:
        return self.record.problems

    def item(self, debugger: str, key: str | None = None) -> Item:
        """Debug item ``key`` of ``debugger``; without a key, the debugger's only item (NotFoundError naming the keys
        when it saved several)."""
        if key is None:
            items = self.record.debug.get(debugger, ())
            if len(items) == 1:
                return items[0]
            if items:
                from eval_viewer.errors import NotFoundError

                keys = ", ".join(repr(i.key) for i in items)
                raise NotFoundError(f"{self.key}, datapoint {self.idx}: debugger {debugger!r} saved several items "
                                    f"({keys}); name one")
            key = ""
        return self.record.debug_item(debugger, key)

    def figure(self, debugger: str, key: str | None = None) -> Any:
        """The view of one debug item, or of every item of ``debugger`` when no key is given (its card in the app);
        drawn over the datapoint's input image where it has one."""
        from eval_viewer.display.notebook import item_view
        from eval_viewer.display.view import Group

        if key is None and len(self.record.debug.get(debugger, ())) > 1:
            return Group(tuple(item_view(self.record, item) for item in self.record.debug[debugger]),
                         cls="ev-card-body")
        return item_view(self.record, self.item(debugger, key))

    def view(self) -> Any:
        """The whole datapoint view (scores, Inputs, Labels, Meta info, Debug outputs)."""
        from eval_viewer.display.notebook import datapoint_view

        return datapoint_view(self.record, self.metric, self.higher_is_better)

    def _repr_html_(self) -> str:
        return str(self.view()._repr_html_())


class Logs:
    """Runs, passes, scores and datapoints of one or more log dirs; a thin, notebook-friendly face of the provider.

    Passes are named by a :class:`PassKey` or a plain ``(run, split, step)`` tuple, or found with :meth:`pass_`.
    """

    def __init__(self, store: LogStore) -> None:
        self.store = store

    @property
    def runs(self) -> tuple[RunInfo, ...]:
        return self.store.runs()

    def run(self, name: str) -> RunInfo:
        return self.store.run(name)

    def passes(self, run: str | None = None) -> list[PassKey]:
        """Every pass (of ``run``, or of every run), in the order the app lists them."""
        runs = [self.store.run(run)] if run is not None else list(self.store.runs())
        return [info.key for r in runs for info in r.passes]

    def pass_(self, run: str, split: str | None = None, step: int | None = None) -> PassKey:
        """The pass ``(split, step)`` of ``run``; its default pass (latest validated epoch, else test) when neither
        is given; the latest step of ``split`` when only the split is."""
        info = self.store.run(run)
        if split is None and step is None:
            return info.default_pass.key
        if split is not None and step is None and info.steps(split) and None not in info.steps(split):
            step = info.steps(split)[-1]
        return info.find(split or "val", step).key

    def metrics(self, key: PassLike) -> tuple[str, ...]:
        return self.store.scores(key).metrics

    def scores(self, key: PassLike) -> Scores:
        """Per-datapoint and aggregated scores (numpy); ``.to_pandas()`` for a DataFrame."""
        return self.store.scores(key)

    def ranking(self, key: PassLike, metric: str, worst_first: bool = True) -> np.ndarray:
        """Datapoint indices worst first (NaN counts as worst), lower-is-better metrics respected."""
        return self.store.scores(key).ranking(metric, worst_first)

    def meta_table(self, key: PassLike) -> dict[str, list[Any]]:
        """Scalar meta_info columns of every datapoint."""
        return self.store.meta_table(key)

    def datapoint(self, key: PassLike, idx: int, metric: str | None = None) -> Datapoint:
        """Everything saved about datapoint ``idx`` of pass ``key``; what could not be read is in ``.problems``."""
        record = self.store.datapoint(key, idx)
        return Datapoint(record, self.store.scores(key).higher_is_better, metric)

    def refresh(self) -> None:
        """List the logs again (new runs, passes and pages)."""
        self.store.refresh(wait=True)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Logs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        runs = ", ".join(f"{r.name} ({len(r.passes)} passes)" for r in self.store.runs())
        return f"Logs({runs})"


def open(  # noqa: A001 - eval_viewer.open reads naturally, like io.open
    *log_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    trust_pickles: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    index_wait_s: float = 60.0,
    cache_mb: int = 256,
) -> Logs:
    """Open one or more log dirs (paths or URLs) for reading; the same defaults as the app.

    ``trust_pickles`` lifts the allow-list (only for logs you wrote); ``storage_options`` go to fsspec for URLs;
    ``index_wait_s`` is how long a read waits for pages that came without an index to be indexed.
    """
    flat: list[str | os.PathLike[str]] = []
    for entry in log_dirs:
        if isinstance(entry, (str, os.PathLike)):
            flat.append(entry)
        else:
            flat.extend(entry)
    store = LogStore(flat, trust_pickles=trust_pickles, cache_dir=cache_dir, cache_bytes=cache_mb * 2**20,
                     higher_is_better=higher_is_better, index_wait_s=index_wait_s, rescan_s=0,
                     storage_options=storage_options)
    return Logs(store)
