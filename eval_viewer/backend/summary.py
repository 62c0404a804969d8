"""The pass-wide "where inside the model" summary: every matched datapoint's internals compared, layer × head.

:func:`compute_summary` reads each matched datapoint of both passes and keeps, per compared debug item (a *layer*:
``debugger`` or ``debugger/key``) and per head, the per-datapoint metrics of :func:`~.compare.compare_items`, so the
summary table (:meth:`LayerSummary.table`, worst first) and "where does this cell diverge most"
(:meth:`LayerSummary.worst`) come from the same arrays. :class:`SummaryJobs` runs it in a background thread with
progress, writes the result under the store's cache dir (``<cache_dir>/compare/<hash>.npz``, never inside a log dir)
and reloads it after a restart; the hash covers both passes' files (their listing with sizes and mtimes), the
alignment and the format version, so a pass that changes is summarised again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eval_viewer.backend.compare import Alignment, align, compare_items
from eval_viewer.backend.model import PassKey
from eval_viewer.errors import ViewerError
from eval_viewer.log_format import Kind, atomic_write_bytes

__all__ = ["LayerSummary", "SummaryRow", "compute_summary", "SummaryJobs", "JobStatus", "alignment_for"]

logger = logging.getLogger(__name__)

_FORMAT = 1
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


def compute_summary(store: Any, a: PassKey, b: PassKey, by: str | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    stop: threading.Event | None = None) -> LayerSummary:
    """Compare the internals of every matched datapoint of passes ``a`` and ``b`` (read through ``store``)."""
    a, b = PassKey.of(a), PassKey.of(b)
    alignment = alignment_for(store, a, b, by)
    n = alignment.size
    kinds: dict[str, str] = {}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    notes: dict[str, str] = {}
    for row, (i, j) in enumerate(zip(alignment.a.tolist(), alignment.b.tolist())):
        if stop is not None and stop.is_set():
            raise ViewerError("The comparison was stopped")
        for cmp in compare_items(store.datapoint(a, i), store.datapoint(b, j)):
            if cmp.note:
                notes.setdefault(cmp.layer, f"{cmp.layer}: {cmp.note}")
            if not cmp.metrics:
                continue
            layer = arrays.get(cmp.layer)
            if layer is None:
                width = len(cmp.metrics["jsd"]) if cmp.kind == Kind.ATTENTION else 1
                kinds[cmp.layer] = cmp.kind
                layer = arrays[cmp.layer] = {m: np.full((n, width), np.nan) for m in cmp.metrics}
            for metric, value in cmp.metrics.items():
                target = layer[metric]
                values = np.atleast_1d(np.asarray(value, dtype=np.float64))
                if values.size == target.shape[1]:
                    target[row] = values
        if progress is not None:
            progress(row + 1, n)
    return LayerSummary(a, b, by, alignment.a, alignment.b, kinds, arrays, tuple(notes.values()))


@dataclass(frozen=True)
class JobStatus:
    done: int
    total: int
    finished: bool
    error: str | None = None
    summary: LayerSummary | None = field(default=None, repr=False)
    cached: bool = False


class _Job:
    def __init__(self) -> None:
        self.done = 0
        self.total = 0
        self.error: str | None = None
        self.summary: LayerSummary | None = None
        self.cached = False
        self.finished = threading.Event()


class SummaryJobs:
    """Pass-wide summaries computed once in a background thread, shared by every caller asking for the same pair,
    kept on disk under ``cache_dir/compare`` and reloaded from there after a restart."""

    def __init__(self, store: Any, cache_dir: str | Path | None = None) -> None:
        self._store = store
        base = cache_dir if cache_dir is not None else getattr(store, "cache_dir", None)
        self._dir = Path(base) / "compare" if base is not None else None
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._one_at_a_time = threading.Lock()  # jobs read pages: one at a time keeps the page cache useful

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
        key = self.job_key(a, b, by)
        with self._lock:
            if key in self._jobs and not self._jobs[key].error:
                return key
            job = self._jobs[key] = _Job()
        cached = self._load(key)
        if cached is not None:
            job.summary, job.cached = cached, True
            job.done = job.total = cached.idx_a.size
            job.finished.set()
            return key
        # a daemon thread per job (jobs are rare and long): nothing to shut down when the server stops
        threading.Thread(target=self._run, args=(job, key, a, b, by), name="eval-viewer-compare", daemon=True).start()
        return key

    def status(self, key: str) -> JobStatus | None:
        job = self._jobs.get(key)
        if job is None:
            return None
        return JobStatus(job.done, job.total, job.finished.is_set(), job.error, job.summary, job.cached)

    def wait(self, key: str, timeout: float | None = None) -> JobStatus | None:
        job = self._jobs.get(key)
        if job is not None:
            job.finished.wait(timeout)
        return self.status(key)

    def summary(self, a: PassKey, b: PassKey, by: str | None = None, timeout: float | None = None) -> LayerSummary:
        """Start if needed and wait: the summary, or the :class:`ViewerError` that stopped it."""
        status = self.wait(self.start(a, b, by), timeout)
        if status is None or not status.finished:
            raise ViewerError("The pass-wide comparison did not finish in time")
        if status.error:
            raise ViewerError(status.error)
        assert status.summary is not None
        return status.summary

    def _run(self, job: _Job, key: str, a: PassKey, b: PassKey, by: str | None) -> None:
        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        try:
            job.total = alignment_for(self._store, a, b, by).size
            with self._one_at_a_time:
                summary = compute_summary(self._store, a, b, by, progress, self._stop)
        except ViewerError as exc:
            job.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a background job reports, it never kills the server
            logger.exception("Comparing %s with %s failed", a, b)
            job.error = f"Comparing {a} with {b} failed: {type(exc).__name__}: {exc}"
        else:
            job.summary = summary
            self._save(key, summary)
        finally:
            job.finished.set()

    def _path(self, key: str) -> Path | None:
        return None if self._dir is None else self._dir / f"{key}.npz"

    def _load(self, key: str) -> LayerSummary | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            return LayerSummary.from_bytes(path.read_bytes())
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("Ignoring the cached comparison %s (%s)", path, exc)
            return None

    def _save(self, key: str, summary: LayerSummary) -> None:
        path = self._path(key)
        if path is None:
            return
        try:
            atomic_write_bytes(path, summary.to_bytes())
        except OSError as exc:
            logger.warning("Cannot cache the comparison in %s (%s)", path, exc)

    def close(self, timeout: float = 10.0) -> None:
        """Stop running jobs (they end at the next datapoint) and wait for them."""
        self._stop.set()
        for job in list(self._jobs.values()):
            job.finished.wait(timeout)
