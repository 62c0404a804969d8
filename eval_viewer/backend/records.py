"""Turn one datapoint's ``{debugger_name: output}`` from a page into a :class:`DatapointRecord`.

The datapoint recorder's output is recognised by shape, not by name (any dict whose keys are a subset of
:data:`~eval_viewer.log_format.RECORD_SECTIONS` and include ``inputs``), so other tools' recorders work too; its
sections fill ``inputs`` / ``labels`` / ``predictions`` / ``meta_info``. Every other output becomes a tuple of
:class:`Item` under ``debug[name]``, each tagged with a kind from the writer's tags or :mod:`.kinds`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from eval_viewer.backend.kinds import items_of
from eval_viewer.backend.model import DatapointRecord, Item, PassKey
from eval_viewer.log_format import KINDS_KEY, RECORD_SECTIONS

__all__ = ["is_record", "scalar_meta", "to_plain", "build_record"]

_SECTIONS = frozenset(RECORD_SECTIONS)


def is_record(output: Any) -> bool:
    """Whether a debugger output is a datapoint record (keys within RECORD_SECTIONS, ``inputs`` among them)."""
    return isinstance(output, Mapping) and "inputs" in output and set(map(str, output)) <= _SECTIONS


def _scalar(value: Any) -> int | float | str | bool | None:
    """A JSON-able scalar for ``value``, or None when it is not one (an array, a dict...)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biufU":
        return value.item()  # type: ignore[no-any-return]
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "biuf":
        return value.item()  # type: ignore[no-any-return]
    return None


def scalar_meta(value: Any) -> dict[str, int | float | str | bool]:
    """The scalar ``meta_info`` fields of the first datapoint record in a datapoint's outputs (for the meta table)."""
    if not isinstance(value, Mapping):
        return {}
    for output in value.values():
        if is_record(output):
            meta = output.get("meta_info")
            if not isinstance(meta, Mapping):
                return {}
            out: dict[str, int | float | str | bool] = {}
            for key, field_value in meta.items():
                scalar = _scalar(field_value)
                if scalar is not None:
                    out[str(key)] = scalar
            return out
    return {}


def to_plain(value: Any) -> Any:
    """Torch tensors (other tools' pages) become numpy arrays, so every renderer sees one storage type.

    bfloat16, which numpy lacks, becomes float32. torch is not imported here: a tensor can only exist if the page
    already imported it.
    """
    if type(value).__module__.startswith("torch") and hasattr(value, "detach") and hasattr(value, "numpy"):
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        return tensor.numpy()
    return value


def _items(output: Any, tags: Mapping[str, str], prefix: str, name_hint: str) -> tuple[Item, ...]:
    return tuple(Item(key, kind, value) for key, kind, value in items_of(output, tags, prefix, name_hint))


def build_record(
    pass_key: PassKey,
    idx: int,
    scores: Mapping[str, float],
    value: Any,
    debuggers: Mapping[str, Any],
    problems: list[str],
) -> DatapointRecord:
    """The record for one datapoint; ``debuggers`` is index.json's ``debuggers`` object (kind tags per debugger)."""
    inputs: tuple[Item, ...] = ()
    labels: tuple[Item, ...] = ()
    predictions: tuple[Item, ...] = ()
    meta_info: Mapping[str, Any] = {}
    debug: dict[str, tuple[Item, ...]] = {}
    recorded = False
    if value is not None and not isinstance(value, Mapping):
        problems.append(f"datapoint {idx}: the page holds a {type(value).__name__}, expected {{debugger: output}}")
        value = {"": value}
    for name, output in (value or {}).items():
        name = str(name)
        info = debuggers.get(name)
        tags = info.get(KINDS_KEY, {}) if isinstance(info, Mapping) else {}
        tags = tags if isinstance(tags, Mapping) else {}
        if not recorded and is_record(output):
            recorded = True
            inputs = _items(output.get("inputs"), tags, "inputs.", "inputs")
            if "labels" in output:
                labels = _items(output["labels"], tags, "labels.", "labels")
            if "outputs" in output:
                predictions = _items(output["outputs"], tags, "outputs.", "outputs")
            meta = output.get("meta_info")
            meta_info = dict(meta) if isinstance(meta, Mapping) else ({} if meta is None else {"": meta})
            continue
        debug[name] = _items(output, tags, "", name)
    return DatapointRecord(
        pass_key=pass_key,
        idx=idx,
        scores=dict(scores),
        inputs=inputs,
        labels=labels,
        predictions=predictions,
        meta_info=meta_info,
        debug=debug,
        problems=tuple(problems),
    )
