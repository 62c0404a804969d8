"""Page files on disk: an atomic, streaming ``joblib.dump`` and an atomic move that also works across filesystems.

Atomic means a reader (the viewer, while a run is still going) sees either the old file or the whole new one: data
goes to a temp file in the destination folder, is fsynced, then renamed over the final name. The temp name starts
with a dot and ends in ``.tmp``, so no reader mistakes it for a page (see ``log_format.parse_page_name``).
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import joblib

from eval_viewer.log_format import FILE_MODE

__all__ = ["atomic_dump", "move_atomic"]

_WRITEBACK_STEP = 8 * 1024 * 1024


class _EarlyWriteback(io.RawIOBase):
    """A raw file that asks the kernel to start writing back every 8 MiB as soon as it is written.

    Without it the disk idles while a page is serialised into the page cache and the CPU idles during the final
    fsync; with it the two overlap (measured in benchmarks/RESULTS.md). ``POSIX_FADV_DONTNEED`` on freshly written
    data starts asynchronous writeback on Linux and drops the pages once clean (a page is written once and read
    later, if at all, by another process); where the call does not exist this is a plain file.
    """

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._pos = 0
        self._flushed = 0
        self._advise = getattr(os, "posix_fadvise", None)

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def write(self, data: Any) -> int:
        written = os.write(self._fd, data)
        self._pos += written
        if self._advise is not None and self._pos - self._flushed >= _WRITEBACK_STEP:
            try:
                self._advise(self._fd, self._flushed, self._pos - self._flushed, os.POSIX_FADV_DONTNEED)
            except OSError:  # advice only: a filesystem that refuses it still gets the fsync below
                self._advise = None
            self._flushed = self._pos
        return written


def atomic_dump(path: Path, obj: Any) -> int:
    """``joblib.dump`` (uncompressed, so readers can memory-map arrays) to a temp file beside ``path``, fsync, rename.

    Streams into the file (no second copy of the page in memory). Returns the file size.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb", buffering=0) as _owner, io.BufferedWriter(_EarlyWriteback(fd), 1 << 20) as f:
            joblib.dump(obj, f)
            f.flush()
            os.fsync(fd)
            size = os.fstat(fd).st_size
        os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600; a page should read like any file the user writes
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size


def move_atomic(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; across filesystems, copy to a temp file beside ``dst``, fsync and rename."""
    try:
        os.replace(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 22)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    src.unlink()


def process_alive(pid: object) -> bool:
    """Whether process ``pid`` of this host still runs (a claim or staging folder it left is then still its own).
    A pid we may not signal belongs to a live process of another user; a malformed one to nobody."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
