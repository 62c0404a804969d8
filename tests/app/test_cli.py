"""The command line: mistakes are one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from eval_viewer.cli import build_parser, main

from app_logs import write_reference_log


def test_missing_log_dir_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eval_viewer", "--log-dir", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eval-viewer: error:") and "nope" in lines[0]
    assert "Traceback" not in result.stderr


def test_folder_without_runs_and_busy_port_are_exit_2(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    (tmp_path / "empty").mkdir()
    assert main(["--log-dir", str(tmp_path / "empty"), "--cache-dir", str(tmp_path / "c")]) == 2
    assert "no run found" in capsys.readouterr().err
    logs = write_reference_log(tmp_path / "logs")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--log-dir", str(logs), "--port", str(port), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"eval-viewer: error: port {port} on 127.0.0.1 is already in use; pick another with --port"


def test_defaults_bind_loopback() -> None:
    args = build_parser().parse_args(["--log-dir", "x"])
    assert (args.host, args.port, args.trust_pickles) == ("127.0.0.1", 8050, False)
