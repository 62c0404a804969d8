"""The whole datapoint view as a neutral tree, and item keys that name their item across records."""

from __future__ import annotations

import numpy as np
import pytest

from display_helpers import class_names, graphs, has_error, make_record, table_rows, text_of, walk
from eval_viewer.backend.model import DatapointRecord, Item
from eval_viewer.display import Group, ViewIds, datapoint_view, find_item, item_key
from eval_viewer.display.datapoint import SECTION_TITLES, parse_item_key
from eval_viewer.display.view import Text
from eval_viewer.errors import NotFoundError
from eval_viewer.log_format import Kind

RNG = np.random.default_rng(0)
IMAGE = (RNG.random((32, 32, 3)) * 255).astype(np.uint8)
ATTENTION = {"attention": RNG.random((2, 16, 16)).astype(np.float32), "grid": (4, 4)}
IDS = ViewIds(body=lambda key: {"body": key}, graph=lambda key, role: {"graph": key, "role": role})


def _attention(seed: int) -> Item:
    weights = np.random.default_rng(seed).random((2, 16, 16)).astype(np.float32)
    return Item("weights", Kind.ATTENTION, {"attention": weights, "grid": (4, 4)})


def _full_record() -> DatapointRecord:
    return make_record(
        idx=7,
        scores={"iou": 0.25, "loss": float("nan")},
        inputs=(Item("image", Kind.IMAGE, IMAGE),),
        labels=(Item("mask", Kind.MASK, RNG.integers(0, 3, (32, 32))),),
        predictions=(Item("mask", Kind.MASK, RNG.integers(0, 3, (32, 32))), Item("extra", Kind.SCALAR, 3)),
        meta_info={"source": "shard_1", "difficulty": 0.5, "boxes": np.zeros((3, 4))},
        debug={"layer.4": (Item("", Kind.STATS, {"mean": 0.1}),), "attn": (_attention(1),), "empty": ()},
        problems=("page 3 is being written",),
    )


def test_the_same_item_is_found_by_name_when_the_debugger_sets_differ() -> None:
    """A key made in one record finds the same debugger's item in another whose debuggers differ in number and
    order, where a position ("the second debugger") would name another one, or none."""
    first = make_record(debug={"stats": (Item("", Kind.STATS, {"mean": 1.0}),), "attn": (_attention(1),)})
    second = make_record(debug={"gradcam": (Item("cam", Kind.HEATMAP, np.ones((4, 4))),),
                                "new": (Item("x", Kind.SCALAR, 1),), "attn": (_attention(2),)})
    key = item_key("debug", "attn", "weights")
    assert find_item(first, key) is first.debug["attn"][0]
    assert find_item(second, key) is second.debug["attn"][0]
    assert find_item(second, item_key("debug", "gradcam", "cam")).kind == Kind.HEATMAP

    with pytest.raises(NotFoundError, match="no debugger 'gradcam'.*stats, attn"):
        find_item(first, item_key("debug", "gradcam", "cam"))
    with pytest.raises(NotFoundError, match="no debug item 'other'.*'weights'"):
        find_item(first, item_key("debug", "attn", "other"))


def test_keys_of_every_section_resolve() -> None:
    record = _full_record()
    assert find_item(record, item_key("inputs", "", "image")).value is IMAGE
    assert find_item(record, item_key("labels", "", "mask")) is record.labels[0]
    assert find_item(record, item_key("labels", "", "extra")) is record.predictions[1]  # a prediction alone
    meta = find_item(record, item_key("meta", "", "boxes"))
    assert meta.key == "boxes" and meta.value.shape == (3, 4)
    with pytest.raises(NotFoundError, match="no meta info 'nope'.*source, difficulty, boxes"):
        find_item(record, item_key("meta", "", "nope"))
    with pytest.raises(LookupError):  # NotFoundError is a LookupError: callers may catch either
        find_item(record, item_key("inputs", "", "depth"))


@pytest.mark.parametrize("bad", ["debug.2.0", "[1, 2, 3]", '["elsewhere", "", "x"]', '["debug", "a"]', ""])
def test_malformed_keys_are_not_found(bad: str) -> None:
    with pytest.raises(NotFoundError, match="Not an item key"):
        parse_item_key(bad)


def test_names_with_dots_and_quotes_round_trip() -> None:
    key = item_key("debug", 'blocks.5."attn"', "a.b")
    assert parse_item_key(key) == ("debug", 'blocks.5."attn"', "a.b")
    record = make_record(debug={'blocks.5."attn"': (Item("a.b", Kind.SCALAR, 1),)})
    assert find_item(record, key).key == "a.b"


def _sections(view: Group) -> list[Group]:
    return [n for n in walk(view) if isinstance(n, Group) and n.tag == "section"]


def test_the_view_has_its_sections_cards_scores_and_problems() -> None:
    view = datapoint_view(_full_record(), "iou", {"iou": True, "loss": False})
    assert view.cls == "ev-datapoint-content"
    titles = [c.children[0] for c in _sections(view)]
    assert [t.text for t in titles] == list(SECTION_TITLES) and {t.style for t in titles} == {"h2"}
    assert [s.cls.split()[1] for s in _sections(view)] == ["ev-section-inputs", "ev-section-labels",
                                                           "ev-section-meta-info", "ev-section-debug-outputs"]
    cards = [n for n in walk(view) if isinstance(n, Group) and "ev-card" in n.cls.split()]
    assert [c.data["debugger"] for c in cards] == ["layer.4", "attn", "empty"]
    assert [c.cls for c in cards] == ["ev-card", "ev-card ev-card-wide", "ev-card"]
    assert "saved nothing" in text_of(cards[2])
    chips = [n for n in walk(view) if isinstance(n, Group) and n.cls.startswith("ev-score ")]
    assert [c.cls for c in chips] == ["ev-score ev-score-chosen", "ev-score ev-score-nan"]
    assert text_of(chips[0]) == "iou ↑ 0.25" and text_of(chips[1]) == "loss ↓ NaN"
    assert "page 3 is being written" in text_of(view) and "ev-problems" in class_names(view)
    assert table_rows(view)["source"] == "shard_1"
    assert not has_error(Group([c for c in view.children if "ev-problems" not in getattr(c, "cls", "")]))


def test_an_empty_record_says_so_in_every_section() -> None:
    view = datapoint_view(make_record())
    empties = [n.text for n in walk(view) if isinstance(n, Text) and n.cls == "ev-empty"]
    assert empties == ["No inputs were saved for this datapoint.",
                       "No labels or predictions were saved for this datapoint.",
                       "No meta info was saved for this datapoint.",
                       "No debugger saved anything for this datapoint in this epoch."]


def test_ids_name_the_items_and_every_one_resolves() -> None:
    record = _full_record()
    assert not [n for n in walk(datapoint_view(record)) if getattr(n, "id", None) is not None]  # no ids unasked

    view = datapoint_view(record, ids=IDS)
    bodies = [n.id["body"] for n in walk(view) if isinstance(n, Group) and n.id is not None and "body" in n.id]
    assert bodies == [item_key("inputs", "", "image"), item_key("meta", "", "boxes"),
                      item_key("debug", "layer.4", ""), item_key("debug", "attn", "weights")]
    for key in bodies:
        find_item(record, key)
    graph_ids = [g.id for g in graphs(view) if g.id is not None]
    assert graph_ids == [{"graph": item_key("debug", "attn", "weights"), "role": "attention-image"}]


def test_with_a_badges_id_every_debug_card_has_a_badge_slot_even_without_flags() -> None:
    """The app fills a card's badges in later (its pass's summary finishing): the slot must be there to fill."""
    from dataclasses import replace

    from eval_viewer.backend.health import Flag

    record = _full_record()
    flag = Flag("attn", "weights", "attn", "attention_collapsed", 0.01, head=1)
    view = datapoint_view(record, ids=replace(IDS, badges=lambda name: {"badges": name}), health=[flag])
    slots = [n for n in walk(view) if isinstance(n, Group) and isinstance(n.id, dict) and "badges" in n.id]
    assert [s.id["badges"] for s in slots] == ["layer.4", "attn", "empty"]
    assert [len(s.children) for s in slots] == [0, 1, 0]  # only the flagged card holds badges now
    assert "collapsed head 1" in text_of(slots[1])
    assert not [n for n in walk(datapoint_view(record, ids=IDS, health=[flag]))
                if isinstance(n, Group) and "ev-health-slot" in n.cls.split()]  # no slots unasked


def test_notebook_views_of_one_item_and_of_the_whole_datapoint() -> None:
    from eval_viewer.display.notebook import datapoint_view as notebook_datapoint_view
    from eval_viewer.display.notebook import item_view

    record = _full_record()
    one = item_view(record, record.debug["attn"][0], attention_query=5)
    assert one.cls == "ev-item ev-kind-attention" and not has_error(one)
    assert "query 5" in text_of(one) and len(graphs(one)) == 1  # drawn over the input image (clickable)
    assert all(g.id is None for g in graphs(one))  # no app listening: no ids
    html_text = one._repr_html_()
    assert "ev-kind-attention" in html_text and "Plotly.newPlot" in html_text
    assert notebook_datapoint_view(record, "iou").cls == "ev-datapoint-content"
