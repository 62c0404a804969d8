"""``--workers N`` serves under gunicorn: several processes answer the app's real requests, share the caches on
disk (the default ``--cache-dir``), keep the Host check, and stop on SIGTERM; the master forks them without starting
job workers of its own, with the compiled comparison loop loaded for them; the WSGI factory builds the same server for
one's own config."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from app_logs import write_reference_log

pytest.importorskip("gunicorn")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.NoSuchProcess:  # exited after it was listed
        return ""


def _get(url: str, host: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_workers_serve_datapoint_views_under_gunicorn(tmp_path: Path) -> None:
    logs = write_reference_log(tmp_path / "logs")
    port = _port()
    base = f"http://127.0.0.1:{port}/"
    # Job workers forced on for a log this small: a single-process server would start them ahead of its first job;
    # gunicorn's master only warms the caches and must not (they would sit idle for 5 minutes, one per core).
    env = {**os.environ, "EVAL_VIEWER_JOB_WORKERS": "2"}
    server = subprocess.Popen([sys.executable, "-m", "eval_viewer", "--log-dir", str(logs), "--port", str(port),
                               "--workers", "2", "--cache-dir", str(tmp_path / "cache"), "--rescan", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                status, _ = _get(base)
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
                time.sleep(0.2)
        assert status == 200
        children = psutil.Process(server.pid).children(recursive=True)
        while len(children) < 2 and time.monotonic() < deadline:  # the first worker may answer before the second forks
            time.sleep(0.2)
            children = psutil.Process(server.pid).children(recursive=True)
        assert len(children) >= 2, "gunicorn runs one process per worker"
        helpers = [_command(c) for c in psutil.Process(server.pid).children(recursive=True)]
        assert not [c for c in helpers if "loky" in c], helpers
        assert _get(base, host="rebind.attacker.example")[0] == 421
        deps = json.loads(_get(base + "_dash-dependencies")[1])
        dep = next(d for d in deps if "ev-datapoint-body.children" in d["output"])
        for idx in range(6):  # spread over the workers by the kernel: each answers a real datapoint view
            def entry(d: dict) -> dict:
                ident = json.loads(d["id"]) if d["id"].startswith("{") else d["id"]
                value = f"?run=ref_run&idx={idx}" if ident == "ev-url" and d["property"] == "search" else None
                return {"id": ident, "property": d["property"], "value": value}
            outputs = [{"id": p.rpartition(".")[0], "property": p.rpartition(".")[2]}
                       for p in dep["output"].strip(".").split("...")]
            body = {"output": dep["output"], "outputs": outputs, "inputs": [entry(d) for d in dep["inputs"]],
                    "state": [entry(d) for d in dep.get("state", [])], "changedPropIds": ["ev-url.search"]}
            req = urllib.request.Request(base + "_dash-update-component", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - loopback
                assert resp.status == 200
                answer = resp.read().decode()
                assert "Internal error" not in answer and "Cannot show" not in answer
                assert json.loads(answer)["response"]["ev-datapoint-body"]["children"]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert server.returncode == 0


def test_the_wsgi_factory_builds_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from eval_viewer import wsgi

    logs = write_reference_log(tmp_path / "logs")
    monkeypatch.setenv("EVAL_VIEWER_LOG_DIRS", str(logs))
    monkeypatch.setenv("EVAL_VIEWER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EVAL_VIEWER_ALLOWED_HOSTS", "viewer.example")
    server = wsgi.create_server(rescan_s=0)
    client = server.test_client()
    assert client.get("/", headers={"Host": "viewer.example"}).status_code == 200
    assert client.get("/", headers={"Host": "other.example"}).status_code == 421


def test_the_master_loads_the_compiled_loop_its_workers_inherit(tmp_path: Path) -> None:
    """Before forking, the master loads the comparison's compiled loop (in a fresh process: this one may have)."""
    logs = write_reference_log(tmp_path / "logs")
    code = ("import sys\n"
            "from eval_viewer.backend import LogStore, divergence\n"
            "from eval_viewer.cli import _warm_before_fork\n"
            "with LogStore(sys.argv[1], cache_dir=sys.argv[2], rescan_s=0) as store:\n"
            "    assert not divergence._KERNEL_OK\n"
            "    _warm_before_fork(store, 60)\n"
            "    print(divergence._KERNEL_OK)\n")
    done = subprocess.run([sys.executable, "-c", code, str(logs), str(tmp_path / "cache")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[True]"
