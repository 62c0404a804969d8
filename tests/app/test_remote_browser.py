"""The viewer on logs in a bucket, as a user starts it: ``python -m eval_viewer --log-dir s3://...``.

The S3 server is moto on loopback (tests/conftest.py); the CLI finds it the standard way, ``AWS_ENDPOINT_URL`` in its
environment. One log was written by our own capture code (the example run), one in the plain reference layout.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import eval_viewer

from app_logs import REFERENCE_DEBUGGERS, REFERENCE_EPOCHS, write_reference_log
from app_steps import assert_sections_and_cards, url_state, wait_for_datapoint
from eval_viewer.app import ids

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(args: list[str], timeout: float = 60.0) -> tuple[subprocess.Popen[str], str, list[str]]:
    """Start the CLI; return it, the URL it printed once it is serving, and the lines it prints (read on by a thread
    to the end, as a terminal would: a pipe nobody reads fills up and stops the server at its next log line)."""
    proc = subprocess.Popen([sys.executable, "-m", "eval_viewer", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "serving" in line:  # printed just before the server binds: wait until it accepts connections
            url = line.rsplit(" at ", 1)[1].strip()
            port = int(url.rstrip("/").rsplit(":", 1)[1])
            threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    return proc, url, lines
                except OSError:
                    time.sleep(0.1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("the viewer did not start:\n" + "".join(lines))


CARDS_S = 60
"""How long a datapoint view may wait for its pass's pages to be indexed over the bucket (CI once needed over 20 s)."""


def test_the_cli_serves_logs_from_a_bucket(dash_duo, upload, bucket: str, example_copy: Path,  # noqa: ANN001
                                           tmp_path: Path) -> None:
    ours = upload(example_copy, f"s3://{bucket}/group/ours")
    reference = upload(write_reference_log(tmp_path / "reference"), f"s3://{bucket}/group/reference")
    proc, url, printed = _serve(["--log-dir", ours, "--log-dir", reference, "--port", str(_free_port()),
                        "--cache-dir", str(tmp_path / "cache")])
    try:
        dash_duo.driver.get(f"{url}?run=ref_run&split=val&epoch={REFERENCE_EPOCHS[0]}&idx=5")
        wait_for_datapoint(dash_duo, 5)
        dash_duo.wait_for_contains_text(f"#{ids.PASS}", f"epoch {REFERENCE_EPOCHS[0]}", timeout=10)
        # pages without an index are indexed in the background; the view is re-drawn with the cards when it is done
        # (the store's background work over the bucket is queued, a page at a time: slow on a loaded machine)
        dash_duo.wait_for_element(f"#{ids.DATAPOINT_BODY} .ev-card", timeout=CARDS_S)
        wait_for_datapoint(dash_duo, 5)
        assert_sections_and_cards(dash_duo, REFERENCE_DEBUGGERS)

        dash_duo.driver.get(f"{url}?run=evaluator_run&split=test&idx=3")
        wait_for_datapoint(dash_duo, 3)
        assert url_state(dash_duo)["split"] == "test"
        with eval_viewer.open(example_copy, cache_dir=tmp_path / "local-cache") as local:  # the oracle: local copy
            debuggers = list(local.datapoint(("evaluator_run", "test", None), 3).record.debug)
        dash_duo.wait_for_element(f"#{ids.DATAPOINT_BODY} .ev-card", timeout=CARDS_S)
        assert_sections_and_cards(dash_duo, debuggers)
        dash_duo.find_element(f"#{ids.BACK}").click()
        for run in ("trainer_run", "evaluator_run", "ref_run"):
            dash_duo.wait_for_contains_text(f"#{ids.RUNS_TABLE}", run, timeout=10)
        assert dash_duo.get_logs() == []
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        print("".join(printed[-200:]))  # what the server said (shown when the test fails)
