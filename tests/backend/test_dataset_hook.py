"""``--dataset module:callable``: a log that saved no inputs shows the user's dataset's, saying where they came from;
a bad spec fails at start, a failing call is a problem of that datapoint only."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import joblib
import numpy as np
import pytest

from eval_viewer.backend import LogStore
from eval_viewer.backend.dataset import DatasetError
from eval_viewer.cli import build_parser
from eval_viewer.log_format import DEBUGGER_DIR, VALIDATION_SCORES, Kind, epoch_dir_name, page_name

MODULE = textwrap.dedent('''
    import numpy as np

    def datapoint(idx):
        if idx == 2:
            raise RuntimeError("no such file: img_2.png")
        image = np.full((3, 16, 16), idx / 10, dtype=np.float32)
        mask = np.zeros((16, 16), dtype=np.int64)
        mask[4:8, 4:8] = 1
        return {"inputs": {"image": image}, "labels": {"mask": mask}, "meta_info": {"path": f"img_{idx}.png"}}

    not_callable = 3
''')


def _log(root: Path) -> Path:
    """A run whose pages hold a feature map only: no recorder, no image anywhere."""
    epoch = root / "run" / epoch_dir_name(0)
    (epoch / DEBUGGER_DIR).mkdir(parents=True)
    (epoch / VALIDATION_SCORES).write_text(json.dumps({"aggregated": {"m": 0.5}, "per_datapoint": {"m": [0.5] * 3}}))
    pages = {i: {"backbone": np.random.default_rng(i).standard_normal((1, 8, 4, 4)).astype(np.float32)}
             for i in range(3)}
    joblib.dump(pages, epoch / DEBUGGER_DIR / page_name(0))
    return root


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_data_for_viewer.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_data_for_viewer"


def test_the_dataset_fills_inputs_labels_and_meta_and_says_so(tmp_path: Path, user_module: str) -> None:
    with LogStore([str(_log(tmp_path / "logs"))], cache_dir=tmp_path / "c", index_wait_s=30, rescan_s=0,
                  dataset=f"{user_module}:datapoint") as store:
        record = store.datapoint(("run", "val", 0), 1)
        failing = store.datapoint(("run", "val", 0), 2)
    assert [(i.key, i.kind) for i in record.inputs] == [("image", Kind.IMAGE)]
    assert [(i.key, i.kind) for i in record.labels] == [("mask", Kind.MASK)]
    assert record.meta_info == {"path": "img_1.png"}
    assert f"--dataset {user_module}:datapoint" in record.notes["inputs"]
    assert [i.kind for i in record.debug["backbone"]] == [Kind.FEATURE_MAP]  # the log's own outputs stay
    assert not failing.inputs and any("img_2.png" in p and "RuntimeError" in p for p in failing.problems)


def test_without_the_flag_nothing_runs(tmp_path: Path, user_module: str) -> None:
    with LogStore([str(_log(tmp_path / "logs"))], cache_dir=tmp_path / "c", index_wait_s=30, rescan_s=0) as store:
        assert not store.datapoint(("run", "val", 0), 1).inputs


@pytest.mark.parametrize("spec, says", [("nocolon", "module:callable"), ("no_such_module_xyz:f", "cannot import"),
                                        ("{m}:missing", "has no 'missing'"), ("{m}:not_callable", "not a callable")])
def test_a_bad_spec_fails_at_start(tmp_path: Path, user_module: str, spec: str, says: str) -> None:
    with pytest.raises(DatasetError, match=says):
        LogStore([str(_log(tmp_path / "logs"))], cache_dir=tmp_path / "c", rescan_s=0,
                 dataset=spec.format(m=user_module))


def test_the_cli_takes_the_flag() -> None:
    args = build_parser().parse_args(["--log-dir", "x", "--dataset", "pkg.data:datapoint"])
    assert args.dataset == "pkg.data:datapoint"
