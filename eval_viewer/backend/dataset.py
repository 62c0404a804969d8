"""Inputs for logs that saved none: ``--dataset module:callable``, the user's own code, asked by datapoint index.

Many logs hold debug outputs only (their viewer rebuilt the dataset to show the images). ``--dataset pkg.data:get``
imports ``pkg.data`` and calls ``get(idx)`` for a datapoint whose log has no inputs (or no labels); it returns what a
datapoint recorder would have saved, any of ``{"inputs": ..., "labels": ..., "outputs": ..., "meta_info": ...}``
(values as the log's: arrays, tensors, dicts of them). The datapoint view then shows them beside the saved debug
outputs and says where they came from. This **runs the user's code** in the viewer's process, so it is never implied:
only an explicit ``--dataset`` (or ``LogStore(dataset=...)``) turns it on.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from eval_viewer.errors import ViewerError

__all__ = ["DatasetError", "load_dataset", "Dataset"]

Dataset = Callable[[int], Mapping[str, Any]]


class DatasetError(ViewerError):
    """``--dataset`` names nothing callable (a bad spec, a module that does not import, a missing attribute)."""


def load_dataset(spec: str | Dataset) -> tuple[str, Dataset]:
    """``(name, callable)`` for ``"module:callable"`` (dotted attributes allowed after the colon) or a callable."""
    if callable(spec):
        return getattr(spec, "__qualname__", repr(spec)), spec
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise DatasetError(f"--dataset {spec!r}: expected module:callable (e.g. mypkg.data:datapoint)")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - the user's module may fail in any way: say so at start-up
        raise DatasetError(f"--dataset {spec!r}: cannot import {module_name!r} ({type(exc).__name__}: {exc})") from exc
    for part in attr.split("."):
        if not hasattr(target, part):
            raise DatasetError(f"--dataset {spec!r}: {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise DatasetError(f"--dataset {spec!r}: {attr!r} is a {type(target).__name__}, not a callable")
    return str(spec), target
