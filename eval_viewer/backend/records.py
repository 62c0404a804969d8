"""Turn one datapoint's ``{debugger_name: output}`` from a page into a :class:`DatapointRecord`.

The datapoint recorder's output is recognised by shape, not by name (any dict whose keys are a subset of
:data:`~eval_viewer.log_format.RECORD_SECTIONS` and include ``inputs``), so other tools' recorders work too; its
sections fill ``inputs`` / ``labels`` / ``predictions`` / ``meta_info``. Every other output becomes a tuple of
:class:`Item` under ``debug[name]``, each tagged with a kind from the writer's tags or :mod:`.kinds`.

Logs of other tools often saved no recorder at all (their viewer rebuilt the dataset), yet a debugger's output holds
the image, the label and the prediction under the usual names (:data:`INPUT_NAMES`, :data:`LABEL_NAMES`,
:data:`PREDICTION_NAMES`). A section no recorder filled takes those values, and ``record.notes`` says where they came
from; they leave their debugger's card rather than being drawn twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from eval_viewer.backend.kinds import ViewerHints, items_of, resolve_kind
from eval_viewer.backend.model import DatapointRecord, Item, PassKey
from eval_viewer.log_format import KINDS_KEY, RECORD_SECTIONS

__all__ = ["is_record", "scalar_meta", "to_plain", "build_record", "with_dataset", "INPUT_NAMES", "LABEL_NAMES",
           "PREDICTION_NAMES"]

INPUT_NAMES = ("image", "img", "input", "inputs", "rgb", "images")
LABEL_NAMES = ("gt", "label", "labels", "target", "targets", "mask", "gt_mask", "ground_truth", "groundtruth", "seg_gt")
PREDICTION_NAMES = ("pred", "prediction", "predictions", "output", "outputs", "pred_mask", "seg_pred")
"""Keys (case-insensitive) of a debugger's output that fill Inputs / Labels / predictions when no recorder did."""

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


def _tags_of(debuggers: Mapping[str, Any], hints: ViewerHints, name: str) -> Mapping[str, str]:
    info = debuggers.get(name)
    tags = info.get(KINDS_KEY, {}) if isinstance(info, Mapping) else {}
    tags = dict(tags) if isinstance(tags, Mapping) else {}
    tags.update(hints.kinds.get(name, {}))
    return tags


def _found(debug_outputs: dict[str, Any], names: tuple[str, ...], all_tags: Mapping[str, Mapping[str, str]],
           section: str) -> tuple[tuple[Item, ...], str | None]:
    """Values under ``names`` in the first debugger output that has any, taken out of it; and a note saying where."""
    wanted = set(names)
    for name, output in debug_outputs.items():
        tags = all_tags.get(name, {})
        if not isinstance(output, Mapping):
            if name.lower() in wanted and output is not None:
                del debug_outputs[name]
                kind = resolve_kind("", output, tags, name_hint=name)
                return (Item(name, kind, output),), f"{section} found in the output of debugger {name!r}"
            continue
        keys = [key for key in output if str(key).lower() in wanted and output[key] is not None]
        if not keys:
            continue
        items = tuple(Item(str(key), resolve_kind(str(key), output[key], tags), output[key]) for key in keys)
        rest = {key: value for key, value in output.items() if key not in keys}
        if rest:
            debug_outputs[name] = rest
        else:  # everything it saved is drawn in the section now: no empty card
            del debug_outputs[name]
        quoted = ", ".join(repr(str(key)) for key in keys)
        return items, f"{section} found in the output of debugger {name!r} ({quoted})"
    return (), None


def build_record(
    pass_key: PassKey,
    idx: int,
    scores: Mapping[str, float],
    value: Any,
    debuggers: Mapping[str, Any],
    problems: list[str],
    hints: ViewerHints | None = None,
) -> DatapointRecord:
    """The record for one datapoint; ``debuggers`` is index.json's ``debuggers`` object (kind tags per debugger),
    ``hints`` what the log's viewer sidecar declares (its kinds win over index.json's)."""
    hints = hints or ViewerHints()
    problems.extend(hints.problems)
    inputs: tuple[Item, ...] = ()
    labels: tuple[Item, ...] = ()
    predictions: tuple[Item, ...] = ()
    meta_info: Mapping[str, Any] = {}
    notes: dict[str, str] = {}
    recorded = False
    if value is not None and not isinstance(value, Mapping):
        problems.append(f"datapoint {idx}: the page holds a {type(value).__name__}, expected {{debugger: output}}")
        value = {"": value}
    outputs: dict[str, Any] = {}
    all_tags: dict[str, Mapping[str, str]] = {}
    for name, output in (value or {}).items():
        name = str(name)
        tags = all_tags[name] = _tags_of(debuggers, hints, name)
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
        outputs[name] = output
    if not inputs:
        inputs, notes["inputs"] = _found(outputs, INPUT_NAMES, all_tags, "inputs")  # type: ignore[assignment]
    if not labels and not predictions:
        labels, label_note = _found(outputs, LABEL_NAMES, all_tags, "labels")
        predictions, prediction_note = _found(outputs, PREDICTION_NAMES, all_tags, "predictions")
        notes["labels"] = "; ".join(n for n in (label_note, prediction_note) if n)
    debug = {name: _items(output, all_tags[name], "", name) for name, output in outputs.items()}
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
        notes={section: note for section, note in notes.items() if note},
        class_names=hints.class_names,
        palette=hints.palette,
    )


def with_dataset(record: DatapointRecord, dataset: Callable[[int], Any], name: str) -> DatapointRecord:
    """``record`` with the sections its log left empty (inputs, labels, predictions, meta info) filled from
    ``dataset(record.idx)`` (``--dataset``), each saying so; a failing or malformed answer becomes a problem."""
    if record.inputs and (record.labels or record.predictions):
        return record
    try:
        answer = dataset(record.idx)
    except Exception as exc:  # noqa: BLE001 - the user's code: any failure is shown, the rest of the view stays
        return replace(record, problems=(*record.problems, f"--dataset {name}: datapoint {record.idx} failed "
                                                           f"({type(exc).__name__}: {exc})"))
    if not isinstance(answer, Mapping) or not set(map(str, answer)) & set(RECORD_SECTIONS):
        return replace(record, problems=(*record.problems, f"--dataset {name}: datapoint {record.idx} returned a "
                                                           f"{type(answer).__name__}, expected a dict with any of "
                                                           f"{', '.join(RECORD_SECTIONS)}"))
    answer = {str(k): to_plain(v) if not isinstance(v, Mapping) else {kk: to_plain(vv) for kk, vv in v.items()}
              for k, v in answer.items()}
    changes: dict[str, Any] = {}
    notes = dict(record.notes)
    where = f"from --dataset {name}"
    if not record.inputs and answer.get("inputs") is not None:
        changes["inputs"] = _items(answer["inputs"], {}, "inputs.", "inputs")
        notes["inputs"] = f"inputs {where}"
    if not record.labels and not record.predictions and (answer.get("labels") is not None
                                                         or answer.get("outputs") is not None):
        if answer.get("labels") is not None:
            changes["labels"] = _items(answer["labels"], {}, "labels.", "labels")
        if answer.get("outputs") is not None:
            changes["predictions"] = _items(answer["outputs"], {}, "outputs.", "outputs")
        notes["labels"] = f"labels {where}"
    meta = answer.get("meta_info")
    if not record.meta_info and isinstance(meta, Mapping):
        changes["meta_info"] = dict(meta)
    return replace(record, notes=notes, **changes) if changes else record
