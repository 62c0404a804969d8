"""Pass-wide jobs on every core: one task per page, run in worker processes.

A pass-wide job (the health summary, the layer × head comparison) reads every page of a pass. Reading is one
sequential read per page, but building a page's datapoints and measuring its arrays hold the interpreter lock, so in
one process the job uses one core however many the machine has. Here each task reads *and measures* its page (or a
page of pass a and the pages of b it needs) in a worker process and sends back only its small per-datapoint results:
the pages never cross a process boundary, and every page is read through the same allow-listed, budgeted reader as in
the server (its datapoints built from the page's cached columns, :mod:`.columns`, over the page's bytes mapped into
the worker's memory, :func:`~.bulk.map_pages`).

Each worker reads its page and then computes, so left alone the workers fall into step and the disk idles while they
all compute: :func:`run_tasks` also runs a thread in the caller that reads the next tasks' pages into the OS cache
(``warm``), a few tasks ahead, so the workers' reads come from memory. Measured on 2 cores (``benchmarks/RESULTS.md``,
Health): the health summary of a 886 MiB pass in about 0.64 s, 98-107 % of the rate of a plain read of its pages.

The workers are joblib's (``joblib.Parallel`` on its loky backend, the library the pages are written with): kept
alive between jobs, since the app runs one job after another and a job should not pay a process start each time;
started fresh, so none of the server's threads or the locks they hold are copied into them and a user's script is
never run again in them (no ``if __name__ == "__main__"`` guard needed). The server starts them ahead (:func:`prepare`)
when a pass large enough for them is opened. Each task lowers its worker's priority (``nice``), so the app's requests
keep the cores first. A task's exception reaches the caller as it would in-process; a worker that dies (killed for
memory) stops the pool, and the remaining tasks then run in-process, with a warning.

Smaller passes (under :data:`MIN_BYTES` of pages, or a single page) and sources other processes cannot see
(``memory://``) run in-process, one task ahead in a helper thread (:func:`~.bulk.read_ahead`).
``EVAL_VIEWER_JOB_WORKERS`` sets the number of workers (``0``: always in-process).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

import joblib
import numpy as np

from eval_viewer.backend.bulk import PassPages, map_pages, read_ahead

__all__ = ["job_workers", "workers_for", "page_parts", "prepare", "run_tasks", "MIN_BYTES", "MAX_WORKERS", "ENV",
           "TASK_BYTES", "columns_size"]

logger = logging.getLogger(__name__)

R = TypeVar("R")

ENV = "EVAL_VIEWER_JOB_WORKERS"
MIN_BYTES = 256 << 20
"""Passes with fewer page bytes than this run in-process. Starting the workers costs 0.5-2 s (measured on 2 cores,
idle to loaded) and a page costs 0.1 s (health) to 0.5 s (comparison) of CPU per 100 MB, so a second core pays for
their start from a few hundred MB on; once started they stay for the next job (loky keeps idle workers for 5
minutes)."""
MAX_WORKERS = 8
WARM_AHEAD = 2
"""How many tasks past the running ones have their pages read into the OS cache ahead (:func:`run_tasks`)."""
_NICE = 5
"""How much lower than the caller's priority a worker runs."""


def job_workers(*passes: PassPages) -> int:
    """How many worker processes a job over ``passes`` uses: 0 (in-process) for small passes, a single page, or a
    source other processes cannot see; else one per core, at most one per page and :data:`MAX_WORKERS`."""
    pages = sum(len(p.pages) for p in passes)
    shared = all(p.source.process_shared for p in passes)

    def sizes() -> Iterator[int]:
        for p in passes:
            for rel, _ in p.pages:
                stat = p.source.stat(rel)
                yield stat.size if stat is not None else 0

    return workers_for(pages, sizes(), shared)


def workers_for(pages: int, sizes: Iterable[int], shared: bool) -> int:
    """:func:`job_workers` for ``pages`` pages of the given byte ``sizes`` (read lazily: it stops at
    :data:`MIN_BYTES`), on a source other processes can (``shared``) or cannot see."""
    chosen = os.environ.get(ENV, "").strip()
    if chosen:
        try:
            wanted = max(0, int(chosen))
        except ValueError:
            logger.warning("%s=%r is not a number of workers; using the default", ENV, chosen)
        else:
            return min(wanted, pages, MAX_WORKERS) if shared else 0
    if pages < 2 or not shared:
        return 0
    total = 0
    for size in sizes:
        total += size
        if total >= MIN_BYTES:
            cores = joblib.cpu_count()  # (affinity and container limits respected)
            return min(cores, pages, MAX_WORKERS) if cores > 1 else 0
    return 0


TASK_BYTES = 32 << 20
"""About how many page bytes one task of a job on workers reads (:func:`page_parts`)."""


def page_parts(pages: PassPages, workers: int) -> list[tuple[str, tuple[int, ...] | None]]:
    """The tasks of a job over ``pages`` on ``workers`` processes: ``(page, its datapoints to read, None: all)``, in
    order. On workers, a page whose layout is cached as columns (:mod:`.columns`) is split into parts of about
    :data:`TASK_BYTES`: a part reads only its own bytes, so the workers start computing after a short first read and
    finish together instead of one waiting for the other's last page (measured on 2 cores, the health summary of 9
    pages of 100 MB from a cold cache, medians of 5: 0.65 s against 0.80 s whole, and 0.67 against 0.68 in a second
    run; from memory, the extra tasks cost 0.04 s). Other pages stay whole: each part would parse the whole page."""
    parts: list[tuple[str, tuple[int, ...] | None]] = []
    for rel, indices in pages.pages:
        count = 1
        if workers > 0 and len(indices) > 1:
            size = columns_size(pages, rel)
            if size is not None:
                count = min(len(indices), max(1, round(size / TASK_BYTES)))
        if count == 1:
            parts.append((rel, None))
            continue
        for chunk in np.array_split(np.asarray(indices), count):
            parts.append((rel, tuple(chunk.tolist())))
    return parts


def columns_size(pages: PassPages, rel: str) -> int | None:
    """The size of page ``rel`` when its layout is cached as columns (a part of it can be read alone), else None."""
    if pages.cache is None or rel not in pages.ids:
        return None
    stat = pages.source.stat(rel)
    if stat is None or not pages.cache.columns_path(pages.ids[rel], stat).is_file():
        return None
    return stat.size


_PREPARED: set[int] = set()
_PREPARE_LOCK = threading.Lock()


def prepare(count: int) -> Future[None] | None:
    """Start ``count`` workers now, in the background, so the first pass-wide job does not wait for them (1-2 s on 2
    cores: processes started, numpy and the job modules imported, the comparison's compiled loop loaded). The
    server does this when a pass large enough for workers is opened (``LogStore(prepare_workers=True)``); loky lets
    idle workers go after 5 minutes. Once per process and count (None when already done); the future resolves when
    they are ready or could not start; never fails."""
    if count < 1:
        return None
    with _PREPARE_LOCK:
        if count in _PREPARED:
            return None
        _PREPARED.add(count)
    ready: Future[None] = Future()

    def start() -> None:
        try:
            joblib.Parallel(n_jobs=count, backend="loky")(joblib.delayed(_ready)() for _ in range(count))
        except Exception as exc:  # noqa: BLE001 - a job started later starts its workers itself
            logger.info("could not start the job workers ahead (%s)", exc)
        finally:
            ready.set_result(None)

    threading.Thread(target=start, name="eval-viewer-prepare-workers", daemon=True).start()
    return ready


def _ready() -> int:
    """What a prepared worker does first: import what every task needs, and load the comparison's compiled loop."""
    import eval_viewer.backend.health_summary  # noqa: F401
    import eval_viewer.backend.summary  # noqa: F401
    from eval_viewer.backend.divergence import warm_compiled

    warm_compiled()
    return os.getpid()


def _niced(task: Callable[[], R], priority: int) -> R:
    """``task()`` at ``priority`` (absolute, so a reused worker is not lowered again and again), in a process that
    maps its pages (:func:`~.bulk.map_pages`)."""
    map_pages()
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) < priority:
            os.setpriority(os.PRIO_PROCESS, 0, priority)
    except (AttributeError, OSError):  # pragma: no cover - not POSIX, or not allowed: the caller's priority
        pass
    return task()


def run_tasks(tasks: Sequence[Callable[[], R]], workers: int, stop: threading.Event | None = None,
              warm: Sequence[Callable[[], None] | None] | None = None) -> Iterator[R]:
    """Each task's result, in order. ``tasks`` must be picklable (``functools.partial`` of a module-level function
    with plain arguments) when ``workers`` > 0; they run ``workers`` at a time in worker processes, a few ahead of
    the caller. With ``workers`` 0 they run in-process, one ahead in a helper thread. Stops early when ``stop`` is
    set (tasks already running finish; their results are dropped).

    ``warm[i]``, when given (and not None), reads task ``i``'s pages into the OS cache (:meth:`~.sources.Source.warm`).
    A thread of
    the caller runs them in order, at most :data:`WARM_AHEAD` tasks past the last finished one, so the disk reads
    the next pages while the workers compute: without it each worker reads its page and then computes, the workers
    fall into step, and the disk idles while both compute."""
    done = 0
    if stop is not None and stop.is_set():
        return
    warmer = _Warmer(warm, max(workers, 1) + WARM_AHEAD) if warm else None
    try:
        for result in _run(tasks, workers, stop):
            done += 1
            if warmer is not None:
                warmer.advance(done)
            yield result
    finally:
        if warmer is not None:
            warmer.close()


class _Warmer:
    """Runs the ``warm`` calls of :func:`run_tasks` in a thread, never more than ``depth`` past the tasks done."""

    def __init__(self, calls: Sequence[Callable[[], None] | None], depth: int) -> None:
        self._calls, self._depth, self._limit, self._closed = calls, depth, depth, False
        self._cond = threading.Condition()
        threading.Thread(target=self._loop, name="eval-viewer-warm", daemon=True).start()

    def _loop(self) -> None:
        for i, call in enumerate(self._calls):
            with self._cond:
                while not self._closed and i >= self._limit:
                    self._cond.wait()
                if self._closed:
                    return
            if call is None:
                continue
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - warming only saves time; the task reports real problems
                logger.debug("warming a page failed: %s", exc)

    def advance(self, done: int) -> None:
        with self._cond:
            self._limit = done + self._depth
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()


def _run(tasks: Sequence[Callable[[], R]], workers: int, stop: threading.Event | None) -> Iterator[R]:
    done = 0
    if workers > 0:
        try:
            priority = os.getpriority(os.PRIO_PROCESS, 0) + _NICE
        except (AttributeError, OSError):  # pragma: no cover - not POSIX
            priority = 0
        results = joblib.Parallel(n_jobs=workers, backend="loky", return_as="generator", pre_dispatch="n_jobs + 1")(
            joblib.delayed(_niced)(task, priority) for task in tasks)
        try:
            for result in results:
                if stop is not None and stop.is_set():
                    return
                done += 1
                yield result
            return
        except BrokenProcessPool:
            logger.warning("a worker process of a pass-wide job died (out of memory?); the remaining %d pages are "
                           "read in-process", len(tasks) - done)
        finally:
            results.close()
    for result in read_ahead(tasks[done:], prefetch=1, stop=stop):
        yield result  # type: ignore[misc]  # (tasks return their own errors; read_ahead passes them on)
