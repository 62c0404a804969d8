"""The pass-wide "where inside the model" summary: every matched datapoint's internals compared, layer × head.

:func:`compute_summary` reads both passes page by page (:mod:`.bulk`: one read per page, its datapoints built from its
cached columns; a task per page, in worker processes on large passes: :mod:`.workers`) and keeps, per compared debug
item (a *layer*: ``debugger`` or ``debugger/key``) and per head, the per-datapoint metrics of
:func:`~.compare.compare_items`, computed for a page of datapoints at once (:func:`~.divergence.attention_divergence`,
:func:`~.divergence.tensor_divergence`: the figures the paired view shows, to 1e-9), so the summary table
(:meth:`LayerSummary.table`, worst first) and "where does this cell diverge most" (:meth:`LayerSummary.worst`) come
from the same arrays. :class:`SummaryJobs` runs it in a background thread with progress, writes the result under the
store's cache dir (``<cache_dir>/compare/<hash>.npz``, never inside a log dir) and reloads it after a restart; the
hash covers both passes' files (their listing with sizes and mtimes), the alignment and the format version, so a
pass that changes is summarised again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from eval_viewer.backend.bulk import Page, PassPages, read_page, reused_buffers
from eval_viewer.backend.compare import (
    TOP_K,
    Alignment,
    TopK,
    align,
    array_of,
    attention_array,
    attention_top_k,
    compare_items,
)
from eval_viewer.backend.divergence import attention_divergence, tensor_divergence, topk_divergence
from eval_viewer.backend.jobs import BackgroundJobs, JobStatus
from eval_viewer.backend.model import PassKey
from eval_viewer.backend.workers import columns_size, job_workers, page_parts, run_tasks
from eval_viewer.errors import PageError, ViewerError
from eval_viewer.log_format import Kind

__all__ = ["LayerSummary", "SummaryRow", "compute_summary", "SummaryJobs", "JobStatus", "alignment_for"]

logger = logging.getLogger(__name__)

_FORMAT = 2
"""Of the cached summaries; 2: attention compared in float32 (figures within 1e-4 of format 1's float64)."""
ATTENTION_COLUMNS = ("jsd", "jsd_max", "entropy_a", "entropy_b", "topk_a", "topk_b")
TENSOR_COLUMNS = ("rel_error", "cosine", "sqnr_db")


@dataclass(frozen=True)
class SummaryRow:
    """One cell of the layer × head table: means over the datapoints where both passes captured it."""

    layer: str
    head: int | None
    """None for a tensor item (feature map, layer output): it has no heads."""
    kind: str
    count: int
    values: dict[str, float]

    @property
    def score(self) -> float:
        """How far apart the passes are here (what the table sorts by): mean JSD, or mean relative error."""
        return self.values.get("jsd", self.values.get("rel_error", float("nan")))


@dataclass(frozen=True)
class LayerSummary:
    """Per layer, per metric, a ``(datapoints, heads)`` array (``heads`` = 1 for tensors), NaN where a datapoint did
    not capture the layer in both passes. Row ``i`` is datapoint ``idx_a[i]`` of pass a, ``idx_b[i]`` of pass b."""

    pass_a: PassKey
    pass_b: PassKey
    by: str | None
    idx_a: np.ndarray
    idx_b: np.ndarray
    kinds: dict[str, str]
    arrays: dict[str, dict[str, np.ndarray]]
    notes: tuple[str, ...] = ()

    def table(self) -> list[SummaryRow]:
        """Every (layer, head), attention first by mean JSD, then tensors by mean relative error, worst first."""
        rows = []
        for layer, metrics in self.arrays.items():
            first = next(iter(metrics.values()))
            heads = first.shape[1]
            attention = self.kinds[layer] == Kind.ATTENTION
            for h in range(heads):
                present = np.isfinite(first[:, h])
                with np.errstate(invalid="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # a metric NaN everywhere stays NaN
                    values = {m: float(np.nanmean(a[present, h])) if present.any() else float("nan")
                              for m, a in metrics.items()}
                if "sqnr_db" in metrics and present.any():  # a mean of dB (incl. +inf) says little: the median
                    values["sqnr_db"] = float(np.median(metrics["sqnr_db"][present, h]))
                rows.append(SummaryRow(layer, h if attention else None, self.kinds[layer], int(present.sum()), values))

        def order(row: SummaryRow) -> tuple[int, float]:
            s = row.score
            return (0 if row.head is not None else 1, -s if np.isfinite(s) else np.inf)

        return sorted(rows, key=order)

    def worst(self, layer: str, head: int | None = None, limit: int = 20) -> list[tuple[int, int, float]]:
        """``(idx_a, idx_b, value)`` of the datapoints where ``layer`` (``head``) diverges most: highest JSD, or
        highest relative error for a tensor."""
        metrics = self.arrays[layer]
        column = metrics["jsd"] if "jsd" in metrics else metrics["rel_error"]
        values = column[:, head or 0]
        rows = np.flatnonzero(np.isfinite(values))
        rows = rows[np.argsort(-values[rows], kind="stable")][:limit]
        return [(int(self.idx_a[r]), int(self.idx_b[r]), float(values[r])) for r in rows]

    # ------------------------------------------------------------------------------------------------ disk cache
    def to_bytes(self) -> bytes:
        header = {"format": _FORMAT, "pass_a": list(_key_tuple(self.pass_a)), "pass_b": list(_key_tuple(self.pass_b)),
                  "by": self.by, "kinds": self.kinds, "layers": {k: list(v) for k, v in self.arrays.items()},
                  "notes": list(self.notes)}
        arrays = {"idx_a": self.idx_a, "idx_b": self.idx_b}
        for i, (layer, metrics) in enumerate(self.arrays.items()):
            for metric, array in metrics.items():
                arrays[f"{i}:{metric}"] = array
        buffer = io.BytesIO()
        np.savez_compressed(buffer, header=np.array(json.dumps(header)), **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LayerSummary:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            header = json.loads(str(npz["header"]))
            if header.get("format") != _FORMAT:
                raise ValueError(f"summary format {header.get('format')}, expected {_FORMAT}")
            arrays = {layer: {m: npz[f"{i}:{m}"] for m in metrics}
                      for i, (layer, metrics) in enumerate(header["layers"].items())}
            return cls(PassKey.of(tuple(header["pass_a"])), PassKey.of(tuple(header["pass_b"])), header["by"],
                       npz["idx_a"], npz["idx_b"], dict(header["kinds"]), arrays, tuple(header["notes"]))


def _key_tuple(key: PassKey) -> tuple[str, str, int | None]:
    return (key.run, key.split, key.step)


def alignment_for(store: Any, a: PassKey, b: PassKey, by: str | None = None) -> Alignment:
    """The alignment of two passes of ``store`` (a :class:`~eval_viewer.backend.LogStore`), by index or meta key."""
    n_a, n_b = store.scores(a).num_datapoints, store.scores(b).num_datapoints
    if by is None:
        return align(n_a, n_b)
    return align(n_a, n_b, by, store.meta_table(a), store.meta_table(b))


@dataclass(frozen=True)
class _Layer:
    """One compared debug item, found again in every datapoint's output by debugger name and item key."""

    debugger: str
    key: str
    kind: str
    whole: bool
    """The item is the debugger's whole output (tagged as a whole, or one drawable value with annotations)."""
    top_k: bool = False
    """Attention saved in the capture's top-k form (no maps): compared by :func:`~.compare.topk_metrics`."""

    @property
    def name(self) -> str:
        return f"{self.debugger}/{self.key}" if self.key else self.debugger

    def array(self, value: Any) -> np.ndarray | TopK | None:
        """This item's array (attention weights in their saved dtype, or their :class:`~.compare.TopK` form) in one
        datapoint's ``{debugger: output}``."""
        output = value.get(self.debugger) if type(value) is dict or isinstance(value, Mapping) else None
        if output is None:
            return None
        if not self.whole:
            if not (type(output) is dict or isinstance(output, Mapping)) or self.key not in output:
                return None
            output = output[self.key]
        if self.kind != Kind.ATTENTION:
            return array_of(output)
        return attention_top_k(output) if self.top_k else attention_array(output)


def _plan(store: Any, a: PassKey, b: PassKey, alignment: Alignment, notes: dict[str, str],
          tries: int = 5) -> list[_Layer]:
    """The compared items: those :func:`compare_items` measures in the first matched datapoint pair that has any
    (records read the normal way, so kinds and item keys are exactly the paired view's). When none of the first
    ``tries`` pairs has any, the notes say so, with what their records could not read."""
    problems: dict[str, None] = {}
    for i, j in list(zip(alignment.a.tolist(), alignment.b.tolist()))[:tries]:
        record_a, record_b = store.datapoint(a, i), store.datapoint(b, j)
        problems.update(dict.fromkeys((*record_a.problems, *record_b.problems)))
        layers = []
        for cmp in compare_items(record_a, record_b):
            if cmp.note:
                notes.setdefault(cmp.layer, f"{cmp.layer}: {cmp.note}")
            if cmp.metrics:
                item = record_a.debug_item(cmp.debugger, cmp.key)
                whole = cmp.key == "" or (isinstance(item.value, Mapping) and cmp.key in item.value)
                top_k = cmp.kind == Kind.ATTENTION and attention_array(item.value) is None
                layers.append(_Layer(cmp.debugger, cmp.key, cmp.kind, whole, top_k))
        if layers:
            return layers
    notes.setdefault("", f"Nothing to compare: no attention or array item was measured in both passes in the first "
                         f"{min(tries, alignment.size)} matched datapoints")
    for problem in problems:
        notes.setdefault(problem, problem)
    return []


def _schedule(pages_a: PassPages, pages_b: PassPages, alignment: Alignment) -> list[tuple[str, list[str], np.ndarray]]:
    """``[(page of a, [pages of b its matched datapoints need], its pairs)]`` in page order, a pair being a row of
    ``(result row, idx in a, idx in b)``. Each task reads its page of a once and the pages of b it needs; a page of b
    is read by every task that needs it (once, for passes aligned by index and paged alike)."""
    rows_of = {idx: row for row, idx in enumerate(alignment.a.tolist())}
    page_b = pages_b.page_of()
    out = []
    for rel, indices in pages_a.pages:
        rows = sorted(rows_of[i] for i in indices if i in rows_of)
        pairs = np.asarray([(row, int(alignment.a[row]), int(alignment.b[row])) for row in rows],
                           dtype=np.int64).reshape(-1, 3)
        needed = list(dict.fromkeys(page_b[j] for j in pairs[:, 2].tolist() if j in page_b))
        if needed:
            out.append((rel, needed, pairs))
    return out


def _split(schedule: list[tuple[str, list[str], np.ndarray]], pages_a: PassPages, pages_b: PassPages,
           workers: int) -> list[tuple[str, list[str], np.ndarray]]:
    """On workers, each task of ``schedule`` split into parts of about :data:`~.workers.TASK_BYTES` of page a
    (:func:`~.workers.page_parts`), when it and the pages of b it needs are cached as columns: a part reads only its
    datapoints' bytes, so the workers finish together (whole, 9 tasks of 200 MB on 2 workers left one idle for the
    last). Pages without columns stay whole: each part would parse them again."""
    if workers < 1:
        return schedule
    parts_of: dict[str, list[tuple[int, ...] | None]] = {}
    for rel, part in page_parts(pages_a, workers):
        parts_of.setdefault(rel, []).append(part)
    page_b = pages_b.page_of()
    out = []
    for rel_a, rels_b, pairs in schedule:
        parts = parts_of.get(rel_a, [None])
        if len(parts) == 1 or any(columns_size(pages_b, rel) is None for rel in rels_b):
            out.append((rel_a, rels_b, pairs))
            continue
        for part in parts:
            sub = pairs[np.isin(pairs[:, 1], np.asarray(part))]
            if len(sub):
                out.append((rel_a, list(dict.fromkeys(page_b[j] for j in sub[:, 2].tolist() if j in page_b)), sub))
    return out


_BATCH = 256
"""Datapoints compared in one batched call (their stacked float16 attention is a few MB)."""
_THREADS = max(1, min(4, (os.cpu_count() or 1) - 1))
"""Threads for the attention maths: one core is left to the page reader (parsing holds the GIL)."""


class _Accumulator:
    """The per-layer result arrays, filled batch by batch."""

    def __init__(self, n: int, notes: dict[str, str], threads: int = _THREADS) -> None:
        self.n, self.notes, self.threads = n, notes, threads
        self.kinds: dict[str, str] = {}
        self.arrays: dict[str, dict[str, np.ndarray]] = {}
        self._buffers: dict[int, np.ndarray] = {}

    def add(self, layer: _Layer, rows: list[int], xs: list[Any], ys: list[Any]) -> None:
        """Compare ``xs[i]`` with ``ys[i]`` for result row ``rows[i]``; same-shaped pairs go through in batches."""
        if layer.top_k:
            self._add_top_k(layer, rows, xs, ys)
            return
        groups: dict[tuple[Any, ...], list[int]] = {}
        for pos, (x, y) in enumerate(zip(xs, ys)):
            if x.shape != y.shape:
                self.notes.setdefault(layer.name, f"{layer.name}: shapes differ: {x.shape} and {y.shape}")
                continue
            if layer.kind != Kind.ATTENTION and x.dtype.kind != "f" and y.dtype.kind != "f":
                continue  # shapes, channel lists, counts: shown, not measured
            groups.setdefault((x.shape, x.dtype.str, y.dtype.str), []).append(pos)
        for positions in groups.values():
            for start in range(0, len(positions), _BATCH):
                part = positions[start:start + _BATCH]
                left = self._stack([xs[p] for p in part], 0)
                right = self._stack([ys[p] for p in part], 1)
                if layer.kind == Kind.ATTENTION:
                    metrics = attention_divergence(left, right, TOP_K, threads=self.threads)
                else:
                    metrics = {k: v[:, None] for k, v in tensor_divergence(left, right).items()}
                self.store(layer, [rows[p] for p in part], metrics)

    def _stack(self, arrays: list[np.ndarray], side: int) -> np.ndarray:
        """``np.stack(arrays)`` into a buffer kept for the next batch (one per side, of the last shape: the batches
        of a shape come one after another): a fresh one paid its page faults on every batch, several times the copy
        itself."""
        kept = self._buffers.get(side)
        if kept is None or kept.shape[1:] != arrays[0].shape or kept.dtype != arrays[0].dtype \
                or len(kept) < len(arrays):
            kept = self._buffers[side] = np.empty((max(len(arrays), _BATCH), *arrays[0].shape), dtype=arrays[0].dtype)
        return np.stack(arrays, out=kept[:len(arrays)])

    def _add_top_k(self, layer: _Layer, rows: list[int], xs: list[TopK], ys: list[TopK]) -> None:
        """Top-k captures, batched by shape (the maths is elementwise over ``K x K`` key pairs per query)."""
        groups: dict[tuple[Any, ...], list[int]] = {}
        for pos, (x, y) in enumerate(zip(xs, ys)):
            if x.shape != y.shape or x.queries != y.queries:
                what = f"top-k shapes differ: {x.shape} and {y.shape}" if x.shape != y.shape else \
                    "the passes kept different queries"
                self.notes.setdefault(layer.name, f"{layer.name}: {what}")
                continue
            groups.setdefault(x.shape, []).append(pos)
        for positions in groups.values():
            for start in range(0, len(positions), _BATCH):
                part = positions[start:start + _BATCH]
                pairs = [(xs[p], ys[p]) for p in part]
                metrics = topk_divergence(np.stack([x.index for x, _ in pairs]), np.stack([x.values for x, _ in pairs]),
                                          np.stack([y.index for _, y in pairs]), np.stack([y.values for _, y in pairs]),
                                          TOP_K)
                heads = pairs[0][0].shape[0]
                for name, side in (("entropy_a", 0), ("entropy_b", 1)):
                    metrics[name] = np.stack([p[side].entropy if p[side].entropy is not None else np.full(heads, np.nan)
                                              for p in pairs])
                self.store(layer, [rows[p] for p in part], {m: metrics[m] for m in ATTENTION_COLUMNS})

    def store(self, layer: _Layer, rows: list[int], metrics: dict[str, np.ndarray]) -> None:
        width = next(iter(metrics.values())).shape[1]
        target = self.arrays.get(layer.name)
        if target is None:
            self.kinds[layer.name] = layer.kind
            target = self.arrays[layer.name] = {m: np.full((self.n, width), np.nan) for m in metrics}
        if next(iter(target.values())).shape[1] != width:
            self.notes.setdefault(layer.name, f"{layer.name}: the number of heads differs between datapoints")
            return
        for metric, values in metrics.items():
            target[metric][rows] = values


class _Batches(_Accumulator):
    """What a task of :func:`compute_summary` sends back: its batches' metrics, stored into the result by the caller
    (a page's worth of small arrays, never the pages)."""

    def __init__(self, notes: dict[str, str], threads: int) -> None:
        super().__init__(0, notes, threads)
        self.batches: list[tuple[_Layer, list[int], dict[str, np.ndarray]]] = []

    def store(self, layer: _Layer, rows: list[int], metrics: dict[str, np.ndarray]) -> None:
        self.batches.append((layer, rows, metrics))


def compute_summary(store: Any, a: PassKey, b: PassKey, by: str | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    stop: threading.Event | None = None, workers: int | None = None) -> LayerSummary:
    """Compare the internals of every matched datapoint of passes ``a`` and ``b`` (read through ``store``).

    One task per page of a (:func:`compare_page`: that page and the pages of b its pairs need, each read once by
    :mod:`.bulk`), run in worker processes on large passes (:mod:`.workers`; ``workers`` overrides how
    many, 0 for in-process); each layer's pairs are compared in batches (:func:`~.divergence.attention_divergence`,
    :func:`~.divergence.tensor_divergence`). The layers are those measured in the first matched datapoint pair; a
    page that cannot be read leaves its rows NaN and a note naming it."""
    a, b = PassKey.of(a), PassKey.of(b)
    alignment = alignment_for(store, a, b, by)
    n = alignment.size
    notes: dict[str, str] = {}
    result = _Accumulator(n, notes)
    layers = _plan(store, a, b, alignment, notes) if n else []
    if layers:
        _compare_pages(store, a, b, alignment, layers, result, progress, stop, workers)
    elif progress is not None:
        progress(n, n)
    return LayerSummary(a, b, by, alignment.a, alignment.b, result.kinds, result.arrays, tuple(notes.values()))


def _compare_pages(store: Any, a: PassKey, b: PassKey, alignment: Alignment, layers: list[_Layer],
                   result: _Accumulator, progress: Callable[[int, int], None] | None,
                   stop: threading.Event | None, workers: int | None) -> None:
    pages_a, pages_b = store.pass_pages(a), store.pass_pages(b)
    for problem in (*pages_a.problems, *pages_b.problems):
        result.notes.setdefault(problem, problem)
    count = job_workers(pages_a, pages_b) if workers is None else workers
    threads = 1 if count else _THREADS  # (workers: one process per core already)
    schedule = _split(_schedule(pages_a, pages_b, alignment), pages_a, pages_b, count)
    tasks = [partial(compare_page, pages_a, rel_a, pages_b, rels_b, pairs, layers, threads)
             for rel_a, rels_b, pairs in schedule]
    warm = _warm_calls(schedule, pages_a, pages_b)
    done = 0
    for notes, batches, rows in run_tasks(tasks, count, stop, warm):
        for key, note in notes.items():
            result.notes.setdefault(key, note)
        for batch in batches:
            result.store(*batch)
        done += rows
        if progress is not None:
            progress(done, alignment.size)
    if stop is not None and stop.is_set():
        raise ViewerError("The comparison was stopped")
    if progress is not None and done < alignment.size:
        progress(alignment.size, alignment.size)  # pairs on no page at all: nothing to compare


def _warm_calls(schedule: list[tuple[str, list[str], np.ndarray]], pages_a: PassPages,
                pages_b: PassPages) -> list[Callable[[], None] | None]:
    """Per task, what reads its pages into the OS cache ahead of it (:func:`~.workers.run_tasks`): each page once,
    for the first task that needs it (the parts of a page share it; passes aligned by a meta key revisit pages of
    b)."""
    seen_a: set[str] = set()
    seen_b: set[str] = set()
    calls: list[Callable[[], None] | None] = []
    for rel_a, rels_b, _ in schedule:
        new_a = [] if rel_a in seen_a else [rel_a]
        new_b = [rel for rel in rels_b if rel not in seen_b]
        seen_a.update(new_a)
        seen_b.update(new_b)
        calls.append(partial(_warm, pages_a, new_a, pages_b, new_b) if new_a or new_b else None)
    return calls


def _warm(pages_a: PassPages, rels_a: list[str], pages_b: PassPages, rels_b: list[str]) -> None:
    """Pages read into the OS cache ahead of the task that needs them (:func:`~.workers.run_tasks`)."""
    for rel in rels_a:
        pages_a.source.warm(rel)
    for rel in rels_b:
        pages_b.source.warm(rel)


def compare_page(pages_a: PassPages, rel_a: str, pages_b: PassPages, rels_b: list[str], pairs: np.ndarray,
                 layers: list[_Layer], threads: int = 1,
                 ) -> tuple[dict[str, str], list[tuple[_Layer, list[int], dict[str, np.ndarray]]], int]:
    """One task of :func:`compute_summary` (run in a worker process on large passes): page ``rel_a`` of pass a and
    the pages ``rels_b`` of pass b read, and ``pairs`` (rows of ``(result row, idx in a, idx in b)``) compared.
    Returns its notes (pages that could not be read, items missing on one side), its batches of metrics, and how
    many pairs it covered."""
    select = {layer.debugger: None for layer in layers}
    notes: dict[str, str] = {}
    out = _Batches(notes, threads)
    with reused_buffers():  # (only the metrics leave this block)
        loaded: list[Page] = []
        for pages, rel, wanted in ((pages_a, rel_a, pairs[:, 1]), *((pages_b, r, pairs[:, 2]) for r in rels_b)):
            try:
                loaded.append(read_page(pages, rel, select=select, indices=set(wanted.tolist())))
            except PageError as exc:
                logger.warning("%s", exc)
                notes.setdefault(str(exc), str(exc))
                if pages is pages_a:
                    return notes, [], len(pairs)
        values_b: dict[int, Any] = {}
        for page in loaded[1:]:
            values_b.update(page.values)
        _compare_rows(loaded[0].values, values_b, pairs, layers, out)
    return notes, out.batches, len(pairs)


def _compare_rows(values_a: Mapping[int, Any], values_b: Mapping[int, Any], pairs: np.ndarray,
                  layers: list[_Layer], result: _Accumulator) -> None:
    for layer in layers:
        kept: list[int] = []
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        for row, i, j in pairs.tolist():
            if i not in values_a or j not in values_b:
                continue
            x, y = layer.array(values_a[i]), layer.array(values_b[j])
            if x is None or y is None:
                if x is not None or y is not None:
                    what = "attention weights" if layer.kind == Kind.ATTENTION else "array"
                    result.notes.setdefault(layer.name, f"{layer.name}: no {what} in one of the passes")
                continue
            kept.append(row)
            xs.append(x)
            ys.append(y)
        if kept:
            result.add(layer, kept, xs, ys)


class SummaryJobs(BackgroundJobs[LayerSummary]):
    """Pass-wide summaries computed once in a background thread, shared by every caller asking for the same pair,
    kept on disk under ``cache_dir/compare`` and reloaded from there after a restart."""

    folder = "compare"
    what = "pass-wide comparison"

    def decode(self, data: bytes) -> LayerSummary:
        return LayerSummary.from_bytes(data)

    def size(self, summary: LayerSummary) -> int:
        return int(summary.idx_a.size)

    def job_key(self, a: PassKey, b: PassKey, by: str | None) -> str:
        """A hash of both passes' files as listed now, the alignment and the format: the cache file's name."""
        snapshot = self._store.snapshot
        parts: list[Any] = [_FORMAT, by]
        for key in (a, b):
            files = snapshot.files.get(key)
            parts.append([_key_tuple(key), None if files is None else
                          [files.source.identity, files.folder, repr(files.scores_stat), repr(files.debug)]])
        return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:24]

    def start(self, a: PassKey, b: PassKey, by: str | None = None) -> str:
        """Start (or join) the summary of ``a`` vs ``b``; returns the key :meth:`status` takes."""
        a, b = PassKey.of(a), PassKey.of(b)
        return self.begin(self.job_key(a, b, by),
                          lambda progress, stop: compute_summary(self._store, a, b, by, progress, stop),
                          f"Comparing {a} with {b} failed",
                          total=lambda: alignment_for(self._store, a, b, by).size)

    def summary(self, a: PassKey, b: PassKey, by: str | None = None, timeout: float | None = None) -> LayerSummary:
        """Start if needed and wait: the summary, or the :class:`ViewerError` that stopped it."""
        return self.result(self.start(a, b, by), timeout)
