"""Read one datapoint from one page: find its skeleton (cached) or parse the page, then read only its arrays.

In order of cost: the datapoint itself in the LRU; the page's parsed structure in the LRU; the page's skeleton file
(:mod:`.skeletons`, one small unpickle); parsing the page (its whole pickle structure), after which its skeletons
are written in the background for next time. All caches are keyed by the page's inode, size and mtime taken from the
*open* file, and the structure and the array reads of one call use that same open file: a page replaced by an atomic
rename is read whole from one version, and a page rewritten in place is parsed again instead of being read at stale
offsets (a read that runs past its new end is a clean :class:`PageError`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval_viewer.backend.lru import ByteLRU
from eval_viewer.backend.pickles import ParsedPage, materialize, parse_page, resident_bytes
from eval_viewer.backend.records import to_plain
from eval_viewer.backend.skeletons import SkeletonStore
from eval_viewer.errors import PageError

__all__ = ["read_datapoint"]


def read_datapoint(
    path: Path,
    idx: int,
    *,
    trust: bool,
    lru: ByteLRU,
    skeletons: SkeletonStore | None = None,
    submit: Callable[..., Any] | None = None,
) -> Any:
    """The in-memory ``{debugger_name: output}`` of datapoint ``idx`` in the page at ``path``.

    Raises :class:`KeyError` when the page does not hold ``idx`` (the index was stale) and :class:`PageError` for an
    unreadable page. Torch tensors come back as numpy arrays; arrays are read-only (they are shared with the cache).
    ``submit(fn, *args)`` runs skeleton writing in the background (inline when None).
    """
    try:
        fobj = open(path, "rb")
    except FileNotFoundError:
        raise PageError(f"{path}: page is missing (deleted since it was indexed?)") from None
    except OSError as exc:
        raise PageError(f"{path}: cannot open the page ({exc.strerror or exc})") from None
    with fobj:
        st = os.fstat(fobj.fileno())
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        value_key = ("datapoint", str(path), sig, idx)
        value = lru.get(value_key)
        if value is not None:
            return value
        skeleton = _skeleton(path, idx, sig, fobj, trust, lru, skeletons, submit)
        try:
            value = materialize(skeleton, fobj, str(path), to_plain)
        except OSError as exc:
            raise PageError(f"{path}: cannot read datapoint {idx} ({exc.strerror or exc})") from None
        lru.put(value_key, value, resident_bytes(value))
        return value


def _skeleton(
    path: Path,
    idx: int,
    sig: tuple[int, int, int],
    fobj: Any,
    trust: bool,
    lru: ByteLRU,
    skeletons: SkeletonStore | None,
    submit: Callable[..., Any] | None,
) -> Any:
    """Datapoint ``idx`` of the page with its arrays still on disk, from the cheapest source that has it."""
    page_key = ("page", str(path))
    cached = lru.get(page_key)
    if cached is not None and cached[0] == sig:
        page: ParsedPage = cached[1]
        return page.content[idx]
    file_sig = (sig[1], sig[2])
    if skeletons is not None:
        entries_key = ("skeletons", str(path))
        cached = lru.get(entries_key)
        entries = cached[1] if cached is not None and cached[0] == sig else None
        if entries is None:
            entries = skeletons.load(path, file_sig)
            if entries is not None:
                lru.put(entries_key, (sig, entries), entries.nbytes)
        if entries is not None:
            return skeletons.value(entries, idx, path)
    page = parse_page(fobj, str(path), trust=trust)
    lru.put(page_key, (sig, page), page.resident_bytes)
    if skeletons is not None:
        (submit or _inline)(skeletons.save, path, file_sig, page.content)
    return page.content[idx]


def _inline(fn: Callable[..., Any], *args: Any) -> None:
    fn(*args)
