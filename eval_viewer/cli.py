"""``python -m eval_viewer --log-dir PATH``: index the logs, serve the viewer, print where.

A mistake on the command line (a path that does not exist, a folder with no runs, a port in use) is one line on
stderr and exit code 2, the argparse convention, never a traceback. The server binds 127.0.0.1 unless told otherwise:
the viewer shows model internals and, with ``--trust-pickles``, unpickles them, so it should not face a network by
accident.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import socket
import sys
import threading
import webbrowser
from collections.abc import Sequence
from pathlib import Path

from eval_viewer.errors import ViewerError

__all__ = ["main", "build_parser", "build_export_parser", "export_main"]

log = logging.getLogger("eval_viewer")

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eval-viewer",
        description="Rank datapoints by any metric and inspect the saved inputs, predictions and internal states of "
        "the worst ones in the browser.",
        epilog="Other command: eval-viewer export --help (an HTML report of the worst datapoints that opens from a "
        "file, without a server).",
    )
    parser.add_argument("--log-dir", action="append", required=True, metavar="PATH_OR_URL",
                        help="a run folder or a folder of runs: a path, or a URL fsspec can open (s3://bucket/prefix, "
                        "gs://..., memory://..., file://...); repeat to compare runs from several places")
    parser.add_argument("--storage-options", type=_json_object, default=None, metavar="JSON",
                        help="options for fsspec when --log-dir is a URL, e.g. '{\"anon\": true}' or "
                        "'{\"endpoint_url\": \"http://127.0.0.1:9000\"}' (credentials and endpoints also come "
                        "from the environment, e.g. AWS_ENDPOINT_URL)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes the viewer "
                        "to the network)")
    parser.add_argument("--port", type=int, default=8050, help="port to serve on (default 8050)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also answer requests for this Host name (the name users type, e.g. a reverse proxy's "
                        "or this machine's DNS name); by default only the names of --host are answered, which keeps "
                        "DNS-rebinding pages out; repeat for several")
    parser.add_argument("--follow-symlinks", action="store_true",
                        help="follow symbolic links that lead out of a local --log-dir (default: not listed, not "
                        "served)")
    parser.add_argument("--dataset", default=None, metavar="MODULE:CALLABLE",
                        help="your code that returns a datapoint's inputs/labels/meta_info by index, for logs that "
                             "saved none (imported and run in this process: only for code you trust)")
    parser.add_argument("--trust-pickles", action="store_true",
                        help="unpickle debug pages without the allow-list of safe types; only for logs you wrote")
    parser.add_argument("--cache-dir", type=Path, default=None, metavar="PATH",
                        help="where to keep indexes built for pages that came without one "
                        "(default: ~/.cache/eval-viewer)")
    parser.add_argument("--cache-mb", type=int, default=256, metavar="MB",
                        help="memory for decoded debug pages (default 256)")
    parser.add_argument("--rescan", type=float, default=10.0, metavar="SECONDS",
                        help="list the logs again this often, in the background, so new runs and passes appear "
                        "while the page is open (default 10; 0: never)")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="serve with gunicorn: N processes of 4 threads each, sharing the caches on disk (for a "
                        "group; default 0: the built-in single-process server)")
    parser.add_argument("--open", action="store_true", help="open the viewer in the default web browser")
    parser.add_argument("--debug", action="store_true",
                        help="Dash dev tools (callback graph, errors in the page) and debug logging")
    return parser


def _json_object(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"anon\": true}'")
    return value


def allowed_hosts(host: str, extra: Sequence[str] = ()) -> list[str] | None:
    """The Host names the server answers when bound to ``host``: every loopback name for a loopback address, the
    address itself otherwise, plus ``extra``. None (no check) for a wildcard bind (0.0.0.0, ::) without ``extra``:
    the names users reach it by are not known."""
    if host in ("0.0.0.0", "::", ""):
        return list(extra) + ["localhost", "127.0.0.1", "::1", socket.gethostname()] if extra else None
    if host in LOOPBACK or host.startswith("127."):
        return [*sorted(LOOPBACK), host, *extra]
    return [host, *extra]


WARM_S = 60.0
"""How long ``--workers`` waits, before forking, for the page indexes and skeletons of each run's default pass."""


def _warm_before_fork(store: object, seconds: float) -> None:
    """Index and skeleton each run's default pass into the shared disk cache before the workers fork, so no worker
    parses a cold page on a first view (each would, side by side); gives up after ``seconds``. Also load the
    comparison's compiled loop, which every forked worker then holds without loading (or compiling) it again on its
    first paired view."""
    from eval_viewer.backend import LogStore
    from eval_viewer.backend.divergence import warm_compiled

    assert isinstance(store, LogStore)
    for run in store.runs():
        try:
            store.scores(store.default_pass(run.name))  # starts the pass's background index and skeletons
        except ViewerError as err:
            log.info("%s", err)
    warm_compiled()  # while the index threads work
    if not store.wait_background(seconds):
        log.info("Page indexes still being built after %.0f s; the workers finish them", seconds)


def _fail(message: str) -> int:
    print(f"eval-viewer: error: {message}", file=sys.stderr)
    return 2


def _port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be served, checked before start-up so the user gets one line, not a server trace."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except socket.gaierror:
            return f"cannot resolve host {host!r}"
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use; pick another with --port"
            return f"cannot listen on {host}:{port}: {err.strerror or err}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, open the logs, serve until interrupted; returns the exit code. ``export ...``: the report."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export"]:
        return export_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.debug:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    if not 0 < args.port < 65536:
        return _fail(f"--port must be between 1 and 65535, got {args.port}")
    if not 0 <= args.workers <= 64:
        return _fail(f"--workers must be between 0 and 64, got {args.workers}")

    from eval_viewer.app import create_app  # imported here so --help stays fast
    from eval_viewer.backend import LogStore

    # A single server starts its job workers ahead of the first job. Under --workers this store only checks the logs
    # and warms the caches before gunicorn forks: job workers started here (one per core, at most one per page and 8)
    # would sit idle in the master for loky's 5 minutes, each with the compiled loop loaded, and be forked with it.
    try:
        store = LogStore(args.log_dir, trust_pickles=args.trust_pickles, cache_dir=args.cache_dir,
                         cache_bytes=args.cache_mb * 2**20, rescan_s=args.rescan,
                         storage_options=args.storage_options, follow_symlinks=args.follow_symlinks,
                         dataset=args.dataset, prepare_workers=args.workers == 0)
    except ViewerError as err:
        return _fail(str(err))
    problem = _port_problem(args.host, args.port)
    if problem:
        store.close()
        return _fail(problem)

    runs = store.runs()
    if args.host not in LOOPBACK:
        log.warning("Serving on %s: anyone who can reach this machine can read these logs", args.host)
    if args.trust_pickles:
        log.warning("--trust-pickles: debug pages are unpickled without the allow-list; open only logs you trust")
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown_host}:{args.port}/"
    print(f"eval-viewer serving {len(runs)} run{'s' if len(runs) != 1 else ''} at {url}", flush=True)
    if args.open:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    hosts = allowed_hosts(args.host, args.allow_host)
    if hosts is None:
        log.warning("Bound to %s without --allow-host: any Host name is answered (DNS rebinding is not blocked)",
                    args.host)
    if args.workers > 0:
        _warm_before_fork(store, WARM_S)
        store.close()  # checked the logs; each worker opens its own store after the fork
        from eval_viewer.wsgi import serve

        serve({"log_dirs": args.log_dir, "allowed_hosts": hosts, "rescan_s": args.rescan,
               "trust_pickles": args.trust_pickles, "cache_dir": args.cache_dir, "cache_bytes": args.cache_mb * 2**20,
               "storage_options": args.storage_options, "follow_symlinks": args.follow_symlinks,
               "dataset": args.dataset},
              host=args.host, port=args.port, workers=args.workers)
        return 0
    app = create_app(store, rescan_s=args.rescan, allowed_hosts=hosts)
    try:
        app.run(host=args.host, port=args.port, debug=args.debug, use_reloader=False)
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
    return 0


EXPORT_INDEX_WAIT_S = 600.0
"""How long the export waits for the pages of a log without ``index.json`` to be indexed (the app never waits)."""


def build_export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eval-viewer export",
        description="Write an HTML report of the K worst datapoints of a pass (NaN first, lower-is-better metrics "
        "respected, as in the app): the pass's scores, then each datapoint's scores, inputs, labels, predictions and "
        "debug figures, drawn as the app draws them. It opens from a file with no server and no network.",
    )
    parser.add_argument("--log-dir", action="append", required=True, metavar="PATH_OR_URL",
                        help="a run folder or a folder of runs (a path or an fsspec URL); repeat for several")
    parser.add_argument("--run", required=True, help="the run to report on")
    parser.add_argument("--split", default=None, metavar="val|test",
                        help="its pass: val (a validated epoch) or test (default: the run's latest validated epoch, "
                        "else its test pass)")
    parser.add_argument("--epoch", type=int, default=None, metavar="N", help="the epoch (default: the latest)")
    parser.add_argument("--metric", required=True, metavar="M", help="the metric that ranks the datapoints")
    parser.add_argument("--worst", type=int, default=20, metavar="K", help="how many datapoints (default 20)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder to write report.html into (created if needed)")
    parser.add_argument("--vs-run", default=None, metavar="R",
                        help="a second pass to show each datapoint in, paired by index (default run: --run)")
    parser.add_argument("--vs-split", default=None, metavar="S", help="the second pass's split")
    parser.add_argument("--vs-epoch", type=int, default=None, metavar="N", help="the second pass's epoch")
    parser.add_argument("--plotlyjs", choices=("inline", "directory"), default="inline",
                        help="inline: plotly.js inside the one HTML file (default); directory: plotly.min.js "
                        "copied beside it (smaller reports sharing one copy)")
    parser.add_argument("--storage-options", type=_json_object, default=None, metavar="JSON",
                        help="options for fsspec when --log-dir is a URL")
    parser.add_argument("--trust-pickles", action="store_true",
                        help="unpickle debug pages without the allow-list of safe types; only for logs you wrote")
    parser.add_argument("--cache-dir", type=Path, default=None, metavar="PATH",
                        help="where to keep indexes built for pages that came without one "
                        "(default: ~/.cache/eval-viewer)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def export_main(argv: Sequence[str] | None = None) -> int:
    """``eval-viewer export ...``: write the report and print its path; a ViewerError is one line and exit code 2."""
    args = build_export_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from eval_viewer.backend import LogStore
    from eval_viewer.report import PassChoice, export_report

    vs = None
    if args.vs_run is not None or args.vs_split is not None or args.vs_epoch is not None:
        vs = PassChoice(args.vs_run or args.run, args.vs_split, args.vs_epoch)
    try:
        with LogStore(args.log_dir, trust_pickles=args.trust_pickles, cache_dir=args.cache_dir, rescan_s=0,
                      index_wait_s=EXPORT_INDEX_WAIT_S, storage_options=args.storage_options) as store:
            path = export_report(store, PassChoice(args.run, args.split, args.epoch), args.metric, args.worst,
                                 args.out, vs=vs, plotlyjs=args.plotlyjs, progress=not args.quiet)
    except ViewerError as err:
        return _fail(str(err))
    print(f"eval-viewer wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
