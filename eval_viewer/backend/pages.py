"""Read one datapoint from one page: find its skeleton (cached) or parse the page, then read only its arrays.

In order of cost: the datapoint itself in the LRU; the page's parsed structure in the LRU; the page's skeleton file
(:mod:`.skeletons`, one small unpickle); parsing the page (its whole pickle structure), after which its skeletons
are written in the background for next time. All caches are keyed by the page's version (size and mtime and inode, or
ETag) taken from the *open* file, and the structure and the array reads of one call use that same open file: a page replaced by an atomic
rename is read whole from one version, and a page rewritten in place is parsed again instead of being read at stale
offsets (a read that runs past its new end is a clean :class:`PageError`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eval_viewer.backend.lru import ByteLRU
from eval_viewer.backend.pickles import ParsedPage, materialize, parse_page, resident_bytes
from eval_viewer.backend.records import to_plain
from eval_viewer.backend.skeletons import SkeletonStore
from eval_viewer.backend.sources import RangeFile, Source, Stat
from eval_viewer.errors import PageError

__all__ = ["read_datapoint", "open_page"]


def open_page(source: Source, rel: str) -> RangeFile:
    """The page opened for range reads; a missing or unreadable page is a :class:`PageError` naming it."""
    try:
        return source.open(rel)
    except FileNotFoundError:
        raise PageError(f"{source.url(rel)}: page is missing (deleted since it was indexed?)") from None
    except OSError as exc:
        raise PageError(f"{source.url(rel)}: cannot open the page ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001 - remote storage errors of every kind say the same thing
        raise PageError(f"{source.url(rel)}: cannot open the page ({type(exc).__name__}: {exc})") from None


def read_datapoint(
    source: Source,
    rel: str,
    idx: int,
    *,
    trust: bool,
    lru: ByteLRU,
    skeletons: SkeletonStore | None = None,
    submit: Callable[..., Any] | None = None,
) -> Any:
    """The in-memory ``{debugger_name: output}`` of datapoint ``idx`` in the page ``rel`` of ``source``.

    Raises :class:`KeyError` when the page does not hold ``idx`` (the index was stale) and :class:`PageError` for an
    unreadable page. Torch tensors come back as numpy arrays; arrays are read-only (they are shared with the cache).
    ``submit(fn, *args)`` runs skeleton writing in the background (inline when None).
    """
    name = source.url(rel)
    page_id = f"{source.identity}/{rel}"
    with open_page(source, rel) as fobj:
        stat = fobj.stat
        value_key = ("datapoint", page_id, stat, idx)
        value = lru.get(value_key)
        if value is not None:
            return value
        skeleton = _skeleton(page_id, name, idx, stat, fobj, trust, lru, skeletons, submit)
        try:
            value = materialize(skeleton, fobj, name, to_plain)
        except FileNotFoundError:  # removed between the open and the read (remote storage has no open handle)
            raise PageError(f"{name}: page is missing (deleted since it was indexed?)") from None
        except OSError as exc:
            raise PageError(f"{name}: cannot read datapoint {idx} ({exc.strerror or exc})") from None
        lru.put(value_key, value, resident_bytes(value))
        return value


def _skeleton(
    page_id: str,
    name: str,
    idx: int,
    stat: Stat,
    fobj: RangeFile,
    trust: bool,
    lru: ByteLRU,
    skeletons: SkeletonStore | None,
    submit: Callable[..., Any] | None,
) -> Any:
    """Datapoint ``idx`` of the page with its arrays still on disk, from the cheapest source that has it."""
    page_key = ("page", page_id)
    cached = lru.get(page_key)
    if cached is not None and cached[0] == stat:
        page: ParsedPage = cached[1]
        return page.content[idx]
    if skeletons is not None:
        entries_key = ("skeletons", page_id)
        cached = lru.get(entries_key)
        entries = cached[1] if cached is not None and cached[0] == stat else None
        if entries is None:
            entries = skeletons.load(page_id, stat)
            if entries is not None:
                lru.put(entries_key, (stat, entries), entries.nbytes)
        if entries is not None:
            return skeletons.value(entries, idx, name)
    page = parse_page(fobj, name, trust=trust)
    lru.put(page_key, (stat, page), page.resident_bytes)
    if skeletons is not None:
        (submit or _inline)(skeletons.save, page_id, stat, page.content)
    return page.content[idx]


def _inline(fn: Callable[..., Any], *args: Any) -> None:
    fn(*args)
