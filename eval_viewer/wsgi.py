"""The viewer as a WSGI application, for gunicorn (``--workers N``), uwsgi or any WSGI server of one's own.

Each worker process builds its own :class:`~eval_viewer.backend.LogStore` after the fork (a store's background
threads do not survive one), and all workers share the caches on disk (``cache_dir``: page indexes and skeletons,
written atomically), so an index built by one worker is read by the others instead of being rebuilt.

Own configuration, e.g.::

    gunicorn -w 4 -k gthread --threads 4 -b 127.0.0.1:8050 \\
        'eval_viewer.wsgi:create_server(log_dirs=["/data/runs"], allowed_hosts=["127.0.0.1", "localhost"])'

or with the settings in the environment (``EVAL_VIEWER_LOG_DIRS``, ``os.pathsep``-separated;
``EVAL_VIEWER_CACHE_DIR``; ``EVAL_VIEWER_ALLOWED_HOSTS``, comma-separated; ``EVAL_VIEWER_TRUST_PICKLES=1``)::

    EVAL_VIEWER_LOG_DIRS=/data/runs gunicorn -w 4 'eval_viewer.wsgi:create_server()'
    EVAL_VIEWER_LOG_DIRS=/data/runs uwsgi --http 127.0.0.1:8050 --processes 4 --module eval_viewer.wsgi:application
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["create_server", "application", "serve"]

log = logging.getLogger(__name__)


def create_server(
    log_dirs: Sequence[str] | str | None = None,
    *,
    allowed_hosts: Iterable[str] | None = None,
    rescan_s: float = 10.0,
    **store_options: Any,
) -> Any:
    """The Flask (WSGI) server of a viewer over ``log_dirs`` (default: ``$EVAL_VIEWER_LOG_DIRS``); the other keyword
    arguments go to :class:`~eval_viewer.backend.LogStore` (``cache_dir``, ``trust_pickles``, ``cache_bytes``...)."""
    from eval_viewer.app import create_app
    from eval_viewer.backend import LogStore

    if log_dirs is None:
        log_dirs = [d for d in os.environ.get("EVAL_VIEWER_LOG_DIRS", "").split(os.pathsep) if d]
    if allowed_hosts is None and os.environ.get("EVAL_VIEWER_ALLOWED_HOSTS"):
        allowed_hosts = [h for h in os.environ["EVAL_VIEWER_ALLOWED_HOSTS"].split(",") if h]
    store_options.setdefault("cache_dir", os.environ.get("EVAL_VIEWER_CACHE_DIR") or None)
    store_options.setdefault("trust_pickles", os.environ.get("EVAL_VIEWER_TRUST_PICKLES") == "1")
    store = LogStore(log_dirs, rescan_s=rescan_s, **store_options)
    return create_app(store, rescan_s=rescan_s, allowed_hosts=allowed_hosts).server


_LAZY: dict[str, Any] = {}
_LAZY_LOCK = threading.Lock()


def application(environ: Mapping[str, Any], start_response: Any) -> Any:
    """A WSGI callable for servers that import one by name (uwsgi ``--module``): the server is built from the
    environment on the first request of each worker."""
    with _LAZY_LOCK:
        server = _LAZY.get("server")
        if server is None:
            server = _LAZY["server"] = create_server()
    return server(environ, start_response)


def serve(settings: Mapping[str, Any], *, host: str, port: int, workers: int, threads: int = 4) -> None:
    """Run ``create_server(**settings)`` under gunicorn with ``workers`` processes of ``threads`` threads each
    (``python -m eval_viewer --workers N``); returns when gunicorn stops (Ctrl-C)."""
    from gunicorn.app.base import BaseApplication

    class _Viewer(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            for key, value in {"bind": bind, "workers": workers, "worker_class": "gthread", "threads": threads,
                               "timeout": 120, "graceful_timeout": 10, "accesslog": None,
                               "loglevel": "warning"}.items():
                self.cfg.set(key, value)

        def load(self) -> Any:  # in each worker, after the fork
            return create_server(**settings)

    _Viewer().run()
