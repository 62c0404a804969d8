"""The notebook API end to end on the example run: open, list, rank, read a datapoint, draw every item."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import eval_viewer
from eval_viewer.backend import PassKey
from eval_viewer.display import view as v
from eval_viewer.errors import LogDirError, NotFoundError

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "example"


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    if not EXAMPLE.is_dir():
        pytest.skip("data/example is missing")
    with eval_viewer.open(EXAMPLE, cache_dir=tmp_path_factory.mktemp("api-cache")) as opened:
        yield opened


def test_open_lists_runs_and_passes(logs: eval_viewer.Logs) -> None:
    assert [r.name for r in logs.runs] == ["evaluator_run", "quantized_run", "trainer_run"]
    trainer = logs.run("trainer_run")
    assert trainer.kind == "trainer" and trainer.splits == ("val", "train")  # 10 epochs, 3 training snapshots
    assert trainer.steps("train") == (0, 160, 320)
    assert logs.pass_("trainer_run") == PassKey("trainer_run", "val", trainer.steps("val")[-1])  # latest epoch
    assert logs.pass_("trainer_run", "val", 4) == PassKey("trainer_run", "val", 4)
    assert logs.pass_("evaluator_run") == PassKey("evaluator_run", "test", None)
    assert logs.passes("evaluator_run") == [PassKey("evaluator_run", "test", None)]
    assert len(logs.passes()) == len(trainer.passes) + 2  # and the two evaluator runs' test passes
    with pytest.raises(NotFoundError, match="no pass val step 99"):
        logs.pass_("trainer_run", "val", 99)
    assert "trainer_run (13 passes)" in repr(logs)


def test_scores_rankings_and_pandas(logs: eval_viewer.Logs) -> None:
    key = logs.pass_("trainer_run")
    scores = logs.scores(key)
    assert "miou" in logs.metrics(key) and "loss" in logs.metrics(key)
    ranking = logs.ranking(key, "miou")
    miou = scores.per_datapoint["miou"]
    assert sorted(ranking.tolist()) == list(range(scores.num_datapoints))
    assert miou[ranking[0]] == np.nanmin(miou) and miou[ranking[-1]] == np.nanmax(miou)  # worst first
    loss = scores.per_datapoint["loss"]
    assert loss[logs.ranking(key, "loss")[0]] == np.nanmax(loss)  # lower is better: the highest loss is worst
    # the same ranking through a plain tuple key, as a notebook user types it
    np.testing.assert_array_equal(logs.ranking(("trainer_run", "val", key.step), "miou"), ranking)
    pd = pytest.importorskip("pandas")
    frame = scores.to_pandas()
    assert isinstance(frame, pd.DataFrame) and frame.index.name == "idx"
    assert list(frame.columns) == list(scores.metrics) and len(frame) == scores.num_datapoints
    assert frame["miou"].idxmin() == ranking[0]
    assert set(logs.meta_table(key)) >= {"num_shapes", "occluded"}


def test_a_datapoint_and_every_items_figure(logs: eval_viewer.Logs) -> None:
    key = logs.pass_("trainer_run")
    worst = int(logs.ranking(key, "miou")[0])
    dp = logs.datapoint(key, worst, metric="miou")
    assert (dp.key, dp.idx, dp.problems) == (key, worst, ())
    assert dp.scores["miou"] == logs.scores(key).per_datapoint["miou"][worst]
    assert dp.record.inputs and dp.record.labels and dp.record.debug
    drawn = 0
    for name, items in dp.record.debug.items():
        for item in items:
            assert dp.item(name, item.key) is item
            node = dp.figure(name, item.key)
            assert isinstance(node, v.Node)
            assert not [n for n in v.walk(node) if isinstance(n, v.Problem)], f"{name}/{item.key} failed to draw"
            drawn += sum(isinstance(n, (v.Figure, v.Image)) for n in v.walk(node))
            assert node._repr_html_().strip()  # noqa: SLF001 - what Jupyter calls
    assert drawn >= len(dp.record.debug)
    with pytest.raises(NotFoundError, match="no debugger 'nope'"):
        dp.item("nope")
    several = next(name for name, items in dp.record.debug.items() if len(items) > 1)
    with pytest.raises(NotFoundError, match="saved several items"):
        dp.item(several)
    card = dp.figure(several)  # every item of the debugger, as its card in the app
    assert sum(isinstance(n, (v.Figure, v.Image)) for n in v.walk(card)) >= len(dp.record.debug[several]) - 1
    html = dp._repr_html_()  # noqa: SLF001 - the whole datapoint view, as Jupyter shows it
    for title in ("Inputs", "Labels", "Meta info", "Debug outputs", *dp.record.debug):
        assert title in html


def test_the_same_safety_defaults_and_errors_as_the_app(tmp_path: Path) -> None:
    with pytest.raises(LogDirError, match="does not exist"):
        eval_viewer.open(tmp_path / "nowhere")
    log = Path(shutil.copytree(EXAMPLE / "evaluator_run", tmp_path / "logs" / "evaluator_run"))
    import joblib

    page = log / "debugger" / "page_0.pkl"
    content = joblib.load(page)
    first = min(content)
    content[first]["hostile"] = subprocess.Popen  # a class off the allow-list, as a crafted page would carry
    joblib.dump(content, page)
    with eval_viewer.open(tmp_path / "logs", cache_dir=tmp_path / "cache") as logs:
        problems = logs.datapoint(logs.pass_("evaluator_run"), first).problems
    assert any("refused to load subprocess.Popen" in p and "--trust-pickles" in p for p in problems), problems
