"""Every class of hostile page from issue 9 ends as a ``ViewerError`` naming the page, in seconds and bounded memory,
through the backend and through the app, while the rest of the log keeps working.

Each case runs in a subprocess under ``RLIMIT_AS`` (a segfault or a runaway allocation there fails the test, it
cannot take the test runner down) with a hang guard; the child reports its peak RSS, which must stay far below what
the page asks for.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import hostile

ROOT = Path(__file__).resolve().parents[2]
LIMIT_AS = 4 << 30
RSS_BOUND_MB = 1000  # the interpreter with torch, numpy and dash is ~300 MB; the bombs ask for 1 to 4 GB and more

PROBE = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
from eval_viewer.backend import LogStore
from eval_viewer.app import create_app


def probe(run, cache):
    out = {{}}
    with LogStore(run, cache_dir=cache, rescan_s=0) as store:
        key = store.default_pass(store.runs()[0].name)
        store.scores(key)                      # starts background indexing, as opening the overview does
        store.wait_background(60)
        out["status_problems"] = list(store.debug_status(key).problems)
        out["hostile"] = list(store.datapoint(key, 0).problems)
        out["healthy_problems"] = list(store.datapoint(key, 1).problems)
        app = create_app(store, prefetch=False, rescan_s=0)
        client = app.server.test_client()
        client.get("/")
        deps = json.loads(client.get("/_dash-dependencies").get_data())  # the request the browser sends
        dep = next(d for d in deps if "ev-datapoint-body.children" in d["output"])
        query = "?run=" + key.run + "&idx=0"

        def entry(d):
            ident = json.loads(d["id"]) if d["id"].startswith("{{") else d["id"]
            return {{"id": ident, "property": d["property"],
                    "value": query if (ident, d["property"]) == ("ev-url", "search") else None}}

        outputs = [{{"id": part.rpartition(".")[0], "property": part.rpartition(".")[2]}}
                   for part in dep["output"].strip(".").split("...")]
        body = {{"output": dep["output"], "outputs": outputs, "inputs": [entry(d) for d in dep["inputs"]],
                "state": [entry(d) for d in dep.get("state", [])], "changedPropIds": ["ev-url.search"]}}
        resp = client.post("/_dash-update-component", json=body)
        out["app_status"] = resp.status_code
        out["app_body"] = resp.get_data(as_text=True)[:200000]
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


for run, cache in zip(sys.argv[1::2], sys.argv[2::2]):
    print("RESULT " + json.dumps(probe(run, cache)), flush=True)
"""



def run_probe(pairs: list[tuple[Path, Path]], timeout: float = 300) -> tuple[list[dict], str]:
    """Open each (run, cache dir) in turn in one child process (the imports cost seconds, not the pages): the
    results of the runs it got through, and its stderr when it died (a segfault, a MemoryError under the limit)."""
    code = PROBE.format(limit=LIMIT_AS)
    args = [str(x) for pair in pairs for x in pair]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    results = [json.loads(ln[len("RESULT "):]) for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    died = "" if proc.returncode == 0 else f"viewer process died (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    return results, died


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every hostile run, written once in a child process (building the bombs needs no memory, but stays apart)."""
    base = tmp_path_factory.mktemp("hostile")
    runs = {}
    for kind in hostile.KINDS:
        proc = subprocess.run([sys.executable, "-m", "tests.backend.hostile", kind, str(base / kind)],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[kind] = base / kind
    return runs


@pytest.fixture(scope="module")
def probed(written: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict | str]:
    """Each hostile run opened by the viewer, in one child process: kind -> its result, or why there is none."""
    caches = tmp_path_factory.mktemp("caches")
    results, died = run_probe([(written[k], caches / k) for k in hostile.KINDS])
    out: dict[str, dict | str] = {k: died or "not reached" for k in hostile.KINDS}
    for kind, result in zip(hostile.KINDS, results):
        result["cache"] = str(caches / kind)
        out[kind] = result
    return out


@pytest.mark.parametrize("kind", hostile.KINDS)
def test_hostile_page_is_a_viewer_error_in_bounded_memory(kind: str, written: dict[str, Path],
                                                          probed: dict[str, dict | str]) -> None:
    page = written[kind] / "epoch_0" / "debugger" / "page_0.pkl"
    assert page.stat().st_size < 8 << 20, "the attack is a small page"
    out = probed[kind]
    assert isinstance(out, dict), out
    assert out["maxrss_mb"] < RSS_BOUND_MB, out["maxrss_mb"]
    # the backend: the hostile datapoint says what is wrong with which file; the other page is untouched
    assert any("page_0.pkl" in p for p in out["hostile"]), out["hostile"]
    assert not any("page_1.pkl" in p for p in out["hostile"] + out["healthy_problems"])
    assert not any("Internal" in p or "Traceback" in p for p in out["hostile"])
    # the app: the datapoint callback answers 200 with the message, not an internal error
    assert out["app_status"] == 200, out["app_body"][:500]
    assert "page_0.pkl" in out["app_body"]
    assert "Internal error" not in out["app_body"]
    # the cache holds no more than the page could justify
    cached = sum(f.stat().st_size for f in Path(out["cache"]).rglob("*") if f.is_file())
    assert cached < 1 << 20
