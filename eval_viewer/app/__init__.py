"""The Dash app a user opens: overview of runs and failures, then one datapoint with everything that was saved about it.

``create_app(store)`` is the whole public surface; the CLI builds a :class:`~eval_viewer.backend.LogStore` and hands
it over. Inside: :mod:`.ids` (every component id), :mod:`.layout` (the static page), :mod:`.state` (URL <-> view
state), :mod:`.boundary` (errors -> messages), :mod:`.figures` and :mod:`.views` (what the panels draw) and
``callbacks/<feature>.py``, each with a ``register(app, store)``; :mod:`.rendered` keeps recent datapoint views;
:mod:`.failure_table` and :mod:`.table_query` build the failure table and answer its block requests.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dash
import flask

from eval_viewer.app.boundary import on_callback_error
from eval_viewer.app.callbacks import register_all
from eval_viewer.app.layout import make_layout
from eval_viewer.backend import LogStore
from eval_viewer.display.html import assets_dir as html_assets_dir

__all__ = ["create_app", "assets_dir", "host_name"]

log = logging.getLogger(__name__)


def assets_dir() -> Path:
    """The folder of CSS and JS served with the app: :func:`eval_viewer.display.html.assets_dir` (one search, in
    the wheel's ``eval_viewer/assets`` or a checkout's ``assets/``, shared with the static-HTML pages)."""
    return html_assets_dir()


def create_app(
    store: LogStore, *, title: str = "eval-viewer", prefetch: bool = True, rescan_s: float = 10.0,
    allowed_hosts: Iterable[str] | None = None,
) -> dash.Dash:
    """A Dash app serving the runs of ``store``; call ``.run(host=..., port=...)`` on it or use its ``.server``.

    The store is the only thing the app reads: the browser picks runs by the names the store gave them, never by a
    path, so it can only see what was named on the command line. ``prefetch`` draws the ranking neighbours of an
    opened datapoint in the background so ← / → are immediate (off in benchmarks that time cold opens). Every
    ``rescan_s`` seconds (0: never) the page asks the store for new runs and epochs, so a run still training shows
    its new epochs without a reload.

    ``allowed_hosts``: the only ``Host`` header names answered (any port); others get 421 Misdirected Request, which
    closes DNS rebinding (a page on another site reaching a loopback-bound viewer through a name it controls). None:
    no check (the CLI always passes the names it is bound to, see :func:`eval_viewer.cli.allowed_hosts`).
    """
    app = dash.Dash(
        __name__,
        title=title,
        update_title=None,
        assets_folder=str(assets_dir()),
        serve_locally=True,
        # the overview's graphs and grids are mounted when it is first shown (see .layout): their callbacks are
        # registered before their components are in the page
        suppress_callback_exceptions=True,
        on_error=on_callback_error,  # the one error boundary behind every callback (see .boundary)
    )
    if allowed_hosts is not None:
        _check_hosts(app.server, allowed_hosts)
    app.layout = make_layout(rescan_s)
    register_all(app, store, prefetch=prefetch)
    return app


def host_name(header: str) -> str:
    """The name in a ``Host`` header, without the port: ``[::1]:8050`` -> ``::1``, ``Example.org:80`` -> ``example.org``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _check_hosts(server: flask.Flask, allowed: Iterable[str]) -> None:
    names = frozenset(host_name(h) for h in allowed)

    @server.before_request
    def only_bound_hosts() -> Any:
        if host_name(flask.request.host or "") not in names:
            log.warning("Refused a request for Host %r (allowed: %s)", flask.request.host, ", ".join(sorted(names)))
            return flask.Response("Misdirected request: this viewer does not serve that host name "
                                  "(start it with --allow-host NAME)\n", status=421, mimetype="text/plain")
        return None
