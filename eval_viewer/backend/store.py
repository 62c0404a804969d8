"""The backend's one public entry point: :class:`LogStore`, a read-only provider over one or more log dirs.

Cheap listings (``runs``, ``run``, ``scores``, ``meta_table``) for the index, one ``datapoint`` call for the bytes of
one datapoint (TensorBoard's data-provider split). Listings come from a :class:`~eval_viewer.backend.snapshot.Snapshot`
that a background thread renews every ``rescan_s`` seconds (or :meth:`LogStore.refresh` at once): no request walks
the log tree, and no request waits for indexing: a datapoint of a pass whose pages are still being indexed comes back
at once with a problem saying so. What costs memory (parsed scores, parsed pages, read datapoints) lives in one
:class:`~eval_viewer.backend.lru.ByteLRU`; what can change (a scores file, a page) is re-read when its version in the
snapshot changes, so the viewer follows a run that is still training. Log dirs are local paths or fsspec URLs
(:mod:`.sources`). Safe to call from several threads (Flask serves callbacks in threads).
"""

from __future__ import annotations

import json
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from pathlib import Path
from typing import Any, Union

import numpy as np

from eval_viewer.backend import workers
from eval_viewer.backend.bulk import PassPages
from eval_viewer.backend.index import DebugIndex, IndexStatus
from eval_viewer.backend.kinds import ViewerHints, parse_viewer
from eval_viewer.backend.lru import ByteLRU
from eval_viewer.backend.model import DatapointRecord, PassInfo, PassKey, RunInfo, Scores
from eval_viewer.backend.pages import read_datapoint
from eval_viewer.backend.dataset import load_dataset
from eval_viewer.backend.divergence import warm_compiled
from eval_viewer.backend.records import build_record, with_dataset
from eval_viewer.backend.scores import decode_scores
from eval_viewer.backend.skeletons import SkeletonStore
from eval_viewer.backend.snapshot import PassFiles, Refresher, Snapshot
from eval_viewer.backend.sources import Source, is_url, join, open_source
from eval_viewer.errors import LogDirError, NotFoundError, PageError, ScoresError
from eval_viewer.log_format import EVALUATION_SCORES, SPLIT_VAL, VALIDATION_SCORES, VIEWER_FILE, parse_epoch_dir

__all__ = ["LogStore", "default_cache_dir", "PassLike"]

logger = logging.getLogger(__name__)

PassLike = Union[PassKey, tuple[str, str, Union[int, None]], tuple[str, str]]
"""A pass named by its key or a plain ``(run, split, step)`` tuple."""


def _real(location: str) -> str:
    """A local location with every link resolved (runs are listed once by their real folder); URLs as they are."""
    return location if is_url(location) else os.path.realpath(location)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/eval-viewer`` (``~/.cache/eval-viewer``): indexes are never written into a log dir."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "eval-viewer"


def _warm_into(done: Future[None]) -> None:
    """:func:`~.divergence.warm_compiled`, then ``done`` resolved (a store's background work that it waits for)."""
    try:
        warm_compiled()
    finally:
        done.set_result(None)


class LogStore:
    """Runs, passes, scores and debug outputs under ``log_dirs`` (each a run or a folder of runs; a path or a URL).

    ``trust_pickles`` lifts the allow-list of page classes (only for logs you trust); ``cache_dir`` holds indexes and
    skeletons built for pages (never inside a log dir); ``cache_bytes`` bounds the memory of everything cached;
    ``higher_is_better`` overrides the direction inferred from metric names; ``index_wait_s`` is how long a
    ``datapoint`` call may wait for a background index (0, the app's choice: never; the notebook API waits);
    ``rescan_s`` is how often the listing snapshot is renewed in the background (0: only on :meth:`refresh`);
    ``storage_options`` go to fsspec for URLs (endpoints and credentials also come from the environment);
    ``follow_symlinks`` lets local log dirs follow links that lead outside them (off: such links are not served).
    ``dataset`` (``"module:callable"`` or a callable, :mod:`.dataset`) fills the inputs and labels a log did not save:
    it runs the user's code, so only an explicit argument turns it on. ``prepare_workers`` starts the worker processes
    of pass-wide jobs (:mod:`.workers`) in the background as soon as a pass large enough for them is opened, so the
    first health or comparison summary does not wait for them, and loads the comparison's compiled loop at once, so
    the first paired view does not wait for it either (the server's choice; a notebook does both on first use).
    """

    def __init__(
        self,
        log_dirs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        trust_pickles: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_bytes: int = 256 * 2**20,
        higher_is_better: Mapping[str, bool] | None = None,
        index_wait_s: float = 0.0,
        rescan_s: float = 10.0,
        storage_options: Mapping[str, Any] | None = None,
        follow_symlinks: bool = False,
        dataset: str | Callable[[int], Any] | None = None,
        prepare_workers: bool = False,
    ) -> None:
        # --dataset runs the user's code: resolved first, so a bad spec fails before anything is opened
        self._dataset = load_dataset(dataset) if dataset is not None else None
        if isinstance(log_dirs, (str, os.PathLike)):
            log_dirs = [log_dirs]
        if not log_dirs:
            raise LogDirError("No --log-dir given: pass a run folder or a folder of runs")
        self._sources: list[Source] = [open_source(raw, storage_options, follow_symlinks=follow_symlinks)
                                       for raw in log_dirs]
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
        self._prepare_workers = prepare_workers
        self._sized: dict[str, int] = {}
        """Page count of each debug folder when the job workers were last considered for it."""
        self._lock = threading.RLock()
        self._indexes: dict[str, DebugIndex] = {}
        self._hints: dict[str, tuple[str, ViewerHints]] = {}
        self._counts: dict[PassKey, int] = {}
        self._versions: dict[str, tuple[PassFiles, str]] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eval-viewer-index")
        self._pending: list[Future[Any]] = []
        if prepare_workers:  # (its own thread: the index's executor must not wait for it)
            warmed: Future[None] = Future()
            self._pending.append(warmed)
            threading.Thread(target=_warm_into, args=(warmed,), name="eval-viewer-warm-maths", daemon=True).start()
        self._closed = False
        self._refresher = Refresher(self._sources, rescan_s, on_change=self._snapshot_changed)
        found = self._refresher.snapshot
        located = [_real(run.location) for run in found.runs.values()]
        for source in self._sources:
            root = _real(source.url(""))
            if not any(loc == root or loc.startswith(root.rstrip("/") + "/")
                       for loc in located):  # (a run listed once though named by two log dirs counts for both)
                self.close()  # the refresher thread is running already: a failed open must not keep it
                raise LogDirError(
                    f"{source.location}: no run found: expected a run folder (epoch_N/{VALIDATION_SCORES} or "
                    f"{EVALUATION_SCORES}) or a folder of runs"
                )

    # ------------------------------------------------------------------ listings (from the snapshot)
    @property
    def snapshot(self) -> Snapshot:
        """The current listing snapshot (immutable; replaced as a whole by a refresh)."""
        return self._refresher.snapshot

    @property
    def cache_dir(self) -> Path:
        """Where indexes, skeletons and comparison summaries are cached (never inside a log dir)."""
        return self._cache_dir

    @property
    def version(self) -> str:
        """Changes whenever a run, pass, scores file or page appears, disappears or changes."""
        return self._refresher.snapshot.version

    def refresh(self, wait: bool = True) -> None:
        """Renew the listing snapshot now (``wait``), or ask the background thread to do it soon."""
        if wait:
            self._refresher.refresh()
        else:
            self._refresher.request()

    def _snapshot_changed(self, old: Snapshot, new: Snapshot) -> None:
        """Hand every known page index its folder's new listing (reads only index files that changed)."""
        with self._lock:
            indexes = dict(self._indexes)
        for key, files in new.files.items():
            index = indexes.get(files.source.identity + "/" + files.debug_dir)
            if index is not None:
                index.refresh(files.debug)

    def pass_version(self, key: PassLike) -> str:
        """Changes whenever a file of the pass (its scores, a page, an index) appears, changes or goes: a view drawn
        from a pass is kept under this version, so it never outlives the files it was drawn from."""
        _, files = self._files(key)
        slot = files.source.identity + "|" + files.folder
        hit = self._versions.get(slot)
        if hit is not None and hit[0] is files:
            return hit[1]
        parts = (files.scores_stat, sorted(files.debug.pages.items()), sorted(files.debug.index_files.items()))
        version = hashlib.sha1(repr(parts).encode()).hexdigest()[:16]
        self._versions[slot] = (files, version)
        return version

    def runs(self) -> tuple[RunInfo, ...]:
        """Every run, sorted by name, as of the last snapshot."""
        return tuple(self._refresher.snapshot.runs.values())

    def run(self, name: str) -> RunInfo:
        info = self._refresher.snapshot.runs.get(name)
        if info is None:
            known = ", ".join(self._refresher.snapshot.runs) or "none"
            raise NotFoundError(f"No run named {name!r} (runs: {known})")
        return info

    def pass_info(self, key: PassLike) -> PassInfo:
        key = PassKey.of(key)
        return self.run(key.run).find(key.split, key.step)

    def default_pass(self, run: str) -> PassKey:
        """The pass a run opens on: its latest validated epoch, else its test pass."""
        return self.run(run).default_pass.key

    def _files(self, key: PassLike) -> tuple[PassKey, PassFiles]:
        key = PassKey.of(key)
        files = self._refresher.snapshot.files.get(key)
        if files is None:
            self.pass_info(key)  # raises the NotFoundError naming what there is
            raise NotFoundError(f"No pass {key}")  # pragma: no cover - listed without files
        return key, files

    # ------------------------------------------------------------------ scores
    def scores(self, key: PassLike) -> Scores:
        """The scores of one pass, parsed once and re-read when the snapshot sees the file change. Starts indexing
        the pass's debug pages in the background, before the first click on a datapoint needs them."""
        return self._scores(key, start_index=True)

    def _scores(self, key: PassLike, *, start_index: bool) -> Scores:
        key, files = self._files(key)
        if files.scores is None or files.scores_stat is None:
            raise ScoresError(f"{files.source.url(files.folder)}: this pass has debug pages but no scores file")
        name = files.source.url(files.scores)
        cache_key = ("scores", files.source.identity, files.scores)
        cached = self._lru.get(cache_key)
        if cached is not None and cached[0] == files.scores_stat:
            return cached[1]  # type: ignore[no-any-return]
        try:
            data = files.source.read_bytes(files.scores)
        except FileNotFoundError:
            raise ScoresError(f"{name}: scores file is missing ({key})") from None
        except OSError as exc:
            raise ScoresError(f"{name}: cannot read the scores file ({exc.strerror or exc})") from None
        except Exception as exc:  # noqa: BLE001 - remote storage errors say the same thing
            raise ScoresError(f"{name}: cannot read the scores file ({type(exc).__name__}: {exc})") from None
        scores = self._check_count(key, decode_scores(data, name, self._overrides))
        nbytes = sum(a.nbytes for a in scores.per_datapoint.values()) + 64 * len(scores.aggregated) + 1024
        self._lru.put(cache_key, (files.scores_stat, scores), nbytes)
        if files.debug and start_index:
            self._debug_index(files)  # start a background index now, before the first click needs it
        return scores

    def _check_count(self, key: PassKey, scores: Scores) -> Scores:
        """Note (do not fail) a pass whose datapoint count differs from the run's other passes of its split."""
        with self._lock:
            self._counts[key] = scores.num_datapoints
            others = {k: n for k, n in self._counts.items()
                      if k.run == key.run and k.split == key.split and k != key}
        differing = {k: n for k, n in others.items() if n != scores.num_datapoints}
        if not differing:
            return scores
        note = (
            f"{scores.path}: {scores.num_datapoints} datapoints, but "
            + ", ".join(f"{k.label} has {n}" for k, n in differing.items())
            + "; datapoint indices may not refer to the same data across these passes"
        )
        return Scores(scores.num_datapoints, scores.per_datapoint, scores.aggregated, scores.higher_is_better,
                      problems=scores.problems + (note,), path=scores.path)

    def metric_history(self, run: str, metric: str, split: str = SPLIT_VAL) -> list[tuple[PassKey, float]]:
        """``(pass, aggregated value)`` for every scored pass of ``split``, NaN where one lacks the metric."""
        history: list[tuple[PassKey, float]] = []
        seen = False
        for info in self.run(run).passes:
            if info.split != split or not info.has_scores:
                continue
            try:  # no indexing: the overview asks this of every pass of every run
                scores = self._scores(info.key, start_index=False)
            except ScoresError as exc:
                logger.warning("%s", exc)
                history.append((info.key, math.nan))
                continue
            seen = seen or metric in scores.aggregated or metric in scores.per_datapoint
            history.append((info.key, float(scores.aggregated.get(metric, math.nan))))
        if not seen and history:
            raise NotFoundError(f"Run {run!r} has no metric {metric!r} in any {split} pass")
        return history

    def scores_across_passes(self, keys: Sequence[PassLike], metric: str) -> np.ndarray:
        """Per-datapoint values of ``metric`` for several passes as one (passes, datapoints) array, NaN where missing.

        Comparing passes datapoint by datapoint only means something when every pass scored the same datapoints,
        so differing counts raise :class:`ScoresError` naming the files.
        """
        loaded = [self.scores(k) for k in keys]
        counts = {s.num_datapoints for s in loaded}
        if len(counts) > 1:
            detail = ", ".join(f"{s.path}: {s.num_datapoints}" for s in loaded)
            raise ScoresError(f"Passes have different numbers of datapoints ({detail})")
        n = counts.pop() if counts else 0
        table = np.full((len(loaded), n), math.nan)
        for row, s in enumerate(loaded):
            if metric in s.per_datapoint:
                table[row] = s.per_datapoint[metric]
        return table

    # ------------------------------------------------------------------ debug outputs
    def _debug_index(self, files: PassFiles) -> DebugIndex:
        ident = files.source.identity + "/" + files.debug_dir
        with self._lock:
            index = self._indexes.get(ident)
            if index is None:
                index = DebugIndex(files.source, files.debug_dir, trust=self._trust, cache_dir=self._cache_dir,
                                   submit=self._submit, skeletons=self._skeletons)
                self._indexes[ident] = index
        index.refresh(files.debug)  # one comparison when the listing is unchanged
        pages = files.debug.pages
        if self._prepare_workers and self._sized.get(ident) != len(pages):  # (once per listing size, not per request)
            self._sized[ident] = len(pages)
            ready = workers.prepare(workers.workers_for(len(pages), (stat.size for stat in pages.values()),
                                                        files.source.process_shared))
            if ready is not None:
                with self._lock:
                    self._pending.append(ready)
        return index

    def _submit(self, fn: Any, *args: Any) -> None:
        if not self._closed:
            future = self._executor.submit(fn, *args)
            with self._lock:
                self._pending = [f for f in self._pending if not f.done()] + [future]

    def wait_background(self, timeout: float | None = None) -> bool:
        """Block until the store's background work is done (benchmarks, tests): indexing, skeleton writing and, with
        ``prepare_workers``, the job workers started and the compiled comparison loop loaded; False on timeout."""
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

    def debug_status(self, key: PassLike) -> IndexStatus | None:
        """Progress of the page index of a pass (None when it has no debug outputs): for a "still indexing" note."""
        _, files = self._files(key)
        if not files.debug:
            return None
        return self._debug_index(files).status()

    def missing_debug(self, key: PassLike) -> tuple[int, ...] | None:
        """The datapoints of a pass with scores but no debug outputs in any readable page (a writer that crashed,
        a page lost or refused), in index order; None while its index is still being built or when the pass has no
        debug outputs at all (then every datapoint lacks them, and saying so per datapoint says nothing)."""
        key, files = self._files(key)
        if not files.debug:
            return None
        index = self._debug_index(files)
        if not index.status().ready:
            return None
        try:
            n = self.scores(key).num_datapoints
        except ScoresError:
            return None
        return index.missing(n)

    def wait_for_index(self, key: PassLike, timeout: float | None = None) -> bool:
        """Block until the pass's page index is complete; False on timeout."""
        _, files = self._files(key)
        return not files.debug or self._debug_index(files).wait(timeout)

    def meta_table(self, key: PassLike) -> dict[str, list[Any]]:
        """Scalar meta_info columns for all datapoints (None where unknown); ``{}`` without debug outputs or meta.

        Never waits for indexing beyond ``index_wait_s``: columns fill in as pages are indexed."""
        key, files = self._files(key)
        if not files.debug:
            return {}
        index = self._debug_index(files)
        if self._index_wait_s:
            index.wait(self._index_wait_s)
        meta = index.meta()
        if not meta:
            return {}
        try:
            n = self.scores(key).num_datapoints
        except ScoresError:
            n = max(meta) + 1
        columns: dict[str, list[Any]] = {}
        for idx, fields in meta.items():
            if not 0 <= idx < n:
                continue
            for name, value in fields.items():
                column = columns.get(name)
                if column is None:  # not setdefault: its default list would be built for every field of every row
                    column = columns[name] = [None] * n
                column[idx] = value
        return columns

    def debugger_info(self, key: PassLike) -> dict[str, Any]:
        """``index.json``'s ``debuggers`` object of a pass: per debugger its class, kinds and, from captures that
        record them, its hooked layer and forward position (health checks); ``{}`` without debug outputs or index."""
        _, files = self._files(key)
        if not files.debug:
            return {}
        return dict(self._debug_index(files).debuggers)

    def datapoint(self, key: PassLike, idx: int) -> DatapointRecord:
        """Everything saved about one datapoint of one pass. What cannot be read is listed in ``record.problems``.

        Raises :class:`NotFoundError` only for an unknown run or pass or an index outside the scores.
        """
        key, files = self._files(key)
        idx = int(idx)
        problems: list[str] = []
        scores: dict[str, float] = {}
        try:
            s = self.scores(key)
        except ScoresError as exc:
            problems.append(str(exc))
        else:
            if not 0 <= idx < s.num_datapoints:
                raise NotFoundError(f"{key}: no datapoint {idx} (it has {s.num_datapoints})")
            scores = {m: float(a[idx]) for m, a in s.per_datapoint.items()}
            problems.extend(p for p in s.problems if f"datapoint {idx}:" in p)
        value: Any = None
        debuggers: Mapping[str, Any] = {}
        if files.debug:
            index = self._debug_index(files)
            value = self._debug_value(index, idx, problems)
            debuggers = index.debuggers
            note = index.writing(missing=index.page_of(idx) is None)
            if note:
                problems.append(note)
        elif files.debug.exists:
            problems.append(f"{files.source.url(files.debug_dir)}: holds no pages yet; this pass is still being "
                            "written, or its debuggers saved nothing")
        record = build_record(key, idx, scores, value, debuggers, problems, self.viewer_hints(key))
        if self._dataset is not None:
            record = with_dataset(record, self._dataset[1], self._dataset[0])
        return record

    def pass_pages(self, key: PassLike, wait_s: float | None = None) -> PassPages:
        """The debug pages of a pass in datapoint order and the datapoints each is read for: what
        :mod:`~eval_viewer.backend.bulk` needs to read the pass whole (``bulk.iter_datapoints(store.pass_pages(k))``).
        Waits up to ``wait_s`` seconds (None: as long as it takes) for the page index; pages still unindexed then are
        left out and a problem says so."""
        key, files = self._files(key)
        if not files.debug:
            return PassPages(key, files.source, (), self._trust)
        index = self._debug_index(files)
        problems: list[str] = []
        if not index.wait(wait_s):
            status = index.status()
            problems.append(f"{index.name}: still indexing pages ({status.pages_indexed}/{status.pages}); the pages "
                            "not indexed yet are left out")
        try:
            count = self.scores(key).num_datapoints
        except ScoresError as exc:
            problems.append(str(exc))
            count = index.status().datapoints
        by_page: dict[str, list[int]] = {}
        for idx in range(count):
            page = index.page_of(idx)
            if page is not None:
                by_page.setdefault(page, []).append(idx)
        pages = tuple((index.page_path(name), tuple(indices))
                      for name, indices in sorted(by_page.items(), key=lambda item: item[1][0]))
        return PassPages(key, files.source, pages, self._trust, dict(index.debuggers), self.viewer_hints(key),
                         tuple(problems) + index.problems, self._skeletons,
                         {index.page_path(name): index.page_id(name) for name in by_page})

    def viewer_hints(self, key: PassLike) -> ViewerHints:
        """What the pass's viewer sidecars declare (``RUN/viewer.json``, then the pass folder's, then the one beside
        the pages, each key winning over the one before). Read once per listing version: a sidecar is small and a
        request must not touch storage for it every time."""
        key, files = self._files(key)
        ident = f"{files.source.identity}/{files.folder}"
        version = self.version
        with self._lock:
            cached = self._hints.get(ident)
        if cached is not None and cached[0] == version:
            return cached[1]
        folders = [files.folder, files.debug_dir]
        parent, _, base = files.folder.rpartition("/")
        if parse_epoch_dir(base) is not None:
            folders.insert(0, parent)
        hints = ViewerHints()
        for folder in folders:
            path = join(folder, VIEWER_FILE) if folder else VIEWER_FILE
            try:
                data = files.source.read_bytes(path)
            except FileNotFoundError:
                continue
            except Exception as exc:  # noqa: BLE001 - OSError locally, anything from remote storage
                hints = hints.merged(ViewerHints(problems=(f"{files.source.url(path)}: cannot read ({exc})",)))
                continue
            try:
                payload = json.loads(data)
            except ValueError as exc:
                hints = hints.merged(ViewerHints(problems=(f"{files.source.url(path)}: not JSON ({exc})",)))
                continue
            hints = hints.merged(parse_viewer(payload, files.source.url(path)))
        with self._lock:
            self._hints[ident] = (version, hints)
        return hints

    def _debug_value(self, index: DebugIndex, idx: int, problems: list[str]) -> Any:
        page = index.page_of(idx)
        if page is None and not index.wait(self._index_wait_s):
            status = index.status()
            problems.append(
                f"{index.name}: still indexing pages ({status.pages_indexed}/{status.pages}); "
                f"debug outputs of datapoint {idx} will appear when it is done"
            )
            return None
        page = page or index.page_of(idx)
        if page is None:
            broken = index.problems
            if broken:
                problems.append(f"datapoint {idx}: not found in the readable pages of {index.name}")
                problems.extend(broken)
            return None
        try:
            return read_datapoint(index.source, index.page_path(page), idx, trust=self._trust, lru=self._lru,
                                  skeletons=self._skeletons, submit=self._submit)
        except KeyError:
            problems.append(f"{index.source.url(index.page_path(page))}: does not hold datapoint {idx} as its index "
                            "says; re-indexing")
            index.rescan_page(page)
        except PageError as exc:
            problems.append(str(exc))
        return None

    def clear_cache(self) -> None:
        """Forget parsed scores, pages and datapoints (the next reads go to storage); indexes are kept."""
        self._lru.clear()

    def close(self) -> None:
        """Stop background work and drop every cache. The store is not usable afterwards."""
        self._closed = True
        self._refresher.stop()
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for index in self._indexes.values():
                index.stop()
        self._lru.clear()

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
