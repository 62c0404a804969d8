"""Debug items are found by (debugger name, item key), never by position: the same item is found again in another
epoch or run whose set of debuggers differs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from eval_viewer.backend import LogStore, PassKey
from eval_viewer.errors import NotFoundError
from eval_viewer.log_format import DEBUGGER_DIR, EVALUATION_SCORES, VALIDATION_SCORES, Kind, epoch_dir_name

N = 6


def _fmap(idx: int, epoch: int) -> np.ndarray:
    return np.full((4, 3, 3), idx * 10 + epoch, dtype=np.float32)


def _outputs(idx: int, epoch: int, debuggers: tuple[str, ...]) -> dict[str, Any]:
    every = {
        "attention": {"attention": np.full((2, 5, 5), 0.2, dtype=np.float32)},
        "layer4": {"feature_map": _fmap(idx, epoch), "stats": {"mean": float(idx * 10 + epoch)}},
        "gradcam": np.full((8, 8), epoch, dtype=np.float32),
        "timing": {"ms": float(epoch)},
    }
    return {name: every[name] for name in debuggers}


@pytest.fixture
def changing_debuggers(tmp_path: Path, scores_writer: Callable[..., Path]) -> Path:
    """Epoch 0 ran (layer4, gradcam); epoch 1 ran (attention, timing, gradcam, layer4): layer4 moved from first to
    last, and another run ran (gradcam, layer4) only."""
    logs = tmp_path / "logs"
    layouts = {("trainer", 0): ("layer4", "gradcam"), ("trainer", 1): ("attention", "timing", "gradcam", "layer4"),
               ("evaluator", None): ("gradcam", "layer4")}
    for (run, epoch), debuggers in layouts.items():
        folder = logs / run / epoch_dir_name(epoch) if epoch is not None else logs / run
        scores_writer(folder / (VALIDATION_SCORES if epoch is not None else EVALUATION_SCORES), n=N)
        (folder / DEBUGGER_DIR).mkdir(parents=True)
        joblib.dump({i: _outputs(i, epoch or 0, debuggers) for i in range(N)}, folder / DEBUGGER_DIR / "page_0.pkl")
    return logs


def test_the_same_item_is_found_by_name_across_epochs_and_runs(make_store: Callable[..., LogStore],
                                                               changing_debuggers: Path) -> None:
    store = make_store(changing_debuggers)
    first = store.datapoint(PassKey("trainer", "val", 0), 2)
    second = store.datapoint(PassKey("trainer", "val", 1), 2)
    other = store.datapoint(PassKey("evaluator", "test", None), 2)
    assert first.problems == second.problems == other.problems == ()
    # the item's position differs between the passes: a positional key (debug.0.0) would name another item
    assert list(first.debug) == ["layer4", "gradcam"]
    assert list(second.debug) == ["attention", "timing", "gradcam", "layer4"]
    assert list(other.debug) == ["gradcam", "layer4"]
    for record, epoch in ((first, 0), (second, 1), (other, 0)):
        fmap = record.debug_item("layer4", "feature_map")
        assert fmap.kind == Kind.FEATURE_MAP
        np.testing.assert_array_equal(fmap.value, _fmap(2, epoch))
        assert record.debug_item("layer4", "stats").value == {"mean": 20.0 + epoch}
        cam = record.debug_item("gradcam")  # a debugger whose output is one value: key ""
        assert cam.key == "" and cam.kind == Kind.HEATMAP and cam.value[0, 0] == epoch
        named = {(name, item.key): item for section, name, item in record.items() if section == "debug"}
        assert named[("layer4", "feature_map")] is fmap
    assert second.debug_item("attention", "attention").kind == Kind.ATTENTION
    # an item missing from one pass is a NotFoundError that says which debuggers that pass has
    with pytest.raises(NotFoundError, match=r"no debugger 'attention' \(debuggers: layer4, gradcam\)"):
        first.debug_item("attention", "attention")
    with pytest.raises(NotFoundError, match=r"debugger 'layer4' has no item 'fmap' \('feature_map', 'stats'\)"):
        other.debug_item("layer4", "fmap")
