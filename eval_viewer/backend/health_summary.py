"""The per-pass health summary: every datapoint measured once, then flagged with what only the whole pass knows.

:func:`compute_health` reads a pass page by page (:mod:`.bulk`: one read per page, its datapoints built from its
cached columns), measures every checkable debug item of every datapoint (:func:`~.health.measure`) and keeps the
measures as arrays over datapoints per column. From them :class:`HealthSummary` derives the pass context (a head's
typical entropy, channels dead on every datapoint), each datapoint's flags, the layers × kinds table with counts of
datapoints (:meth:`HealthSummary.table`), the failure table's per-kind columns, and, against a second pass, scale
jumps (:func:`scale_jump_rows`). :class:`HealthJobs` runs it in a background thread with progress and keeps the result
under the store's cache dir (``<cache_dir>/health/<hash>.npz``, beside the comparison summaries, never inside a log
dir), keyed by the pass's files (listing with sizes and mtimes), the thresholds and the format, so a pass that changes
is measured again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import threading
import warnings
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np

from eval_viewer.backend.bulk import PassPages, read_page, reused_buffers
from eval_viewer.backend.health import (
    FAMILIES,
    KINDS,
    Column,
    Flag,
    ForwardOrder,
    HealthThresholds,
    HitKey,
    Hits,
    PassContext,
    flag_columns,
    flags_of_row,
    forward_order,
    health,
    scale_jumps,
)
from eval_viewer.backend.health_pages import RECORDER, concat, measure_page, record_of
from eval_viewer.backend.jobs import BackgroundJobs, JobStatus
from eval_viewer.backend.model import DatapointRecord, PassKey
from eval_viewer.backend.workers import job_workers, page_parts, run_tasks
from eval_viewer.errors import PageError, ViewerError

__all__ = ["HealthRow", "HealthSummary", "compute_health", "scale_jump_rows", "HealthJobs", "HealthStatus",
           "measure_pass_page", "datapoint_flags", "previous_pass"]

logger = logging.getLogger(__name__)

_FORMAT = 2
"""Of the cached summaries; 2: clean rows summed in float32 (measures within 1e-4 of format 1's float64 sums), and a
value near both extremes of its row counted once towards saturation (format 1 counted it twice)."""
MEASURED = ("extreme_tolerance", "min_values")
"""The :class:`HealthThresholds` fields that change what is measured; every other field only changes what is flagged
(:func:`~.health.flag_columns`), applied to the measures afterwards."""


@dataclass(frozen=True)
class HealthRow:
    """One cell of the layers × kinds table."""

    layer: str
    kind: str
    datapoints: int
    """Datapoints with this problem at this layer."""
    total: int
    """Datapoints that captured this layer."""
    first: int
    """Of those, how many have it here first (this is their first bad layer for the kind's family)."""
    worst: float
    """The largest amount (the lowest entropy for ``attention_collapsed``); NaN when only counts are known."""
    heads: tuple[int, ...] = ()
    position: int = 0


_UNCHECKED = (RECORDER, ".GradCAMDebugger")
"""Our built-ins whose outputs hold nothing the checks read (inputs, labels, predictions; GradCAM heatmaps)."""


def checked(debuggers: Mapping[str, Any]) -> dict[str, None] | None:
    """The debuggers worth turning into arrays (the bulk reader's ``select``): every one the index lists but our
    datapoint recorder and GradCAM; None (all) without an index, whose pages may hold anything."""
    if not debuggers:
        return None
    keep = {name: None for name, info in debuggers.items()
            if not (isinstance(info, Mapping) and str(info.get("class", "")).endswith(_UNCHECKED))}
    return keep if len(keep) < len(debuggers) else None


@dataclass(frozen=True)
class HealthSummary:
    """Per column (``debugger/key``), arrays over the measured datapoints ``idx`` (see :func:`~.health.stack`)."""

    pass_key: PassKey
    thresholds: HealthThresholds
    idx: np.ndarray
    columns: tuple[Column, ...]
    """In forward order."""
    arrays: dict[str, dict[str, np.ndarray]]
    order_source: str
    notes: tuple[str, ...] = ()

    # ------------------------------------------------------------------------------------------------------ derived
    @cached_property
    def context(self) -> PassContext:
        """Each head's median entropy, and the fraction of each layer's channels dead on every datapoint."""
        typical: dict[str, np.ndarray] = {}
        dead: dict[str, float] = {}
        for c in self.columns:
            a = self.arrays[c.name]
            if "entropy" in a and a["entropy"].size:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    typical[c.name] = np.nanmedian(a["entropy"], axis=0)
            if "dead" in a:
                seen = a["dead_seen"]
                if int(seen.sum()) >= self.thresholds.min_datapoints:
                    dead[c.name] = float(a["dead"][seen].all(axis=0).mean())
        return PassContext(typical, dead)

    @cached_property
    def hits(self) -> dict[HitKey, Hits]:
        return flag_columns({c: self.arrays[c.name] for c in self.columns}, self.thresholds, self.context)

    def row_of(self, idx: int) -> int | None:
        where = np.flatnonzero(self.idx == int(idx))
        return int(where[0]) if where.size else None

    def flags(self, idx: int) -> tuple[Flag, ...]:
        """The flags of datapoint ``idx`` with the pass context (dead channels, the heads' typical range)."""
        row = self.row_of(idx)
        return () if row is None else tuple(flags_of_row(self.hits, row))

    def datapoints(self, kind: str | None = None, layer: str | None = None) -> np.ndarray:
        """Indices of the datapoints flagged ``kind`` (any) at ``layer`` (any), ascending."""
        mask = np.zeros(self.idx.size, dtype=bool)
        for (c, k, _head), h in self.hits.items():
            if (kind is None or k == kind) and (layer is None or c.layer == layer):
                mask |= h.mask
        return self.idx[mask]

    def table(self) -> list[HealthRow]:
        """Every (layer, kind) with a problem, layers in forward order, kinds in :data:`~.health.KINDS` order."""
        groups: dict[tuple[str, str], list[tuple[Column, int | None, Hits]]] = {}
        for (c, kind, head), h in self.hits.items():
            groups.setdefault((c.layer, kind), []).append((c, head, h))
        first = self._first_positions()
        rows = []
        for (layer, kind), members in groups.items():
            mask = np.logical_or.reduce([h.mask for _, _, h in members])
            present = np.logical_or.reduce([np.isfinite(self.arrays[c.name]["scale"])
                                            | np.isfinite(self.arrays[c.name]["zeros"])
                                            | (np.isfinite(self.arrays[c.name]["entropy"]).any(axis=1)
                                               if "entropy" in self.arrays[c.name] else False)
                                            for c, _, _ in members])
            amounts = np.concatenate([h.amount[h.mask] for _, _, h in members])
            finite = amounts[np.isfinite(amounts)]
            worst = float("nan") if not finite.size else float(finite.min() if kind == "attention_collapsed"
                                                                 else finite.max())
            position = min(c.position for c, _, _ in members)
            here = first.get(FAMILIES.get(kind, kind))
            n_first = int(np.count_nonzero(mask & (here == position))) if here is not None else 0
            heads = tuple(sorted({head for _, head, _ in members if head is not None}))
            rows.append(HealthRow(layer, kind, int(mask.sum()), int(np.count_nonzero(present | mask)), n_first,
                                  worst, heads, position))
        return sorted(rows, key=lambda r: (r.position, r.layer, KINDS.index(r.kind)))

    def _first_positions(self) -> dict[str, np.ndarray]:
        """Per family, each datapoint's lowest flagged forward position (a large number where none)."""
        out: dict[str, np.ndarray] = {}
        for (c, kind, _head), h in self.hits.items():
            family = FAMILIES.get(kind, kind)
            current = out.setdefault(family, np.full(self.idx.size, np.iinfo(np.int64).max))
            np.minimum(current, np.where(h.mask, c.position, np.iinfo(np.int64).max), out=current)
        return out

    def layer_columns(self, num_datapoints: int, jumps: Mapping[int, Sequence[Flag]] | None = None,
                      ) -> dict[str, list[Any]]:
        """For the failure table, per kind present: each datapoint's flagged layers in forward order as a tuple (None
        where none); and ``"health"``: how many (layer, kind) problems each datapoint has. ``jumps``: the scale-jump
        flags of each datapoint against a reference pass (:func:`scale_jump_rows`), a ``scale_jump`` column."""
        per_kind: dict[str, list[list[str]]] = {}
        count = np.zeros(num_datapoints, dtype=np.int64)
        ordered = sorted(self.hits.items(), key=lambda item: (item[0][0].position, item[0][0].layer))
        seen: dict[str, set[tuple[int, str]]] = {}
        found = [(kind, c.layer, self.idx[h.mask].tolist()) for (c, kind, _head), h in ordered]
        by_layer: dict[str, list[int]] = {}
        for idx, flags in sorted((jumps or {}).items()):
            for flag in flags:
                by_layer.setdefault(flag.layer, []).append(idx)
        position: dict[str, int] = {}
        for c in self.columns:
            position.setdefault(c.layer, c.position)
        found += [("scale_jump", layer, by_layer[layer])
                  for layer in sorted(by_layer, key=lambda name: position.get(name, len(position)))]
        for kind, layer, indices in found:
            lists = per_kind.setdefault(kind, [[] for _ in range(num_datapoints)])
            done = seen.setdefault(kind, set())
            for idx in indices:
                if 0 <= idx < num_datapoints and (idx, layer) not in done:
                    done.add((idx, layer))
                    lists[idx].append(layer)
                    count[idx] += 1
        columns: dict[str, list[Any]] = {kind: [tuple(v) if v else None for v in per_kind[kind]]
                                         for kind in KINDS if kind in per_kind}
        columns["health"] = count.tolist()
        return columns

    # -------------------------------------------------------------------------------------------------- disk cache
    def to_bytes(self) -> bytes:
        header = {"format": _FORMAT, "pass": [self.pass_key.run, self.pass_key.split, self.pass_key.step],
                  "thresholds": dataclasses.asdict(self.thresholds), "order_source": self.order_source,
                  "notes": list(self.notes), "columns": [dataclasses.asdict(c) for c in self.columns],
                  "fields": {c.name: list(self.arrays[c.name]) for c in self.columns}}
        arrays = {"idx": self.idx}
        for i, c in enumerate(self.columns):
            for name, array in self.arrays[c.name].items():
                arrays[f"{i}:{name}"] = array
        buffer = io.BytesIO()
        np.savez_compressed(buffer, header=np.array(json.dumps(header)), **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> HealthSummary:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            header = json.loads(str(npz["header"]))
            if header.get("format") != _FORMAT:
                raise ValueError(f"health summary format {header.get('format')}, expected {_FORMAT}")
            columns = tuple(Column(**c) for c in header["columns"])
            arrays = {c.name: {f: npz[f"{i}:{f}"] for f in header["fields"][c.name]} for i, c in enumerate(columns)}
            return cls(PassKey.of(tuple(header["pass"])), HealthThresholds(**header["thresholds"]), npz["idx"],
                       columns, arrays, header["order_source"], tuple(header["notes"]))


def compute_health(store: Any, key: PassKey, thresholds: HealthThresholds | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   stop: threading.Event | None = None, workers: int | None = None) -> HealthSummary:
    """Measure every datapoint of pass ``key`` (read through ``store``, a :class:`~eval_viewer.backend.LogStore`).

    Page by page (:func:`measure_pass_page`, in worker processes on a large pass: :mod:`.workers`; ``workers``
    overrides how many, 0 for in-process): the first datapoint of a page is read as a record
    (:func:`~.records.build_record`), which says which items are checked and where they sit in a page's
    ``{debugger: output}``; every datapoint of the page with the same layout is then measured from the page's values
    directly, one vectorised call per item and array shape. A datapoint laid out otherwise is read as a record of its
    own, so nothing is left out. Every page is measured in the forward order of the pass's first datapoint."""
    key = PassKey.of(key)
    t = thresholds or HealthThresholds()
    pages = store.pass_pages(key)
    problems: list[str] = list(pages.problems)
    total = pages.num_datapoints
    order = _first_order(store, key, pages)
    count = job_workers(pages) if workers is None else workers
    schedule = page_parts(pages, count)
    tasks = [partial(measure_pass_page, pages, rel, order, t, part) for rel, part in schedule]
    warm = [partial(pages.source.warm, rel) if i == 0 or schedule[i - 1][0] != rel else None
            for i, (rel, _) in enumerate(schedule)]  # (a page once, for its first part)
    parts: list[tuple[int, dict[Column, dict[str, np.ndarray]]]] = []
    indices: list[int] = []
    for done in run_tasks(tasks, count, stop, warm):
        if isinstance(done, PageError):
            if str(done) not in problems:  # (said once, however many parts of the page failed)
                problems.append(str(done))
            continue
        idx, columns, page_order = done
        order = order or page_order
        parts.append((len(idx), columns))
        indices.extend(idx)
        if progress is not None:
            progress(len(indices), total)
    if stop is not None and stop.is_set():
        raise ViewerError("The health summary was stopped")
    columns = concat(parts)
    ordered = tuple(sorted(columns, key=lambda c: (c.position, c.debugger, c.key)))
    notes = tuple(problems) + ((order.note,) if order is not None and order.note else ())
    return HealthSummary(key, t, np.asarray(indices, dtype=np.int64), ordered, {c.name: columns[c] for c in ordered},
                         order.source if order is not None else "page", notes)


def measure_pass_page(pages: PassPages, rel: str, order: ForwardOrder | None, t: HealthThresholds,
                      part: Collection[int] | None = None,
                      ) -> tuple[list[int], dict[Column, dict[str, np.ndarray]], ForwardOrder] | PageError:
    """One task of :func:`compute_health` (run in a worker process on a large pass): page ``rel`` read (only the
    datapoints ``part`` when given, :func:`~.workers.page_parts`) and every datapoint's checked items measured;
    ``order`` None takes the page's own first datapoint's. A page that cannot be read comes back as its
    :class:`PageError`."""
    with reused_buffers():  # (only the measures leave this block)
        try:
            page = read_page(pages, rel, select=checked(pages.debuggers), indices=None if part is None else set(part))
        except PageError as exc:
            logger.warning("%s", exc)
            return exc
        idx = list(page.values)
        values = [page.values[i] for i in idx]
        first = record_of(pages.key, idx[0], values[0], pages)
        order = order or forward_order(pages.debuggers, list(first.debug))
        return idx, measure_page(pages.key, idx, values, first, pages, order, t), order


def _first_order(store: Any, key: PassKey, pages: PassPages) -> ForwardOrder | None:
    """The forward order every page is measured in: from the pass's first datapoint that reads (its record, through
    the store's per-datapoint path); None when none of the first pages' does (each page then takes its own)."""
    for _, indices in pages.pages[:3]:
        try:
            record = store.datapoint(key, indices[0])
        except ViewerError:
            continue
        return forward_order(pages.debuggers, list(record.debug))
    return None


def scale_jump_rows(a: HealthSummary, b: HealthSummary) -> tuple[list[HealthRow], dict[int, list[Flag]]]:
    """Scale jumps from pass ``a`` (the reference) to pass ``b``, datapoints matched by index: the table rows (one per
    layer that jumped) and each datapoint's ``scale_jump`` flags (by its index), first bad layer included."""
    common, rows_a, rows_b = np.intersect1d(a.idx, b.idx, return_indices=True)
    jumps = scale_jumps({c.name: a.arrays[c.name]["scale"][rows_a] for c in a.columns},
                        {c.name: b.arrays[c.name]["scale"][rows_b] for c in b.columns}, b.thresholds)
    by_name = {c.name: c for c in b.columns}
    hit_columns = sorted((by_name[name] for name in jumps), key=lambda c: c.position)
    flags: dict[int, list[Flag]] = {}
    for c in hit_columns:
        ratio = jumps[c.name]
        for row in np.flatnonzero(np.isfinite(ratio)).tolist():
            idx = int(common[row])
            origin = flags[idx][0].first_bad_layer if flags.get(idx) else c.layer
            flags.setdefault(idx, []).append(Flag(c.debugger, c.key, c.layer, "scale_jump", float(ratio[row]),
                                                  None, origin))
    table = []
    for c in hit_columns:
        ratio = jumps[c.name]
        mask = np.isfinite(ratio)
        present = np.isfinite(a.arrays[c.name]["scale"][rows_a]) & np.isfinite(b.arrays[c.name]["scale"][rows_b])
        first = sum(1 for row in np.flatnonzero(mask).tolist() if flags[int(common[row])][0].layer == c.layer)
        extreme = ratio[mask]
        worst = float(extreme[np.argmax(np.abs(np.log(extreme)))])
        table.append(HealthRow(c.layer, "scale_jump", int(mask.sum()), int(present.sum()), first, worst, (),
                               c.position))
    return table, flags


# ---------------------------------------------------------------------------------------------------------------- jobs
HealthStatus = JobStatus
"""Where a health job is (:class:`~eval_viewer.backend.jobs.JobStatus` of a :class:`HealthSummary`)."""

_SHARED: weakref.WeakKeyDictionary[Any, HealthJobs] = weakref.WeakKeyDictionary()


class HealthJobs(BackgroundJobs[HealthSummary]):
    """Per-pass health summaries computed once in a background thread, shared by every caller asking for the same
    pass and thresholds, kept on disk under ``cache_dir/health`` and reloaded from there after a restart."""

    folder = "health"
    what = "health summary"

    @classmethod
    def of(cls, store: Any) -> HealthJobs:
        """The one set of jobs of ``store`` (the app's callbacks share it)."""
        jobs = _SHARED.get(store)
        if jobs is None:
            jobs = _SHARED[store] = cls(store)
        return jobs

    def __init__(self, store: Any, cache_dir: str | Path | None = None) -> None:
        super().__init__(store, cache_dir)
        self._jumps: dict[PassKey, tuple[tuple[int, int], dict[int, list[Flag]], tuple[Any, Any]]] = {}

    def decode(self, data: bytes) -> HealthSummary:
        return HealthSummary.from_bytes(data)

    def size(self, summary: HealthSummary) -> int:
        return int(summary.idx.size)

    def job_key(self, key: PassKey, thresholds: HealthThresholds) -> str:
        files = self._store.snapshot.files.get(key)
        parts: list[Any] = [_FORMAT, dataclasses.asdict(thresholds), [key.run, key.split, key.step],
                            None if files is None else [files.source.identity, files.folder, repr(files.debug)]]
        return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:24]

    def _keys(self, key: PassKey, t: HealthThresholds) -> tuple[str, str, HealthThresholds]:
        """``(key of t's view, key of the job that measures for it, the thresholds that job measures with)``: only
        :data:`MEASURED` fields change what is measured; the others only flag, so they are a view of one job."""
        measured = HealthThresholds(**{name: getattr(t, name) for name in MEASURED})
        base = self.job_key(key, measured)
        view = base if t == measured else self.alias(self.job_key(key, t), base,
                                                      lambda summary: dataclasses.replace(summary, thresholds=t))
        return view, base, measured

    def start(self, key: PassKey, thresholds: HealthThresholds | None = None) -> str:
        """Start (or join) the summary of pass ``key``; returns the key :meth:`status` takes. Thresholds that only
        change what is flagged reuse the measures of a job already run (no second read of the pass)."""
        key, t = PassKey.of(key), thresholds or HealthThresholds()
        view, base, measured = self._keys(key, t)
        self.begin(base, lambda progress, stop: compute_health(self._store, key, measured, progress, stop),
                   f"The health summary of {key} failed")
        return view

    def ready(self, key: PassKey, thresholds: HealthThresholds | None = None) -> HealthSummary | None:
        """The finished summary of ``key`` if there is one now (never starts or waits)."""
        key = PassKey.of(key)
        status = self.status(self._keys(key, thresholds or HealthThresholds())[0])
        return status.summary if status is not None and status.finished else None

    def summary(self, key: PassKey, thresholds: HealthThresholds | None = None,
                timeout: float | None = None) -> HealthSummary:
        """Start if needed and wait: the summary, or the :class:`ViewerError` that stopped it."""
        return self.result(self.start(key, thresholds), timeout)

    def jumps(self, key: PassKey, thresholds: HealthThresholds | None = None) -> dict[int, list[Flag]] | None:
        """Each datapoint's scale-jump flags against the run's previous captured pass (:func:`previous_pass`), when
        both passes' summaries are finished now (never starts or waits); worked out once per pair of summaries."""
        key = PassKey.of(key)
        summary = self.ready(key, thresholds)
        before = previous_pass(self._store, key) if summary is not None else None
        reference = self.ready(before, thresholds) if before is not None else None
        if summary is None or reference is None:
            return None
        pair = (id(reference), id(summary))
        with self._lock:
            hit = self._jumps.get(key)
        if hit is None or hit[0] != pair:
            hit = (pair, scale_jump_rows(reference, summary)[1], (reference, summary))  # (keeps the ids' objects)
            with self._lock:
                self._jumps[key] = hit
        return hit[1]


def datapoint_flags(store: Any, key: PassKey, record: DatapointRecord, jobs: HealthJobs | None = None,
                    thresholds: HealthThresholds | None = None) -> tuple[Flag, ...]:
    """The flags a view shows for ``record`` of pass ``key`` under ``thresholds`` (the defaults when None): from the
    pass's finished summary under the same thresholds when there is one (dead channels, the heads' typical range and,
    once the previous captured pass's summary is finished too, scale jumps against it), else from the record alone,
    now (never waits)."""
    jobs = jobs or HealthJobs.of(store)
    summary = jobs.ready(PassKey.of(key), thresholds)
    if summary is not None and summary.row_of(record.idx) is not None:
        jumps = jobs.jumps(PassKey.of(key), thresholds) or {}
        return summary.flags(record.idx) + tuple(jumps.get(record.idx, ()))
    return health(record, store.debugger_info(key), thresholds=thresholds)


def previous_pass(store: Any, key: PassKey) -> PassKey | None:
    """The pass of the same run and split just before ``key`` that saved debug outputs (the reference of its scale
    jumps), or None."""
    key = PassKey.of(key)
    if key.step is None:
        return None
    earlier = [p.key for p in store.run(key.run).passes
               if p.split == key.split and p.has_debug and p.step is not None and p.step < key.step]
    return earlier[-1] if earlier else None
