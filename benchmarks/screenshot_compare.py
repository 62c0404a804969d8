"""The README's compare screenshots: the example log served by the real app, drawn by headless Chromium.

``python benchmarks/screenshot_compare.py`` writes ``benchmarks/compare_overview.png`` (the full-precision run against
its int8 copy: deltas and the layer x head table) and ``benchmarks/compare_paired.png`` (two epochs of a datapoint).
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from pathlib import Path

from werkzeug.serving import make_server

from eval_viewer.app import create_app
from eval_viewer.backend import LogStore

ROOT = Path(__file__).resolve().parents[1]
SHOTS = {
    "compare_overview.png": "?run=evaluator_run&split=test&metric=miou&vs_run=quantized_run&vs_split=test",
    "compare_paired.png": "?run=trainer_run&split=val&epoch=4&metric=miou&idx=0&vs_run=trainer_run&vs_split=val"
                          "&vs_epoch=9&focus=%5B%22debug%22%2C%22attention%22%2C%22attention%22%5D",
}


def main() -> int:
    with tempfile.TemporaryDirectory() as cache, LogStore(ROOT / "data" / "example", cache_dir=cache) as store:
        server = make_server("127.0.0.1", 8765, create_app(store).server, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        time.sleep(1)
        for name, query in SHOTS.items():
            subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--window-size=1400,1700", "--virtual-time-budget=20000",
                            f"--screenshot={ROOT / 'benchmarks' / name}", f"http://127.0.0.1:8765/{query}"],
                           check=True, capture_output=True)
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
