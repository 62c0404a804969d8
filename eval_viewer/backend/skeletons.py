"""Per-datapoint skeletons of a page, cached outside the log dir, so a cold read does not parse the whole page.

Parsing a page costs its pickle structure: about 0.1 s for a 100 MB page of 3000 small datapoints, every time a
process first touches that page. A *skeleton* is one datapoint's value with its arrays left as
:class:`~eval_viewer.backend.pickles.LazyArray` (offset, dtype, shape): a few hundred bytes. After a page has been
parsed once (by the background indexer, or by a first read), the skeletons of all its datapoints are written to
``cache_dir/skeletons/<hash of the page's full name>-<size>-<hash of its version>.skel`` (the full name is the source's
identity and the page's path in it, so local and remote pages never collide); a later read (this process after
eviction, or the next start) reads the file's table of offsets, unpickles one skeleton, then reads only the datapoint's
arrays. For a page on object storage that means the skeleton costs no request at all.

The file name carries the page's size and version (mtime and inode, or ETag), so a changed page never meets a stale
skeleton, and checking for one is a single local ``stat``. Skeleton files are unpickled through the same allow-list as pages.

The same parse also writes the page's layout as columns (:mod:`.columns`, ``cache_dir/columns``), which pass-wide
jobs read instead of parsing the page again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from eval_viewer.backend import columns as page_columns
from eval_viewer.backend.columns import PageColumns, build_columns
from eval_viewer.backend.pickles import load_skeleton
from eval_viewer.backend.sources import Stat
from eval_viewer.errors import PageError
from eval_viewer.log_format import atomic_write_bytes

__all__ = ["SkeletonStore", "Entries"]

logger = logging.getLogger(__name__)

_MAGIC = b"EVSKEL1\n"
_HEAD = len(_MAGIC) + 8
_MAX_RATIO = 4
"""A skeleton file larger than this many times its page is not written (the disk holds what is really stored)."""


class Entries:
    """Where each datapoint's skeleton is in a skeleton file: sorted ``(idx, offset, length)`` rows."""

    def __init__(self, path: Path, table: np.ndarray) -> None:
        self.path, self.table = path, table

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes) + 200

    def blob(self, idx: int) -> bytes:
        """The skeleton bytes of ``idx``; KeyError when the page does not hold it."""
        row = int(np.searchsorted(self.table[:, 0], idx))
        if row >= len(self.table) or self.table[row, 0] != idx:
            raise KeyError(idx)
        _, offset, length = (int(v) for v in self.table[row])
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        if len(data) != length:
            raise PageError(f"{self.path}: skeleton cache file is truncated")
        return data


_RECENT: dict[Path, PageColumns] = {}
"""The columns read last in this process, by file (the name holds the page's version: an entry is never stale)."""
_RECENT_SIZE = 8
_RECENT_LOCK = threading.Lock()


class SkeletonStore:
    """Reads and writes skeleton files in ``cache_dir/skeletons``; every failure only costs a page parse.

    File layout (no pickle at the top level, so reading the table runs no unpickler): a magic line, the row count
    (uint64), the rows ``(idx, offset, length)`` as little-endian int64, then the pickled skeletons.
    """

    def __init__(self, cache_dir: Path, *, trust: bool) -> None:
        self.root = cache_dir / "skeletons"
        self.columns_root = cache_dir / "columns"
        self._trust = trust

    def path_for(self, page: str, stat: Stat) -> Path:
        """``page`` is the page's full name (source identity + path), ``stat`` its version."""
        digest = hashlib.sha1(page.encode()).hexdigest()[:24]
        return self.root / f"{digest}-{stat.token}.skel"

    def columns_path(self, page: str, stat: Stat) -> Path:
        """Columns written by a trusting process are only read by one (``-trusted``): see :mod:`.columns`."""
        digest = hashlib.sha1(page.encode()).hexdigest()[:24]
        return self.columns_root / f"{digest}-{stat.token}{'-trusted' if self._trust else ''}.cols"

    def columns(self, page: str, stat: Stat) -> PageColumns | None:
        """The page version's columns, or None when there are none (or they are unreadable). The last few are kept
        in memory: a job's tasks read parts of the same page one after another (:func:`~.workers.page_parts`)."""
        path = self.columns_path(page, stat)
        with _RECENT_LOCK:
            found = _RECENT.get(path)
        if found is None:
            found = page_columns.load(path, page)
            if found is not None:
                with _RECENT_LOCK:
                    _RECENT[path] = found
                    while len(_RECENT) > _RECENT_SIZE:
                        _RECENT.pop(next(iter(_RECENT)))
        return found

    def save_columns(self, page: str, stat: Stat, content: Mapping[int, Any]) -> None:
        """Write the columns of a parsed page; any failure only leaves the page without them."""
        try:
            data = page_columns.encode(build_columns(content))
        except Exception as exc:  # noqa: BLE001 - a cache that cannot be written only costs speed
            logger.info("No column cache for %s (%s)", page, exc)
            return
        _write("column", self.columns_path(page, stat), data, page, stat.size)

    def has(self, page: str, stat: Stat) -> bool:
        return self.path_for(page, stat).is_file()

    def load(self, page: str, stat: Stat) -> Entries | None:
        """The skeleton table of the page version ``stat``, or None when there is none (or it is unreadable)."""
        path = self.path_for(page, stat)
        try:
            with open(path, "rb") as f:
                head = f.read(_HEAD)
                if len(head) != _HEAD or head[: len(_MAGIC)] != _MAGIC:
                    raise ValueError("not a skeleton file")
                rows = int.from_bytes(head[len(_MAGIC):], "little")
                raw = f.read(rows * 24)
                if len(raw) != rows * 24:
                    raise ValueError("truncated table")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # a damaged cache file is ignored and rebuilt, never fatal
            logger.warning("Ignoring damaged skeleton cache %s (%s)", path, exc)
            return None
        return Entries(path, np.frombuffer(raw, dtype="<i8").reshape(rows, 3))

    def value(self, entries: Entries, idx: int, name: str) -> Any:
        """One datapoint's skeleton (allow-listed like the page itself); KeyError when the page lacks ``idx``.
        ``name`` names the page in messages."""
        return load_skeleton(entries.blob(idx), name, trust=self._trust)

    def save(self, page: str, stat: Stat, content: Mapping[int, Any]) -> None:
        """Write the skeletons of a parsed page, and its columns; a value that cannot be pickled just leaves the page
        without one."""
        self.save_columns(page, stat, content)
        try:
            order = sorted(int(i) for i in content)
            blobs = [pickle.dumps(content[i], protocol=pickle.HIGHEST_PROTOCOL) for i in order]
            table = np.empty((len(order), 3), dtype="<i8")
            offset = _HEAD + table.nbytes
            for row, (idx, blob) in enumerate(zip(order, blobs)):
                table[row] = (idx, offset, len(blob))
                offset += len(blob)
            data = b"".join([_MAGIC, len(order).to_bytes(8, "little"), table.tobytes(), *blobs])
        except Exception as exc:  # noqa: BLE001 - a cache that cannot be written only costs speed
            logger.info("No skeleton cache for %s (%s)", page, exc)
            return
        _write("skeleton", self.path_for(page, stat), data, page, stat.size)


def _write(what: str, path: Path, data: bytes, page: str, size: int) -> None:
    """Write one cache file of ``page`` (``size`` bytes) and remove its older versions. A file more than
    :data:`_MAX_RATIO` times its page is not written (skeletons and columns are a fraction of their page, always:
    the disk holds what is really stored); a failure only costs speed."""
    if len(data) > max(_MAX_RATIO * size, 1 << 20):
        logger.warning("No %s cache for %s: %d bytes for a page of %d", what, page, len(data), size)
        return
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        logger.info("No %s cache for %s (%s)", what, page, exc)
        return
    _remove_older(path.parent, path)


def _remove_older(root: Path, keep: Path) -> None:
    """Remove the files of older versions of ``keep``'s page (same name hash, other version)."""
    prefix = keep.name.split("-", 1)[0] + "-"
    try:
        for entry in os.scandir(root):
            if entry.name.startswith(prefix) and entry.name != keep.name:
                Path(entry.path).unlink(missing_ok=True)
    except OSError:
        pass
