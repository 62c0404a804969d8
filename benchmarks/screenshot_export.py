"""The README's export screenshot: the offline report of the example run, opened from file:// by headless Chromium.

``python benchmarks/screenshot_export.py`` writes the report of the 5 worst datapoints of ``trainer_run`` (epoch 9, by
miou) into a temporary folder with ``python -m eval_viewer export`` and saves ``benchmarks/export_report.png``; it
prints how long the export took and how big the page is, for plotly.js inline and beside it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["-m", "eval_viewer", "export", "--log-dir", "data/example", "--run", "trainer_run", "--epoch", "9",
           "--metric", "miou", "--worst", "5", "--quiet"]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("inline", "directory"):
            out = Path(tmp) / mode
            start = time.perf_counter()
            subprocess.run([sys.executable, *COMMAND, "--out", str(out), "--plotlyjs", mode,
                            "--cache-dir", str(Path(tmp) / "cache")], check=True, cwd=ROOT)
            seconds = time.perf_counter() - start
            sizes = {p.name: p.stat().st_size / 2**20 for p in sorted(out.iterdir())}
            print(f"--plotlyjs {mode}: {seconds:.1f} s (the whole command, Python start included); "
                  + ", ".join(f"{name} {mb:.2f} MB" for name, mb in sizes.items()))
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1400,1500", "--virtual-time-budget=10000",
                        f"--screenshot={ROOT / 'benchmarks' / 'export_report.png'}",
                        (Path(tmp) / "inline" / "report.html").as_uri()], check=True, capture_output=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
