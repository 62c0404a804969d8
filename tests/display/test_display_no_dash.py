"""No module under ``eval_viewer.display`` or ``eval_viewer.backend`` imports Dash: a notebook or a report that draws
views never loads (or needs) the web app. Checked in a fresh interpreter, where nothing else has imported Dash yet."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_CODE = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
names = [sys.argv[1]] + [m.name for m in pkgutil.walk_packages(package.__path__, sys.argv[1] + ".")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "dash": sorted(m for m in sys.modules if m == "dash" or m.startswith("dash."))}))
"""


@pytest.mark.parametrize("package", ["eval_viewer.display", "eval_viewer.backend"])
def test_importing_every_module_loads_no_dash(package: str) -> None:
    result = subprocess.run([sys.executable, "-c", _CODE, package], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report["modules"]) > 3  # the walk found the package's modules, not just its name
    if package == "eval_viewer.display":
        assert {"eval_viewer.display.view", "eval_viewer.display.html", "eval_viewer.display.datapoint"} <= set(
            report["modules"])
    assert report["dash"] == [], f"{package} imported {report['dash']}"
