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
    cmp = logs.compare(("evaluator_run", "test"), ("quantized_run", "test"), metric="miou")
    cmp.deltas.delta, cmp.deltas.order("regressed")     # per-datapoint deltas (numpy), worst regression first
    cmp.layer_table()                                   # layer x head: JSD, entropies, top-k, rel. error, SQNR
    cmp.datapoint(3)                                    # the paired view of datapoint 3 (inline in Jupyter)
    logs.export(key, "miou", 20, "report/")             # the offline HTML report of the 20 worst
    logs.health(key).to_pandas()                        # layers x problems with datapoint counts (background, cached)
    dp.health                                           # this datapoint's health flags as plain dicts
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from eval_viewer.backend import DatapointRecord, Item, LogStore, PassKey, RunInfo, Scores
from eval_viewer.backend.compare import (
    Alignment,
    CommonFailures,
    Deltas,
    ItemComparison,
    Thresholds,
    compare_items,
    deltas,
    failures_across,
)
from eval_viewer.backend.health import Flag, HealthThresholds
from eval_viewer.backend.health_summary import HealthJobs, HealthRow, HealthSummary, datapoint_flags, scale_jump_rows
from eval_viewer.backend.store import PassLike
from eval_viewer.backend.summary import LayerSummary, SummaryJobs, alignment_for

__all__ = ["open", "Logs", "Datapoint", "Comparison", "PairedDatapoint", "PassHealth"]


@dataclass(frozen=True)
class Datapoint:
    """One datapoint of one pass: the record (inputs, labels, predictions, meta_info, debug items, problems) and its
    views. Shown inline in a notebook as the same datapoint view the app draws."""

    record: DatapointRecord
    higher_is_better: Mapping[str, bool]
    metric: str | None = None
    flags: tuple[Flag, ...] = field(default=(), repr=False)
    """Its health flags (:mod:`eval_viewer.backend.health`): from the pass summary when it was computed, else from
    this record alone."""

    @property
    def key(self) -> PassKey:
        return self.record.pass_key

    @property
    def health(self) -> list[dict[str, Any]]:
        """Its health flags as plain values: debugger, key, layer, kind, amount, head, first_bad_layer, text."""
        return [flag.as_dict() for flag in self.flags]

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

        return datapoint_view(self.record, self.metric, self.higher_is_better, health=self.flags)

    def _repr_html_(self) -> str:
        return str(self.view()._repr_html_())


@dataclass(frozen=True)
class PairedDatapoint:
    """One datapoint in two passes with its internals compared; shown inline as the paired view."""

    a: DatapointRecord
    b: DatapointRecord
    higher_is_better: Mapping[str, bool]
    metric: str | None = None
    internals: tuple[ItemComparison, ...] = ()

    def metrics(self) -> dict[str, Mapping[str, Any]]:
        """Per compared debug item (``debugger/key``): per-head attention arrays or rel. error, cosine, SQNR."""
        return {c.layer: c.metrics for c in self.internals if c.metrics}

    def view(self, focus: str | None = None) -> Any:
        from eval_viewer.display.paired import paired_view

        return paired_view(self.a, self.b, self.metric, self.higher_is_better, internals=self.internals, focus=focus)

    def _repr_html_(self) -> str:
        return str(self.view()._repr_html_())


class Comparison:
    """Pass ``a`` (the reference) against pass ``b``: aligned datapoints, per-datapoint deltas of ``metric``, the
    pass-wide layer × head summary (computed on first use, cached on disk) and paired datapoints."""

    def __init__(self, logs: Logs, a: PassKey, b: PassKey, metric: str, alignment: Alignment, deltas: Deltas) -> None:
        self._logs = logs
        self.pass_a, self.pass_b, self.metric = a, b, metric
        self.alignment = alignment
        self.deltas = deltas

    def layers(self, timeout: float | None = None) -> LayerSummary:
        """The pass-wide summary (reads every matched datapoint of both passes once; then from the disk cache)."""
        return self._logs._jobs().summary(self.pass_a, self.pass_b, self.alignment.by, timeout)

    def layer_table(self, timeout: float | None = None) -> dict[str, np.ndarray]:
        """One row per (layer, head), worst first, as numpy columns: ``layer``, ``head`` (-1 for arrays), ``kind``,
        ``count`` and every metric (JSD in bits, entropies in bits, top-5 mass; rel. error, cosine, SQNR dB)."""
        rows = self.layers(timeout).table()
        metrics = list(dict.fromkeys(m for r in rows for m in r.values))
        table: dict[str, np.ndarray] = {
            "layer": np.array([r.layer for r in rows], dtype=object),
            "head": np.array([-1 if r.head is None else r.head for r in rows], dtype=np.int64),
            "kind": np.array([r.kind for r in rows], dtype=object),
            "count": np.array([r.count for r in rows], dtype=np.int64),
        }
        for m in metrics:
            table[m] = np.array([r.values.get(m, np.nan) for r in rows], dtype=np.float64)
        return table

    def per_datapoint(self, layer: str, timeout: float | None = None) -> dict[str, np.ndarray]:
        """``metric -> (matched datapoints, heads)`` for ``layer``; rows follow ``layers().idx_a`` / ``idx_b``."""
        return dict(self.layers(timeout).arrays[layer])

    def worst(self, layer: str, head: int | None = None, limit: int = 20) -> list[tuple[int, int, float]]:
        """``(idx a, idx b, value)`` where ``layer`` (``head``) diverges most."""
        return self.layers().worst(layer, head, limit)

    def datapoint(self, idx_a: int, idx_b: int | None = None) -> PairedDatapoint:
        """Datapoint ``idx_a`` of pass a beside its partner in pass b (by the alignment, or ``idx_b``)."""
        if idx_b is None:
            idx_b = self.alignment.b_of(int(idx_a))
            if idx_b is None:
                from eval_viewer.errors import NotFoundError

                raise NotFoundError(f"Datapoint {idx_a} of {self.pass_a} has no partner in {self.pass_b}")
        store = self._logs.store
        a, b = store.datapoint(self.pass_a, idx_a), store.datapoint(self.pass_b, idx_b)
        return PairedDatapoint(a, b, store.scores(self.pass_b).higher_is_better, self.metric,
                               tuple(compare_items(a, b)))

    def __repr__(self) -> str:
        c = self.deltas.counts()
        return (f"Comparison({self.pass_a} vs {self.pass_b}, {self.metric}: {c['matched']} matched, "
                f"{c['regressed']} regressed, {c['improved']} improved, {c['forgotten']} forgotten)")


class PassHealth:
    """The health of one pass: the layers × problems table (``rows``), each datapoint's flags, and the datapoints
    with a given problem; shown inline as the app's health table."""

    def __init__(self, summary: HealthSummary, rows: list[HealthRow], scale_flags: Mapping[int, list[Flag]]) -> None:
        self.summary = summary
        self.rows = rows
        self._scale = scale_flags

    def table(self) -> dict[str, np.ndarray]:
        """One row per (layer, kind), layers in forward order: ``layer``, ``kind``, ``datapoints`` (with the
        problem), ``total`` (that captured the layer), ``first`` (where it is the first bad layer), ``worst``."""
        return {
            "layer": np.array([r.layer for r in self.rows], dtype=object),
            "kind": np.array([r.kind for r in self.rows], dtype=object),
            "datapoints": np.array([r.datapoints for r in self.rows], dtype=np.int64),
            "total": np.array([r.total for r in self.rows], dtype=np.int64),
            "first": np.array([r.first for r in self.rows], dtype=np.int64),
            "worst": np.array([r.worst for r in self.rows], dtype=np.float64),
            "heads": np.array([",".join(map(str, r.heads)) for r in self.rows], dtype=object),
        }

    def to_pandas(self) -> Any:
        """:meth:`table` as a pandas DataFrame (pandas is optional: imported here)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("PassHealth.to_pandas() needs pandas: pip install pandas") from None
        return pd.DataFrame(self.table())

    def datapoints(self, kind: str | None = None, layer: str | None = None) -> np.ndarray:
        """Indices of the datapoints with problem ``kind`` (any) at ``layer`` (any), ascending."""
        found = self.summary.datapoints(kind, layer)
        if kind in (None, "scale_jump"):
            extra = [i for i, flags in self._scale.items() if any(layer in (None, f.layer) for f in flags)]
            found = np.union1d(found, np.asarray(extra, dtype=np.int64)) if kind is None else \
                np.asarray(sorted(extra), dtype=np.int64)
        return found

    def flags(self, idx: int) -> list[dict[str, Any]]:
        """The flags of datapoint ``idx`` as plain values (scale jumps included when a reference pass was given)."""
        return [f.as_dict() for f in (*self.summary.flags(idx), *self._scale.get(int(idx), ()))]

    def view(self) -> Any:
        from eval_viewer.display.health import health_table

        return health_table(self.rows, int(self.summary.idx.size), notes=self.summary.notes)

    def _repr_html_(self) -> str:
        return str(self.view()._repr_html_())

    def __repr__(self) -> str:
        return f"PassHealth({self.summary.pass_key}: {len(self.rows)} problems over {self.summary.idx.size} datapoints)"


class Logs:
    """Runs, passes, scores and datapoints of one or more log dirs; a thin, notebook-friendly face of the provider.

    Passes are named by a :class:`PassKey` or a plain ``(run, split, step)`` tuple, or found with :meth:`pass_`.
    """

    def __init__(self, store: LogStore) -> None:
        self.store = store
        self._summary_jobs: SummaryJobs | None = None
        self._health_jobs = HealthJobs(store)

    def _jobs(self) -> SummaryJobs:
        if self._summary_jobs is None:
            self._summary_jobs = SummaryJobs(self.store)
        return self._summary_jobs

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
        return self.store.run(run).choose(split, step).key

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

    def missing_debug(self, key: PassLike, timeout: float | None = 60.0) -> tuple[int, ...]:
        """The datapoints of pass ``key`` that have scores but no debug outputs in any readable page (what a crashed
        writer or a lost page left out); waits up to ``timeout`` seconds for the page index."""
        key = PassKey.of(key)
        self.store.wait_for_index(key, timeout)
        return self.store.missing_debug(key) or ()

    def datapoint(self, key: PassLike, idx: int, metric: str | None = None) -> Datapoint:
        """Everything saved about datapoint ``idx`` of pass ``key``; what could not be read is in ``.problems``."""
        record = self.store.datapoint(key, idx)
        return Datapoint(record, self.store.scores(key).higher_is_better, metric,
                         datapoint_flags(self.store, PassKey.of(key), record, self._health_jobs))

    def health(self, key: PassLike, vs: PassLike | None = None, thresholds: HealthThresholds | None = None,
               timeout: float | None = None) -> PassHealth:
        """The health of pass ``key``: every datapoint's saved debug outputs checked (read once, then from the disk
        cache), the layers × problems table with datapoint counts; with ``vs`` (the reference pass), scale jumps
        from it too. ``thresholds``: :class:`~eval_viewer.backend.health.HealthThresholds`."""
        summary = self._health_jobs.summary(PassKey.of(key), thresholds, timeout)
        rows, scale = list(summary.table()), {}
        if vs is not None:
            reference = self._health_jobs.summary(PassKey.of(vs), thresholds, timeout)
            jump_rows, scale = scale_jump_rows(reference, summary)
            rows += jump_rows
        return PassHealth(summary, rows, scale)

    def compare(self, pass_a: PassLike, pass_b: PassLike, metric: str | None = None, align_by: str | None = None,
                thresholds: Thresholds | None = None) -> Comparison:
        """Pass ``pass_a`` (the reference) against ``pass_b``: datapoints aligned by index or by meta_info key
        ``align_by``, deltas of ``metric`` (default: the first) with regressed / improved / forgotten flags."""
        a, b = PassKey.of(pass_a), PassKey.of(pass_b)
        sa, sb = self.store.scores(a), self.store.scores(b)
        metric = metric or (sa.metrics[0] if sa.metrics else None)
        if metric is None or metric not in sa.per_datapoint or metric not in sb.per_datapoint:
            from eval_viewer.errors import NotFoundError

            raise NotFoundError(f"Metric {metric!r} is not in both passes ({', '.join(sa.metrics)} / "
                                f"{', '.join(sb.metrics)})")
        alignment = alignment_for(self.store, a, b, align_by)
        d = deltas(sa.per_datapoint[metric], sb.per_datapoint[metric], metric, sa.higher_is_better.get(metric, True),
                   alignment, thresholds)
        return Comparison(self, a, b, metric, alignment, d)

    def common_failures(self, passes: Sequence[PassLike], metric: str, percentile: float = 25.0) -> CommonFailures:
        """In how many of ``passes`` each datapoint is in the worst ``percentile`` % of ``metric`` (or NaN); a pass
        without ``metric`` is an error naming it."""
        return failures_across(self.store, [PassKey.of(p) for p in passes], metric, percentile)[0]

    def export(self, key: PassLike | str, metric: str, worst: int, out: str | os.PathLike[str], *,
               vs: PassLike | str | None = None, plotlyjs: Literal["inline", "directory"] = "inline",
               progress: bool = True) -> Path:
        """Write the offline report of the ``worst`` worst datapoints of pass ``key`` (or a run's default pass) by
        ``metric`` into folder ``out``, each shown beside pass ``vs`` when given; returns the page's path. The same
        code as ``python -m eval_viewer export`` (:func:`eval_viewer.report.export_report`)."""
        from eval_viewer.report import PassChoice, export_report

        return export_report(self.store, PassChoice.of(key), metric, worst, out,
                             vs=PassChoice.of(vs) if vs is not None else None, plotlyjs=plotlyjs, progress=progress)

    def refresh(self) -> None:
        """List the logs again (new runs, passes and pages)."""
        self.store.refresh(wait=True)

    def close(self) -> None:
        if self._summary_jobs is not None:
            self._summary_jobs.close()
        self._health_jobs.close()
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
