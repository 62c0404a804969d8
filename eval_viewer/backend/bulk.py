"""Read a whole pass page by page: the path for pass-wide work (the compare summary, pass health summaries).

:meth:`LogStore.datapoint` is made for one click: it finds one datapoint's skeleton, reads its arrays and builds a
record, about 3 ms each, which is most of the time when a job walks 20,000 datapoints. Here a pass is read the way it
lies on disk: each page in **one sequential read** into memory (:class:`~.pickles.PageBuffer`), its structure parsed
**once** by the same allow-listed, budgeted unpickler as every other read (:func:`~.pickles.parse_page`: the ``trust``
flag, the hostile-page bounds of :mod:`.untrusted`), and its arrays handed out as **read-only views of that buffer**
(no second copy). A page whose layout is cached as columns (:mod:`.columns`, written when the index first parsed
it) is not parsed again: only the byte ranges of the wanted datapoints' selected arrays are read (the whole page when
all of it is wanted; a part of it when a job splits the page, :func:`~.workers.page_parts`), and the datapoints are
built from the columns over that buffer, about a tenth of the cost of a parse. The next page is read in a helper
thread while the caller works on this one (``prefetch``), so the disk and the caller's numpy work overlap.

Use::

    pages = store.pass_pages(key)                    # the pass's pages, in order, and the datapoints each holds
    problems: list[str] = []
    for idx, value in iter_datapoints(pages, select={"attn": None}, problems=problems):
        ...                                          # value: {debugger: output}, only the selected debuggers
    for page in iter_pages(pages, indices=wanted):   # or page by page: page.values {idx: value}
        ...
    for page in read_ahead([partial(read_page, pages_a, rel), partial(read_page, pages_b, rel_b), ...]):
        ...                                          # any schedule of pages (of several passes), read ahead in order;
                                                     # a page that fails comes as its PageError, in its place

``select`` keeps only some debuggers (``{name: None}``: its whole output; ``{name: ["weights", ...]}``: those
top-level keys of its output); only what is selected is turned into arrays. A page that cannot be read (corrupt,
truncated, hostile, deleted) is skipped, and ``problems`` gets a message naming its file; the other pages are read.
Arrays are checked as :func:`~.pickles.materialize` checks them (plain numeric dtype rebuilt by numpy, bytes inside
the page) and are read-only; torch tensors of other tools' pages come back as numpy.

Memory: at most ``prefetch + 1`` pages are held by the reader; a value the caller keeps keeps its page's buffer alive
(copy what you keep). A page larger than ``max_buffer`` is not read whole: it is parsed lazily and each datapoint's
arrays are read on their own (:func:`~.pickles.materialize`), so memory stays bounded for any page size.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from eval_viewer.backend.kinds import ViewerHints
from eval_viewer.backend.model import PassKey
from eval_viewer.backend.pages import open_page
from eval_viewer.backend.pickles import LAZY_TYPES, LazyArray, PageBuffer, materialize, parse_page
from eval_viewer.backend.records import to_plain
from eval_viewer.backend.skeletons import SkeletonStore
from eval_viewer.backend.sources import RangeFile, Source
from eval_viewer.backend.untrusted import safe_dtype
from eval_viewer.errors import PageError

__all__ = ["PassPages", "Page", "Select", "read_page", "read_ahead", "iter_pages", "iter_datapoints", "MAX_BUFFER",
           "reused_buffers", "map_pages"]

logger = logging.getLogger(__name__)

MAX_BUFFER = 512 << 20
"""Pages up to this size are read whole in one read; larger ones datapoint by datapoint (bounded memory)."""

Select = Mapping[str, Collection[str] | None]
"""``{debugger name: top-level keys of its output to keep, or None for all of it}``."""


@dataclass(frozen=True)
class PassPages:
    """The debug pages of one pass, in datapoint order, and which datapoints each is read for (the store's page index:
    a datapoint written twice, as DDP padding does, is read from the page the index chose). From
    :meth:`LogStore.pass_pages`."""

    key: PassKey
    source: Source
    pages: tuple[tuple[str, tuple[int, ...]], ...]
    """``(page path inside source, its datapoints ascending)``, pages ordered by their first datapoint."""
    trust: bool
    debuggers: Mapping[str, Any] = field(default_factory=dict)
    """index.json's ``debuggers`` object (kind tags), for :func:`~.records.build_record`."""
    hints: ViewerHints = field(default_factory=ViewerHints)
    problems: tuple[str, ...] = ()
    """What the index could not read (a page it could not scan is named here and not listed in ``pages``)."""
    cache: SkeletonStore | None = None
    """Where the pages' columns are cached (:mod:`.columns`): a page read with them is not parsed again."""
    ids: Mapping[str, str] = field(default_factory=dict)
    """``{page path: the page's cache name}`` (source identity and path, as the index names it for its caches)."""

    def page_of(self) -> dict[int, str]:
        """``{datapoint idx: page path}``."""
        return {idx: rel for rel, indices in self.pages for idx in indices}

    @property
    def num_datapoints(self) -> int:
        return sum(len(indices) for _, indices in self.pages)


@dataclass(frozen=True)
class Page:
    """One page read: ``values[idx]`` is ``{debugger: output}`` (selected parts only), arrays as read-only numpy."""

    rel: str
    name: str
    """The page as messages name it (path or URL)."""
    values: Mapping[int, Any]


def _select(value: Any, select: Select | None) -> Any:
    """The selected part of one datapoint's ``{debugger: output}`` (still lazy)."""
    if select is None or not isinstance(value, Mapping):
        return value
    out: dict[str, Any] = {}
    for name, keys in select.items():
        if name not in value:
            continue
        output = value[name]
        if keys is None or not isinstance(output, Mapping):
            out[name] = output
        else:
            out[name] = {k: output[k] for k in keys if k in output}
    return out


class _Views:
    """The arrays of a page held in memory, as read-only numpy views of its buffer: what
    :func:`~.pickles.materialize` does for any page, with the same checks on every array (plain numeric dtype
    rebuilt by numpy from its description, offset and size inside the page), made cheap for thousands of datapoints
    (each dtype object of the page checked once, containers rebuilt without a memo: a page whose shared parts would
    expand was refused by its parse budget)."""

    def __init__(self, buffer: PageBuffer, name: str) -> None:
        self.buffer, self.data, self.name = buffer, buffer.data, name
        self.size = len(buffer.data)
        self.dtypes: dict[int, tuple[Any, np.dtype]] = {}

    def array(self, lazy: LazyArray) -> np.ndarray:
        dtype = lazy.dtype
        hit = self.dtypes.get(id(dtype))
        if hit is None or hit[0] is not dtype:
            if not isinstance(dtype, np.dtype) or dtype.hasobject:
                raise PageError(f"{self.name}: corrupt array header ({lazy!r}): raw bytes can only be read as plain "
                                "numbers")
            hit = self.dtypes[id(dtype)] = (dtype, safe_dtype(dtype, self.name))
        try:  # numpy's constructor checks offset, shape and size against the buffer (the cheapest view there is)
            out = np.ndarray(lazy.shape, hit[1], self.data, lazy.offset, None, "F" if lazy.order == "F" else "C")
        except (TypeError, ValueError):
            raise PageError(f"{self.name}: corrupt or truncated: an array ({lazy!r}) lies outside the page "
                            f"({self.size} bytes)") from None
        if not out.dtype.isnative:
            out = out.astype(out.dtype.newbyteorder("="))
            out.flags.writeable = False
        return out

    def plain(self, value: Any) -> Any:
        kind = type(value)
        if kind is dict:
            return {k: self.plain(v) for k, v in value.items()}
        if kind in LAZY_TYPES:
            return self.array(value) if value.value is None else self.plain(value.value)
        if kind in _SCALARS:
            return value
        if kind is list:
            return [self.plain(v) for v in value]
        if kind is tuple:
            return tuple(self.plain(v) for v in value)
        return materialize(value, self.buffer, self.name, to_plain)  # anything else, the general way


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _values(content: Mapping[int, Any], fobj: RangeFile, name: str, wanted: Iterable[int],
            select: Select | None) -> dict[int, Any]:
    views = _Views(fobj, name) if isinstance(fobj, PageBuffer) else None
    values: dict[int, Any] = {}
    for idx in wanted:
        if idx not in content:
            raise PageError(f"{name}: does not hold datapoint {idx} as its index says (rewritten since it was "
                            "indexed?)")
        part = _select(content[idx], select)
        values[idx] = views.plain(part) if views is not None else materialize(part, fobj, name, to_plain)
    return values


class _Buffers(threading.local):
    """The page buffers of one thread: ``free`` ones, and those ``held`` by its open :func:`reused_buffers` block."""

    def __init__(self) -> None:
        self.free: list[bytearray] = []
        self.held: list[bytearray] | None = None


_BUFFERS = _Buffers()
_KEEP_BUFFERS = 3
"""Free buffers a thread keeps for its next block (a compare task holds a page of each pass, sometimes two of b)."""


@contextmanager
def reused_buffers() -> Iterator[None]:
    """Inside this block, the page bytes this thread reads go into buffers it keeps for its next block, instead of
    fresh memory each time. Fresh memory costs its page faults on every page, about as much as the read itself:
    measured on 2 cores, 886 MB of pages read into fresh buffers in 0.57 s, into one reused buffer in 0.17 s (warm
    OS cache; 0.67 s against 0.47 s cold). For the tasks of pass-wide jobs (a page or three read, measured, and only
    the measures kept). **Every value read inside must be dropped or copied when the block ends**: the next block
    writes over its bytes. Nested blocks share the outer one's buffers."""
    if _BUFFERS.held is not None:
        yield
        return
    _BUFFERS.held = []
    try:
        yield
    finally:
        held, _BUFFERS.held = _BUFFERS.held, None
        _BUFFERS.free = sorted(_BUFFERS.free + held, key=len, reverse=True)[:_KEEP_BUFFERS]


_MAP = False


def map_pages() -> None:
    """From now on, this process maps page spans into memory instead of reading them (:meth:`RangeFile.map`): no copy,
    and the OS reads only the bytes the arrays touch. Called by the worker processes of pass-wide jobs only (measured
    on 2 cores: the copy was 0.02 s of a page part's 0.1 s): a page cut short while mapped kills the process that
    touches the lost bytes, and a dead worker only sends the job's remaining tasks back to the caller, which reads
    them (:func:`~.workers.run_tasks`). The server itself never maps a page."""
    global _MAP
    _MAP = True


def _read_span(fobj: RangeFile, ranges: Sequence[tuple[int, int]], name: str) -> tuple[int, bytes | memoryview]:
    """``(start, data)``: the byte ``ranges`` of the file (sorted, apart) laid out in one buffer from the first one's
    start, each read into its place (the gaps between them are not read); in a reused buffer inside
    :func:`reused_buffers` (a read-only view of it), else new memory. A short read is a :class:`PageError`."""
    if not ranges:
        return 0, b""
    start, end = ranges[0][0], ranges[-1][1]
    if _MAP and (mapped := fobj.map(start, end - start)) is not None:
        return start, mapped
    if len(ranges) == 1 and _BUFFERS.held is None:
        data: bytes | memoryview = fobj.read_at(start, end - start)
        if len(data) != end - start:
            raise PageError(f"{name}: changed while it was read ({len(data)} of {end - start} bytes from offset "
                            f"{start}); is it still being written?")
        return start, data
    buffer = _take(end - start)
    view = memoryview(buffer)[:end - start]
    for lo, hi in ranges:
        got = fobj.read_into(lo, view[lo - start:hi - start])
        if got != hi - lo:
            raise PageError(f"{name}: changed while it was read ({got} of {hi - lo} bytes from offset {lo}); is it "
                            "still being written?")
    return start, view.toreadonly()


def _take(size: int) -> bytearray:
    """A buffer of at least ``size`` bytes: inside :func:`reused_buffers` one this thread kept (the smallest that
    fits), held until the block ends; else new."""
    if _BUFFERS.held is None:
        return bytearray(size)
    fits = [b for b in _BUFFERS.free if len(b) >= size]
    buffer = min(fits, key=len) if fits else bytearray(size)
    if fits:
        _BUFFERS.free.remove(buffer)
    _BUFFERS.held.append(buffer)
    return buffer


def read_page(pages: PassPages, rel: str, *, select: Select | None = None, indices: Collection[int] | None = None,
              max_buffer: int = MAX_BUFFER) -> Page:
    """Read one page of ``pages``: the datapoints it is listed for (those also in ``indices`` when given).

    Raises :class:`~eval_viewer.errors.PageError` (or its :class:`~eval_viewer.errors.UntrustedPickleError`) naming
    the page for anything wrong with it."""
    listed = dict(pages.pages).get(rel)
    if listed is None:
        raise PageError(f"{pages.source.url(rel)}: not a page of {pages.key}")
    wanted = [i for i in listed if indices is None or i in indices]
    name = pages.source.url(rel)
    with open_page(pages.source, rel) as fobj:
        try:
            cache_id = pages.ids.get(rel) if pages.cache is not None else None
            columns = pages.cache.columns(cache_id, fobj.stat) if cache_id is not None else None
            ranges = columns.ranges(wanted, select, name) if columns is not None else None
            if ranges is not None and (not ranges or ranges[-1][1] - ranges[0][0] <= max_buffer):
                # the page's layout is known: only the bytes of the wanted arrays read, no parse
                start, data = _read_span(fobj, ranges, name)
                values = columns.values(data, name, wanted, select, base=start)  # type: ignore[union-attr]
                if values is not None:
                    return Page(rel, name, values)
            if fobj.size <= max_buffer:
                start, data = _read_span(fobj, [(0, fobj.size)], name)  # one sequential read
                buffer = PageBuffer(data, fobj.stat, name)
                parsed = parse_page(buffer, name, trust=pages.trust)
                if columns is None and cache_id is not None:  # the next job reads this page version by its columns
                    pages.cache.save_columns(cache_id, fobj.stat, parsed.content)
                return Page(rel, name, _values(parsed.content, buffer, name, wanted, select))
            parsed = parse_page(fobj, name, trust=pages.trust)  # too big to hold: arrays read datapoint by datapoint
            return Page(rel, name, _values(parsed.content, fobj, name, wanted, select))
        except FileNotFoundError:
            raise PageError(f"{name}: page is missing (deleted since it was indexed?)") from None
        except OSError as exc:
            raise PageError(f"{name}: cannot read the page ({exc.strerror or exc})") from None


def read_ahead(loads: Sequence[Callable[[], Page]], *, prefetch: int = 1,
               stop: threading.Event | None = None) -> Iterator[Page | PageError]:
    """Run ``loads`` (each reads one page, e.g. a ``functools.partial`` of :func:`read_page`) in order, ``prefetch``
    ahead in a helper thread; yield each one's :class:`Page`, or in its place the :class:`PageError` it raised, so a
    caller walking a schedule of pages (of one pass or several) stays in step. Stops early when ``stop`` is set; the
    helper thread ends with the iteration, also when the caller stops early."""
    if not loads:
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eval-viewer-bulk") if prefetch > 0 else None
    ahead: list[Future[Page]] = []
    try:
        for pos, load in enumerate(loads):
            if stop is not None and stop.is_set():
                return
            if pool is not None:
                while len(ahead) <= prefetch and pos + len(ahead) < len(loads):
                    ahead.append(pool.submit(loads[pos + len(ahead)]))
            try:
                page = ahead.pop(0).result() if pool is not None else load()
            except PageError as exc:
                logger.warning("%s", exc)
                yield exc
                continue
            yield page
            del page  # the caller's reference is all that keeps its buffer now
    finally:
        for future in ahead:
            future.cancel()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def iter_pages(pages: PassPages, *, rels: Iterable[str] | None = None, select: Select | None = None,
               indices: Collection[int] | None = None, prefetch: int = 1, problems: list[str] | None = None,
               stop: threading.Event | None = None, max_buffer: int = MAX_BUFFER) -> Iterator[Page]:
    """Every page of ``pages`` (or the pages ``rels``, in that order, repeats allowed) holding a datapoint of
    ``indices`` (all when None), read ``prefetch`` pages ahead in a helper thread. A page that cannot be read is
    skipped and its message appended to ``problems``; the index's own problems are appended first. Stops early when
    ``stop`` is set."""
    if problems is not None:
        problems.extend(pages.problems)
    wanted = None if indices is None else set(indices)
    listed = dict(pages.pages)
    order = [rel for rel, _ in pages.pages] if rels is None else list(rels)
    order = [rel for rel in order if rel in listed and (wanted is None or any(i in wanted for i in listed[rel]))]
    loads = [partial(read_page, pages, rel, select=select, indices=wanted, max_buffer=max_buffer) for rel in order]
    for page in read_ahead(loads, prefetch=prefetch, stop=stop):
        if isinstance(page, PageError):
            if problems is not None:
                problems.append(str(page))
            continue
        yield page


def iter_datapoints(pages: PassPages, *, select: Select | None = None, indices: Collection[int] | None = None,
                    prefetch: int = 1, problems: list[str] | None = None,
                    stop: threading.Event | None = None) -> Iterator[tuple[int, Any]]:
    """``(idx, {debugger: output})`` for every datapoint of the pass (or of ``indices``), page by page in page order,
    ascending within a page. See :func:`iter_pages` for ``select``, ``problems`` and ``stop``."""
    wanted = None if indices is None else set(indices)
    for page in iter_pages(pages, select=select, indices=wanted, prefetch=prefetch, problems=problems, stop=stop):
        for idx, value in page.values.items():
            yield idx, value
