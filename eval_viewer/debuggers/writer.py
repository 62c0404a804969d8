"""The background page writer: turns per-datapoint records into size-limited, atomically written pages plus an index.

Why a thread of its own: pickling and fsyncing pages takes far longer than an eval step; the eval loop only hands over
a closure and its byte count, and waits only while ``max_queue_bytes`` are already waiting (a bounded queue, in
bytes, so memory stays bounded whatever the batch size).

Fixes of the reference design's defects, in one place:

* a page is written to a temp file in the target folder, fsynced and renamed, so a reader never sees half a page;
* pages of an epoch go into *that* epoch's folder (given to :meth:`PageWriter.begin`) or, when the folder is only
  known at the end, into a private staging folder that :meth:`PageWriter.finish` moves into place; never into the
  folder of the previous epoch;
* every error of the worker (a full disk, a bug in a conversion) is kept and raised as
  :class:`~eval_viewer.errors.CaptureError` naming the page from :meth:`~PageWriter.submit` and
  :meth:`~PageWriter.finish`; the worker never dies on an error and ``finish`` never waits on a dead thread;
* ``index.json`` (see :mod:`eval_viewer.log_format`) is rewritten atomically after every page, so a crashed run is
  still readable without opening every page.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval_viewer import log_format as lf
from eval_viewer.debuggers import staging
from eval_viewer.debuggers.batching import nbytes
from eval_viewer.debuggers.claims import claim_folder
from eval_viewer.debuggers.files import atomic_dump, move_atomic
from eval_viewer.errors import CaptureError

__all__ = ["Record", "WriterStats", "PageWriter"]

logger = logging.getLogger(__name__)

_STOP = "stop"


@dataclass(frozen=True)
class Record:
    """One datapoint's capture: ``{debugger_name: output}`` (numpy, no torch) and its scalar ``meta_info`` fields."""

    idx: int
    outputs: Mapping[str, Any]
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WriterStats:
    pages: int
    bytes_written: int
    write_seconds: float
    """Time spent serialising and fsyncing pages (the writer's busy time on disk work)."""
    max_stall_s: float
    """Longest time one :meth:`PageWriter.submit` waited for room in the queue."""
    total_stall_s: float


class _Epoch:
    """State of one epoch's capture; touched by the worker only, except ``error`` (read under the writer's lock)."""

    def __init__(self, output_dir: Path | None, staging_root: Path | None) -> None:
        self.output_dir = output_dir
        self.staging_root = staging_root
        self.staging: Path | None = None
        self.error: CaptureError | None = None
        self.page: dict[int, Mapping[str, Any]] = {}
        self.page_bytes = 0
        self.next_page = 0
        self.pages: dict[str, dict[str, Any]] = {}
        self.paths: dict[str, Path] = {}
        self.meta: dict[str, Mapping[str, Any]] = {}
        self.seen: set[int] = set()
        self.claimed: set[Path] = set()
        self.duplicates = 0

    def spill_dir(self) -> Path:
        """Where full pages go before the end of the epoch: the output folder, else a lazily made staging folder
        beside the log (:mod:`.staging`)."""
        if self.output_dir is not None:
            return self.output_dir
        if self.staging is None:
            self.staging = staging.new_staging_folder(self.staging_root or Path.cwd())
        return self.staging


class PageWriter:
    """Writes pages of ``{datapoint_idx: {debugger_name: output}}`` of at most ``page_size_bytes`` counted bytes.

    A page closes before a record that would push it past the limit (one record larger than the limit gets a page of
    its own). Each datapoint is written once per epoch: a repeated idx (DistributedSampler pads with repeats) is
    skipped with a warning. Usage: ``begin(dir | None)``, ``submit(...)`` any number of times, ``finish(dir)``.
    """

    def __init__(
        self,
        *,
        page_size_bytes: int,
        max_queue_bytes: int,
        rank: int | None = None,
        debuggers: Mapping[str, Mapping[str, Any]] | None = None,
        staging_root: str | os.PathLike[str] | None = None,
    ) -> None:
        if page_size_bytes <= 0 or max_queue_bytes <= 0:
            raise CaptureError(f"page size and queue bound must be positive, got {page_size_bytes}, {max_queue_bytes}")
        self.page_size_bytes = int(page_size_bytes)
        self.max_queue_bytes = int(max_queue_bytes)
        self.rank = rank
        self.debuggers = {name: dict(info) for name, info in (debuggers or {}).items()}
        self.staging_root = Path(staging_root) if staging_root is not None else None
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._queued_bytes = 0
        self._epoch: _Epoch | None = None
        self._last_target: Path | None = None
        """The folder of the last finished epoch: its run holds the next epoch's staging folder."""
        self._recovered: set[Path] = set()
        self._pages = 0
        self._bytes_written = 0
        self._write_s = 0.0
        self._max_stall = 0.0
        self._total_stall = 0.0
        self._thread = threading.Thread(target=self._run, name="eval-viewer-page-writer", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- eval-loop side

    @property
    def epoch_open(self) -> bool:
        return self._epoch is not None

    @property
    def epoch_dir(self) -> Path | None:
        """The folder the open epoch writes into directly, or None while it stages (or no epoch is open)."""
        return self._epoch.output_dir if self._epoch is not None else None

    @property
    def stats(self) -> WriterStats:
        return WriterStats(self._pages, self._bytes_written, self._write_s, self._max_stall, self._total_stall)

    def check(self) -> None:
        """Raise the open epoch's :class:`CaptureError` if one of its pages failed (cheap; for the eval loop)."""
        if self._epoch is not None:
            self._raise_if_failed(self._epoch)

    def begin(self, output_dir: str | os.PathLike[str] | None = None) -> None:
        """Start an epoch writing into ``output_dir`` (made if missing), or staging when None; discards an open one."""
        if self._epoch is not None:
            self.discard()
        target = Path(output_dir) if output_dir is not None else None
        if target is not None:
            try:
                target.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CaptureError(f"could not create the debug folder {target}: {exc.strerror or exc}") from exc
        root = staging.staging_root(self.staging_root, self._last_target)
        if root not in self._recovered:  # once per staging root: report what a crashed run left there
            self._recovered.add(root)
            staging.recover(root)
        self._epoch = _Epoch(target, root)

    def submit(self, work: Callable[[], Iterable[Record]], size: int) -> float:
        """Queue ``work`` (run on the writer thread, yielding records) holding ``size`` bytes; returns the stall.

        Waits only while other work holding ``max_queue_bytes`` is queued (work larger than the bound waits for an
        empty queue). Raises the epoch's :class:`CaptureError` if a page failed.
        """
        epoch = self._require_epoch()
        started = time.perf_counter()
        with self._cond:
            while True:
                self._raise_if_failed(epoch)
                if self._queued_bytes == 0 or self._queued_bytes + size <= self.max_queue_bytes:
                    break
                self._cond.wait(0.5)
            self._queued_bytes += size
        stall = time.perf_counter() - started
        self._max_stall = max(self._max_stall, stall)
        self._total_stall += stall
        self._queue.put(("work", epoch, work, size))
        return stall

    def finish(self, output_dir: str | os.PathLike[str] | None = None) -> list[Path]:
        """Wait for the queue, write the last page and the index into the epoch's folder; the page paths, in order.

        ``output_dir`` is required when the epoch stages and must match the folder given to :meth:`begin` otherwise.
        Raises :class:`CaptureError` if any page of the epoch failed (the message names the page and the cause).
        """
        epoch = self._require_epoch()
        target = Path(output_dir) if output_dir is not None else epoch.output_dir
        if target is None:
            raise CaptureError("save_all needs an output folder: this epoch was started without one")
        if epoch.output_dir is not None and target.resolve() != epoch.output_dir.resolve():
            raise CaptureError(
                f"this epoch writes its pages into {epoch.output_dir}; refusing to finish it in {target} "
                "(pages of one epoch must not land in another epoch's folder)"
            )
        self._epoch = None
        return self._call("finish", epoch, target)

    def discard(self) -> None:
        """Drop the open epoch's unsaved records (with a warning naming how many) and its staging folder."""
        epoch, self._epoch = self._epoch, None
        if epoch is not None:
            self._call("discard", epoch)

    def close(self) -> None:
        """Stop the worker (an open epoch's unsaved records are discarded with a warning)."""
        if self._epoch is not None:
            self.discard()
        if self._thread.is_alive():
            self._queue.put((_STOP,))
            self._thread.join(timeout=60)

    def _require_epoch(self) -> _Epoch:
        if self._epoch is None:
            raise CaptureError("no capture epoch is open: call begin() (SequentialDebugger: enable it) first")
        if not self._thread.is_alive():
            raise CaptureError("the page writer is closed")
        return self._epoch

    def _raise_if_failed(self, epoch: _Epoch) -> None:
        if epoch.error is not None:
            raise epoch.error
        if not self._thread.is_alive():
            raise CaptureError("the page writer thread has stopped; no further pages can be written")

    def _call(self, kind: str, epoch: _Epoch, *args: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put((kind, epoch, future, *args))
        while True:
            try:
                return future.result(timeout=1.0)
            except concurrent.futures.TimeoutError:
                if not self._thread.is_alive():
                    raise CaptureError("the page writer thread has stopped before finishing the epoch") from None

    # ----------------------------------------------------------------- writer thread

    def _run(self) -> None:
        while True:
            command = self._queue.get()
            kind = command[0]
            if kind == _STOP:
                return
            try:
                if kind == "work":
                    self._do_work(command[1], command[2], command[3])
                else:
                    self._do_call(kind, command[1], command[2], *command[3:])
            except BaseException as exc:  # the worker must outlive anything; the error reaches the user instead
                logger.exception("Unexpected error in the page writer")
                command[1].error = command[1].error or CaptureError(f"page writer failed: {exc!r}")

    def _do_call(self, kind: str, epoch: _Epoch, future: concurrent.futures.Future[Any], *args: Any) -> None:
        try:
            result = self._finish(epoch, *args) if kind == "finish" else self._discard(epoch)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def _do_work(self, epoch: _Epoch, work: Callable[[], Iterable[Record]], size: int) -> None:
        try:
            if epoch.error is None:
                try:
                    for record in work():
                        self._add(epoch, record)
                except CaptureError as exc:
                    epoch.error = exc
                except Exception as exc:
                    page = epoch.spill_dir() / lf.page_name(epoch.next_page, self.rank)
                    epoch.error = CaptureError(f"could not prepare datapoints for debug page {page}: {exc!r}")
                    epoch.error.__cause__ = exc
        finally:
            with self._cond:
                self._queued_bytes -= size
                self._cond.notify_all()

    def _add(self, epoch: _Epoch, record: Record) -> None:
        if record.idx in epoch.seen:
            epoch.duplicates += 1
            if epoch.duplicates == 1:
                logger.warning("Datapoint %d was captured twice in one epoch; keeping the first capture", record.idx)
            return
        size = nbytes(record.outputs)
        if epoch.page and epoch.page_bytes + size > self.page_size_bytes:
            self._write_page(epoch, epoch.spill_dir())
        epoch.page[record.idx] = dict(record.outputs)
        epoch.page_bytes += size
        epoch.seen.add(record.idx)
        epoch.meta[str(record.idx)] = dict(record.meta)
        if epoch.page_bytes >= self.page_size_bytes:
            self._write_page(epoch, epoch.spill_dir())

    def _write_page(self, epoch: _Epoch, folder: Path) -> None:
        name = lf.page_name(epoch.next_page, self.rank)
        path = folder / name
        started = time.perf_counter()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._claim(epoch, folder)
            size = atomic_dump(path, epoch.page)
        except Exception as exc:
            raise CaptureError(f"could not write debug page {path}: {exc}") from exc
        self._write_s += time.perf_counter() - started
        self._pages += 1
        self._bytes_written += size
        epoch.pages[name] = {"indices": list(epoch.page), "bytes": size}
        epoch.paths[name] = path
        epoch.next_page += 1
        epoch.page = {}
        epoch.page_bytes = 0
        self._write_index(epoch, folder)

    def _claim(self, epoch: _Epoch, folder: Path) -> None:
        """Make sure no other live process writes this rank's pages into ``folder`` (staging is private)."""
        if folder != epoch.staging and folder not in epoch.claimed:
            claim_folder(folder, self.rank)
            epoch.claimed.add(folder)
            staging.clean_temp_files(folder, self.rank)  # ours to clean now: no live process writes this rank here

    def _write_index(self, epoch: _Epoch, folder: Path) -> None:
        payload = {
            lf.INDEX_VERSION: lf.FORMAT_VERSION,
            lf.INDEX_RANK: self.rank,
            lf.INDEX_PAGES: epoch.pages,
            lf.INDEX_DEBUGGERS: self.debuggers,
            lf.INDEX_META: epoch.meta,
        }
        path = folder / lf.index_name(self.rank)
        try:
            lf.atomic_write_text(path, json.dumps(payload, allow_nan=False))
        except Exception as exc:
            raise CaptureError(f"could not write debug index {path}: {exc}") from exc

    def _finish(self, epoch: _Epoch, target: Path) -> list[Path]:
        if epoch.error is not None:
            where = epoch.staging or epoch.output_dir
            kept = f" (pages written before the failure are in {where})" if epoch.paths else ""
            raise CaptureError(f"{epoch.error}{kept}") from epoch.error
        target.mkdir(parents=True, exist_ok=True)
        self._claim(epoch, target)
        for name, path in list(epoch.paths.items()):
            if path.parent != target:
                try:
                    move_atomic(path, target / name)
                except OSError as exc:
                    raise CaptureError(f"could not move debug page {path} into {target}: {exc}") from exc
                epoch.paths[name] = target / name
        if epoch.page:
            self._write_page(epoch, target)  # also rewrites the index, now that every page is in place
        else:
            self._write_index(epoch, target)
        self._remove_stale_pages(target, set(epoch.paths))
        if epoch.staging is not None:
            shutil.rmtree(epoch.staging, ignore_errors=True)
            try:
                epoch.staging.parent.rmdir()  # .eval_viewer_staging, once no capture stages there
            except OSError:
                pass
        self._last_target = target
        if epoch.duplicates:
            logger.warning("%d repeated datapoint captures were skipped in %s", epoch.duplicates, target)
        return [epoch.paths[name] for name in epoch.paths]

    def _remove_stale_pages(self, folder: Path, keep: set[str]) -> None:
        """Pages of this rank left by an earlier run of the same epoch would mix two runs in one folder."""
        for path in folder.iterdir():
            parsed = lf.parse_page_name(path.name)
            if parsed is not None and parsed[0] == self.rank and path.name not in keep:
                logger.warning("Removing %s: left by an earlier capture of this epoch, not in the new index", path)
                path.unlink(missing_ok=True)

    def _discard(self, epoch: _Epoch) -> None:
        unsaved = len(epoch.page) + (sum(len(p["indices"]) for p in epoch.pages.values()) if epoch.staging else 0)
        if unsaved:
            logger.warning("Discarding the unsaved capture of %d datapoints (save_all was not called)", unsaved)
        if epoch.staging is not None:
            shutil.rmtree(epoch.staging, ignore_errors=True)
            try:
                epoch.staging.parent.rmdir()
            except OSError:
                pass
