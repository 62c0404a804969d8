"""Which page of a ``debugger`` folder holds which datapoint, without opening every page on every click.

Our writer leaves ``index.json`` (or ``index_rank{R}.json`` per process) beside its pages: reading it is the whole
cost. Pages no index covers (other tools' logs, a broken index, a page written after the index) are scanned once in
the background by a parse that skips array bytes (:func:`~eval_viewer.backend.pickles.parse_page`), and the result is
cached *outside* the log dir (logs may be read-only or shared) in ``cache_dir``, keyed by each page's name, size and
mtime, so the next start finds it at once. Rank-sharded pages are merged by datapoint index; when DDP padding wrote a
datapoint twice, the lowest rank's copy is used.

Everything that goes wrong is kept in :attr:`DebugIndex.problems` as a user-facing message; a broken page or index
costs only its own datapoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval_viewer.backend.pages import open_page
from eval_viewer.backend.pickles import parse_page
from eval_viewer.backend.records import scalar_meta
from eval_viewer.backend.skeletons import SkeletonStore
from eval_viewer.backend.snapshot import DebugListing
from eval_viewer.backend.sources import Source, Stat, join
from eval_viewer.errors import PageError
from eval_viewer.log_format import (
    FORMAT_VERSION,
    INDEX_DEBUGGERS,
    INDEX_META,
    INDEX_PAGES,
    INDEX_VERSION,
    atomic_write_text,
    parse_page_name,
)

__all__ = ["DebugIndex", "IndexStatus", "parse_index", "LIVE_WINDOW_S"]

logger = logging.getLogger(__name__)

_CACHE_FORMAT = 2
LIVE_WINDOW_S = 60.0
"""A pass with a page changed this recently is shown as still being written."""
Meta = dict[int, dict[str, Any]]


@dataclass(frozen=True)
class IndexStatus:
    """How far the index of one debugger folder is: what the app shows while a big log is being scanned."""

    ready: bool
    pages: int
    pages_indexed: int
    datapoints: int
    problems: tuple[str, ...]


@dataclass(frozen=True)
class _IndexFile:
    pages: dict[str, list[int]]
    meta: Meta
    debuggers: dict[str, Any]


def _page_order(name: str) -> tuple[int, int]:
    parsed = parse_page_name(name)
    rank, number = parsed if parsed else (None, 0)
    return (-1 if rank is None else rank, number)


def parse_index(data: bytes, path: str) -> _IndexFile:
    """Parse the bytes of one ``index*.json``; :class:`PageError` naming ``path`` for anything malformed."""
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep to decode
        raise PageError(f"{path}: unreadable index ({exc}); its pages will be scanned instead") from None
    if not isinstance(payload, dict) or not isinstance(payload.get(INDEX_PAGES), dict):
        raise PageError(f"{path}: unreadable index (no '{INDEX_PAGES}' object); its pages will be scanned instead")
    version = payload.get(INDEX_VERSION)
    if isinstance(version, int) and version > FORMAT_VERSION:
        logger.warning("%s: format version %s is newer than this viewer's (%s)", path, version, FORMAT_VERSION)
    pages: dict[str, list[int]] = {}
    for name, entry in payload[INDEX_PAGES].items():
        indices = entry.get("indices") if isinstance(entry, dict) else None
        if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
            raise PageError(f"{path}: unreadable index (page {name!r} has no list of integer 'indices')")
        pages[str(name)] = indices
    meta: Meta = {}
    raw_meta = payload.get(INDEX_META)
    if isinstance(raw_meta, dict):
        for key, fields in raw_meta.items():
            if isinstance(fields, dict):
                try:
                    meta[int(key)] = fields
                except ValueError:
                    continue
    debuggers = payload.get(INDEX_DEBUGGERS)
    return _IndexFile(pages, meta, debuggers if isinstance(debuggers, dict) else {})


class DebugIndex:
    """The datapoint -> page map of one ``debugger`` folder, kept current by :meth:`refresh` with the folder's listing
    from the latest snapshot (cheap when unchanged: one comparison)."""

    def __init__(
        self,
        source: Source,
        debug_dir: str,
        *,
        trust: bool,
        cache_dir: Path | None,
        submit: Callable[..., Any],
        skeletons: SkeletonStore | None = None,
    ) -> None:
        self.source = source
        self.debug_dir = debug_dir
        self.name = source.url(debug_dir)
        """The folder as messages name it."""
        self._id = f"{source.identity}/{debug_dir}"
        self._skeletons = skeletons
        self._trust = trust
        self._cache_path = cache_dir / f"{hashlib.sha1(self._id.encode()).hexdigest()[:24]}.json" \
            if cache_dir is not None else None
        self._submit = submit
        self._lock = threading.RLock()
        self._ready = threading.Event()
        self._ready.set()
        self._generation = 0
        self._listing: DebugListing | None = None
        """The listing the published index was built from."""
        self._requested: DebugListing | None = None
        """The listing of the latest :meth:`refresh` (being read when it differs from ``_listing``)."""
        self._sigs: dict[str, Stat] = {}
        self._page_indices: dict[str, list[int]] = {}
        self._scanned_meta: dict[str, Meta] = {}
        self._index_meta: Meta = {}
        self._page_problems: dict[str, tuple[Stat | None, str]] = {}
        """page -> (its stat when it failed, message): retried only once the file changes."""
        self._index_problems: list[str] = []
        self._map: dict[int, str] = {}
        self._indexed_names: frozenset[str] = frozenset()
        """Pages the index files list (what a writer has finished), as of the last refresh."""
        self.debuggers: dict[str, Any] = {}

    def page_path(self, name: str) -> str:
        return join(self.debug_dir, name)

    def page_id(self, name: str) -> str:
        return f"{self._id}/{name}"

    # ---------------------------------------------------------------- reading state
    def page_of(self, idx: int) -> str | None:
        with self._lock:
            return self._map.get(idx)

    def missing(self, num_datapoints: int) -> tuple[int, ...]:
        """The datapoints of ``range(num_datapoints)`` that no readable page holds (as far as indexed so far)."""
        with self._lock:
            held = set(self._map)
        return tuple(i for i in range(num_datapoints) if i not in held)

    @property
    def problems(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._index_problems) + tuple(msg for _, msg in self._page_problems.values())

    def meta(self) -> Meta:
        """Scalar meta_info per datapoint: index files first, pages scanned by the viewer fill the rest."""
        with self._lock:
            merged: Meta = {}
            for page_meta in list(self._scanned_meta.values()):
                merged.update(page_meta)
            merged.update(self._index_meta)
            return merged

    def status(self) -> IndexStatus:
        with self._lock:
            return IndexStatus(
                ready=self._ready.is_set(),
                pages=len(self._sigs),
                pages_indexed=sum(1 for name in self._sigs if name in self._page_indices or name in self._page_problems),
                datapoints=len(self._map),
                problems=self.problems,
            )

    def writing(self, *, missing: bool, now: float | None = None) -> str | None:
        """A note when this folder looks like it is still being written: its index files leave pages out (the writer
        adds a page to its index after writing it, so a lag means pages in flight or a writer that stopped early), or,
        for a datapoint ``missing`` from every page, a page changed in the last :data:`LIVE_WINDOW_S` seconds (its
        page may be the next one). None for a finished folder."""
        with self._lock:
            listing = self._listing
            listed = set(self._indexed_names)
        if listing is None or not listing.pages:
            return None
        now = time.time() if now is None else now
        newest = max((st.mtime for st in listing.pages.values() if st.mtime is not None), default=None)
        unlisted = [n for n in listing.pages if n not in listed] if listing.index_files else []
        recent = missing and newest is not None and now - newest <= LIVE_WINDOW_S
        if not unlisted and not recent:
            return None
        parts = []
        if unlisted:
            parts.append(f"{len(unlisted)} of {len(listing.pages)} pages are not in its index yet")
        if recent and newest is not None:
            parts.append(f"the newest page was written {max(now - newest, 0):.0f} s ago")
        return (f"{self.name}: this pass is still being written, or its writer stopped early ({'; '.join(parts)}); "
                "what is shown is what is on disk now, and it is drawn again as pages land")

    def wait(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def stop(self) -> None:
        """Abandon background work (the store is closing): waiters return at once, later results are dropped."""
        with self._lock:
            self._generation += 1
            self._ready.set()

    # ---------------------------------------------------------------- building
    def refresh(self, listing: DebugListing, force: bool = False) -> None:
        """Take the folder's current listing; pages no index or cache covers are scanned in the background.

        Reads the index files (small) when the listing changed; never lists the folder itself. Until what it read is
        published, the index says it is not ready: a reader in between (the app draws a datapoint while the index files
        are still being fetched) must see "indexing" and look again, never the new listing against the old index
        (which said "pages not in its index" and found nothing, as if done).
        """
        with self._lock:
            if not force and listing == self._requested:
                return
            self._requested = listing
            self._generation += 1
            generation = self._generation
            self._ready.clear()
        try:
            self._take(listing, generation)
        except BaseException:
            with self._lock:
                if generation == self._generation:  # nothing may wait for a refresh that failed
                    self._ready.set()
            raise

    def _take(self, listing: DebugListing, generation: int) -> None:
        sigs = dict(listing.pages)
        indexed: dict[str, list[int]] = {}
        index_meta: Meta = {}
        debuggers: dict[str, Any] = {}
        index_problems: list[str] = []
        for name in sorted(listing.index_files):
            path = self.page_path(name)
            try:
                parsed = parse_index(self.source.read_bytes(path), self.source.url(path))
            except FileNotFoundError:
                index_problems.append(f"{self.source.url(path)}: index file disappeared while reading")
                continue
            except PageError as exc:
                index_problems.append(str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - OSError locally, anything from remote storage
                index_problems.append(f"{self.source.url(path)}: cannot read the index ({exc}); pages will be scanned")
                logger.warning("%s", index_problems[-1])
                continue
            for page, indices in parsed.pages.items():
                if page in sigs:
                    indexed[page] = indices
                else:
                    index_problems.append(f"{self.source.url(path)}: lists page {page}, which is missing from "
                                          f"{self.name}")
            index_meta.update(parsed.meta)
            debuggers.update(parsed.debuggers)
        cached = self._load_cache()
        page_problems: dict[str, tuple[Stat | None, str]] = {}
        with self._lock:  # what this process already scanned counts too (a refresh during a scan loses nothing)
            old_problems = dict(self._page_problems)
            for name, meta in list(self._scanned_meta.items()):
                if name in self._page_indices and self._sigs.get(name) == sigs.get(name):
                    cached[name] = (self._sigs[name], self._page_indices[name], meta)
        page_indices: dict[str, list[int]] = {}
        scanned_meta: dict[str, Meta] = {}
        to_scan: list[str] = []
        for name, sig in sigs.items():
            if name in indexed:
                page_indices[name] = indexed[name]
            elif name in cached and cached[name][0] == sig:
                page_indices[name], scanned_meta[name] = cached[name][1], cached[name][2]
            elif name in old_problems and old_problems[name][0] == sig:
                page_problems[name] = old_problems[name]  # unchanged since it failed: no point retrying
            else:
                to_scan.append(name)
        with self._lock:
            if generation != self._generation:
                return
            # Copies: the background scan adds to the published dicts while this thread still reads its own.
            self._listing = listing
            self._sigs = dict(sigs)
            self._page_indices = dict(page_indices)
            self._scanned_meta = scanned_meta
            self._index_meta = index_meta
            self.debuggers = debuggers
            self._index_problems = index_problems
            self._page_problems = page_problems
            self._indexed_names = frozenset(indexed)
            self._rebuild_map()
            if to_scan:
                self._ready.clear()
            else:  # also when this refresh overtook a scan that had not finished
                self._ready.set()
        if to_scan:
            to_scan.sort(key=_page_order)
            logger.info("Indexing %d pages of %s in the background", len(to_scan), self.name)
            self._submit(self._scan, generation, to_scan)
        if self._skeletons is not None:
            bare = sorted((n for n in list(page_indices) if not self._skeletons.has(self.page_id(n), sigs[n])),
                          key=_page_order)
            if bare:  # pages of our writer's index: parse each once in the background, so cold reads stay cheap
                self._submit(self._build_skeletons, generation, bare)

    def _build_skeletons(self, generation: int, names: list[str]) -> None:
        for name in names:
            if generation != self._generation or self._skeletons is None:
                return
            try:
                with open_page(self.source, self.page_path(name)) as fobj:
                    if self._skeletons.has(self.page_id(name), fobj.stat):
                        continue
                    page = parse_page(fobj, fobj.name, trust=self._trust)
                    stat = fobj.stat
            except PageError as exc:
                logger.info("No skeletons for %s: %s", name, exc)  # a read of it will report the problem
                continue
            self._skeletons.save(self.page_id(name), stat, page.content)

    def rescan_page(self, name: str) -> None:
        """Forget what is known of one page (it did not hold what the index said) and scan it again."""
        with self._lock:
            self._page_indices.pop(name, None)
            self._scanned_meta.pop(name, None)
            self._rebuild_map()
            self._ready.clear()
            generation = self._generation
        self._submit(self._scan, generation, [name])

    def _rebuild_map(self) -> None:
        mapping: dict[int, str] = {}
        for name in sorted(self._page_indices, key=_page_order):
            for idx in self._page_indices[name]:
                mapping.setdefault(idx, name)
        self._map = mapping

    def _scan(self, generation: int, names: list[str]) -> None:
        try:
            for name in names:
                if generation != self._generation:
                    return
                try:
                    self._scan_one(generation, name)
                except Exception as exc:  # noqa: BLE001 - one page's surprise must not leave the rest unindexed
                    logger.warning("Indexing %s failed", self.page_path(name), exc_info=True)
                    with self._lock:
                        self._page_problems[name] = (None, f"{self.source.url(self.page_path(name))}: cannot be "
                                                           f"indexed ({type(exc).__name__}: {exc})")
            with self._lock:
                if generation != self._generation:
                    return
                self._rebuild_map()
            self._save_cache()
        finally:
            with self._lock:
                if generation == self._generation:
                    self._ready.set()

    def _scan_one(self, generation: int, name: str) -> None:
        try:
            fobj = self.source.open(self.page_path(name))
        except FileNotFoundError:
            return
        except Exception as exc:  # noqa: BLE001 - OSError locally, anything from remote storage
            message = f"{self.source.url(self.page_path(name))}: cannot read ({exc})"
            logger.warning("%s", message)
            with self._lock:
                self._page_problems[name] = (None, message)
            return
        with fobj:
            stat = fobj.stat
            try:
                page = parse_page(fobj, fobj.name, trust=self._trust)
            except PageError as exc:
                logger.warning("%s", exc)
                with self._lock:
                    if generation == self._generation:
                        self._page_problems[name] = (stat, str(exc))
                return
        meta = {idx: m for idx, value in page.content.items() if (m := scalar_meta(value))}
        if self._skeletons is not None:
            self._skeletons.save(self.page_id(name), stat, page.content)
        with self._lock:
            if generation != self._generation:
                return
            self._sigs[name] = stat
            self._page_indices[name] = sorted(page.content)
            self._scanned_meta[name] = meta
            self._page_problems.pop(name, None)
            for idx in self._page_indices[name]:  # usable at once; the final rebuild settles rank priority
                self._map.setdefault(idx, name)

    # ---------------------------------------------------------------- the cache outside the log dir
    def _load_cache(self) -> dict[str, tuple[Stat, list[int], Meta]]:
        if self._cache_path is None or not self._cache_path.is_file():
            return {}
        try:
            payload = json.loads(self._cache_path.read_bytes())
            if payload.get("format") != _CACHE_FORMAT or payload.get("debug_dir") != self._id:
                return {}
            return {
                name: (Stat(int(e["size"]), str(e["version"])), [int(i) for i in e["indices"]],
                       {int(k): v for k, v in e.get("meta", {}).items()})
                for name, e in payload["pages"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("Ignoring unreadable index cache %s (%s); it will be rebuilt", self._cache_path, exc)
            return {}

    def _save_cache(self) -> None:
        if self._cache_path is None:
            return
        with self._lock:
            pages = {
                name: {"size": sig.size, "version": sig.version, "indices": self._page_indices[name],
                       "meta": {str(k): v for k, v in self._scanned_meta.get(name, {}).items()}}
                for name, sig in self._sigs.items()
                if name in self._page_indices and name in self._scanned_meta
            }
        payload = {"format": _CACHE_FORMAT, "debug_dir": self._id, "pages": pages}
        try:
            atomic_write_text(self._cache_path, json.dumps(payload, default=str))
        except OSError as exc:
            logger.warning("Cannot write the index cache %s (%s); pages will be scanned again next time",
                           self._cache_path, exc)
