"""A capture that runs until it is killed: the SIGKILL tests start it, wait, and kill it at a random point.

``python tests/debuggers/crash_writer.py FLOW RUN_DIR`` (FLOW: ``direct`` = ``start_epoch(dir)``, ``reference`` =
``reset_buffer()`` ... ``save_all(dir)``, never reached). After every batch it prints how many pages the writer
has completed (``PAGES n``), flushed, so the test knows which pages a crash must not lose.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from eval_viewer.debuggers import FeatureMapDebugger, SequentialDebugger


def main(flow: str, run: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).eval()
    config = [{"name": "fmap", "debugger_config": {"class": FeatureMapDebugger, "args": {"layer_name": "0"}}}]
    debugger = SequentialDebugger(config, model, page_size_mb=0.05, staging_dir=run)
    out = run / "epoch_0" / "debugger"
    if flow == "direct":
        debugger.start_epoch(out)
    else:
        debugger.enabled = True
        debugger.reset_buffer()
    idx = 0
    print("READY", flush=True)
    while True:
        inputs = torch.randn(4, 3, 16, 16)
        batch = {"inputs": inputs, "meta_info": {"idx": torch.arange(idx, idx + 4)}}
        with torch.no_grad():
            batch["outputs"] = model(inputs)
        debugger(batch, model)
        idx += 4
        print(f"PAGES {debugger.stats.pages}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
