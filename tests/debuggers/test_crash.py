"""SIGKILL of a capture at random points, in both flows, loses no completed page.

``crash_writer.py`` captures until killed and prints how many pages the writer has completed after every batch.
After the kill, every completed page must be on disk and readable (staged beside the log in the reference flow, in
the epoch's folder in the direct flow), the index may only name pages that exist, and the next start reports and
moves in what a crash left staged and cleans the temp files of interrupted writes."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import joblib
import pytest

from eval_viewer import log_format as lf
from eval_viewer.backend.index import parse_index
from eval_viewer.debuggers import staging
from eval_viewer.debuggers.writer import PageWriter

HERE = Path(__file__).resolve().parent
TRIALS = 3


def _kill_at_random(flow: str, run: Path, delay: float) -> int:
    """Run the capture, SIGKILL it ``delay`` s after it is ready; the pages it had reported complete."""
    proc = subprocess.Popen([sys.executable, str(HERE / "crash_writer.py"), flow, str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE.parents[1])
    assert proc.stdout is not None
    completed = 0
    ready_at = None
    try:
        for line in proc.stdout:
            if line.startswith("READY"):
                ready_at = time.monotonic()
            elif line.startswith("PAGES "):
                completed = int(line.split()[1])
            if ready_at is not None and time.monotonic() - ready_at >= delay:
                proc.send_signal(signal.SIGKILL)
                break
        else:
            pytest.fail(f"the capture ended by itself: {proc.stderr.read() if proc.stderr else ''}")
    finally:
        proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    return completed


def _pages_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if lf.parse_page_name(p.name) is not None)


def _check_readable(folder: Path, completed: int) -> set[int]:
    pages = _pages_in(folder)
    assert len(pages) >= completed, f"{completed} pages were completed, {len(pages)} are in {folder}"
    indices: set[int] = set()
    for page in pages:
        content = joblib.load(page)  # whole and readable: written atomically
        indices.update(content)
    index = folder / lf.index_name(None)
    if index.exists():
        listed = parse_index(index.read_bytes(), str(index)).pages
        assert set(listed) <= {p.name for p in pages}, "the index names only pages that exist"
    assert indices == set(range(len(indices))), "every datapoint of the completed pages, none twice"
    return indices


@pytest.mark.parametrize("flow", ["direct", "reference"])
def test_sigkill_at_random_points_loses_no_completed_page(flow: str, tmp_path: Path) -> None:
    rng = random.Random(9)
    for trial in range(TRIALS):
        run = tmp_path / f"run{trial}"
        completed = _kill_at_random(flow, run, delay=rng.uniform(0.1, 1.2))
        if flow == "direct":
            folder = run / "epoch_0" / "debugger"
            _check_readable(folder, completed)
            leftovers = list(folder.glob(".page*.tmp"))
            assert staging.clean_temp_files(folder, None) == len(leftovers)
            assert not list(folder.glob(".page*.tmp"))
            continue
        staged = list((run / staging.STAGING_DIR).iterdir())
        assert len(staged) == 1, "staged beside the log, in the run folder"
        indices = _check_readable(staged[0], completed)
        # the next start: the crashed staging folder is reported, its pages move into an epoch's folder
        writer = PageWriter(page_size_bytes=1 << 20, max_queue_bytes=1 << 20, staging_root=run)
        try:
            writer.begin(None)
            writer.discard()
        finally:
            writer.close()
        found = staging.recover(run)
        assert found == staged
        target = run / "epoch_0" / "debugger"
        staging.move_in(found[0], target)
        assert _check_readable(target, completed) == indices
        assert not (run / staging.STAGING_DIR).exists()
