"""A page of a pass measured at once, for the health summary (:mod:`.health_summary`).

The first datapoint of a page is read as a record (:func:`~.records.build_record`), which says which items are
checked (:func:`~.health.measure`) and where each sits in the page's ``{debugger: output}``; every datapoint of the
page laid out the same way is then measured from the page's values directly: arrays stacked by shape and measured in
one vectorised call per item, the capture's attention summaries gathered in one step, statistics one by one. A
datapoint laid out otherwise is read as a record of its own, so nothing is left out and both paths give the same
numbers (the tests hold them to it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from eval_viewer.backend.bulk import PassPages
from eval_viewer.backend.health import Column, ForwardOrder, measure
from eval_viewer.backend.health_measures import (
    SCALAR_FIELDS,
    HealthThresholds,
    Measure,
    attention_weights,
    head_entropy,
    item_array,
    measure_arrays,
    measure_stats,
    summary_entropy,
)
from eval_viewer.backend.model import DatapointRecord, Item, PassKey
from eval_viewer.backend.records import build_record
from eval_viewer.log_format import Kind

__all__ = ["measure_page", "concat", "record_of", "RECORDER"]

RECORDER = ".DatapointRecorder"
"""Class suffix of our datapoint recorder in ``index.json``: the summary does not read its arrays (inputs, labels,
predictions hold nothing it checks)."""
_STAND_IN = {"inputs": {"left_out": 0}, "labels": {"left_out": 0}}


def record_of(key: PassKey, idx: int, value: Any, pages: PassPages) -> DatapointRecord:
    """The record of a datapoint read without its recorder's arrays: a small stand-in takes the recorder's place, so
    the record's debug outputs are the ones :meth:`LogStore.datapoint` gives (with no recorder at all, the reader
    would take items named like inputs or predictions out of the debug outputs)."""
    if isinstance(value, Mapping):
        missing = {name: _STAND_IN for name, info in pages.debuggers.items() if name not in value
                   and isinstance(info, Mapping) and str(info.get("class", "")).endswith(RECORDER)}
        if missing:
            value = {**missing, **value}
    return build_record(key, idx, {}, value, pages.debuggers, [], pages.hints)

_MAP_CHUNK = 1 << 21
"""Attention weights turned into entropies at a time (float32 temporaries of 8 MB each)."""


def _signature(value: Any) -> Any:
    """The layout of one datapoint's ``{debugger: output}`` (names and top-level keys). (``type(...) is dict`` first:
    it runs for every datapoint of a pass, and the ABC check behind ``isinstance(..., Mapping)`` is slower.)"""
    if type(value) is not dict and not isinstance(value, Mapping):
        return type(value).__name__
    return tuple((name, tuple(out) if type(out) is dict or isinstance(out, Mapping) else type(out).__name__)
                 for name, out in value.items())


def _lookup(value: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


def _path(column: Column) -> tuple[str, ...]:
    return (column.debugger, *(column.key.split(".") if column.key else ()))


def measure_page(key: PassKey, idx: list[int], values: list[Any], first: DatapointRecord, pages: PassPages,
                  order: ForwardOrder, t: HealthThresholds) -> dict[Column, dict[str, np.ndarray]]:
    """Every checked column over the datapoints of one page, ``(len(values),)`` arrays."""
    n = len(values)
    found = measure(first, order, t)
    items = {c: first.debug_item(c.debugger, c.key) for c in found}
    layout = _signature(values[0])
    same = [i for i, v in enumerate(values) if _signature(v) == layout]
    direct = {c: item for c, item in items.items() if _same_object(values[0], _path(c), item.value)}
    out: dict[Column, dict[str, np.ndarray]] = {}
    leftover = set(range(n)) - set(same) if len(direct) == len(items) else set(range(n))
    if len(direct) == len(items):
        for c, item in items.items():
            picked: list[Any] = []
            for i in same:
                try:
                    picked.append(_lookup(values[i], _path(c)))
                except (KeyError, TypeError, IndexError):
                    picked.append(None)
            out[c] = _measure_column(c, item, found[c], picked, same, n, values, t)
    for i in sorted(leftover):  # laid out otherwise: read as a record of its own
        record = record_of(key, idx[i], values[i], pages)
        for c, m in measure(record, order, t).items():
            _put(out.setdefault(c, _empty(n, m)), i, m)
    return out


def _same_object(value: Any, path: tuple[str, ...], expected: Any) -> bool:
    try:
        return _lookup(value, path) is expected
    except (KeyError, TypeError, IndexError):
        return False


def _empty(n: int, like: Measure) -> dict[str, np.ndarray]:
    arrays = {f: np.full(n, np.nan) for f in SCALAR_FIELDS}
    if like.entropy is not None:
        arrays["entropy"] = np.full((n, like.entropy.size), np.nan)
    if like.dead is not None:
        arrays["dead"] = np.zeros((n, like.dead.size), dtype=bool)
        arrays["dead_seen"] = np.zeros(n, dtype=bool)
    return arrays


def _put(arrays: dict[str, np.ndarray], row: int, m: Measure) -> None:
    for f in SCALAR_FIELDS:
        arrays[f][row] = getattr(m, f)
    if m.entropy is not None and "entropy" in arrays and m.entropy.size == arrays["entropy"].shape[1]:
        arrays["entropy"][row] = m.entropy
    if m.dead is not None and "dead" in arrays and m.dead.size == arrays["dead"].shape[1]:
        arrays["dead"][row] = m.dead
        arrays["dead_seen"][row] = True


def _measure_column(c: Column, item: Item, first: Measure, picked: list[Any], rows: list[int], n: int,
                    values: list[Any], t: HealthThresholds) -> dict[str, np.ndarray]:
    """One column over a page (``first``: its measure on the page's first datapoint, for the widths): arrays
    stacked by shape and measured in one call; statistics one by one."""
    arrays = _empty(n, first)
    if c.source == "stats":
        channel_paths = [(c.debugger, f"{k}{c.key[len('stats'):]}") for k in ("channel_mean", "channel_std")]
        for row, value in zip(rows, picked):
            if isinstance(value, Mapping):
                channel = {}
                for (name, k), label in zip(channel_paths, ("channel_mean", "channel_std")):
                    try:
                        channel[label] = values[row][name][k]
                    except (KeyError, TypeError):
                        channel[label] = None
                _put(arrays, row, measure_stats(value, channel))
        return arrays
    groups: dict[tuple[Any, ...], list[tuple[int, np.ndarray]]] = {}
    summarised: set[int] = set()
    if c.source == "attention" and "entropy" in arrays:
        summarised = _summaries(arrays["entropy"], rows, picked)
    for row, value in zip(rows, picked):
        if row in summarised:
            continue
        if c.source == "attention":
            entropy = summary_entropy(value)
            if entropy is not None and "entropy" in arrays and entropy.size == arrays["entropy"].shape[1]:
                arrays["entropy"][row] = entropy
                summarised.add(row)
                continue
            found = attention_weights(value)
            if found is not None:
                groups.setdefault((found[0].shape, found[0].dtype.str, found[1]), []).append((row, found[0]))
            continue
        array = item_array(value)
        if array is not None:
            groups.setdefault((array.shape, array.dtype.str), []).append((row, array))
    for shape_key, members in groups.items():
        where = np.fromiter((row for row, _ in members), dtype=np.int64, count=len(members))
        if c.source == "attention":  # no summary from the capture: from the maps, a few MB at a time
            step = max(1, _MAP_CHUNK // max(members[0][1].size, 1))
            for start in range(0, len(members), step):
                measured = head_entropy(np.stack([a for _, a in members[start:start + step]]), (0, shape_key[2] + 1))
                if measured is not None and measured[0].shape[1:] == arrays["entropy"].shape[1:]:
                    arrays["entropy"][where[start:start + step]] = measured[0]
                    arrays["nan"][where[start:start + step]] = measured[1]
            continue
        batch = np.stack([a for _, a in members])
        m = measure_arrays(batch, channels=item.kind == Kind.FEATURE_MAP and batch.ndim >= 4, t=t)
        for f in SCALAR_FIELDS:
            arrays[f][where] = m[f]
        if "dead" in m and "dead" in arrays and m["dead"].shape[1] == arrays["dead"].shape[1]:
            arrays["dead"][where] = m["dead"]
            arrays["dead_seen"][where] = True
    return arrays


def _summaries(entropy: np.ndarray, rows: list[int], picked: list[Any]) -> set[int]:
    """Fill ``entropy`` from the capture's per-head summaries, the common layout (1-D per head, no windows) in one
    vectorised step; the rows filled. Any other layout is left to :func:`~.health.summary_entropy` row by row."""
    width = entropy.shape[1]
    done: list[int] = []
    h: list[np.ndarray] = []
    peak: list[np.ndarray] = []
    keys: list[int] = []
    for row, value in zip(rows, picked):
        try:
            summary, k = value["summary"], value["num_keys"]
            e, m = summary["entropy"], summary["max"]
        except (KeyError, TypeError, IndexError):
            continue
        if ("windows" in value or not isinstance(k, int) or k < 2 or not isinstance(e, np.ndarray)
                or not isinstance(m, np.ndarray) or e.shape != (width,) or m.shape != (width,)):
            continue
        done.append(row)
        h.append(e)
        peak.append(m)
        keys.append(k)
    if done:
        values = np.stack(h).astype(np.float64) / np.log(np.asarray(keys, dtype=np.float64))[:, None]
        entropy[done] = np.where(np.stack(peak) > 0, values, np.nan)
    return set(done)


def concat(parts: list[tuple[int, dict[Column, dict[str, np.ndarray]]]]) -> dict[Column, dict[str, np.ndarray]]:
    """Pages' columns joined in page order; a column a page lacks is NaN (False) there."""
    columns: dict[Column, dict[str, np.ndarray]] = {}
    for _, page in parts:
        for c, arrays in page.items():
            columns.setdefault(c, arrays)
    out: dict[Column, dict[str, np.ndarray]] = {}
    for c, like in columns.items():
        joined: dict[str, list[np.ndarray]] = {name: [] for name in like}
        for n, page in parts:
            found = page.get(c)
            for name, template in like.items():
                part = found.get(name) if found is not None else None
                if part is None or part.shape[1:] != template.shape[1:]:
                    part = np.zeros((n, *template.shape[1:]), dtype=bool) if template.dtype == bool else \
                        np.full((n, *template.shape[1:]), np.nan)
                joined[name].append(part)
        out[c] = {name: np.concatenate(chunks) for name, chunks in joined.items()}
    return out
