"""Switching run or pass keeps the datapoint only when it is the same one (carry.match_datapoint), without a browser;
and the app opens on the trainer run written last."""

from __future__ import annotations

import json
import os
from pathlib import Path

from eval_viewer.app.carry import match_datapoint
from eval_viewer.app.state import ViewState, resolve
from eval_viewer.backend import LogStore
from eval_viewer.log_format import EVALUATION_SCORES, VALIDATION_SCORES, epoch_dir_name


def test_same_meta_key_follows_the_datapoint_to_its_new_index() -> None:
    old = {"path": ["a.png", "b.png", "c.png"], "noise": [0.1, 0.2, 0.3]}
    new = {"path": ["c.png", "a.png", "b.png"], "noise": [0.3, 0.1, 0.2]}
    carried = match_datapoint(0, old, 3, new, 3, same_run=False, where="run 'b'")
    assert carried.idx == 1 and "#0" in carried.note and "#1" in carried.note and "'a.png'" in carried.note
    assert match_datapoint(2, old, 3, {"path": ["x", "y", "c.png"]}, 3, same_run=False, where="b").note is None


def test_a_key_missing_in_the_other_pass_drops_the_datapoint_and_says_so() -> None:
    carried = match_datapoint(1, {"image_id": [10, 11]}, 2, {"image_id": [12, 13]}, 2, same_run=False, where="run 'b'")
    assert carried.idx is None and "no datapoint with image_id 11" in carried.note


def test_same_index_is_kept_only_when_the_meta_agrees() -> None:
    old = {"shapes": ["disc", "square"], "noise": [0.1, 0.2]}
    assert match_datapoint(1, old, 2, dict(old), 2, same_run=False, where="b").idx == 1
    other = {"shapes": ["square", "disc"], "noise": [0.1, 0.2]}
    carried = match_datapoint(1, old, 2, other, 2, same_run=False, where="run 'b'")
    assert carried.idx is None and "shapes" in carried.note
    blind = match_datapoint(1, {}, 2, {}, 2, same_run=False, where="run 'b'")
    assert blind.idx is None and "no meta info" in blind.note
    assert match_datapoint(1, {}, 2, {}, 2, same_run=True, where="epoch 3").idx == 1


def test_another_number_of_datapoints_is_another_dataset() -> None:
    carried = match_datapoint(1, {}, 5, {}, 7, same_run=True, where="epoch 3")
    assert carried.idx is None and "7 datapoints, not 5" in carried.note


def _scores(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"aggregated": {"m": 0.5}, "per_datapoint": {"m": [0.5] * n}}))


def test_the_app_opens_on_the_trainer_run_written_last(tmp_path: Path) -> None:
    _scores(tmp_path / "a_eval" / EVALUATION_SCORES, 3)
    old = tmp_path / "b_old" / epoch_dir_name(4) / VALIDATION_SCORES
    new = tmp_path / "c_new" / epoch_dir_name(1) / VALIDATION_SCORES
    _scores(new, 3)
    _scores(old, 3)
    os.utime(new, ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    os.utime(old, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    with LogStore([str(tmp_path)], cache_dir=tmp_path / "cache", rescan_s=0) as store:
        state = resolve(store, ViewState()).state
    assert (state.run, state.split, state.step) == ("c_new", "val", 1)
