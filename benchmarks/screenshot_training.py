"""The README's training-snapshot pictures, from a real (tiny) training run.

``python benchmarks/screenshot_training.py`` trains the demo's TinySegNet on synthetic shapes for 320 CPU steps with a
:class:`~eval_viewer.debuggers.SnapshotWriter` taking a snapshot of a fixed batch every 40 steps (the demo's prompts: a
positive click per shape, a box around the first, a negative click on the background), then writes
``benchmarks/snapshot_composite.png`` (one composite as saved) and ``benchmarks/training_tab.png`` (the app's Training
tab on that run, drawn by headless Chromium). About a minute on two cores.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from werkzeug.serving import make_server

from eval_viewer import demo
from eval_viewer.app import create_app
from eval_viewer.backend import LogStore
from eval_viewer.debuggers import SnapshotWriter

ROOT = Path(__file__).resolve().parents[1]
EVERY, EPOCHS = 40, 10


def train(run: Path) -> int:
    torch.manual_seed(0)
    model = demo.TinySegNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    loader = DataLoader(demo.ShapesDataset(512, seed=1), batch_size=16, shuffle=True)
    shown = next(iter(DataLoader(demo.ShapesDataset(4, seed=7), batch_size=4)))  # the same datapoints every time
    step = 0
    with SnapshotWriter(run, every_n_steps=EVERY, activation="argmax", max_videos=4) as writer:
        for _ in range(EPOCHS):
            for batch in loader:
                loss = F.cross_entropy(model(batch["inputs"]), batch["labels"]["mask"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if writer.due(step):
                    model.eval()
                    with torch.no_grad():
                        logits = model(shown["inputs"])
                    model.train()
                    masks = shown["labels"]["mask"]
                    writer(step, shown["inputs"]["image"], gt=masks, pred=logits,
                           prompts=[demo.snapshot_prompts(m) for m in masks], indices=shown["meta_info"]["idx"])
                step += 1
    return step - 1 - (step - 1) % EVERY


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "logs" / "shapes_run"
        last = train(run)
        shutil.copyfile(run / "train" / f"step_{last}" / "snapshot_2.png", ROOT / "benchmarks" / "snapshot_composite.png")
        with LogStore(run.parent, cache_dir=Path(tmp) / "cache") as store:
            server = make_server("127.0.0.1", 8766, create_app(store).server, threaded=True)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            time.sleep(1)
            subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--window-size=1400,1000", "--virtual-time-budget=20000",
                            f"--screenshot={ROOT / 'benchmarks' / 'training_tab.png'}",
                            "http://127.0.0.1:8766/?run=shapes_run#view=training&idx=2"],
                           check=True, capture_output=True)
            server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
