"""Pass-wide work done once in the background: the comparison's layer x head summary and the health summary.

Both read a whole pass (or two) and take seconds to minutes, so a request never computes one: it starts (or joins) a
job keyed by a hash of the files it reads and the options, polls :meth:`BackgroundJobs.status` for a progress bar, and
reads the result when it is done. A result is kept in memory and on disk under ``<cache dir>/<folder>/<key>.npz``,
so a restart or a second worker finds it at once; a failure is kept as the message the user sees, and the next
:meth:`BackgroundJobs.begin` of that key tries again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from eval_viewer.errors import ViewerError
from eval_viewer.log_format import atomic_write_bytes

__all__ = ["BackgroundJobs", "JobStatus", "Progress"]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""``progress(done, total)``: what a job's work reports as it goes."""


class _Result(Protocol):
    def to_bytes(self) -> bytes: ...


S = TypeVar("S", bound=_Result)


@dataclass(frozen=True)
class JobStatus(Generic[S]):
    """Where one job is: ``done`` of ``total`` datapoints, and once ``finished`` its ``summary`` or its ``error``;
    ``cached`` when the result came from disk."""

    done: int
    total: int
    finished: bool
    error: str | None = None
    summary: S | None = field(default=None, repr=False)
    cached: bool = False


class _Job(Generic[S]):
    def __init__(self) -> None:
        self.done = 0
        self.total = 0
        self.error: str | None = None
        self.summary: S | None = None
        self.cached = False
        self.finished = threading.Event()


class BackgroundJobs(Generic[S]):
    """Jobs of one kind for one store, one at a time (they read pages: running them side by side would only make the
    page cache thrash), each in a daemon thread (jobs are rare and long: nothing to shut down with the server).

    A subclass names its cache ``folder`` and what it computes (``what``, for messages), and says how to read a
    cached result back (:meth:`decode`) and how many datapoints a cached one covers (:meth:`size`)."""

    folder: str
    what: str

    def __init__(self, store: Any, cache_dir: str | Path | None = None) -> None:
        self._store = store
        base = cache_dir if cache_dir is not None else getattr(store, "cache_dir", None)
        self._dir = Path(base) / self.folder if base is not None else None
        self._jobs: dict[str, _Job[S]] = {}
        self._aliases: dict[str, tuple[str, Callable[[S], S]]] = {}
        self._derived: dict[str, tuple[S, S]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._one_at_a_time = threading.Lock()

    def decode(self, data: bytes) -> S:
        raise NotImplementedError

    def size(self, summary: S) -> int:
        raise NotImplementedError

    def begin(self, key: str, work: Callable[[Progress, threading.Event], S], failure: str,
              total: Callable[[], int] | None = None) -> str:
        """Start (or join) job ``key``, which runs ``work(progress, stop)`` unless its result is cached; ``failure``
        starts the message of an unexpected error; ``total()``, when given, is the size shown while the job waits for
        another to finish. Returns ``key``."""
        with self._lock:
            if key in self._jobs and not self._jobs[key].error:
                return key
            job = self._jobs[key] = _Job()
        cached = self._load(key)
        if cached is not None:
            job.summary, job.cached = cached, True
            job.done = job.total = self.size(cached)
            job.finished.set()
            return key
        threading.Thread(target=self._run, args=(job, key, work, failure, total), name=f"eval-viewer-{self.folder}",
                         daemon=True).start()
        return key

    def alias(self, key: str, base: str, derive: Callable[[S], S]) -> str:
        """Make ``key`` a view of job ``base`` whose result is ``derive(base's result)``: a cheap re-reading of a
        finished result (new flag thresholds over the same measures) instead of a second job. Returns ``key``."""
        with self._lock:
            self._aliases[key] = (base, derive)
        return key

    def status(self, key: str) -> JobStatus[S] | None:
        base, derive = self._aliases.get(key, (key, None))
        job = self._jobs.get(base)
        if job is None:
            return None
        summary = job.summary
        if summary is not None and derive is not None:
            derived = self._derived.get(key)
            if derived is None or derived[0] is not summary:  # derived once per result (views ask on every request)
                derived = self._derived[key] = (summary, derive(summary))
            summary = derived[1]
        return JobStatus(job.done, job.total, job.finished.is_set(), job.error, summary, job.cached)

    def wait(self, key: str, timeout: float | None = None) -> JobStatus[S] | None:
        job = self._jobs.get(self._aliases.get(key, (key, None))[0])
        if job is not None:
            job.finished.wait(timeout)
        return self.status(key)

    def result(self, key: str, timeout: float | None = None) -> S:
        """Wait for job ``key``: its result, or the :class:`ViewerError` that stopped it."""
        status = self.wait(key, timeout)
        if status is None or not status.finished:
            raise ViewerError(f"The {self.what} did not finish in time")
        if status.error:
            raise ViewerError(status.error)
        assert status.summary is not None
        return status.summary

    def close(self, timeout: float = 10.0) -> None:
        """Stop running jobs (they end at the next datapoint) and wait for them."""
        self._stop.set()
        for job in list(self._jobs.values()):
            job.finished.wait(timeout)

    def _run(self, job: _Job[S], key: str, work: Callable[[Progress, threading.Event], S], failure: str,
             total: Callable[[], int] | None) -> None:
        def progress(done: int, of: int) -> None:
            job.done, job.total = done, of

        try:
            if total is not None:
                job.total = total()
            with self._one_at_a_time:
                summary = work(progress, self._stop)
        except ViewerError as exc:
            job.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a background job reports, it never kills the server
            logger.exception("%s", failure)
            job.error = f"{failure}: {type(exc).__name__}: {exc}"
        else:
            job.summary = summary
            self._save(key, summary)
        finally:
            job.finished.set()

    def _path(self, key: str) -> Path | None:
        return None if self._dir is None else self._dir / f"{key}.npz"

    def _load(self, key: str) -> S | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            return self.decode(path.read_bytes())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("Ignoring the cached %s %s (%s)", self.what, path, exc)
            return None

    def _save(self, key: str, summary: S) -> None:
        path = self._path(key)
        if path is None:
            return
        try:
            atomic_write_bytes(path, summary.to_bytes())
        except OSError as exc:
            logger.warning("Cannot cache the %s in %s (%s)", self.what, path, exc)
