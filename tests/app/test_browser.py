"""The app as a user drives it, in headless Chromium: overview -> worst datapoint -> next -> shared link.

Expected values come from the scores files themselves (the reference log's JSON) or from the store's documented
contract, never from the app's own code, so a wrong ranking, a wrong row or a missing card fails here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from app_logs import REFERENCE_DEBUGGERS, REFERENCE_EPOCHS, REFERENCE_N, reference_scores
from app_steps import (
    assert_sections_and_cards,
    click_table_row,
    filter_table,
    open_debug_items,
    sort_table,
    url_state,
    wait_for_datapoint,
)
from eval_viewer.app import ids
from eval_viewer.log_format import VALIDATION_SCORES, atomic_write_text, epoch_dir_name

pytestmark = pytest.mark.browser


def _worst_first(values: list[float | None], higher_is_better: bool) -> list[int]:
    """Independent oracle: missing/NaN first, then worst to best; ties by index."""
    def key(i: int) -> tuple[int, float, int]:
        v = values[i]
        if v is None or math.isnan(v):
            return (0, 0.0, i)
        return (1, v if higher_is_better else -v, i)

    return sorted(range(len(values)), key=key)


def test_reference_layout_worst_row_next_and_metric_switch(dash_duo, serve, reference_log: Path) -> None:
    serve([reference_log])
    dash_duo.wait_for_contains_text(f"#{ids.RUNS_TABLE}", "ref_run", timeout=15)
    epoch = REFERENCE_EPOCHS[-1]
    scores = reference_scores(reference_log, epoch)
    by_iou = _worst_first(scores["iou"], higher_is_better=True)
    assert by_iou[0] == 5  # the datapoint without an iou

    shown = click_table_row(dash_duo, 0)
    assert int(shown) == by_iou[0]
    wait_for_datapoint(dash_duo, by_iou[0])
    assert url_state(dash_duo) == {"run": "ref_run", "split": "val", "epoch": str(epoch), "metric": "iou",
                                   "idx": str(by_iou[0])}
    assert_sections_and_cards(dash_duo, REFERENCE_DEBUGGERS)
    dash_duo.wait_for_contains_text(f"#{ids.POSITION}", f"rank 1 of {REFERENCE_N}")
    meta = dash_duo.find_element(".ev-meta-table").text
    assert "shard_2" in meta and "difficulty" in meta  # idx 5 -> shard_5 % 3

    dash_duo.find_element("body").send_keys(Keys.ARROW_RIGHT)  # the keyboard, as a user steps through
    wait_for_datapoint(dash_duo, by_iou[1])
    dash_duo.wait_for_contains_text(f"#{ids.POSITION}", f"rank 2 of {REFERENCE_N}")

    dash_duo.select_dcc_dropdown(f"#{ids.METRIC}", index=1)  # loss: lower is better
    by_loss = _worst_first(scores["loss"], higher_is_better=False)
    dash_duo.wait_for_contains_text(f"#{ids.POSITION}", f"rank {by_loss.index(by_iou[1]) + 1} of {REFERENCE_N}")
    assert url_state(dash_duo)["metric"] == "loss"

    dash_duo.find_element(f"#{ids.BACK}").click()
    dash_duo.wait_for_element(f"#{ids.TABLE}", timeout=10)
    assert int(click_table_row(dash_duo, 0)) == by_loss[0]
    wait_for_datapoint(dash_duo, by_loss[0])

    first = REFERENCE_EPOCHS[0]  # a shared link to another epoch opens that epoch's datapoint, selectors follow
    dash_duo.driver.get(f"{dash_duo.server_url}/?run=ref_run&epoch={first}&idx=3")
    wait_for_datapoint(dash_duo, 3)
    dash_duo.wait_for_contains_text(f"#{ids.PASS}", f"epoch {first}")
    by_iou_first = _worst_first(reference_scores(reference_log, first)["iou"], higher_is_better=True)
    dash_duo.wait_for_contains_text(f"#{ids.POSITION}", f"rank {by_iou_first.index(3) + 1} of {REFERENCE_N}")
    assert_sections_and_cards(dash_duo, REFERENCE_DEBUGGERS)
    assert dash_duo.get_logs() == []


_HEAVY = ("return [document.querySelectorAll('.dash-graph').length, document.querySelectorAll('.ag-root-wrapper').length, "
          "typeof window.Plotly];")


def test_a_shared_link_mounts_the_overview_panels_when_first_shown(dash_duo, serve, reference_log: Path) -> None:
    """A page opened on a datapoint has no graph or grid in it (so plotly.js never loads) until the overview is
    shown; then the overview's panels are there and filled, and its table opens the worst datapoint."""
    serve([reference_log], query="?run=ref_run&metric=iou&idx=3")
    wait_for_datapoint(dash_duo, 3)
    assert dash_duo.driver.execute_script(_HEAVY) == [0, 0, "undefined"]  # folded debug items draw no graph either

    dash_duo.find_element(f"#{ids.BACK}").click()
    dash_duo.wait_for_contains_text(f"#{ids.RUNS_TABLE}", "ref_run", timeout=15)
    dash_duo.wait_for_element(f"#{ids.SCORE_MAP} .main-svg", timeout=15)
    dash_duo.wait_for_element(f"#{ids.HISTORY} .main-svg", timeout=15)
    scores = reference_scores(reference_log, REFERENCE_EPOCHS[-1])
    worst = _worst_first(scores["iou"], higher_is_better=True)[0]
    assert int(click_table_row(dash_duo, 0)) == worst
    wait_for_datapoint(dash_duo, worst)
    graphs, grids, plotly = dash_duo.driver.execute_script(_HEAVY)
    assert graphs >= 5 and grids == 4 and plotly == "object"  # mounted once, kept while the datapoint is shown
    assert dash_duo.get_logs() == []


def test_table_filters_and_sorts_on_the_server(dash_duo, serve, reference_log: Path) -> None:
    """A text filter typed into the grid and a header click reach the server as the grid sends them."""
    serve([reference_log], query="?run=ref_run&metric=iou")
    scores = reference_scores(reference_log, REFERENCE_EPOCHS[-1])
    dash_duo.wait_for_contains_text(f"#{ids.TABLE_CAPTION}", f"{REFERENCE_N} datapoints", timeout=15)
    shard_1 = [i for i in range(REFERENCE_N) if i % 3 == 1]  # the reference log's source is f"shard_{idx % 3}"
    by_iou = [i for i in _worst_first(scores["iou"], higher_is_better=True) if i in shard_1]

    filter_table(dash_duo, "source", "SHARD_1")  # text filters ignore case
    dash_duo.wait_for_contains_text(f"#{ids.TABLE_CAPTION}", f"{len(shard_1)} of {REFERENCE_N} datapoints match",
                                    timeout=15)
    dash_duo.wait_for_text_to_equal(
        f"#{ids.TABLE} .ag-pinned-left-cols-container .ag-row[row-index='0'] [col-id='idx']", str(by_iou[0]))

    highest_loss = max(shard_1, key=lambda i: scores["loss"][i])
    assert highest_loss != by_iou[0]  # so the row below can only come from the sort
    sort_table(dash_duo, "loss", clicks=2)  # ascending, then descending: the highest loss of shard_1 first
    dash_duo.wait_for_text_to_equal(
        f"#{ids.TABLE} .ag-pinned-left-cols-container .ag-row[row-index='0'] [col-id='idx']", str(highest_loss))
    assert int(click_table_row(dash_duo, 0)) == highest_loss
    wait_for_datapoint(dash_duo, highest_loss)
    assert url_state(dash_duo)["idx"] == str(highest_loss)
    assert dash_duo.get_logs() == []


def test_example_overview_worst_row_and_next(dash_duo, serve, example_dir: Path) -> None:
    store = serve([example_dir])
    runs = store.runs()
    for run in runs:
        dash_duo.wait_for_contains_text(f"#{ids.RUNS_TABLE}", run.name, timeout=15)
    assert len(dash_duo.find_elements(f"#{ids.HISTORY} .scatterlayer .trace")) >= 1

    trainer = next(r for r in runs if r.kind == "trainer")
    key = next(p.key for p in reversed(trainer.passes) if p.has_debug and p.split == "val")
    epoch = key.step
    scores = store.scores(key)
    metric = scores.metrics[0]
    dash_duo.driver.get(f"{dash_duo.server_url}/?run={trainer.name}&epoch={epoch}&metric={metric}")
    ranking = [int(i) for i in scores.ranking(metric)]
    dash_duo.wait_for_contains_text(f"#{ids.TABLE_CAPTION}", f"{scores.num_datapoints:,} datapoints", timeout=15)

    assert int(click_table_row(dash_duo, 0)) == ranking[0]
    wait_for_datapoint(dash_duo, ranking[0])
    record = store.datapoint(key, ranking[0])
    assert len(record.debug) >= 3
    assert_sections_and_cards(dash_duo, list(record.debug))

    dash_duo.find_element(f"#{ids.NEXT}").click()
    wait_for_datapoint(dash_duo, ranking[1])
    assert url_state(dash_duo)["idx"] == str(ranking[1])

    dash_duo.find_element("body").send_keys(Keys.ESCAPE)  # back to the overview
    dash_duo.wait_for_element(f"#{ids.OVERVIEW_VIEW}:not([hidden]) #{ids.SCORE_MAP} .nsewdrag").click()
    dash_duo._wait_for(lambda _: "idx" in url_state(dash_duo), timeout=10, msg="a score-map click opened nothing")
    opened = int(url_state(dash_duo)["idx"])
    wait_for_datapoint(dash_duo, opened)
    assert 0 <= opened < scores.num_datapoints
    assert dash_duo.get_logs() == []


def test_example_shared_links_open_the_datapoint(dash_duo, serve, example_dir: Path) -> None:
    store = serve([example_dir])
    trainer = next(r for r in store.runs() if r.kind == "trainer")
    key = next(p.key for p in reversed(trainer.passes) if p.has_debug and p.split == "val")
    idx = store.scores(key).num_datapoints - 1
    dash_duo.driver.get(f"{dash_duo.server_url}/?run={trainer.name}&epoch={key.step}&idx={idx}")  # an old-style link
    wait_for_datapoint(dash_duo, idx)
    dash_duo.wait_for_contains_text(f"#{ids.PASS}", f"epoch {key.step}")
    assert_sections_and_cards(dash_duo, list(store.datapoint(key, idx).debug))

    # The example's attention debugger: a click on the overlay picks the query under it and re-draws that card.
    overlay = dash_duo.wait_for_element(f"[id*='{ids.ATTENTION_ROLE}'] .nsewdrag", timeout=10)
    body = overlay.find_element(By.XPATH, "./ancestor::*[contains(@class, 'ev-item-body')]")
    assert "most peaked" in body.text  # no query chosen yet
    overlay.click()
    dash_duo._wait_for(lambda _: "most peaked" not in body.text, timeout=10, msg="the attention card did not re-draw")
    assert "query " in body.text

    evaluator = next((r for r in store.runs() if r.kind == "evaluator"), None)
    if evaluator is not None:
        dash_duo.driver.get(f"{dash_duo.server_url}/?run={evaluator.name}&idx=2")
        wait_for_datapoint(dash_duo, 2)
        dash_duo.wait_for_contains_text(f"#{ids.PASS}", "test")
        assert "epoch" not in url_state(dash_duo)
        assert_sections_and_cards(dash_duo, list(store.datapoint((evaluator.name, "test", None), 2).debug))

    dash_duo.driver.get(f"{dash_duo.server_url}/?run=no_such_run&idx=1")
    dash_duo.wait_for_contains_text(f"#{ids.NOTICE}", "no_such_run", timeout=10)
    assert dash_duo.get_logs() == []


def test_an_epoch_written_while_the_page_is_open_appears(dash_duo, serve, reference_log: Path) -> None:
    """A run still training: its next validation lands on disk and the open page shows it without a reload."""
    serve([reference_log], query="?run=ref_run&metric=iou", rescan_s=1)
    dash_duo.wait_for_contains_text(f"#{ids.RUNS_TABLE}", "ref_run", timeout=15)
    runs_row = f"#{ids.RUNS_TABLE} tbody tr"
    assert dash_duo.find_element(runs_row).text.split()[2] == str(len(REFERENCE_EPOCHS))

    new_epoch = REFERENCE_EPOCHS[-1] + 3
    source = reference_log / "ref_run" / epoch_dir_name(REFERENCE_EPOCHS[-1]) / VALIDATION_SCORES
    atomic_write_text(reference_log / "ref_run" / epoch_dir_name(new_epoch) / VALIDATION_SCORES, source.read_text())

    dash_duo.wait_for_text_to_equal(f"{runs_row} td:nth-child(3)", str(len(REFERENCE_EPOCHS) + 1), timeout=15)
    dash_duo.find_element(f"#{ids.PASS}").click()
    dash_duo.wait_for_contains_text(f"#{ids.PASS}", f"epoch {new_epoch}", timeout=5)
    history_x = dash_duo.driver.execute_script(
        f"return document.getElementById('{ids.HISTORY}').querySelector('.js-plotly-plot').data[0].x"
    )
    assert list(history_x) == [*REFERENCE_EPOCHS, new_epoch]
    assert dash_duo.get_logs() == []


def test_a_trainer_with_a_final_evaluation_shows_both_passes(dash_duo, serve, reference_log: Path) -> None:
    """The test pass is a pass of its own: listed in the Pass selector, with its own URL that reopens it; the run
    still opens on its latest validated epoch."""
    run_dir = reference_log / "ref_run"
    final = reference_scores(reference_log, REFERENCE_EPOCHS[0])
    atomic_write_text(run_dir / "evaluation_scores.json",
                      json.dumps({"aggregated": {}, "per_datapoint": final}))
    serve([reference_log], query="?run=ref_run")
    dash_duo.wait_for_contains_text(f"#{ids.PASS}", f"epoch {REFERENCE_EPOCHS[-1]}", timeout=15)
    dash_duo.select_dcc_dropdown(f"#{ids.PASS}", index=len(REFERENCE_EPOCHS))  # after the epochs: "test"
    dash_duo._wait_for(lambda _: url_state(dash_duo).get("split") == "test", timeout=10, msg="no split=test in URL")
    assert "epoch" not in url_state(dash_duo)
    by_iou = _worst_first(final["iou"], higher_is_better=True)
    assert int(click_table_row(dash_duo, 0)) == by_iou[0]
    wait_for_datapoint(dash_duo, by_iou[0])
    test_url = dash_duo.driver.current_url

    dash_duo.driver.get(f"{dash_duo.server_url}/?run=ref_run&split=val&epoch={REFERENCE_EPOCHS[-1]}&idx=1")
    wait_for_datapoint(dash_duo, 1)
    dash_duo.wait_for_contains_text(f"#{ids.PASS}", f"epoch {REFERENCE_EPOCHS[-1]}")
    dash_duo.driver.get(test_url)  # the test pass's own URL reopens it
    wait_for_datapoint(dash_duo, by_iou[0])
    dash_duo.wait_for_contains_text(f"#{ids.PASS}", "test")
    assert url_state(dash_duo)["split"] == "test"
    assert dash_duo.get_logs() == []


def test_attention_head_and_query_are_kept_in_the_url(dash_duo, serve, example_dir: Path) -> None:
    """The example's attention item: a head chip lays that head over the image, a click on the overlay picks the
    query; only the item is re-drawn, the URL holds both, and reloading it reopens the same head and query."""
    store = serve([example_dir])
    trainer = next(r for r in store.runs() if r.kind == "trainer")
    key = next(p.key for p in reversed(trainer.passes) if p.has_debug and p.split == "val")
    idx = int(store.scores(key).ranking(store.scores(key).metrics[0])[0])
    record = store.datapoint(key, idx)
    name = next(n for n, items in record.debug.items() if any(it.kind == "attention" for it in items))
    item = next(it for it in record.debug[name] if it.kind == "attention")
    heads = int(item.value["weights"].shape[-3])
    assert heads >= 2
    dash_duo.driver.get(f"{dash_duo.server_url}/?run={trainer.name}&epoch={key.step}&idx={idx}")
    wait_for_datapoint(dash_duo, idx)
    open_debug_items(dash_duo)
    card = f".ev-card[data-debugger='{name}']"
    chosen = f"{card} .ev-head-choice.ev-chosen"
    dash_duo.wait_for_text_to_equal(chosen, "mean", timeout=10)
    assert len(dash_duo.find_elements(f"{card} .ev-head-choice")) == heads + 1
    dash_duo.driver.execute_script("document.querySelector('.ev-scores').dataset.mark = 'kept'")

    dash_duo.find_element(f"{card} .ev-head-choice[data-head='1']").click()
    dash_duo.wait_for_text_to_equal(chosen, "h1", timeout=10)
    dash_duo._wait_for(lambda _: url_state(dash_duo).get("attn", "").startswith("1,"), timeout=10,
                       msg="the chosen head is not in the URL")
    assert "head 1" in dash_duo.find_element(f"{card} .ev-item-body").text

    overlay = dash_duo.find_element(f"{card} [id*='{ids.ATTENTION_ROLE}'] .nsewdrag")
    overlay.click()  # the centre of the image: a query in the middle of the grid
    dash_duo._wait_for(lambda _: url_state(dash_duo).get("attn", "").split(",")[1:2] not in ([], [""]), timeout=10,
                       msg="the clicked query is not in the URL")
    head, query, item_key_ = url_state(dash_duo)["attn"].split(",", 2)
    assert head == "1" and json.loads(item_key_) == ["debug", name, item.key]
    dash_duo.wait_for_contains_text(f"{card} .ev-item-body", f"query {query}, head 1", timeout=10)
    assert dash_duo.driver.execute_script("return document.querySelector('.ev-scores').dataset.mark") == "kept"

    shared = dash_duo.driver.current_url
    dash_duo.driver.get("about:blank")
    dash_duo.driver.get(shared)  # a reload of the shared link: the same head and query
    wait_for_datapoint(dash_duo, idx)
    dash_duo.wait_for_text_to_equal(chosen, "h1", timeout=10)  # the item stayed open (local storage)
    dash_duo.wait_for_contains_text(f"{card} .ev-item-body", f"query {query}, head 1", timeout=10)
    assert url_state(dash_duo)["attn"] == f"1,{query},{item_key_}"
    assert dash_duo.get_logs() == []
