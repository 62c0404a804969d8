"""Health checks on logs written by our own capture code with planted problems (:mod:`health_run`), on a healthy
run, and on the example run; the pass summary, its disk cache and the scale jump between two epochs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from health_run import JUMP, N, POISONED, write_health_run

from eval_viewer.backend import LogStore, PassKey
from eval_viewer.backend.health import HealthThresholds, forward_order, health, scale_jump
from eval_viewer.backend.health_summary import HealthJobs, compute_health, scale_jump_rows
from eval_viewer.log_format import INDEX_FORWARD_POSITION, INDEX_LAYER

CLEAN = tuple(i for i in range(N) if i not in POISONED)
EXAMPLE = Path(__file__).resolve().parents[2] / "data" / "example"


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("health")
    write_health_run(root / "planted")
    write_health_run(root / "healthy", healthy=True)
    return root


@pytest.fixture()
def store(logs: Path, tmp_path: Path) -> LogStore:
    with LogStore(logs, cache_dir=tmp_path / "cache", rescan_s=0, index_wait_s=30) as s:
        yield s


def _flags(store: LogStore, key: tuple[str, str, int], idx: int) -> list:
    return list(health(store.datapoint(key, idx), store.debugger_info(key)))


def test_index_records_the_layers_and_the_order_they_ran_in(logs: Path) -> None:
    index = json.loads((logs / "planted" / "epoch_0" / "debugger" / "index.json").read_text())
    debuggers = index["debuggers"]
    # configured out of order (layer4 first); the index has the order the layers ran in
    ran = sorted((d[INDEX_FORWARD_POSITION], d[INDEX_LAYER]) for d in debuggers.values() if INDEX_LAYER in d)
    assert [layer for _, layer in ran] == ["aux.1", "backbone.stem", "backbone.layer2", "backbone.layer3",
                                          "backbone.layer4", "attn"]
    assert INDEX_LAYER not in debuggers["record"] and INDEX_FORWARD_POSITION not in debuggers["record"]


def test_nan_is_found_on_its_layer_and_datapoints_with_the_first_bad_layer(store: LogStore) -> None:
    key = ("planted", "val", 0)
    for idx in range(N):
        nan = [f for f in _flags(store, key, idx) if f.kind == "nan"]
        if idx in POISONED:
            assert {f.layer for f in nan} == {"backbone.layer3", "backbone.layer4"}
            assert {f.first_bad_layer for f in nan} == {"backbone.layer3"}
            assert all(f.amount == 1.0 for f in nan)
            assert "since backbone.layer3" in next(f for f in nan if f.layer == "backbone.layer4").text
        else:
            assert nan == []


def test_dead_relu_collapsed_and_uniform_heads(store: LogStore) -> None:
    key = ("planted", "val", 0)
    for idx in CLEAN:
        flags = _flags(store, key, idx)
        dead = [f for f in flags if f.kind == "dead"]
        assert [(f.layer, f.debugger, f.amount) for f in dead] == [("aux.1", "aux_relu", 1.0)]
        collapsed = [(f.layer, f.head) for f in flags if f.kind == "attention_collapsed"]
        uniform = [(f.layer, f.head) for f in flags if f.kind == "attention_uniform"]
        assert collapsed == [("attn", 0)] and uniform == [("attn", 1)]
        assert next(f for f in flags if f.kind == "attention_collapsed").amount < 1e-6
        assert {f.kind for f in flags} == {"dead", "attention_collapsed", "attention_uniform"}


def test_scale_jump_between_two_epochs(store: LogStore) -> None:
    a, b = ("planted", "val", 0), ("planted", "val", 1)
    for idx in CLEAN:
        jumps = scale_jump(store.datapoint(a, idx), store.datapoint(b, idx), store.debugger_info(b))
        assert [(f.layer, f.first_bad_layer) for f in jumps] == [("backbone.layer4", "backbone.layer4")]
        assert jumps[0].amount == pytest.approx(JUMP, rel=0.05)
    healthy = scale_jump(store.datapoint(("healthy", "val", 0), 0), store.datapoint(("healthy", "val", 1), 0))
    assert healthy == ()


def test_healthy_run_has_no_flags(store: LogStore) -> None:
    for epoch in (0, 1):
        for idx in range(N):
            assert _flags(store, ("healthy", "val", epoch), idx) == [], idx


def test_thresholds_can_be_changed(store: LogStore) -> None:
    record = store.datapoint(("healthy", "val", 0), 0)
    assert health(record) == ()
    strict = health(record, thresholds=HealthThresholds(uniform=0.0))
    assert {f.kind for f in strict} == {"attention_uniform"}


def test_old_logs_fall_back_to_page_order_and_say_so(store: LogStore) -> None:
    record = store.datapoint(("planted", "val", 0), POISONED[0])
    order = forward_order({}, list(record.debug))
    assert order.source == "page" and "page" in order.note
    flags = health(record)  # no index information: debugger names, page order (layer4 is listed first)
    nan = [f for f in flags if f.kind == "nan"]
    assert {f.layer for f in nan} == {"layer3", "layer4"} and {f.first_bad_layer for f in nan} == {"layer4"}
    recorded = forward_order(store.debugger_info(("planted", "val", 0)), list(record.debug))
    assert recorded.source == "capture" and recorded.note == ""


def test_example_run_flags_only_true_collapses(tmp_path: Path) -> None:
    """The example run's only flags: its attention head puts nearly all mass on one key on a few images."""
    with LogStore(EXAMPLE, rescan_s=0, index_wait_s=30, cache_dir=tmp_path) as store:
        key = store.default_pass("trainer_run")
        for idx in range(store.scores(key).num_datapoints):
            record = store.datapoint(key, idx)
            for flag in health(record, store.debugger_info(key)):
                assert flag.kind == "attention_collapsed", flag
                weights = record.debug_item(flag.debugger, flag.key).value["weights"].astype(np.float32)
                assert weights[flag.head].max(-1).mean() > 0.95  # every query's row is near one-hot



# ------------------------------------------------------------------------------------------------- the pass summary
def test_pass_summary_runs_in_the_background_and_is_cached(logs: Path, tmp_path: Path) -> None:
    key = PassKey("planted", "val", 0)
    with LogStore(logs, cache_dir=tmp_path / "cache", rescan_s=0, index_wait_s=30) as store:
        jobs = HealthJobs(store)
        job = jobs.start(key)
        summary = jobs.summary(key, timeout=60)
        status = jobs.status(job)
        assert status is not None and status.finished and not status.cached and status.done == status.total == N
        rows = {(r.layer, r.kind): r for r in summary.table()}
        assert set(rows) == {("aux.1", "dead"), ("aux.1", "dead_channel"), ("backbone.layer3", "nan"),
                             ("backbone.layer4", "nan"), ("attn", "attention_collapsed"), ("attn", "attention_uniform")}
        assert (rows["backbone.layer3", "nan"].datapoints, rows["backbone.layer3", "nan"].first) == (len(POISONED), 3)
        assert (rows["backbone.layer4", "nan"].datapoints, rows["backbone.layer4", "nan"].first) == (len(POISONED), 0)
        assert rows["aux.1", "dead"].datapoints == N and rows["aux.1", "dead_channel"].worst == 1.0
        assert rows["attn", "attention_collapsed"].heads == (0,) and rows["attn", "attention_uniform"].heads == (1,)
        assert rows["attn", "attention_collapsed"].datapoints == len(CLEAN)
        assert [r.layer for r in summary.table()][:3] == ["aux.1", "aux.1", "backbone.layer3"]  # forward order
        assert summary.datapoints("nan", "backbone.layer3").tolist() == list(POISONED)
        columns = summary.layer_columns(N)
        assert [i for i, v in enumerate(columns["nan"]) if v] == list(POISONED)
        assert columns["nan"][POISONED[0]] == ("backbone.layer3", "backbone.layer4")
        assert "NaN 100 % since backbone.layer3" in [f.text for f in summary.flags(POISONED[0])]
    with LogStore(logs, cache_dir=tmp_path / "cache", rescan_s=0, index_wait_s=30) as store:  # a restart
        jobs = HealthJobs(store)
        status = jobs.status(jobs.start(key))
        assert status is not None and status.finished and status.cached
        assert status.summary is not None and status.summary.table() == summary.table()


def test_pass_summary_scale_jump_and_healthy_run(store: LogStore) -> None:
    a, b = compute_health(store, ("planted", "val", 0)), compute_health(store, ("planted", "val", 1))
    rows, flags = scale_jump_rows(a, b)
    assert [(r.layer, r.datapoints, r.total) for r in rows] == [("backbone.layer4", len(CLEAN), len(CLEAN))]
    assert rows[0].worst == pytest.approx(JUMP, rel=0.05)
    assert sorted(flags) == list(CLEAN)
    plain, with_jumps = b.layer_columns(N), b.layer_columns(N, flags)  # the failure table's scale_jump column
    assert "scale_jump" not in plain
    assert [i for i, v in enumerate(with_jumps["scale_jump"]) if v] == list(CLEAN)
    assert with_jumps["scale_jump"][CLEAN[0]] == ("backbone.layer4",)
    assert [x - y for x, y in zip(with_jumps["health"], plain["health"])] == [int(i in CLEAN) for i in range(N)]
    healthy = [compute_health(store, ("healthy", "val", e)) for e in (0, 1)]
    assert healthy[0].table() == [] and healthy[1].table() == []
    assert scale_jump_rows(*healthy) == ([], {})


def test_example_pass_summary_flags_only_what_is_true(tmp_path: Path) -> None:
    """Over the whole pass, the example also has channels that are exactly 0 on every datapoint (ReLU channels that
    never fire), besides the collapsed head on a few images."""
    with LogStore(EXAMPLE, rescan_s=0, index_wait_s=30, cache_dir=tmp_path) as store:
        key = store.default_pass("trainer_run")
        summary = compute_health(store, key)
        assert summary.order_source == "capture" and summary.notes == ()  # layers and forward order recorded
        kinds = {(r.layer, r.kind) for r in summary.table()}
        assert kinds <= {("encoder.2", "dead_channel"), ("encoder.3", "dead_channel"),
                         ("attention", "attention_collapsed")}
        maps = np.stack([store.datapoint(key, int(i)).debug_item("encoder_features", "feature_map").value
                         for i in summary.idx])
        dead = ~np.any(maps.reshape(maps.shape[0], maps.shape[1], -1) != 0, axis=(0, 2))
        assert dead.mean() == summary.context.dead_everywhere["encoder_features/feature_map"] > 0
        # read without the recorder's arrays, the page path still sees every debug item the one-record path sees
        assert {c.name for c in summary.columns} >= {"encoder_features/feature_map", "attention_output/output",
                                                      "bottleneck_stats/stats", "attention/attention"}
        info = store.debugger_info(key)
        for idx in summary.idx.tolist():
            assert summary.flags(idx) == health(store.datapoint(key, idx), info, context=summary.context)


# ------------------------------------------------------------------------------------------------- the notebook API
def test_notebook_api_gives_the_same_flags_as_plain_values(logs: Path, tmp_path: Path) -> None:
    import eval_viewer

    with eval_viewer.open(logs, cache_dir=tmp_path / "cache") as notebook:
        key = ("planted", "val", 1)
        report = notebook.health(key, vs=("planted", "val", 0), timeout=60)
        table = report.table()
        assert ("backbone.layer3", "nan", len(POISONED)) in zip(table["layer"], table["kind"], table["datapoints"])
        assert report.datapoints("nan", "backbone.layer3").tolist() == list(POISONED)
        assert report.datapoints("scale_jump").tolist() == list(CLEAN)
        assert {f["kind"] for f in report.flags(CLEAN[0])} == {"dead", "dead_channel", "attention_collapsed",
                                                                 "attention_uniform", "scale_jump"}
        assert "backbone.layer3" in report._repr_html_()
        flags = notebook.datapoint(key, POISONED[0]).health  # plain dicts, with the pass context once computed
        nan = [f for f in flags if f["kind"] == "nan"]
        assert [(f["layer"], f["first_bad_layer"], f["amount"]) for f in nan] == [
            ("backbone.layer3", "backbone.layer3", 1.0), ("backbone.layer4", "backbone.layer3", 1.0)]
        assert all(isinstance(v, (str, int, float, type(None))) for f in flags for v in f.values())
        assert "NaN 100 % since backbone.layer3" in notebook.datapoint(key, POISONED[0])._repr_html_()  # the badge
        pandas = pytest.importorskip("pandas")
        frame = report.to_pandas()
        assert isinstance(frame, pandas.DataFrame) and len(frame) == len(report.rows)


@pytest.mark.parametrize("workers", [0, 2])
def test_pass_summary_agrees_with_each_datapoint_read_alone(store: LogStore, tmp_path: Path, workers: int) -> None:
    """The page-at-a-time path (in-process, and a task per page in worker processes) and the one-record path give
    the same flags, also where datapoints of one page are laid out differently (another tool's pages without
    index.json: some datapoints lack a debugger)."""
    key = ("planted", "val", 0)
    summary = compute_health(store, key, workers=workers)
    assert len(store.pass_pages(key).pages) > 2, "several pages, so that tasks really run side by side"
    info = store.debugger_info(key)
    for idx in range(N):
        assert summary.flags(idx) == health(store.datapoint(key, idx), info, context=summary.context)

    import joblib

    from eval_viewer.log_format import EVALUATION_SCORES, write_scores

    run = tmp_path / "mixed"
    (run / "debugger").mkdir(parents=True)
    rng = np.random.default_rng(0)
    page = {}
    for i in range(12):
        features = rng.standard_normal((4, 5, 5)).astype(np.float32)
        if i % 3 == 0:
            features[1] = np.nan
        value: dict = {"feats": {"feature_map": features}}
        if i % 2:
            weights = rng.random((2, 6, 6)).astype(np.float32)
            weights[0] = np.eye(6, dtype=np.float32)[[0] * 6]  # head 0: every query on key 0
            value["attn"] = {"attention": weights / weights.sum(-1, keepdims=True)}
        page[i] = value
    joblib.dump(page, run / "debugger" / "page_0.pkl")
    write_scores(run / EVALUATION_SCORES, {"m": 0.0}, {"m": np.zeros(12)})
    with LogStore(run, cache_dir=tmp_path / "c", rescan_s=0, index_wait_s=30) as mixed:
        summary = compute_health(mixed, ("mixed", "test"), workers=workers)
        assert summary.datapoints("nan", "feats").tolist() == [0, 3, 6, 9]
        assert summary.datapoints("attention_collapsed").tolist() == [1, 3, 5, 7, 9, 11]
        for idx in range(12):
            assert summary.flags(idx) == health(mixed.datapoint(("mixed", "test"), idx), context=summary.context)


def test_vectorised_measures_match_a_row_by_row_reference() -> None:
    from eval_viewer.backend.health_measures import measure_arrays

    rng = np.random.default_rng(3)
    batch = rng.standard_normal((7, 3, 9, 11)).astype(np.float16)
    batch[1, 0] = 0  # a dead channel
    batch[2, :, :4] = np.nan
    batch[2, 1, 5, :3] = 0
    batch[3, 2, 0, 0] = np.inf
    batch[4] = np.clip(batch[4], -0.5, 0.5)  # saturated at both ends
    batch[5] = 2.5  # constant
    batch[6] = np.maximum(batch[6], 0)  # a ReLU's output
    t = HealthThresholds()
    got = measure_arrays(batch, channels=True, t=t)
    for row, x in enumerate(batch.astype(np.float32)):
        values = x[np.isfinite(x)]
        assert got["nan"][row] == np.isnan(x).mean() and got["inf"][row] == np.isinf(x).mean()
        assert got["zeros"][row] == (x == 0).mean()
        assert got["mean"][row] == pytest.approx(values.mean(dtype=np.float64), abs=1e-6)
        assert got["std"][row] == pytest.approx(values.std(dtype=np.float64), abs=1e-5)
        top, low = values.max(), values.min()
        at = (values == top).sum() * (top != 0) + (values == low).sum() * (low != 0) * (low != top)
        assert got["saturated"][row] == pytest.approx(0.0 if top == low else at / values.size)
        assert (got["dead"][row] == ~np.any(x.reshape(3, -1) != 0, axis=1)).all()
    assert got["dead"][1].tolist() == [True, False, False] and got["saturated"][4] > 0.5


def test_float32_sums_hand_over_to_float64_where_they_would_cancel_or_overflow() -> None:
    """The clean rows' sums are taken in float32; a near-constant row (its spread far below its mean) and a row
    whose squares overflow float32 are measured in float64 instead, so both keep their figures."""
    from eval_viewer.backend.health_measures import measure_arrays

    rng = np.random.default_rng(4)
    batch = (1e4 + rng.standard_normal((5, 2, 8, 8))).astype(np.float32)  # spread 1e-8 of the mean square
    batch[1] = np.float32(10000.1)  # constant, not exactly representable: its spread is still 0
    batch[2] *= 1e17  # squares beyond float32's range
    batch[3] = rng.standard_normal((2, 8, 8)).astype(np.float32)  # an ordinary row, measured in float32
    batch[4, 0] = 0
    got = measure_arrays(batch, channels=True, t=HealthThresholds())
    for row, x in enumerate(batch.astype(np.float64)):
        assert got["mean"][row] == pytest.approx(x.mean(), rel=1e-6)
        assert got["std"][row] == pytest.approx(x.std(), rel=1e-5, abs=1e-12)
        assert got["scale"][row] == pytest.approx(np.sqrt(np.mean(x * x)), rel=1e-6)
    assert got["std"][1] == 0.0 and np.isfinite(got["scale"][2])
    for row in range(len(batch)):  # a datapoint's measures do not depend on what it was measured with
        alone = measure_arrays(batch[row:row + 1], channels=True, t=HealthThresholds())
        assert all(np.array_equal(alone[f], got[f][row:row + 1], equal_nan=f != "dead") for f in got)
    assert got["dead"][4].tolist() == [True, False] and got["zeros"][4] == 0.5


def test_saturation_counts_each_value_once_and_long_rows_do_not_overflow() -> None:
    """A row that barely varies has every value within the tolerance of both its max and its min: each counts once
    (it used to count twice, a fraction of 2), and counts past 65,535 values stay exact."""
    from eval_viewer.backend.health_measures import measure_arrays

    rng = np.random.default_rng(12)
    t = HealthThresholds()
    barely = (1.0 - 0.0004 * rng.random((1, 40_000))).astype(np.float32)
    two_levels = np.where(rng.random((1, 70_000)) < 0.5, 1.0, 0.9995).astype(np.float32)
    assert measure_arrays(barely, False, t)["saturated"].tolist() == [1.0]
    assert measure_arrays(two_levels, False, t)["saturated"].tolist() == [1.0]
    relu = np.maximum(rng.standard_normal((2, 70_000)), 0).astype(np.float32)
    relu[:, :100] = relu.max()
    got = measure_arrays(relu, False, t)
    assert got["zeros"].tolist() == [float((r == 0).mean()) for r in relu]
    assert (got["saturated"] >= 100 / 70_000).all()
    alone = measure_arrays(relu[1:], False, t)  # (rows past numpy's buffer: still batch-independent)
    assert all(np.array_equal(alone[f], got[f][1:], equal_nan=True) for f in got)


@pytest.mark.parametrize("scale", [1e-21, 1e-25])
def test_tiny_float32_values_are_measured_in_float64(scale: float) -> None:
    """Their squares lose digits (1e-21) or vanish (1e-25) in float32."""
    from eval_viewer.backend.health_measures import measure_arrays

    rng = np.random.default_rng(5)
    x = (scale * rng.standard_normal((3, 2, 64))).astype(np.float32)
    x[2] = np.float32(scale) * np.where(np.arange(128) % 2, 1, -1).reshape(2, 64)  # mean exactly 0
    got = measure_arrays(x, channels=True, t=HealthThresholds())
    for row, values in enumerate(x.astype(np.float64)):
        assert got["std"][row] == pytest.approx(values.std(), rel=1e-6, abs=0)
        assert got["scale"][row] == pytest.approx(np.sqrt(np.mean(values ** 2)), rel=1e-6, abs=0)


def test_the_summary_view_names_layers_kinds_counts_and_cells(store: LogStore) -> None:
    from eval_viewer.display.health import health_table
    from eval_viewer.display.view import Group, texts, walk

    a, b = compute_health(store, ("planted", "val", 0)), compute_health(store, ("planted", "val", 1))
    rows = b.table() + scale_jump_rows(a, b)[0]
    view = health_table(rows, N, notes=b.notes, cell_id=lambda layer, kind: [layer, kind])
    shown = list(texts(view))
    assert "scale jump" in shown and "NaN" in shown and f"{len(POISONED)} / {N}" in shown
    assert any(t.startswith("×100") for t in shown)  # layer4's RMS grew 100-fold
    cells = {tuple(node.id) for node in walk(view) if isinstance(node, Group) and node.id is not None}
    assert ("backbone.layer3", "nan") in cells and ("backbone.layer4", "scale_jump") in cells
    assert list(texts(health_table([], N))) == [f"No problems found in {N} datapoints."]


def test_thresholds_that_only_flag_reuse_the_measures_of_a_finished_summary(logs: Path, tmp_path: Path) -> None:
    """A threshold that changes only what is flagged is a view of the summary already measured: ready at once (no
    second read of the pass) and equal to measuring again; one that changes the measures needs its own job."""
    key = PassKey("planted", "val", 0)
    flag_only = HealthThresholds(dead=0.5, uniform=0.5, collapsed=0.2, saturated=0.01)
    with LogStore(logs, cache_dir=tmp_path / "cache", rescan_s=0, index_wait_s=30) as store:
        jobs = HealthJobs(store)
        jobs.summary(key, timeout=60)
        view = jobs.ready(key, flag_only)
        assert view is not None and view.thresholds == flag_only, "a view of the finished job, nothing started"
        fresh = compute_health(store, key, flag_only)
        assert view.table() == fresh.table() and view.table() != jobs.ready(key).table()
        assert all(view.flags(i) == fresh.flags(i) for i in range(N))
        assert jobs.ready(key, HealthThresholds(extreme_tolerance=0.1)) is None, "a measured field: its own job"
        status = jobs.status(jobs.start(key, flag_only))
        assert status is not None and status.finished and status.summary is view


def test_card_flags_add_scale_jumps_once_both_summaries_are_done(logs: Path, tmp_path: Path) -> None:
    from eval_viewer.backend.health_summary import datapoint_flags

    key, before = PassKey("planted", "val", 1), PassKey("planted", "val", 0)
    with LogStore(logs, cache_dir=tmp_path / "cache", rescan_s=0, index_wait_s=30) as store:
        jobs = HealthJobs(store)
        jobs.summary(key, timeout=60)

        def kinds(idx: int) -> list[str]:
            return [f.kind for f in datapoint_flags(store, key, store.datapoint(key, idx), jobs)]

        assert "scale_jump" not in kinds(CLEAN[0]), "the previous epoch's summary is not done yet"
        jobs.summary(before, timeout=60)
        assert jobs.jumps(key) is jobs.jumps(key), "worked out once per pair of summaries"
        jump = [f for f in datapoint_flags(store, key, store.datapoint(key, CLEAN[0]), jobs) if f.kind == "scale_jump"]
        assert [(f.layer, f.first_bad_layer) for f in jump] == [("backbone.layer4", "backbone.layer4")]
        assert jump[0].amount == pytest.approx(JUMP, rel=0.05) and "scale ×" in jump[0].text
        assert "scale_jump" not in kinds(POISONED[0])
