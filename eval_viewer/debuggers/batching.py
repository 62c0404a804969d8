"""Pure helpers of the capture path: real byte counts, batch splitting, tensor -> numpy, and input checks.

Everything here is a plain function of plain values, so it is tested without threads or files. The rules:

* **Bytes** are real bytes: a tensor or array counts ``nbytes`` (the reference design's ``sys.getsizeof`` counted a
  tensor as ~72 bytes, so its pages never split).
* **Splitting** a batch of ``B`` datapoints (``B`` = number of indices in ``meta_info["idx"]``): every tensor or
  ndarray whose leading dimension equals ``B`` is split along dim 0, *also* for ``B == 1`` (a datapoint gets
  ``(C, H, W)`` from ``(1, C, H, W)``); dicts, lists and tuples are walked; everything else (strings, numbers,
  ``layer_name``, small tensors without the batch dim) is copied to every datapoint.
* **Conversion** for pages: tensors become numpy arrays (bfloat16 -> float32, the one dtype numpy lacks), 0-d arrays
  and numpy scalars become Python scalars, namedtuples become dicts and ``torch.Size`` a tuple, so a page loads with
  plain ``joblib.load`` and holds no torch object.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from eval_viewer.errors import CaptureError

__all__ = [
    "nbytes",
    "batch_indices",
    "split_batch",
    "split_meta",
    "to_numpy",
    "check_plain",
]

_SCALARS = (bool, int, float, str)
_NOT_SCALAR = object()
_LEAVES = (type(None), bool, int, float, complex, str, bytes, np.generic)


def nbytes(obj: Any) -> int:
    """Bytes ``obj`` takes in a page: ``nbytes`` for tensors and arrays, the encoded length of strings, 8 for a number.

    Containers add their contents (keys included). A value shared by several datapoints is counted once per
    datapoint, which errs towards smaller pages, never larger.
    """
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, str):
        return len(obj.encode("utf-8", "surrogatepass"))
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return len(obj)
    if obj is None or isinstance(obj, (bool, int, float, complex, np.generic)):
        return 8
    if isinstance(obj, Mapping):
        return sum(nbytes(k) + nbytes(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v) for v in obj)
    return sys.getsizeof(obj)


def batch_indices(idx: Any) -> list[int]:
    """The datapoint indices of a batch from ``meta_info["idx"]``: an int, a sequence of ints, or an integer tensor.

    Raises :class:`CaptureError` for anything else (a float, a negative index, a 2-D tensor) because a wrong index
    would silently file a datapoint's capture under another datapoint.
    """
    if isinstance(idx, torch.Tensor):
        if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool or idx.dim() > 1:
            raise CaptureError(
                f'meta_info["idx"] must be an integer tensor of 0 or 1 dims, '
                f"got {idx.dtype} of shape {tuple(idx.shape)}"
            )
        values: list[Any] = idx.reshape(-1).tolist()
    elif isinstance(idx, np.ndarray):
        if idx.dtype.kind not in "iu" or idx.ndim > 1:
            raise CaptureError(f'meta_info["idx"] must be an integer array of 0 or 1 dims, got {idx.dtype} {idx.shape}')
        values = idx.reshape(-1).tolist()
    elif isinstance(idx, (int, np.integer)) and not isinstance(idx, (bool, np.bool_)):
        values = [int(idx)]
    elif isinstance(idx, Sequence) and not isinstance(idx, (str, bytes)):
        values = list(idx)
    else:
        raise CaptureError(
            f'meta_info["idx"] must be an int, a list of ints or an integer tensor, got {type(idx).__name__}'
        )
    out: list[int] = []
    for value in values:
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
            value = value.item()
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
            raise CaptureError(f'meta_info["idx"] holds {value!r}; datapoint indices are non-negative ints')
        out.append(int(value))
    return out


def _has_batch_dim(value: Any, batch_size: int) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim >= 1 and value.shape[0] == batch_size


def split_batch(output: Any, batch_size: int) -> list[Any]:
    """One value per datapoint from a debugger's batch output, by the rule in the module docstring.

    Splitting yields views (no copy); a value without the batch dim is the same object in every datapoint.
    """
    if batch_size <= 0:
        return []
    if _has_batch_dim(output, batch_size):
        return [output[i] for i in range(batch_size)]
    if isinstance(output, Mapping):
        parts = {k: split_batch(v, batch_size) for k, v in output.items()}
        return [{k: parts[k][i] for k in parts} for i in range(batch_size)]
    if isinstance(output, (list, tuple)):
        columns = [split_batch(v, batch_size) for v in output]
        rows = [[col[i] for col in columns] for i in range(batch_size)]
        if isinstance(output, list):
            return rows
        return [tuple(row) for row in rows]
    return [output] * batch_size


def _scalar(value: Any) -> Any:
    """A JSON-safe scalar (non-finite floats -> None), or ``_NOT_SCALAR``."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if value.ndim != 0:
            return _NOT_SCALAR
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, _SCALARS):
        return value
    return _NOT_SCALAR


def split_meta(meta_info: Mapping[str, Any], batch_size: int) -> list[dict[str, bool | int | float | str | None]]:
    """The scalar ``meta_info`` fields of each datapoint, for the index (``idx`` itself is left out: it is the key).

    A scalar is given to every datapoint; a list, tuple, 1-D tensor or array of length ``B`` gives element ``i`` to
    datapoint ``i`` when that element is a scalar; any other field (an image path list of another length, a nested
    dict) is not tabulated.
    """
    rows: list[dict[str, Any]] = [{} for _ in range(batch_size)]
    for key, value in meta_info.items():
        if key == "idx" or not isinstance(key, str):
            continue
        if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 1 and value.shape[0] == batch_size:
            values: list[Any] = value.tolist()
        elif isinstance(value, (list, tuple)) and len(value) == batch_size:
            values = list(value)
        else:
            values = [value] * batch_size
        for row, item in zip(rows, values):
            scalar = _scalar(item)
            if scalar is not _NOT_SCALAR:
                row[key] = scalar
    return rows


def to_numpy(obj: Any) -> Any:
    """``obj`` with tensors as numpy arrays, 0-d arrays and numpy scalars as Python scalars (see module docstring)."""
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach()
        if tensor.layout != torch.strided:
            tensor = tensor.to_dense()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if tensor.dim() == 0:
            return tensor.item()
        return tensor.resolve_conj().resolve_neg().numpy()
    if isinstance(obj, np.ndarray):
        return obj.item() if obj.ndim == 0 else obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return {k: to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_asdict"):  # namedtuple: keep the field names
        return {k: to_numpy(v) for k, v in obj._asdict().items()}
    if isinstance(obj, tuple):  # torch.Size and other tuple subclasses become plain tuples
        return tuple(to_numpy(v) for v in obj)
    if isinstance(obj, list):
        return [to_numpy(v) for v in obj]
    return obj


def check_plain(obj: Any, where: str) -> None:
    """Raise :class:`CaptureError` naming ``where`` and the key path if ``obj`` holds something a page cannot hold.

    Pages hold plain data (dicts with str/int keys, lists, tuples, numbers, strings, None, numpy arrays, tensors) so
    that any reader loads them with plain ``joblib.load`` and no project class; an arbitrary object would make the
    page unloadable (or untrusted) elsewhere, so it is refused when captured rather than discovered when read.
    """
    _check(obj, where, "")


def _check(obj: Any, where: str, path: str) -> None:
    if isinstance(obj, _LEAVES):
        return
    if isinstance(obj, torch.Tensor):
        if obj.is_meta:
            raise CaptureError(f"{where} returned a meta tensor (no data) at {path or 'the top level'}")
        return
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise CaptureError(f"{where} returned an object-dtype array at {path or 'the top level'}; use plain types")
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise CaptureError(f"{where} returned a dict key {key!r} at {path or 'the top level'}: use str or int")
            _check(value, where, f"{path}.{key}" if path else str(key))
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check(value, where, f"{path}[{i}]")
        return
    raise CaptureError(
        f"{where} returned a {type(obj).__module__}.{type(obj).__qualname__} at {path or 'the top level'}; "
        "debugger outputs must be plain data (dict, list, tuple, number, str, None, numpy array or tensor)"
    )
