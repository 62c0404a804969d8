"""The failure table's server-side filtering, sorting and slicing, without a browser.

Expected rows are written out by hand for a table of eight datapoints small enough to check by eye, and a random
table is checked against a plain ``sorted`` oracle, so neither side borrows from the code under test.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import pytest

from eval_viewer.app.callbacks.table import index_ranges, table_caption, table_columns
from eval_viewer.app.failure_table import table_data
from eval_viewer.app.table_query import (
    Table,
    filter_mask,
    list_column,
    number_column,
    query,
    row_dicts,
    sort_rows,
    text_column,
)
from eval_viewer.backend import Scores

NAN = float("nan")
IOU = [0.9, NAN, 0.2, 0.5, NAN, 0.2, 1.0, 0.7]  # higher is better
LOSS = [0.1, 2.0, NAN, 0.3, 0.4, 0.3, 0.05, 0.2]  # lower is better
SPLIT = ["train", "Val", None, "val", "test", "  ", "VALID", "train"]
SIZE = [3, None, 1, 2, 5, 4, None, 0]
WORST_BY_IOU = [1, 4, 2, 5, 3, 7, 0, 6]  # NaN first, then ascending iou, ties by index


@pytest.fixture
def table() -> Table:
    rank = np.empty(8, dtype=np.int64)
    rank[WORST_BY_IOU] = np.arange(1, 9)
    return Table(
        columns={
            "rank": number_column(rank),
            "idx": number_column(np.arange(8)),
            "iou": number_column(np.array(IOU), higher_is_better=True),
            "loss": number_column(np.array(LOSS), higher_is_better=False),
            "split": text_column(SPLIT),
            "size": number_column(SIZE),
        },
        default_order=np.array(WORST_BY_IOU),
    )


def rows(table: Table, sort: list[dict[str, Any]] | None = None, filters: dict[str, Any] | None = None) -> list[int]:
    return query(table, 0, 100, sort, filters).rows.tolist()


def kept(table: Table, filters: dict[str, Any]) -> list[int]:
    return np.flatnonzero(filter_mask(table, filters)).tolist()


def test_default_order_is_the_ranking_and_blocks_slice_it(table: Table) -> None:
    assert rows(table) == WORST_BY_IOU
    assert rows(table, [{"colId": "rank", "sort": "asc"}]) == WORST_BY_IOU
    assert rows(table, [{"colId": "rank", "sort": "desc"}]) == WORST_BY_IOU[::-1]
    block = query(table, 2, 5)
    assert (block.rows.tolist(), block.count) == (WORST_BY_IOU[2:5], 8)
    assert query(table, 6, 100).rows.tolist() == WORST_BY_IOU[6:]
    assert query(table, 20, 40).rows.tolist() == []


def test_metric_blanks_sort_at_the_worst_end(table: Table) -> None:
    # iou, higher is better: worst is low, so NaN comes first ascending and last descending; ties stay in ranking order
    assert rows(table, [{"colId": "iou", "sort": "asc"}]) == [1, 4, 2, 5, 3, 7, 0, 6]
    assert rows(table, [{"colId": "iou", "sort": "desc"}]) == [6, 0, 7, 3, 2, 5, 1, 4]
    # loss, lower is better: worst is high, so NaN comes last ascending and first descending
    assert rows(table, [{"colId": "loss", "sort": "asc"}]) == [6, 0, 7, 5, 3, 4, 1, 2]
    assert rows(table, [{"colId": "loss", "sort": "desc"}]) == [2, 1, 4, 5, 3, 7, 0, 6]


def test_meta_blanks_sort_last_both_ways(table: Table) -> None:
    assert rows(table, [{"colId": "size", "sort": "asc"}]) == [7, 2, 3, 0, 5, 4, 1, 6]
    assert rows(table, [{"colId": "size", "sort": "desc"}]) == [4, 5, 0, 3, 2, 7, 1, 6]
    # text: case-sensitive code-point order; None and the whitespace-only string are blank, last, in ranking order
    assert rows(table, [{"colId": "split", "sort": "asc"}]) == [6, 1, 4, 7, 0, 3, 2, 5]
    assert rows(table, [{"colId": "split", "sort": "desc"}]) == [3, 7, 0, 4, 1, 6, 2, 5]


def test_multi_column_sort_first_entry_wins(table: Table) -> None:
    by_split_then_loss = [{"colId": "split", "sort": "asc"}, {"colId": "loss", "sort": "desc"}]
    assert rows(table, by_split_then_loss) == [6, 1, 4, 7, 0, 3, 2, 5]
    by_loss_then_idx = [{"colId": "loss", "sort": "asc"}, {"colId": "idx", "sort": "asc"}]
    assert rows(table, by_loss_then_idx) == [6, 0, 7, 3, 5, 4, 1, 2]  # the tie 5, 3 of the ranking now 3, 5


@pytest.mark.parametrize(("op", "value", "expected"), [
    ("equals", 0.2, [2, 5]),
    ("notEqual", 0.2, [0, 3, 6, 7]),
    ("lessThan", 0.5, [2, 5]),
    ("lessThanOrEqual", 0.5, [2, 3, 5]),
    ("greaterThan", 0.7, [0, 6]),
    ("greaterThanOrEqual", 0.7, [0, 6, 7]),
    ("blank", None, [1, 4]),
    ("notBlank", None, [0, 2, 3, 5, 6, 7]),
])
def test_number_filters_and_nan_matches_only_blank(table: Table, op: str, value: float | None,
                                                   expected: list[int]) -> None:
    assert kept(table, {"iou": {"filterType": "number", "type": op, "filter": value}}) == expected


def test_in_range_excludes_both_ends_and_accepts_reversed_bounds(table: Table) -> None:
    assert kept(table, {"iou": {"filterType": "number", "type": "inRange", "filter": 0.2, "filterTo": 0.9}}) == [3, 7]
    assert kept(table, {"iou": {"filterType": "number", "type": "inRange", "filter": 0.9, "filterTo": 0.2}}) == [3, 7]
    assert kept(table, {"size": {"filterType": "number", "type": "inRange", "filter": 0, "filterTo": 4}}) == [0, 2, 3]


@pytest.mark.parametrize(("op", "value", "expected"), [
    ("contains", "VAL", [1, 3, 6]),
    ("notContains", "val", [0, 2, 4, 5, 7]),  # None matches notContains, as in AG Grid
    ("equals", "val", [1, 3]),
    ("notEqual", "val", [0, 2, 4, 5, 6, 7]),
    ("startsWith", "tr", [0, 7]),
    ("endsWith", "ID", [6]),
    ("blank", None, [2, 5]),
    ("notBlank", None, [0, 1, 3, 4, 6, 7]),
])
def test_text_filters_ignore_case(table: Table, op: str, value: str | None, expected: list[int]) -> None:
    assert kept(table, {"split": {"filterType": "text", "type": op, "filter": value}}) == expected


def test_combined_conditions_and_several_columns(table: Table) -> None:
    either = {"filterType": "number", "operator": "OR", "conditions": [
        {"filterType": "number", "type": "lessThan", "filter": 0.3},
        {"filterType": "number", "type": "blank"},
    ]}
    assert kept(table, {"iou": either}) == [1, 2, 4, 5]
    both = {"filterType": "text", "operator": "AND", "conditions": [
        {"filterType": "text", "type": "startsWith", "filter": "v"},
        {"filterType": "text", "type": "notEqual", "filter": "valid"},
    ]}
    assert kept(table, {"split": both}) == [1, 3]
    assert kept(table, {"iou": either, "split": both}) == [1]
    block = query(table, 0, 1, [{"colId": "idx", "sort": "desc"}], {"iou": either})
    assert (block.rows.tolist(), block.count) == ([5], 4)


def test_filters_that_no_longer_fit_are_skipped_and_bad_ones_raise(table: Table) -> None:
    assert kept(table, {"m9": {"filterType": "number", "type": "equals", "filter": 1}}) == list(range(8))
    assert kept(table, {"split": {"filterType": "number", "type": "equals", "filter": 1}}) == list(range(8))
    assert rows(table, [{"colId": "m9", "sort": "asc"}]) == WORST_BY_IOU
    assert kept(table, {"iou": {"filterType": "number", "type": "equals", "filter": None}}) == list(range(8))
    with pytest.raises(ValueError, match="unknown number filter"):
        filter_mask(table, {"iou": {"filterType": "number", "type": "about", "filter": 1}})
    with pytest.raises(ValueError, match="unknown text filter"):
        filter_mask(table, {"split": {"filterType": "text", "type": "regex", "filter": "v"}})
    with pytest.raises(ValueError, match="sort direction"):
        sort_rows(table, np.arange(8), [{"colId": "iou", "sort": "up"}])


def test_rows_are_json_ready_and_rounded(table: Table) -> None:
    table.columns["loss"].values[0] = 1 / 3
    sent = row_dicts(table, np.array([0, 1, 2]))
    assert sent[0] == {"rank": 7, "idx": 0, "iou": 0.9, "loss": 0.3333333, "split": "train", "size": 3.0}
    assert sent[1]["iou"] is None and sent[2]["loss"] is None and sent[2]["split"] is None
    assert isinstance(sent[0]["idx"], int) and isinstance(sent[0]["rank"], int)
    json.dumps(sent, allow_nan=False)


def _oracle(values: dict[str, list[Any]], kinds: dict[str, bool | None], order: list[int],
            sort: list[dict[str, Any]]) -> list[int]:
    """The documented order with Python's sorted: per entry (blank group, value), ties keep their place in ``order``."""
    def blank(v: Any) -> bool:
        return v is None or (isinstance(v, float) and math.isnan(v))

    ranks = {name: {v: r for r, v in enumerate(sorted({x for x in column if not blank(x)}))}
             for name, column in values.items()}

    def key(i: int) -> tuple[Any, ...]:
        parts: list[Any] = []
        for entry in sort:
            name, asc = entry["colId"], entry["sort"] == "asc"
            v, hib = values[name][i], kinds[name]
            if blank(v):
                parts.append((0 if hib is not None and hib == asc else 2, 0))
            else:
                parts.append((1, ranks[name][v] if asc else -ranks[name][v]))
        return tuple(parts)

    return sorted(order, key=key)  # sorted is stable: ties stay in ``order``


def test_random_multi_sorts_match_the_oracle() -> None:
    rng = random.Random(7)
    n = 300
    values: dict[str, list[Any]] = {
        "m0": [float(rng.randint(0, 9)) if rng.random() > 0.1 else NAN for _ in range(n)],
        "m1": [float(rng.randint(0, 5)) if rng.random() > 0.2 else NAN for _ in range(n)],
        "t": [rng.choice(["a", "b", "B", "c", None]) for _ in range(n)],
    }
    kinds = {"m0": True, "m1": False, "t": None}
    order = rng.sample(range(n), n)
    table = Table({"m0": number_column(np.array(values["m0"]), True),
                   "m1": number_column(np.array(values["m1"]), False),
                   "t": text_column(values["t"])}, np.array(order))
    for _ in range(40):
        fields = rng.sample(list(values), rng.randint(1, 3))
        sort = [{"colId": f, "sort": rng.choice(["asc", "desc"])} for f in fields]
        expected = _oracle(values, kinds, order, sort)
        assert query(table, 0, n, sort).rows.tolist() == expected, sort
        assert query(table, 100, 200, sort).rows.tolist() == expected[100:200], sort


def _text(caption: list[Any]) -> str:
    return "".join(part if isinstance(part, str) else str(part.children) for part in caption)


def test_table_of_scores_ranks_worst_first_with_meta_columns() -> None:
    scores = Scores(num_datapoints=8, per_datapoint={"iou": np.array(IOU), "loss": np.array(LOSS)}, aggregated={},
                    higher_is_better={"iou": True, "loss": False})
    meta = {"split": SPLIT, "size": SIZE[:6]}  # a meta field missing for the last datapoints
    table = table_data(scores, "loss", meta)
    worst_by_loss = [2, 1, 4, 3, 5, 7, 0, 6]  # NaN, then descending loss, ties by index
    assert rows(table) == worst_by_loss
    first = row_dicts(table, query(table, 0, 1).rows)[0]
    assert first == {"rank": 1, "idx": 2, "m0": 0.2, "m1": None, "i0": None, "i1": 1.0}
    assert rows(table, [{"colId": "i1", "sort": "asc"}]) == [2, 3, 0, 5, 4, 1, 7, 6]
    fields = {c["field"]: c for group in table_columns(scores, "loss", meta) for c in group.get("children", [group])}
    assert set(fields) == set(table.columns)
    assert fields["i0"]["filter"] == "agTextColumnFilter" and fields["i1"]["filter"] == "agNumberColumnFilter"
    assert _text(table_caption(scores, "loss", meta, 8)).startswith("8 datapoints · ranked by loss, worst (higher)")
    assert "1 NaN ranked worst" in _text(table_caption(scores, "loss", meta, 8))
    assert _text(table_caption(scores, "loss", meta, 3)).startswith("3 of 8 datapoints match the filters")
    assert "no debug outputs" not in _text(table_caption(scores, "loss", meta, 8))
    assert _text(table_caption(scores, "loss", meta, 8, missing=(4, 5, 6, 7))).endswith(
        " · no debug outputs for 4 datapoints (4–7)")


def test_index_ranges_name_runs_and_stop_at_the_limit() -> None:
    assert index_ranges([12, 4, 5, 6, 7]) == "4–7, 12"
    assert index_ranges([3]) == "3"
    assert index_ranges(range(0, 20, 2), limit=3) == "0, 2, 4, …"


def test_list_cells_match_name_by_name_and_show_joined() -> None:
    """The health columns list layers: "equals backbone.layer3" keeps the rows that list it (beside others too) and
    not the one that lists only backbone.layer30, which a "contains" on the joined text would keep."""
    cells = [("backbone.layer3", "backbone.layer4"), ("backbone.layer30",), None, ("backbone.layer3",)]
    table = Table(columns={"nan": list_column(cells)}, default_order=np.arange(4))

    def kept(op: str, needle: str) -> list[int]:
        model = {"nan": {"filterType": "text", "type": op, "filter": needle}}
        return query(table, 0, 10, filter_model=model).rows.tolist()

    assert kept("equals", "backbone.layer3") == [0, 3]
    assert kept("contains", "layer3") == [0, 1, 3]
    assert kept("notEqual", "backbone.layer3") == [1, 2]
    assert [r["nan"] for r in row_dicts(table, np.arange(4))] == [
        "backbone.layer3, backbone.layer4", "backbone.layer30", None, "backbone.layer3"]
    assert query(table, 0, 10, sort_model=[{"colId": "nan", "sort": "desc"}]).rows.tolist()[:3] == [1, 0, 3]
