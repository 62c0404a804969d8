"""Rendered datapoint views, kept for a while and drawn ahead of the user's next step.

Stepping through failures with ← and → is the main way through the viewer, and drawing one datapoint (a dozen
figures, PNG-encoded) takes most of a request. So the view of the datapoint just opened and of its neighbours in the
ranking are drawn once and kept in a small LRU: ← / → then answer from memory, and coming back to a datapoint is free.
Neighbours are drawn on one background thread while the user looks at the current view; a request for a view that is
being drawn waits for that drawing instead of starting a second one.

Only complete views are kept: a record with problems (a page still being indexed or written, a broken page) is drawn
again next time, so a live run's datapoint shows its debug outputs as soon as they are on disk.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable
from concurrent.futures import Future

from dash.development.base_component import Component

from eval_viewer.app.state import AttentionChoice, ViewState
from eval_viewer.app.views import datapoint_view
from eval_viewer.backend import LogStore
from eval_viewer.backend.health import HealthThresholds
from eval_viewer.backend.health_summary import HealthJobs, datapoint_flags
from eval_viewer.errors import ViewerError

__all__ = ["RenderedViews"]

log = logging.getLogger(__name__)

Key = tuple[str | None, str | None, int | None, int | None, str | None, str, frozenset[str] | None,
            AttentionChoice | None, HealthThresholds | None]
MAX_PENDING = 4
"""Drawings waiting at most: a user holding → down must not queue up work for views long gone by."""


def _key(state: ViewState, version: str, opened: frozenset[str] | None) -> Key:
    """``version`` is the pass's file version (:meth:`LogStore.pass_version`): a view is never served once a file it
    was drawn from changed. ``opened``: the debug items drawn (the user's open ones; None: all)."""
    return (state.run, state.split, state.step, state.idx, state.metric, version, opened, state.attn, state.health)


def _frozen(opened: Collection[str] | None) -> frozenset[str] | None:
    return None if opened is None else frozenset(opened)


class RenderedViews:
    """``get(state, opened)``: the datapoint view of a complete state with the debug items ``opened`` drawn;
    ``prefetch(states, opened)``: draw those in the background."""

    def __init__(self, store: LogStore, *, size: int = 24, prefetch: bool = True) -> None:
        self._store = store
        self._size = size
        self._views: OrderedDict[Key, Component] = OrderedDict()
        self._pending: dict[Key, Future[Component]] = {}
        self._lock = threading.Lock()
        self._prefetch = prefetch
        self._queue: queue.SimpleQueue[tuple[Key, ViewState, frozenset[str] | None, Future[Component]] | None] = (
            queue.SimpleQueue())
        self._worker: threading.Thread | None = None

    def _key(self, state: ViewState, opened: frozenset[str] | None) -> Key:
        try:
            version = self._store.pass_version(state.pass_key)
            if HealthJobs.of(self._store).ready(state.pass_key, state.health) is not None:
                version += "+health"  # its badges now know the whole pass (dead channels, heads' typical range)
        except ViewerError:  # an unknown pass: drawing it raises the error the user sees
            version = ""
        return _key(state, version, opened)

    def _draw(self, state: ViewState, opened: frozenset[str] | None) -> Component:
        assert state.run is not None and state.idx is not None
        key = self._key(state, opened)  # the version before reading: files changing while drawing make it stale
        record = self._store.datapoint(state.pass_key, state.idx)
        scores = self._store.scores(state.pass_key)
        # a badge on each card with a problem, under the thresholds the URL names (as the summary and the table)
        health = datapoint_flags(self._store, state.pass_key, record, thresholds=state.health)
        view = datapoint_view(record, state.metric, scores.higher_is_better, opened, health, state.attn)
        if not record.problems:
            with self._lock:
                self._views[key] = view
                self._views.move_to_end(key)
                while len(self._views) > self._size:
                    self._views.popitem(last=False)
        return view

    def get(self, state: ViewState, opened: Collection[str] | None = None) -> Component:
        """The view of ``state`` (run, epoch, idx, metric all resolved) with the debug items ``opened`` drawn (None:
        every item): from memory, from a drawing in progress, or drawn now. Errors of the store propagate (the
        caller's boundary shows them)."""
        drawn = _frozen(opened)
        key = self._key(state, drawn)
        with self._lock:
            view = self._views.get(key)
            if view is not None:
                self._views.move_to_end(key)
                return view
            pending = self._pending.get(key)
        if pending is not None:
            try:
                return pending.result()
            except Exception:  # noqa: BLE001 - the background attempt failed; draw here so the error surfaces here
                log.debug("prefetch of %s failed; drawing it now", key, exc_info=True)
        return self._draw(state, drawn)

    def prefetch(self, states: Iterable[ViewState], opened: Collection[str] | None = None) -> None:
        """Draw ``states`` (with the debug items ``opened``) in the background unless kept or already being drawn."""
        if not self._prefetch:
            return
        with self._lock:
            if self._worker is None:  # a daemon thread: never holds up the server's exit
                self._worker = threading.Thread(target=self._work, name="eval-viewer-prefetch", daemon=True)
                self._worker.start()
            drawn = _frozen(opened)
            for state in states:
                key = self._key(state, drawn)
                if key in self._views or key in self._pending or len(self._pending) >= MAX_PENDING:
                    continue
                future: Future[Component] = Future()
                self._pending[key] = future
                self._queue.put((key, state, drawn, future))

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            key, state, opened, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._draw(state, opened))
            except Exception as err:  # noqa: BLE001 - handed to whoever waits; get() draws again and reports it
                future.set_exception(err)
            finally:
                with self._lock:
                    self._pending.pop(key, None)

    def close(self) -> None:
        """Stop the background thread after the drawing in progress (drawings not started are dropped)."""
        with self._lock:
            for future in self._pending.values():
                future.cancel()
        self._queue.put(None)
