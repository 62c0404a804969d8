"""The Dash app a user opens: overview of runs and failures, then one datapoint with everything that was saved about it.

``create_app(store)`` is the whole public surface; the CLI builds a :class:`~eval_viewer.backend.LogStore` and hands
it over. Inside: :mod:`.ids` (every component id), :mod:`.layout` (the static page), :mod:`.state` (URL <-> view
state), :mod:`.boundary` (errors -> messages), :mod:`.figures` and :mod:`.views` (what the panels draw) and
``callbacks/<feature>.py``, each with a ``register(app, store)``; :mod:`.rendered` keeps recent datapoint views;
:mod:`.failure_table` and :mod:`.table_query` build the failure table and answer its block requests.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dash

from eval_viewer.app.boundary import on_callback_error
from eval_viewer.app.callbacks import register_all
from eval_viewer.app.layout import make_layout
from eval_viewer.backend import LogStore

__all__ = ["create_app", "assets_dir"]

log = logging.getLogger(__name__)


def assets_dir() -> Path:
    """The folder of CSS and JS served with the app.

    In an installed wheel the top-level ``assets/`` ships as the package ``eval_viewer.assets`` (see pyproject.toml),
    i.e. ``<site-packages>/eval_viewer/assets``; in a source checkout it is ``<repo>/assets`` beside the package.
    """
    import eval_viewer

    package_root = Path(eval_viewer.__file__).resolve().parent
    for candidate in (package_root / "assets", package_root.parent / "assets"):
        if (candidate / "style.css").is_file():
            return candidate
    log.warning("No assets folder found next to %s; the app will be unstyled", package_root)
    return package_root / "assets"


def create_app(
    store: LogStore, *, title: str = "eval-viewer", prefetch: bool = True, rescan_s: float = 10.0
) -> dash.Dash:
    """A Dash app serving the runs of ``store``; call ``.run(host=..., port=...)`` on it or use its ``.server``.

    The store is the only thing the app reads: the browser picks runs by the names the store gave them, never by a
    path, so it can only see what was named on the command line. ``prefetch`` draws the ranking neighbours of an
    opened datapoint in the background so ← / → are immediate (off in benchmarks that time cold opens). Every
    ``rescan_s`` seconds (0: never) the page asks the store for new runs and epochs, so a run still training shows
    its new epochs without a reload.
    """
    app = dash.Dash(
        __name__,
        title=title,
        update_title=None,
        assets_folder=str(assets_dir()),
        serve_locally=True,
        on_error=on_callback_error,  # the one error boundary behind every callback (see .boundary)
    )
    app.layout = make_layout(rescan_s)
    register_all(app, store, prefetch=prefetch)
    return app
