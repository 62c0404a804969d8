"""The backend's one public entry point: :class:`LogStore`, a read-only view of one or more log dirs.

Cheap ``runs``/``scores``/``meta_table`` calls for the index, one ``datapoint`` call for the bytes of one datapoint
(TensorBoard's data-provider split). What costs memory (parsed scores, parsed pages, read datapoints) lives in one
:class:`~eval_viewer.backend.lru.ByteLRU`, so the process stays flat however large the log; what can change on disk
(a scores file, a page) is re-read when its size or mtime changes, so the viewer follows a run that is still training.
Safe to call from several threads (Flask serves callbacks in threads).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from pathlib import Path
from typing import Any

import numpy as np

from eval_viewer.backend.discovery import FoundRun, run_at, scan_log_dir, url_safe
from eval_viewer.backend.index import DebugIndex, IndexStatus
from eval_viewer.backend.lru import ByteLRU
from eval_viewer.backend.model import DatapointRecord, EpochInfo, RunInfo, Scores
from eval_viewer.backend.pages import read_datapoint
from eval_viewer.backend.records import build_record
from eval_viewer.backend.scores import load_scores
from eval_viewer.backend.skeletons import SkeletonStore
from eval_viewer.errors import LogDirError, NotFoundError, PageError, ScoresError
from eval_viewer.log_format import DEBUGGER_DIR, EVALUATION_SCORES, VALIDATION_SCORES

__all__ = ["LogStore", "default_cache_dir"]

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/eval-viewer`` (``~/.cache/eval-viewer``): indexes are never written into a log dir."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "eval-viewer"


def _scores_path(info: EpochInfo) -> Path:
    return info.path / (VALIDATION_SCORES if info.epoch is not None else EVALUATION_SCORES)


class LogStore:
    """Runs, scores and debug outputs of the runs under ``log_dirs`` (each a run or a folder of runs).

    ``trust_pickles`` lifts the allow-list of page classes (only for logs you trust); ``cache_dir`` holds indexes
    built for pages that came without one; ``cache_bytes`` bounds the memory of everything cached;
    ``higher_is_better`` overrides the direction inferred from metric names; ``index_wait_s`` is how long a
    ``datapoint`` call waits for a background index of an epoch that came without one.
    """

    def __init__(
        self,
        log_dirs: Sequence[str | os.PathLike[str]],
        *,
        trust_pickles: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_bytes: int = 256 * 2**20,
        higher_is_better: Mapping[str, bool] | None = None,
        index_wait_s: float = 60.0,
    ) -> None:
        if isinstance(log_dirs, (str, os.PathLike)):
            log_dirs = [log_dirs]
        if not log_dirs:
            raise LogDirError("No --log-dir given: pass a run folder or a folder of runs")
        self._log_dirs: list[Path] = []
        for raw in log_dirs:
            path = Path(raw).expanduser()
            if not path.exists():
                raise LogDirError(f"{path}: log dir does not exist")
            if not path.is_dir():
                raise LogDirError(f"{path}: log dir is a file, not a folder of runs")
            self._log_dirs.append(path)
        self._trust = trust_pickles
        self._cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        try:
            self._cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.warning("Cannot create the index cache dir %s (%s); indexes will not be kept", self._cache_dir, exc)
        self._lru = ByteLRU(cache_bytes)
        self._skeletons = SkeletonStore(self._cache_dir, trust=trust_pickles)
        self._overrides = dict(higher_is_better or {})
        self._index_wait_s = index_wait_s
        self._lock = threading.RLock()
        self._names: dict[Path, str] = {}
        self._runs: dict[str, RunInfo] = {}
        self._indexes: dict[Path, DebugIndex] = {}
        self._counts: dict[Path, int] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eval-viewer-index")
        self._pending: list[Future[Any]] = []
        self._closed = False
        found = self._scan()
        for log_dir in self._log_dirs:
            if not any(run.path == log_dir or log_dir in run.path.parents for run in found):
                raise LogDirError(
                    f"{log_dir}: no run found: expected a run folder (epoch_N/{VALIDATION_SCORES} or "
                    f"{EVALUATION_SCORES}) or a folder of runs"
                )

    # ------------------------------------------------------------------ runs
    def _name_for(self, run: FoundRun, log_dir: Path) -> str:
        key = run.path.resolve()
        name = self._names.get(key)
        if name is not None:
            return name
        taken = set(self._names.values())
        name = url_safe(run.rel)
        if name in taken:
            name = url_safe(f"{log_dir.resolve().name}/{run.rel}")
        base, n = name, 2
        while name in taken:
            name, n = f"{base}~{n}", n + 1
        self._names[key] = name
        return name

    def _scan(self) -> list[RunInfo]:
        infos: list[RunInfo] = []
        for log_dir in self._log_dirs:
            for run in scan_log_dir(log_dir):
                with self._lock:
                    name = self._name_for(run, log_dir)
                infos.append(RunInfo(name=name, path=run.path, kind=run.kind, epochs=run.epochs))
        with self._lock:
            self._runs = {info.name: info for info in infos}
        return infos

    def runs(self) -> tuple[RunInfo, ...]:
        """Every run, re-listed from disk on each call (a few stats per epoch): new runs and epochs appear."""
        return tuple(self._scan())

    def run(self, name: str) -> RunInfo:
        with self._lock:
            info = self._runs.get(name)
        if info is None:
            self._scan()
            with self._lock:
                info = self._runs.get(name)
        if info is None:
            known = ", ".join(sorted(self._runs)) or "none"
            raise NotFoundError(f"No run named {name!r} (runs: {known})")
        return info

    def _epoch(self, run: str, epoch: int | None) -> tuple[RunInfo, EpochInfo]:
        info = self.run(run)
        try:
            return info, info.epoch(epoch)
        except NotFoundError:
            fresh = run_at(info.path)  # an epoch written since the last listing
            if fresh is not None:
                info = RunInfo(name=info.name, path=info.path, kind=fresh[0], epochs=fresh[1])
                with self._lock:
                    self._runs[info.name] = info
            return info, info.epoch(epoch)

    # ------------------------------------------------------------------ scores
    def scores(self, run: str, epoch: int | None) -> Scores:
        """The scores of one epoch (``None``: an evaluator run), parsed once and re-read when the file changes."""
        info, epoch_info = self._epoch(run, epoch)
        path = _scores_path(epoch_info)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ScoresError(f"{path}: scores file is missing (epoch {epoch} of run {run!r})") from None
        sig = (st.st_size, st.st_mtime_ns)
        cached = self._lru.get(("scores", path))
        if cached is not None and cached[0] == sig:
            return cached[1]  # type: ignore[no-any-return]
        scores = load_scores(path, self._overrides)
        scores = self._check_count(info, epoch_info, scores)
        nbytes = sum(a.nbytes for a in scores.per_datapoint.values()) + 64 * len(scores.aggregated) + 1024
        self._lru.put(("scores", path), (sig, scores), nbytes)
        if epoch_info.has_debug:
            self._debug_index(epoch_info)  # start a background index now, before the first click needs it
        return scores

    def _check_count(self, info: RunInfo, epoch_info: EpochInfo, scores: Scores) -> Scores:
        """Note (do not fail) an epoch whose datapoint count differs from the run's other epochs."""
        with self._lock:
            self._counts[epoch_info.path] = scores.num_datapoints
            others = {
                e.epoch: self._counts[e.path] for e in info.epochs if e.path != epoch_info.path and e.path in self._counts
            }
        differing = {e: n for e, n in others.items() if n != scores.num_datapoints}
        if not differing:
            return scores
        note = (
            f"{scores.path}: {scores.num_datapoints} datapoints, but "
            + ", ".join(f"epoch {e} has {n}" for e, n in differing.items())
            + "; datapoint indices may not refer to the same data across these epochs"
        )
        return Scores(scores.num_datapoints, scores.per_datapoint, scores.aggregated, scores.higher_is_better,
                      problems=scores.problems + (note,), path=scores.path)

    def metric_history(self, run: str, metric: str) -> list[tuple[int | None, float]]:
        """``(epoch, aggregated value)`` for every epoch, NaN where an epoch lacks the metric or its scores."""
        history: list[tuple[int | None, float]] = []
        seen = False
        for epoch_info in self.run(run).epochs:
            try:
                scores = self.scores(run, epoch_info.epoch)
            except ScoresError as exc:
                logger.warning("%s", exc)
                history.append((epoch_info.epoch, math.nan))
                continue
            seen = seen or metric in scores.aggregated or metric in scores.per_datapoint
            history.append((epoch_info.epoch, float(scores.aggregated.get(metric, math.nan))))
        if not seen and history:
            raise NotFoundError(f"Run {run!r} has no metric {metric!r} in any epoch")
        return history

    def scores_across_epochs(
        self, run: str, metric: str, epochs: Sequence[int | None] | None = None
    ) -> tuple[tuple[int | None, ...], np.ndarray]:
        """Per-datapoint values of ``metric`` for several epochs as one (epochs, datapoints) array, NaN where missing.

        Comparing epochs datapoint by datapoint only means something when every epoch scored the same datapoints,
        so differing counts raise :class:`ScoresError` naming the files.
        """
        chosen = tuple(epochs) if epochs is not None else tuple(e.epoch for e in self.run(run).epochs)
        loaded = [self.scores(run, e) for e in chosen]
        counts = {s.num_datapoints for s in loaded}
        if len(counts) > 1:
            detail = ", ".join(f"{s.path}: {s.num_datapoints}" for s in loaded)
            raise ScoresError(f"Run {run!r}: epochs have different numbers of datapoints ({detail})")
        n = counts.pop() if counts else 0
        table = np.full((len(loaded), n), math.nan)
        for row, s in enumerate(loaded):
            if metric in s.per_datapoint:
                table[row] = s.per_datapoint[metric]
        return chosen, table

    # ------------------------------------------------------------------ debug outputs
    def _debug_index(self, epoch_info: EpochInfo) -> DebugIndex:
        debug_dir = epoch_info.path / DEBUGGER_DIR
        with self._lock:
            index = self._indexes.get(debug_dir)
            if index is None:
                index = DebugIndex(debug_dir, trust=self._trust, cache_dir=self._cache_dir, submit=self._submit,
                                   skeletons=self._skeletons)
                self._indexes[debug_dir] = index
        index.refresh()
        return index

    def _submit(self, fn: Any, *args: Any) -> None:
        if not self._closed:
            future = self._executor.submit(fn, *args)
            with self._lock:
                self._pending = [f for f in self._pending if not f.done()] + [future]

    def wait_background(self, timeout: float | None = None) -> bool:
        """Block until background indexing and skeleton writing are done (benchmarks, tests); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                pending = [f for f in self._pending if not f.done()]
            if not pending:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            futures_wait(pending, timeout=left)

    def debug_status(self, run: str, epoch: int | None) -> IndexStatus | None:
        """Progress of the page index of an epoch (None when it has no debug outputs): for a "still indexing" note."""
        _, epoch_info = self._epoch(run, epoch)
        if not epoch_info.has_debug:
            return None
        return self._debug_index(epoch_info).status()

    def wait_for_index(self, run: str, epoch: int | None, timeout: float | None = None) -> bool:
        """Block until the epoch's page index is complete; False on timeout."""
        _, epoch_info = self._epoch(run, epoch)
        return not epoch_info.has_debug or self._debug_index(epoch_info).wait(timeout)

    def meta_table(self, run: str, epoch: int | None) -> dict[str, list[Any]]:
        """Scalar meta_info columns for all datapoints (None where unknown); ``{}`` without debug outputs or meta."""
        _, epoch_info = self._epoch(run, epoch)
        if not epoch_info.has_debug:
            return {}
        index = self._debug_index(epoch_info)
        index.wait(self._index_wait_s)
        meta = index.meta()
        if not meta:
            return {}
        try:
            n = self.scores(run, epoch).num_datapoints
        except ScoresError:
            n = max(meta) + 1
        columns: dict[str, list[Any]] = {}
        for idx, fields in meta.items():
            if not 0 <= idx < n:
                continue
            for key, value in fields.items():
                column = columns.get(key)
                if column is None:  # not setdefault: its default list would be built for every field of every row
                    column = columns[key] = [None] * n
                column[idx] = value
        return columns

    def datapoint(self, run: str, epoch: int | None, idx: int) -> DatapointRecord:
        """Everything saved about one datapoint. What cannot be read is listed in ``record.problems``.

        Raises :class:`NotFoundError` only for an unknown run or epoch or an index outside the scores.
        """
        info, epoch_info = self._epoch(run, epoch)
        idx = int(idx)
        problems: list[str] = []
        scores: dict[str, float] = {}
        try:
            s = self.scores(run, epoch)
        except ScoresError as exc:
            problems.append(str(exc))
        else:
            if not 0 <= idx < s.num_datapoints:
                raise NotFoundError(f"Run {run!r} epoch {epoch}: no datapoint {idx} (it has {s.num_datapoints})")
            scores = {m: float(a[idx]) for m, a in s.per_datapoint.items()}
            problems.extend(p for p in s.problems if f"datapoint {idx}:" in p)
        value: Any = None
        debuggers: Mapping[str, Any] = {}
        if epoch_info.has_debug:
            index = self._debug_index(epoch_info)
            value = self._debug_value(index, idx, problems)
            debuggers = index.debuggers
        return build_record(info.name, epoch, idx, scores, value, debuggers, problems)

    def _debug_value(self, index: DebugIndex, idx: int, problems: list[str]) -> Any:
        page = index.page_of(idx)
        if page is None and not index.wait(self._index_wait_s):
            status = index.status()
            problems.append(
                f"{index.debug_dir}: still indexing pages ({status.pages_indexed}/{status.pages}); "
                f"debug outputs of datapoint {idx} will appear when it is done"
            )
            return None
        page = page or index.page_of(idx)
        if page is None:
            broken = index.problems
            if broken:
                problems.append(f"datapoint {idx}: not found in the readable pages of {index.debug_dir}")
                problems.extend(broken)
            return None
        try:
            return read_datapoint(index.debug_dir / page, idx, trust=self._trust, lru=self._lru,
                                  skeletons=self._skeletons, submit=self._submit)
        except KeyError:
            problems.append(f"{index.debug_dir / page}: does not hold datapoint {idx} as its index says; re-indexing")
            index.rescan_page(page)
        except PageError as exc:
            problems.append(str(exc))
        return None

    def clear_cache(self) -> None:
        """Forget parsed scores, pages and datapoints (the next reads go to disk); indexes are kept."""
        self._lru.clear()

    def close(self) -> None:
        """Stop background indexing and drop every cache. The store is not usable afterwards."""
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for index in self._indexes.values():
                index.stop()
        self._lru.clear()

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
