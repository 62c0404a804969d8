"""Where log files live: a local folder, or any fsspec filesystem (``s3://``, ``gs://``, ``memory://``, ``file://``).

Everything the backend reads goes through one small interface, :class:`Source`: list a folder, stat a file, read a
whole small file (scores, indexes) and open a file for *range reads* (pages). Paths inside a source are POSIX strings
relative to its root (``"run/epoch_3/debugger/page_0.pkl"``), so the rest of the backend never sees an OS path or a
bucket name, and every message names the file the way the user wrote it (:meth:`Source.url`).

A page is opened as a :class:`RangeFile`: its size and version come from the open (``fstat`` locally, the object's
metadata remotely) and reads go to exactly the bytes asked for (``pread`` locally, one HTTP range request remotely),
so reading one datapoint costs about its own bytes on either. Credentials and endpoints come the standard way: the
environment (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``...) and ``storage_options`` passed to fsspec.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import posixpath
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from eval_viewer.errors import LogDirError

__all__ = ["Stat", "RangeFile", "Source", "LocalSource", "FsspecSource", "open_source", "join", "is_url"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stat:
    """What identifies one version of a file: its size and a version string that changes when it is rewritten
    (``mtime_ns`` and inode locally, the ETag or modification time remotely)."""

    size: int
    version: str
    mtime: float | None = field(default=None, compare=False)
    """Seconds since the epoch when known (not part of the identity: a cached Stat has none): how live a pass is."""

    @property
    def token(self) -> str:
        """A short file-name-safe string for cache keys."""
        return f"{self.size}-{hashlib.sha1(self.version.encode()).hexdigest()[:16]}"


def join(*parts: str) -> str:
    """Join relative source paths (``""`` is the root)."""
    return posixpath.join(*[p for p in parts if p]) if any(parts) else ""


def is_url(location: str) -> bool:
    """Whether ``location`` names an fsspec filesystem (``proto://...``) rather than a local path."""
    return "://" in location and not location.startswith("file://")


class RangeFile(ABC):
    """An open file read by position: ``read_at(offset, n)``. Also seekable and readable like a file, for the few
    callers (joblib's compressor detection) that need a file object."""

    read_ahead = 1 << 16
    """How much a sequential reader (the page parser) asks for at once: a local read is cheap, a remote one is a
    round trip, so remote files read ahead in big blocks."""
    coalesce = False
    """Whether the arrays of one datapoint are fetched in as few reads as possible (remote: one request each)."""

    def __init__(self, stat: Stat, name: str) -> None:
        self.stat, self.name, self._pos = stat, name, 0

    @property
    def size(self) -> int:
        return self.stat.size

    @abstractmethod
    def read_at(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes from ``offset`` (fewer only at the end of the file)."""

    def read_into(self, offset: int, view: memoryview) -> int:
        """Fill ``view`` (writable bytes) from ``offset``; the number of bytes read (fewer only at the end of the
        file). Reading into memory already in use costs no fresh page faults (:func:`~.bulk.reused_buffers`)."""
        data = self.read_at(offset, len(view))
        view[: len(data)] = data
        return len(data)

    def map(self, offset: int, n: int) -> memoryview | None:
        """The ``n`` bytes from ``offset`` mapped read-only into memory (no copy: the OS reads what is touched), or
        None where files cannot be mapped. Only for worker processes (:func:`~.bulk.map_pages`): a file cut short
        while mapped kills the process that touches the lost bytes."""
        return None

    def close(self) -> None:  # noqa: B027 - a no-op by default
        pass

    # file-object protocol on top of read_at
    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = offset if whence == 0 else (self._pos + offset if whence == 1 else self.size + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = max(self.size - self._pos, 0)
        data = self.read_at(self._pos, n) if n else b""
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def __enter__(self) -> RangeFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Source(ABC):
    """One ``--log-dir``: a root and the operations the backend needs, all on paths relative to that root."""

    location: str
    """The root as the user wrote it (a path or a URL), for messages."""
    process_shared: bool = True
    """Whether another process opening this source sees the same files (not so for ``memory://``): pass-wide jobs
    read pages in worker processes only then (:mod:`.workers`)."""

    @property
    @abstractmethod
    def identity(self) -> str:
        """An absolute name of the root (resolved path or full URL): the key of caches kept outside the log."""

    @abstractmethod
    def list(self, rel: str) -> tuple[dict[str, Stat], list[str]] | None:
        """The files (with their stats) and sub-folders of folder ``rel``; None when it does not exist."""

    @abstractmethod
    def stat(self, rel: str) -> Stat | None:
        """The stat of file ``rel``; None when it does not exist (or is a folder)."""

    @abstractmethod
    def read_bytes(self, rel: str) -> bytes:
        """The whole file; FileNotFoundError / OSError like ``open``."""

    @abstractmethod
    def open(self, rel: str) -> RangeFile:
        """The file opened for range reads; FileNotFoundError / OSError like ``open``."""

    def url(self, rel: str) -> str:
        """How messages name file ``rel``: the user's root joined with it."""
        root = self.location.rstrip("/")
        return f"{root}/{rel}" if rel else self.location

    def refresh(self) -> None:  # noqa: B027 - only remote sources cache listings
        """Forget cached listings before a new snapshot is taken."""

    def warm(self, rel: str) -> None:  # noqa: B027 - only local files have an OS cache to fill ahead
        """Read file ``rel`` into the OS cache (nothing is kept here), so that a pass-wide job's worker reads it from
        memory a moment later (:func:`~.workers.run_tasks`). Never fails."""

    def real_key(self, rel: str) -> str | None:
        """What ``rel`` really is (a local folder's resolved path), so a walk lists each folder once; None where
        storage has no links."""
        return None

    def walk(self, max_depth: int) -> Iterator[tuple[str, dict[str, Stat], list[str]]]:
        """``(folder, files, sub-folders)`` for the root and folders below it up to ``max_depth``; hidden folders
        (``.git``, ``.cache``) are skipped. Callers may prune by removing names from the yielded sub-folder list."""
        stack = [("", 0)]
        seen: set[str] = set()
        while stack:
            folder, depth = stack.pop()
            real = self.real_key(folder)
            if real is not None:
                if real in seen:  # a symlink loop, or a second way to the same folder: listed once
                    continue
                seen.add(real)
            listing = self.list(folder)
            if listing is None:
                continue
            files, dirs = listing
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            yield folder, files, dirs
            if depth < max_depth:
                stack.extend((join(folder, d), depth + 1) for d in reversed(dirs))


class _LocalFile(RangeFile):
    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        st = os.fstat(self._fd)
        super().__init__(_local_stat(st), str(path))

    def read_at(self, offset: int, n: int) -> bytes:
        chunks, done = [], 0
        while done < n:  # pread may return less than asked on some file systems
            chunk = os.pread(self._fd, n - done, offset + done)
            if not chunk:
                break
            chunks.append(chunk)
            done += len(chunk)
        return b"".join(chunks)

    def read_into(self, offset: int, view: memoryview) -> int:
        done = 0
        while done < len(view):  # (a short read only at the end of the file, or on some file systems)
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if not got:
                break
            done += got
        return done

    def map(self, offset: int, n: int) -> memoryview | None:
        if n <= 0 or offset < 0 or offset + n > os.fstat(self._fd).st_size:
            return None  # (the read path says what is wrong)
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        try:
            mapped = mmap.mmap(self._fd, n + offset - start, access=mmap.ACCESS_READ, offset=start)
        except (OSError, ValueError):
            return None
        return memoryview(mapped)[offset - start:]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _local_stat(st: os.stat_result) -> Stat:
    return Stat(int(st.st_size), f"{st.st_ino}:{st.st_mtime_ns}", st.st_mtime)


class LocalSource(Source):
    """A folder on a local (or mounted) file system.

    Symbolic links that lead outside the folder are not followed (not listed, not opened) unless
    ``follow_symlinks``: the browser can only reach what was named on the command line. Links inside it are, but a
    walk lists every real folder once, so a link loop ends and a run reached two ways is one run."""

    def __init__(self, root: str | os.PathLike[str], location: str | None = None, *,
                 follow_symlinks: bool = False) -> None:
        self.root = Path(root).expanduser()
        self.location = location or str(root)
        if not self.root.exists():
            raise LogDirError(f"{self.location}: log dir does not exist")
        if not self.root.is_dir():
            raise LogDirError(f"{self.location}: log dir is a file, not a folder of runs")
        self.follow_symlinks = follow_symlinks
        self._real_root = os.path.realpath(self.root)

    def real_key(self, rel: str) -> str | None:
        return os.path.realpath(self.path(rel))

    def _inside(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` (after every link) is in the log dir, or links may lead anywhere."""
        if self.follow_symlinks:
            return True
        real = os.path.realpath(path)
        return real == self._real_root or real.startswith(self._real_root.rstrip(os.sep) + os.sep)

    def _checked(self, rel: str) -> Path:
        path = self.path(rel)
        if not self._inside(path):
            raise PermissionError(f"{path}: a symbolic link out of the log dir {self.location} (not followed; "
                                  "--follow-symlinks allows it)")
        return path

    @property
    def identity(self) -> str:
        return str(self.root.resolve())

    def path(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    _WARM_CHUNK = 1 << 20

    def warm(self, rel: str) -> None:
        # A plain sequential read into one small buffer: the OS keeps the pages. (posix_fadvise(WILLNEED), which
        # asks the same without the copy, was measured to do nothing on this project's machines. A mapping populated
        # by madvise(MADV_POPULATE_READ) reads twice as fast for a tenth of the CPU, but made no job faster, with
        # workers (1.5-2.3 s against 1.5-2.3 s, a comparison) or in-process (1.1-1.4 s against 0.7-1.0 s, health).)
        try:
            fd = os.open(self._checked(rel), os.O_RDONLY)
        except OSError:
            return
        try:
            chunk = memoryview(bytearray(self._WARM_CHUNK))
            while os.readv(fd, [chunk]) > 0:
                pass
        except OSError:
            pass
        finally:
            os.close(fd)

    def url(self, rel: str) -> str:
        return str(self.path(rel))

    def list(self, rel: str) -> tuple[dict[str, Stat], list[str]] | None:
        files: dict[str, Stat] = {}
        dirs: list[str] = []
        try:
            with os.scandir(self.path(rel)) as entries:
                for entry in entries:
                    try:
                        if entry.is_symlink() and not self._inside(entry.path):
                            logger.debug("Not following %s: it leads out of %s", entry.path, self.location)
                            continue
                        if entry.is_dir():
                            dirs.append(entry.name)
                        elif entry.is_file():
                            files[entry.name] = _local_stat(entry.stat())
                    except OSError:  # removed while listing
                        continue
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            logger.warning("Cannot list %s: %s", self.url(rel), exc)
            return None
        return files, dirs

    def stat(self, rel: str) -> Stat | None:
        try:
            st = os.stat(self.path(rel))
        except OSError:
            return None
        return _local_stat(st) if not os.path.isdir(self.path(rel)) else None

    def read_bytes(self, rel: str) -> bytes:
        return self._checked(rel).read_bytes()

    def open(self, rel: str) -> RangeFile:
        return _LocalFile(self._checked(rel))


class _FsspecFile(RangeFile):
    read_ahead = 8 << 20  # a page parse is a few requests, not one per 64 KiB
    coalesce = True
    def __init__(self, fs: Any, path: str, name: str) -> None:
        fs.invalidate_cache(path)  # the object's metadata now, not from a listing taken before it changed
        info = fs.info(path)
        if info.get("type") == "directory":
            raise IsADirectoryError(name)
        self._fs, self._path = fs, path
        super().__init__(_remote_stat(info), name)

    def read_at(self, offset: int, n: int) -> bytes:
        if n <= 0 or offset >= self.size:
            return b""
        end = min(offset + n, self.size)
        return bytes(self._fs.cat_file(self._path, start=offset, end=end))  # one range request


def _remote_stat(info: Mapping[str, Any]) -> Stat:
    version = info.get("ETag") or info.get("etag") or info.get("md5") or info.get("generation") or ""
    if not version:
        for key in ("LastModified", "mtime", "updated", "created"):
            value = info.get(key)
            if value is not None:
                # One time, one string: a listing and an info() may give it as a datetime or as a POSIX timestamp
                # (fsspec's memory filesystem does both), and the stat of a listing must equal the stat of the open.
                version = repr(float(value.timestamp() if isinstance(value, datetime) else value)) \
                    if isinstance(value, (datetime, int, float)) else str(value)
                break
    mtime = info.get("LastModified") or info.get("mtime") or info.get("updated")
    try:
        when = mtime.timestamp() if isinstance(mtime, datetime) else float(mtime) if mtime is not None else None
    except (TypeError, ValueError):
        when = None
    return Stat(int(info.get("size") or 0), str(version), when)


class FsspecSource(Source):
    """Any filesystem fsspec knows (``s3://bucket/prefix``, ``gs://...``, ``memory://...``, ``file://...``).

    Listings are cached by fsspec between snapshots and dropped by :meth:`refresh`, so a snapshot sees new objects.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        try:
            import fsspec
        except ImportError:  # pragma: no cover - fsspec is a dependency
            raise LogDirError(f"{url}: reading URLs needs fsspec (pip install fsspec)") from None
        self.location = url
        try:
            fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        except ImportError as exc:
            raise LogDirError(f"{url}: {exc} (e.g. pip install s3fs for s3://, gcsfs for gs://)") from None
        except (ValueError, TypeError) as exc:
            raise LogDirError(f"{url}: cannot open this storage: {exc}") from None
        self.fs, self.root = fs, root.rstrip("/")
        protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
        self.process_shared = "memory" not in protocols  # a memory filesystem lives in this process only
        try:
            exists = fs.isdir(self.root)
        except Exception as exc:  # noqa: BLE001 - credentials, endpoint, network: all told the same way
            raise LogDirError(f"{url}: cannot reach the log dir ({type(exc).__name__}: {exc})") from None
        if not exists:
            raise LogDirError(f"{url}: log dir does not exist (or is not a folder of runs)")

    @property
    def identity(self) -> str:
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return f"{protocol}://{self.root}"

    def _full(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def refresh(self) -> None:
        # s3fs (and others) invalidate only the path and its parents, not the folders under it, where new epochs
        # and pages appear: drop every cached listing at or under the root too.
        try:
            self.fs.invalidate_cache(self.root)
        except Exception:  # noqa: BLE001 - filesystems without a listings cache
            pass
        dircache = getattr(self.fs, "dircache", None)
        if dircache is not None:
            prefix = self.root + "/"
            try:
                for key in [k for k in list(dircache) if k == self.root or str(k).startswith(prefix)]:
                    dircache.pop(key, None)
            except Exception:  # noqa: BLE001 - a cache we cannot walk: the snapshot may miss what is new, no worse
                logger.debug("Cannot clear the listings cache of %s", self.location, exc_info=True)

    def list(self, rel: str) -> tuple[dict[str, Stat], list[str]] | None:
        try:
            entries = self.fs.ls(self._full(rel), detail=True)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - a remote listing can fail in many ways; one folder only
            logger.warning("Cannot list %s: %s", self.url(rel), exc)
            return None
        files: dict[str, Stat] = {}
        dirs: list[str] = []
        prefix = self._full(rel).rstrip("/") + "/"
        for info in entries:
            name = str(info.get("name", "")).rstrip("/")
            base = name[len(prefix):] if name.startswith(prefix) else posixpath.basename(name)
            if not base or "/" in base:
                continue
            if info.get("type") == "directory":
                dirs.append(base)
            else:
                files[base] = _remote_stat(info)
        return files, dirs

    def stat(self, rel: str) -> Stat | None:
        try:
            info = self.fs.info(self._full(rel))
        except (FileNotFoundError, OSError):
            return None
        return None if info.get("type") == "directory" else _remote_stat(info)

    def read_bytes(self, rel: str) -> bytes:
        return bytes(self.fs.cat_file(self._full(rel)))

    def open(self, rel: str) -> RangeFile:
        return _FsspecFile(self.fs, self._full(rel), self.url(rel))


def open_source(location: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None, *,
                follow_symlinks: bool = False) -> Source:
    """The source of one ``--log-dir``: a local path (or ``file://`` URL) or any fsspec URL."""
    text = os.fspath(location)
    if text.startswith("file://"):
        return LocalSource(text[len("file://"):], location=text, follow_symlinks=follow_symlinks)
    if is_url(text):
        return FsspecSource(text, storage_options)
    return LocalSource(text, follow_symlinks=follow_symlinks)
