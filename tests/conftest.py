"""Fixtures shared by every test folder: an S3-compatible server on loopback (moto's server mode), started and stopped
by the tests that ask for it, and logs uploaded to it.

Nothing here reaches a real cloud: the endpoint is ``http://127.0.0.1:<free port>`` and the credentials are dummies.
The endpoint travels the standard way, ``AWS_ENDPOINT_URL`` in the environment, which both fsspec (s3fs/botocore)
and a viewer started as a subprocess pick up.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "example"

_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a moto server running for the whole session, with the environment pointing at it."""
    pytest.importorskip("s3fs", reason="remote-log tests need s3fs (the dev extra installs it)")
    server_module = pytest.importorskip("moto.server", reason="remote-log tests need moto[server] (dev extra)")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto serves through werkzeug: no line per request

    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in [*_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(_ENV, AWS_ENDPOINT_URL=endpoint)
    try:
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str):  # noqa: ANN201 - an s3fs.S3FileSystem
    """A fresh s3fs filesystem (its own listings cache) on the loopback server."""
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)


@pytest.fixture
def bucket(s3) -> str:  # noqa: ANN001
    """A new, empty bucket for one test."""
    name = f"logs-{uuid.uuid4().hex[:12]}"
    s3.mkdir(name)
    return name


@pytest.fixture
def upload(s3):  # noqa: ANN001, ANN201
    """``upload(local_folder, "s3://bucket/prefix")``: copy a folder to the server file by file; returns the URL."""

    def _upload(local: Path, url: str) -> str:
        root = url.removeprefix("s3://").rstrip("/")
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            s3.pipe_file(f"{root}/{path.relative_to(local).as_posix()}", path.read_bytes())
        s3.invalidate_cache()
        return url

    return _upload


@pytest.fixture
def example_copy(tmp_path: Path) -> Path:
    """A private copy of the committed example log (written by our own capture code), safe to damage."""
    if not (EXAMPLE.is_dir() and any(EXAMPLE.iterdir())):
        pytest.skip("data/example is missing: generate it with `python -m eval_viewer.demo --out data/example`")
    return Path(shutil.copytree(EXAMPLE, tmp_path / "example"))
