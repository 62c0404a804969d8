"""The backend is usable without the web stack: importing it, every module of it, must not import Dash (or torch,
which costs seconds)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_backend_imports_neither_dash_nor_torch() -> None:
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import eval_viewer.backend\n"
        "for m in pkgutil.iter_modules(eval_viewer.backend.__path__):\n"
        "    importlib.import_module('eval_viewer.backend.' + m.name)\n"
        "from eval_viewer.backend import LogStore, RunInfo, PassKey, PassInfo, Scores, Item, DatapointRecord\n"
        "from eval_viewer.backend import LocalSource, FsspecSource, open_source\n"
        "print(json.dumps({m: m in sys.modules for m in ('dash', 'flask', 'plotly', 'torch')}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {"dash": False, "flask": False, "plotly": False, "torch": False}, loaded
