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


def test_the_wheel_ships_every_asset(tmp_path: Path) -> None:
    """The app's CSS/JS must be served from an installed wheel too, not only from a source checkout."""
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("eval_viewer-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assets = {f"eval_viewer/assets/{p.name}" for p in (ROOT / "assets").iterdir() if p.suffix in {".css", ".js"}}
    assert assets and assets <= shipped
    assert not any(name.startswith(("data/", "tests/", "benchmarks/")) for name in shipped)
