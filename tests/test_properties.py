"""Property tests (hypothesis, bounded): every score file and every page content either renders or gives a
``ViewerError``; nothing else escapes and nothing hangs.

Score files go through the decoder, the overview's figures and the failure table; page contents through a joblib
page on disk, the safe reader, the record builder and the whole datapoint view; damaged pages (bytes flipped, cut)
through the reader. ``max_examples`` keeps the whole file to a few seconds; a SIGALRM guard turns a hang into a
failure naming the input instead of a stuck suite."""

from __future__ import annotations

import json
import math
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from eval_viewer.app.failure_table import table_data
from eval_viewer.app.figures import distribution_figure, score_map_figure
from eval_viewer.app.views import datapoint_view
from eval_viewer.backend.lru import ByteLRU
from eval_viewer.backend.model import PassKey
from eval_viewer.backend.pages import read_datapoint
from eval_viewer.backend.records import build_record
from eval_viewer.backend.scores import decode_scores
from eval_viewer.backend.sources import LocalSource
from eval_viewer.errors import ViewerError

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HANG_S = 20


@contextmanager
def no_hang(what: Any) -> Iterator[None]:
    def alarm(*_: Any) -> None:
        raise TimeoutError(f"hung for {HANG_S} s on {what!r:.300}")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------ score files
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308, 5e-324, 0.0]))
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), floats, st.text(max_size=5))
json_any = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(st.text(max_size=4), inner, max_size=4)),
                        max_leaves=20)
per_datapoint = st.dictionaries(
    st.text(min_size=1, max_size=6),
    st.one_of(st.lists(st.one_of(floats, st.none()), min_size=1, max_size=30),
              st.lists(st.lists(floats, min_size=1, max_size=4), min_size=1, max_size=10), json_any),
    max_size=4)
score_files = st.one_of(
    st.fixed_dictionaries({"aggregated": st.dictionaries(st.text(max_size=6), json_any, max_size=4),
                           "per_datapoint": per_datapoint}),
    json_any,
)


def _json(payload: Any) -> bytes:
    return json.dumps(payload, allow_nan=True).encode()  # NaN and Infinity as Python writes them


@SETTINGS
@given(score_files)
def test_every_score_file_renders_or_is_a_viewer_error(payload: Any) -> None:
    with no_hang(payload):
        try:
            scores = decode_scores(_json(payload), "validation_scores.json")
        except ViewerError:
            return
        for metric in scores.metrics:
            values = scores.per_datapoint[metric]
            distribution_figure(values, metric, aggregated=_finite(scores.aggregated.get(metric)))
            score_map_figure(values, metric, higher_is_better=scores.higher_is_better.get(metric, True))
            table_data(scores, metric, {})
        table_data(scores, None, {})


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, float) and math.isfinite(value) else None


# ------------------------------------------------------------------ page contents
dtypes = st.one_of(hnp.scalar_dtypes(), st.sampled_from([np.dtype("datetime64[ns]"), np.dtype("timedelta64[s]"),
                                                         np.dtype("<U3"), np.dtype("S2"), np.dtype("float16")]))
arrays = hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6))
leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), floats, st.text(max_size=8),
                   st.binary(max_size=8), arrays)
keys = st.one_of(st.text(max_size=8), st.integers(-3, 3), st.sampled_from(["inputs", "labels", "outputs",
                                                                          "meta_info", "image", "mask", "logits"]))
values = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                                                      st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
contents = st.dictionaries(st.sampled_from(["recorder", "dbg", "layer4", "attn"]), values, min_size=1, max_size=3)


def _render(page: Path, idx: int) -> None:
    problems: list[str] = []
    try:
        value = read_datapoint(LocalSource(page.parent), page.name, idx, trust=False, lru=ByteLRU(1 << 24))
    except ViewerError as err:
        value, problems = None, [str(err)]
    except KeyError:
        value = None
    record = build_record(PassKey("run", "val", 0), idx, {"acc": 0.5}, value, {}, problems)
    datapoint_view(record, "acc", {"acc": True})


@SETTINGS
@given(contents)
def test_every_page_content_renders_or_is_a_viewer_error(content: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp, no_hang(content):
        page = Path(tmp) / "page_0.pkl"
        joblib.dump({7: content}, page)
        _render(page, 7)


@SETTINGS
@given(contents, st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.floats(0.05, 1.0))
def test_every_damaged_page_renders_or_is_a_viewer_error(content: dict[str, Any], flips: list[tuple[float, int]],
                                                        keep: float) -> None:
    with tempfile.TemporaryDirectory() as tmp, no_hang((content, flips, keep)):
        page = Path(tmp) / "page_0.pkl"
        joblib.dump({7: content}, page)
        data = bytearray(page.read_bytes())
        for where, byte in flips:
            data[min(int(where * len(data)), len(data) - 1)] = byte
        page.write_bytes(bytes(data[: max(1, int(len(data) * keep))]))
        _render(page, 7)
