"""The registry: lookup by kind, fallback to the summary, errors become error boxes, ids only when asked for."""

from __future__ import annotations

import numpy as np
import pytest

from display_helpers import class_names, graphs, has_error, payload_bytes, table_rows, text_of
from eval_viewer.backend.model import Item
from eval_viewer.display import (RenderContext, Text, register, registered_kinds, render_item, renderer_for,
                                 unregister)
from eval_viewer.log_format import Kind


def test_every_kind_has_a_renderer() -> None:
    assert set(Kind.ALL) <= set(registered_kinds())


def test_unknown_kind_falls_back_to_summary() -> None:
    assert renderer_for("no-such-kind") is renderer_for(Kind.UNKNOWN)
    out = render_item(Item("x", "no-such-kind", np.arange(12.0).reshape(3, 4)))
    assert "ev-summary" in class_names(out)
    assert "ev-kind-no-such-kind" in class_names(out)


def test_exception_inside_renderer_becomes_error_box() -> None:
    kind = "test-broken-kind"

    @register(kind)
    def broken(value: object, ctx: RenderContext) -> Text:
        raise RuntimeError("boom at channel 3")

    try:
        out = render_item(Item("outputs.logits", kind, 1.0))
    finally:
        assert unregister(kind) is broken
    assert has_error(out)
    text = text_of(out)
    assert "outputs.logits" in text and "boom at channel 3" in text and "RuntimeError" in text
    assert kind not in registered_kinds()


def test_bad_value_for_a_known_kind_becomes_error_box() -> None:
    out = render_item(Item("img", Kind.IMAGE, np.zeros((2, 5, 7, 9, 11))))
    assert has_error(out)
    assert "img" in text_of(out)


def test_register_overrides_and_unregister_restores() -> None:
    kind = "test-override-kind"

    @register(kind)
    def first(value: object, ctx: RenderContext) -> Text:
        return Text("first")

    @register(kind)
    def second(value: object, ctx: RenderContext) -> Text:
        return Text("second")

    try:
        assert "second" in text_of(render_item(Item("k", kind, 0)))
    finally:
        unregister(kind)
    assert renderer_for(kind) is renderer_for(Kind.UNKNOWN)


@pytest.mark.parametrize("kind", [Kind.IMAGE, Kind.MASK, Kind.ATTENTION])
def test_graph_ids_only_when_requested(kind: str) -> None:
    rng = np.random.default_rng(0)
    image = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    value = {Kind.IMAGE: image, Kind.MASK: rng.integers(0, 3, (32, 32)),
             Kind.ATTENTION: {"attention": rng.random((2, 16, 16)), "grid": (4, 4)}}[kind]
    plain = render_item(Item("v", kind, value), RenderContext(image=image))
    assert all(getattr(g, "id", None) is None for g in graphs(plain))
    with_ids = render_item(Item("v", kind, value), RenderContext(image=image, graph_id=lambda r: {"role": r}))
    ids = [getattr(g, "id", None) for g in graphs(with_ids)]
    if kind == Kind.ATTENTION:
        assert {"role": "attention-image"} in ids
    assert payload_bytes(with_ids) > 0


def test_unknown_value_is_summarised_not_dumped() -> None:
    big = np.arange(1_000_000, dtype=np.float64).reshape(1000, 1000)
    big[0, 0] = np.nan
    big[0, 1] = np.inf
    out = render_item(Item("blob", Kind.UNKNOWN, big))
    assert "ev-summary" in class_names(out)
    assert payload_bytes(out) < 5_000  # a str() dump would be megabytes
    rows = table_rows(out)
    assert rows["shape"] == "(1000, 1000)" and rows["dtype"] == "float64"
    assert rows["n_nan"] == "1" and rows["n_inf"] == "1"
    assert rows["min"] == "2" and rows["max"] == "1e+06"


def test_arbitrary_object_is_summarised() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "Thing(" + "x" * 10_000 + ")"

    out = render_item(Item("t", "whatever", Thing()))
    assert not has_error(out)
    assert payload_bytes(out) < 3_000
    assert "Thing" in text_of(out)
