"""Checks on the project's own wiring: what CI runs, what the wheel ships."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    test_commands = [c for c in commands if "pytest" in c]
    assert len(test_commands) == 1, "the README should have exactly one test set-up command"
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_commands[0].strip() in [line.strip() for line in ci_lines]


def test_every_subpackage_is_packaged() -> None:
    """The wheel's package list is explicit (assets/ is mapped into it), so a new subpackage must be listed."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "eval_viewer").rglob("__init__.py")
    }
    assert found <= listed, f"add to pyproject's [tool.setuptools] packages: {sorted(found - listed)}"
    assert config["package-dir"]["eval_viewer.assets"] == "assets"
    assert "eval_viewer.assets" in listed
