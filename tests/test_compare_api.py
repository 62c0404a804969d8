"""logs.compare on the example log: two epochs of a run, and the full-precision run against its int8 copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

import eval_viewer
from eval_viewer.backend import PassKey
from eval_viewer.backend.compare import Thresholds, attention_weights
from eval_viewer.display import view as v

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "example"
FP, Q8 = PassKey("evaluator_run", "test"), PassKey("quantized_run", "test")


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    if not EXAMPLE.is_dir():
        pytest.skip("data/example is missing")
    with eval_viewer.open(EXAMPLE, cache_dir=tmp_path_factory.mktemp("compare-cache")) as opened:
        yield opened


def test_two_epochs_deltas_follow_the_scores(logs: eval_viewer.Logs) -> None:
    a, b = PassKey("trainer_run", "val", 4), PassKey("trainer_run", "val", 9)
    cmp = logs.compare(a, b, metric="loss", thresholds=Thresholds(change=0.01))
    la, lb = logs.scores(a).per_datapoint["loss"], logs.scores(b).per_datapoint["loss"]
    np.testing.assert_allclose(cmp.deltas.delta, lb - la)
    assert not cmp.deltas.higher_is_better
    order = cmp.deltas.order()
    assert cmp.deltas.delta[order[0]] == pytest.approx(np.nanmax(lb - la))  # the loss that grew most comes first
    assert cmp.deltas.regressed.sum() == int(((lb - la) > 0.01).sum())
    assert "regressed" in repr(cmp)


def test_quantized_run_layer_table_and_per_datapoint_metrics(logs: eval_viewer.Logs) -> None:
    cmp = logs.compare(FP, Q8, metric="miou")
    assert cmp.alignment.size == logs.scores(FP).num_datapoints and cmp.alignment.unmatched_b.size == 0
    table = cmp.layer_table(timeout=300)
    attention = table["layer"] == "attention/attention"
    assert attention.sum() == 2 and sorted(table["head"][attention].tolist()) == [0, 1]
    assert (table["jsd"][attention] > 0).all() and (table["jsd"][attention] < 0.5).all()
    arrays = table["layer"] == "encoder_features/feature_map"
    assert table["head"][arrays].tolist() == [-1] and 10 < table["sqnr_db"][arrays][0] < 80  # int8: tens of dB
    per = cmp.per_datapoint("attention/attention")
    summary = cmp.layers()
    worst_idx, partner, value = cmp.worst("attention/attention", 1, limit=1)[0]
    assert value == pytest.approx(np.nanmax(per["jsd"][:, 1]))
    pair = cmp.datapoint(worst_idx)
    assert pair.b.idx == partner and pair.a.pass_key == FP
    wa = attention_weights(pair.a.debug_item("attention", "attention").value)
    wb = attention_weights(pair.b.debug_item("attention", "attention").value)
    expected = (jensenshannon(wa[1].astype(np.float64), wb[1].astype(np.float64), base=2, axis=-1) ** 2).mean()
    assert pair.metrics()["attention/attention"]["jsd"][1] == pytest.approx(expected, rel=1e-5)
    assert summary.idx_a.size == cmp.alignment.size
    html = pair._repr_html_()
    assert "ev-paired" in html and "difference:" in html


def test_common_failures_across_epochs(logs: eval_viewer.Logs) -> None:
    passes = [key for key in logs.passes("trainer_run") if key.split == "val"]  # the epochs, not the snapshots
    cf = logs.common_failures(passes, "miou", percentile=25)
    assert cf.fails.shape == (len(passes), logs.scores(passes[0]).num_datapoints)
    assert cf.counts.max() <= len(passes) and cf.counts[cf.order()[0]] == cf.counts.max()


def test_common_failures_of_two_runs_respect_lower_is_better_and_name_a_missing_metric(
        logs: eval_viewer.Logs) -> None:
    loss = np.stack([logs.scores(k).per_datapoint["loss"] for k in (FP, Q8)])
    cf = logs.common_failures([FP, Q8], "loss", percentile=20)
    for row, values in enumerate(loss):  # lower is better: the highest 20 % fail
        cut = np.percentile(values[np.isfinite(values)], 80)
        np.testing.assert_array_equal(cf.fails[row], np.isnan(values) | (values >= cut))
    assert cf.counts.tolist() == cf.fails.sum(0).tolist()
    with pytest.raises(eval_viewer.errors.ViewerError, match="trainer_run.*no metric 'made_up'"):
        logs.common_failures([("trainer_run", "val", 9), FP], "made_up")


def test_paired_view_nodes_hold_both_passes(logs: eval_viewer.Logs) -> None:
    pair = logs.compare(("trainer_run", "val", 4), ("trainer_run", "val", 9)).datapoint(5)
    node = pair.view(focus='["debug","gradcam","gradcam"]')
    cards = [n for n in v.walk(node) if isinstance(n, v.Group) and "ev-paired-card" in n.cls]
    assert cards[0].data["debugger"] == "gradcam" and "ev-card-focus" in cards[0].cls
    assert {c.data["debugger"] for c in cards} == set(pair.a.debug)
    assert any(isinstance(n, v.Image) and "ev-diff-image" in n.cls for n in v.walk(node))
