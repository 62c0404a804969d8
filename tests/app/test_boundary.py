"""Every callback sits behind the one error boundary: whatever the store raises, no callback answers a 500.

Each registered callback is called through Flask's test client, the way the browser calls it, with the store broken
two ways (a ``ViewerError`` and a bug); pattern-matching callbacks get empty wildcard lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eval_viewer.app import create_app
from eval_viewer.backend import LogStore
from eval_viewer.errors import PageError

BROKEN = ("scores", "datapoint", "run", "runs", "pass_info", "default_pass", "meta_table", "debug_status",
          "metric_history", "pass_version")


def _id(raw: str) -> Any:
    return json.loads(raw) if raw.startswith("{") else raw


def _prop(dep: dict[str, Any], value: Any) -> Any:
    """One input/state entry of a request; wildcard ids (ALL, MATCH) get an empty list."""
    ident = _id(dep["id"])
    if isinstance(ident, dict) and any(isinstance(v, list) for v in ident.values()):
        return []
    return {"id": ident, "property": dep["property"], "value": value}


def _request(output: str, spec: dict[str, Any], value: Any) -> dict[str, Any]:
    outputs = []
    for part in output.strip(".").split("..."):
        ident, _, prop = part.rpartition(".")
        outputs.append({"id": _id(ident), "property": prop.split("@")[0]})
    return {
        "output": output,
        "outputs": outputs if output.startswith("..") else outputs[0],
        "inputs": [_prop(dep, value) for dep in spec["inputs"]],
        "state": [_prop(dep, value) for dep in spec.get("state", [])],
        "changedPropIds": [f"{dep['id']}.{dep['property']}" for dep in spec["inputs"][:1]],
    }


@pytest.mark.parametrize("failure", [PageError("page_3.pkl: corrupt"), RuntimeError("a bug")],
                         ids=["viewer-error", "bug"])
def test_no_callback_answers_500_whatever_the_store_raises(reference_log: Path, cache_dir: Path,
                                                           failure: Exception) -> None:
    with LogStore(reference_log, cache_dir=cache_dir, rescan_s=0) as store:
        app = create_app(store, prefetch=False, rescan_s=0)
        client = app.server.test_client()
        client.get("/")
        for name in BROKEN:
            def fail(*_: Any, **__: Any) -> Any:
                raise failure
            setattr(store, name, fail)
        called = 0
        for output, spec in app.callback_map.items():
            if not spec.get("inputs") or "callback" not in spec:  # clientside callbacks run in the browser
                continue
            for value in (None, "?run=trainer&idx=0", 1):
                resp = client.post("/_dash-update-component", json=_request(output, spec, value))
                assert resp.status_code in (200, 204), (output, value, resp.get_data(as_text=True)[:500])
                called += 1
        assert called >= 3 * 10


@pytest.mark.parametrize(("host", "status"), [
    ("127.0.0.1:8050", 200), ("localhost:8050", 200), ("[::1]:8050", 200), ("LOCALHOST", 200),
    ("viewer.example.org", 200), ("attacker.example:8050", 421), ("127.0.0.1.attacker.example", 421), ("", 421),
])
def test_only_the_bound_host_names_are_answered(reference_log: Path, cache_dir: Path, host: str,
                                                status: int) -> None:
    from eval_viewer.cli import allowed_hosts

    with LogStore(reference_log, cache_dir=cache_dir, rescan_s=0) as store:
        app = create_app(store, prefetch=False, rescan_s=0,
                         allowed_hosts=allowed_hosts("127.0.0.1", ["viewer.example.org"]))
        resp = app.server.test_client().get("/", headers={"Host": host})
        assert resp.status_code == status, host
        layout = app.server.test_client().get("/_dash-layout", headers={"Host": host})
        assert layout.status_code == status


def test_allowed_hosts_follow_the_bind_address() -> None:
    from eval_viewer.cli import allowed_hosts

    assert "localhost" in allowed_hosts("127.0.0.1") and "::1" in allowed_hosts("::1")
    assert allowed_hosts("10.0.0.5") == ["10.0.0.5"]
    assert allowed_hosts("0.0.0.0") is None
    assert "team.example" in allowed_hosts("0.0.0.0", ["team.example"])
