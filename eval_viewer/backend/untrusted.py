"""Bounds for unpickling an untrusted page: nothing a page asks for may crash, hang or flood the viewer.

The allow-list of :mod:`.pickles` keeps a page from running code; this module keeps the *allowed* calls harmless:

- **dtypes** are never used as the page built them. ``numpy.dtype`` is called with a checked type string (always a
  copy, so a page's ``BUILD`` cannot change numpy's shared dtypes), and wherever a dtype meets bytes it is first
  rebuilt from its description (:func:`safe_dtype`: type string, fields, sub-array) by numpy's own constructor, which
  computes the object flags itself; a dtype holding Python objects, or one whose description does not add up to its
  size, is refused. A page that clears a dtype's object flag (the segfault of issue 9) gets a :class:`PageError`.
- **sizes** are paid from a per-page budget proportional to the bytes the page really holds
  (:meth:`Budget.spend`): ``bytearray(n)``, ``list(range(n))``, ``tuple("...")``, a tensor view larger than its
  storage, a numpy array header all count; an array's bytes must be *in* the page; a compressed page may inflate
  only :data:`INFLATE_RATIO` times (and never past :data:`MAX_INFLATED`); a torch storage's bytes are checked before
  ``torch.load`` sees them, and zip-format (compressible) storages, which torch's own pickling never writes, are
  refused.
- **shape**: after the unpickler, :func:`finish` walks the result once (iteratively): shared objects stay shared,
  a cycle or nesting deeper than :data:`MAX_DEPTH` is refused, and the tree the readers would see when they walk it
  (shared parts counted each time they are reached) may not exceed the budget either, so a kilobyte "billion
  laughs" page is refused instead of being expanded by the first reader that walks it.

``trust_pickles`` bypasses all of this, with the allow-list.

Pages are parsed in the viewer's own process, not in sandboxed workers: with every allowed call bounded above, a
page can cost at most a few times its own size and a parse ends with the page, so a worker's memory and time limits
would add a process start or a pool, and a copy of every parsed structure back, to each cold page for no bound that
is not already here; parsing off the GIL comes from serving with several processes (``--workers``). The hostile-page
tests still run the viewer in a subprocess under ``RLIMIT_AS``, so a regression fails a test instead of the runner.
"""

from __future__ import annotations

import functools
import io
import math
import pickle
import threading
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from eval_viewer.errors import PageError, UntrustedPickleError

__all__ = ["Budget", "MAX_DEPTH", "INFLATE_RATIO", "MAX_INFLATED", "safe_dtype", "bounded_builtin", "finish",
           "check_storage_bytes", "PendingArray", "current"]

MAX_DEPTH = 64
"""Containers nested deeper than this are refused (real debug outputs nest a handful of levels)."""
MAX_NDIM = 64
INFLATE_RATIO = 256
"""A compressed page may hold at most this many times its size in array bytes..."""
MAX_INFLATED = 2 << 30
"""...and never more than this."""
_BUDGET_FLOOR = 1 << 20

_LOCAL = threading.local()


def current() -> Budget | None:
    return getattr(_LOCAL, "budget", None)


class Budget:
    """What one page may make: ``4 x its size + 1 MiB`` items (elements, bytes or tree nodes), spent by every call
    that makes something bigger than its arguments."""

    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.limit = 4 * size + _BUDGET_FLOOR
        self.spent = 0
        self._dtypes: dict[int, tuple[np.dtype, np.dtype]] = {}

    def __enter__(self) -> Budget:
        self._outer = current()
        _LOCAL.budget = self
        return self

    def __exit__(self, *exc: object) -> None:
        _LOCAL.budget = self._outer

    def spend(self, amount: int, what: str) -> None:
        self.spent += max(int(amount), 0)
        if self.spent > self.limit:
            raise PageError(f"{self.path}: refused: {what} would make far more than the page holds "
                            f"({self.limit} items allowed for its size); it is damaged or hostile")

    def dtype(self, dtype: Any, *, allow_object: bool) -> np.dtype:
        """:func:`safe_dtype`, once per dtype object of the page."""
        hit = self._dtypes.get(id(dtype))
        if hit is None or hit[0] is not dtype:
            hit = (dtype, safe_dtype(dtype, self.path, allow_object=True))
            self._dtypes[id(dtype)] = hit
        if hit[1].hasobject and not allow_object:
            raise PageError(f"{self.path}: refused: raw bytes read as a dtype holding Python objects ({hit[1]})")
        return hit[1]


def safe_dtype(dtype: Any, path: str, *, allow_object: bool = False, _depth: int = 0) -> np.dtype:
    """A fresh dtype built by numpy from ``dtype``'s description; :class:`PageError` when it is not a dtype, holds
    Python objects (unless ``allow_object``), or does not match its own size."""
    if not isinstance(dtype, np.dtype):
        raise PageError(f"{path}: corrupt array header: {type(dtype).__name__} where a dtype belongs")
    if _depth > 8:
        raise PageError(f"{path}: refused: dtype nested too deeply")
    try:
        names, sub = dtype.names, dtype.subdtype
        if names is not None:
            fields: dict[str, Any] = dict(dtype.fields or {})
            if len(names) > 4096 or set(names) != set(fields):
                raise ValueError("field names do not match the fields")
            formats = [safe_dtype(fields[n][0], path, allow_object=True, _depth=_depth + 1) for n in names]
            offsets = [int(fields[n][1]) for n in names]
            built = np.dtype({"names": list(names), "formats": formats, "offsets": offsets,
                              "itemsize": int(dtype.itemsize)})
        elif sub is not None:
            base, shape = sub
            shape = tuple(int(d) for d in shape)
            if len(shape) > MAX_NDIM or any(d < 0 for d in shape):
                raise ValueError(f"sub-array shape {shape}")
            built = np.dtype((safe_dtype(base, path, allow_object=True, _depth=_depth + 1), shape))
        else:
            text = dtype.str
            if not isinstance(text, str) or len(text) > 32 or text[1:2] not in set("biufcmMSUVO?"):
                raise ValueError(f"type {text!r}")
            built = np.dtype(text)
    except PageError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a damaged description makes numpy say
        raise PageError(f"{path}: refused: inconsistent dtype ({type(exc).__name__}: {exc})") from None
    if built.itemsize != dtype.itemsize:
        raise PageError(f"{path}: refused: inconsistent dtype (describes {built.itemsize} bytes, "
                        f"claims {dtype.itemsize})")
    if built.hasobject and not allow_object:
        raise PageError(f"{path}: refused: raw bytes read as a dtype holding Python objects ({built})")
    return built


def _budget(what: str) -> Budget:
    budget = current()
    if budget is None:  # called outside a page parse (a defaultdict's factory later on): nothing page-made to bound
        return Budget(what, 0)
    return budget


def _sized(arg: Any) -> int:
    """What iterating ``arg`` makes: its length (a list copied a thousand times costs a thousand times)."""
    if isinstance(arg, (int, float, complex, bool, type(None))):
        return 0
    try:
        return len(arg)
    except (TypeError, OverflowError):  # OverflowError: range(2**70)
        return 0 if not isinstance(arg, range) else 1 << 62


def bounded_builtin(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (an allowed builtin or collections class) as a plain function whose output size is paid from the page's
    budget. Being a function, it also cannot serve as ``NEWOBJ``'s class (``bytes.__new__(bytes, 3 << 30)``)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        budget = _budget(name)
        cost = sum(_sized(a) for a in args)
        if name in ("bytes", "bytearray") and args and isinstance(args[0], int):
            cost += args[0]
        if cost:
            budget.spend(cost, f"{name}() of {cost} items")
        return fn(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: text to bytes, nothing else (no zlib codec)."""
    if not isinstance(obj, str) or str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "utf-8",
                                                                                  "iso-8859-1", "utf8"):
        raise UntrustedPickleError(f"{_budget('encode').path}: refused _codecs.encode with {encoding!r}")
    return obj.encode(encoding, errors)


def dtype_ctor(obj: Any, align: Any = False, copy: Any = True) -> np.dtype:
    """``numpy.dtype`` for a page: a short type string only, always a fresh copy (see the module docstring)."""
    if not isinstance(obj, str) or len(obj) > 16:
        raise PageError(f"{_budget('dtype').path}: refused: numpy.dtype({obj!r:.40})")
    try:
        return np.dtype(obj, bool(align), True)
    except Exception as exc:  # noqa: BLE001
        raise PageError(f"{_budget('dtype').path}: corrupt dtype {obj!r}: {exc}") from None


def _shape(shape: Any, path: str) -> tuple[int, ...]:
    try:
        out = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise PageError(f"{path}: corrupt array header (shape {shape!r:.60})") from None
    if len(out) > MAX_NDIM or any(d < 0 for d in out):
        raise PageError(f"{path}: corrupt array header (shape {out!r:.60})")
    return out


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


class PendingArray:
    """What ``numpy._reconstruct`` gives an untrusted page: no memory until ``BUILD`` fills it through
    :meth:`__setstate__`, which checks the state and builds the array from a safe dtype; :func:`finish` then puts the
    array in its place."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        budget = _budget("ndarray")
        path = budget.path
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise PageError(f"{path}: corrupt array state")
        version, shape, dtype, fortran, raw = state if len(state) == 5 else (1, *state)
        shape = _shape(shape, path)
        n = math.prod(shape)
        if isinstance(raw, list):  # an object array: its items are page objects already
            safe = budget.dtype(dtype, allow_object=True)
            if not safe.hasobject or len(raw) != n:
                raise PageError(f"{path}: corrupt object array ({len(raw)} items for shape {shape})")
        else:
            safe = budget.dtype(dtype, allow_object=False)
            if isinstance(raw, str):
                raw = raw.encode("latin1")
            if not isinstance(raw, (bytes, bytearray)) or len(raw) != n * safe.itemsize:
                raise PageError(f"{path}: corrupt array: {len(raw) if hasattr(raw, '__len__') else '?'} bytes "
                                f"for shape {shape} of {safe}")
        array = np.ndarray.__new__(np.ndarray, (0,), safe)
        try:
            array.__setstate__((version, shape, safe, bool(fortran), raw))  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001
            raise PageError(f"{path}: corrupt array ({type(exc).__name__}: {exc})") from None
        self.array = array

    def result(self) -> np.ndarray:
        if self.array is None:
            raise PageError(f"{_budget('ndarray').path}: corrupt array (never filled in)")
        return self.array


def np_scalar(dtype: Any, data: Any = None) -> Any:
    """``numpy.core.multiarray.scalar`` for plain-number dtypes with exactly their bytes."""
    budget = _budget("scalar")
    safe = budget.dtype(dtype, allow_object=False)
    if isinstance(data, str):
        data = data.encode("latin1")
    if not isinstance(data, bytes) or len(data) != safe.itemsize:
        raise PageError(f"{budget.path}: corrupt numpy scalar of {safe}")
    return np.frombuffer(data, dtype=safe)[0]


def np_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
    """``numpy._frombuffer`` (protocol-5 arrays) for plain-number dtypes and exactly the bytes the shape needs."""
    budget = _budget("frombuffer")
    safe = budget.dtype(dtype, allow_object=False)
    shape = _shape(shape, budget.path)
    if not isinstance(buf, (bytes, bytearray)) or len(buf) != _nbytes(shape, safe):
        raise PageError(f"{budget.path}: corrupt array buffer for shape {shape} of {safe}")
    return np.frombuffer(buf, dtype=safe).reshape(shape, order="F" if order == "F" else "C")


# ------------------------------------------------------------------------------------------------- torch
def check_storage_bytes(data: Any, path: str) -> None:
    """Refuse torch storage bytes unless they are torch's legacy format holding every byte they declare."""
    if not isinstance(data, (bytes, bytearray)):
        raise PageError(f"{path}: corrupt torch storage ({type(data).__name__})")
    if bytes(data[:2]) == b"PK":
        raise UntrustedPickleError(f"{path}: refused a zip-format torch storage (its records can be compressed; "
                                   "torch's own tensor pickling never writes one)")
    stream = io.BytesIO(data)
    pids: list[tuple[str, int]] = []
    try:
        for _ in range(3):  # magic number, protocol version, sys_info
            _StorageHeader(stream, pids).load()
        _StorageHeader(stream, pids).load()
        keys = _StorageHeader(stream, pids).load()
    except PageError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise PageError(f"{path}: corrupt torch storage ({type(exc).__name__}: {exc})") from None
    if not isinstance(keys, list) or len(keys) != len(pids):
        raise PageError(f"{path}: corrupt torch storage (keys do not match its records)")
    need = sum(8 + _storage_nbytes(name, numel, path) for name, numel in pids)
    have = len(data) - stream.tell()
    if need > have:
        raise PageError(f"{path}: refused: a torch storage declares {need} bytes but holds {have}")


def _storage_nbytes(name: str, numel: int, path: str) -> int:
    import torch

    if name == "UntypedStorage":
        return numel
    with warnings.catch_warnings():  # TypedStorage classes warn that they are deprecated
        warnings.simplefilter("ignore")
        cls = getattr(torch, name, None)
        dtype = getattr(cls, "dtype", None)
    if not isinstance(dtype, torch.dtype):
        raise PageError(f"{path}: refused torch storage type {name}")
    return numel * dtype.itemsize


class _StorageName:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _StorageHeader(pickle.Unpickler):
    """Reads the small header pickles of a legacy torch storage: storage type *names* only, nothing callable."""

    def __init__(self, stream: Any, pids: list[tuple[str, int]]) -> None:
        super().__init__(stream)
        self._pids = pids

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name.endswith("Storage"):
            return _StorageName(name)
        raise UntrustedPickleError(f"refused {module}.{name} inside a torch storage")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageName) and isinstance(pid[4], int) and pid[4] >= 0):
            raise PageError(f"unexpected record {pid!r:.80} in a torch storage")
        self._pids.append((pid[1].name, pid[4]))
        return None


def check_tensor(storage: Any, size: Any, stride: Any) -> None:
    """A tensor view may not hold (much) more elements than its storage: a stride-0 view of 5e8 elements is refused."""
    import torch

    budget = _budget("tensor")
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise PageError(f"{budget.path}: corrupt tensor: {type(storage).__name__} where a storage belongs")
    shape = _shape(size, budget.path)
    _shape(stride, budget.path)
    elements = math.prod(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        itemsize = storage.element_size() if isinstance(storage, torch.TypedStorage) else 1
        extra = elements * itemsize - storage.nbytes()
    if extra > 0:
        budget.spend(extra, f"a tensor view of {elements} elements over a storage of {storage.nbytes()} bytes")


def load_storage(data: Any) -> Any:
    """``torch.storage._load_from_bytes`` for a page: checked bytes, then ``torch.load(weights_only=True)``."""
    import torch

    check_storage_bytes(data, _budget("storage").path)
    return torch.load(io.BytesIO(bytes(data)), weights_only=True)


def rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                      backward_hooks: Any = None, metadata: Any = None) -> Any:
    from torch import _utils

    check_tensor(storage, size, stride)
    return _utils._rebuild_tensor_v2(storage, int(storage_offset), tuple(size), tuple(stride), bool(requires_grad),
                                     backward_hooks, metadata)


def rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> Any:
    from torch import _utils

    check_tensor(storage, size, stride)
    return _utils._rebuild_tensor(storage, int(storage_offset), tuple(size), tuple(stride))


def rebuild_from_numpy(data: Any, dtype: Any, device: Any, requires_grad: Any) -> Any:
    from torch import _utils

    if isinstance(data, PendingArray):
        data = data.result()
    if not isinstance(data, np.ndarray) or data.dtype.hasobject:
        raise PageError(f"{_budget('tensor').path}: corrupt tensor from numpy ({type(data).__name__})")
    return _utils._rebuild_device_tensor_from_numpy(data, dtype, device, requires_grad)


class TorchClass:
    """``torch.Tensor`` or ``Parameter`` named by a page: only :func:`rebuild_from_type_v2` accepts it (called,
    ``torch.Tensor(5e8)`` would allocate)."""

    __slots__ = ("cls",)

    def __init__(self, cls: type) -> None:
        self.cls = cls


def rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    from torch import _tensor

    if func not in _TENSOR_BUILDERS or not isinstance(new_type, TorchClass) or not isinstance(args, tuple):
        raise UntrustedPickleError(f"{_budget('tensor').path}: refused a tensor rebuilt by {func!r:.60}")
    return _tensor._rebuild_from_type_v2(func, new_type.cls, args, state)


_TENSOR_BUILDERS = (rebuild_tensor_v2, rebuild_tensor, rebuild_from_numpy)


# ------------------------------------------------------------------------------------------------- the walk
_LEAVES = (str, int, float, bool, bytes, complex, type(None), np.generic)


def finish(root: Any, budget: Budget, lazy_cls: type) -> Any:
    """``root`` with pending arrays and dtypes replaced by checked ones (shared objects stay shared); refuses cycles,
    nesting deeper than :data:`MAX_DEPTH` and trees whose expansion exceeds the budget. Iterative: no recursion."""
    if _plain_tree(root, lazy_cls, budget.limit):
        return root  # the common page: a tree of dicts, lists and tuples of plain leaves and lazy arrays
    done: dict[int, tuple[Any, int]] = {}  # id -> (result, expanded size)
    keep: list[Any] = []  # originals stay alive while their ids are in ``done``
    on_path: set[int] = set()
    leaf = functools.partial(_leaf, budget=budget, lazy_cls=lazy_cls)
    result, _ = leaf(root)
    if result is not _NOT_LEAF:
        return result
    stack: list[tuple[Any, list[Any], list[Any]]] = [(root, _children(root, budget.path), [])]
    on_path.add(id(root))
    while True:
        node, kids, made = stack[-1]
        if len(made) < len(kids):
            kid = kids[len(made)]
            simple, _ = leaf(kid)
            if simple is not _NOT_LEAF:
                made.append((simple, 1))
                continue
            hit = done.get(id(kid))
            if hit is not None:
                made.append(hit)
                continue
            if id(kid) in on_path:
                raise PageError(f"{budget.path}: refused: an object contains itself (a cycle)")
            if len(stack) >= MAX_DEPTH:
                raise PageError(f"{budget.path}: refused: nested more than {MAX_DEPTH} levels deep")
            on_path.add(id(kid))
            stack.append((kid, _children(kid, budget.path), []))
            continue
        stack.pop()
        on_path.discard(id(node))
        size = 1 + sum(s for _, s in made)
        if size > budget.limit:
            raise PageError(f"{budget.path}: refused: its shared parts expand to more than {budget.limit} objects")
        new = _rebuild(node, [r for r, _ in made], budget.path)
        if not stack:
            return new
        keep.append(node)
        done[id(node)] = (new, size)
        stack[-1][2].append((new, size))


_NOT_LEAF = object()
_PLAIN = frozenset({str, int, float, bool, bytes, complex, type(None)})
_NEEDS_WALK = (dict, list, tuple, set, frozenset, deque, np.ndarray, np.dtype, PendingArray)


def _plain_tree(root: Any, lazy_cls: type, limit: int) -> bool:
    """Whether ``root`` holds nothing to replace (dicts, lists and tuples of plain leaves and lazy arrays) within the
    depth and expanded-size bounds: then :func:`finish` has nothing to do. A shared container is walked each time it
    is reached, which is exactly the expanded size the bound is about, and a cycle exceeds the depth bound; so a page
    that shares one meta dict among its datapoints stays on this path. Anything else (or any doubt) goes the full
    walk, which says what is wrong. About three times faster than the full walk on a page of 3,000 datapoints."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    count = 0
    plain = _PLAIN
    while stack:
        obj, depth = stack.pop()
        kind = type(obj)
        if kind is dict or kind is list or kind is tuple:
            if depth > MAX_DEPTH:
                return False
            if kind is dict:
                if not plain.issuperset(map(type, obj)):  # (keys; in C, no generator per dict)
                    return False
                items = obj.values()
            else:
                items = obj
            deeper = depth + 1
            for value in items:
                vkind = type(value)
                if vkind in plain or (isinstance(value, lazy_cls) and value.value is None):
                    count += 1
                else:
                    stack.append((value, deeper))
            count += 1
            if count > limit:
                return False
        elif isinstance(obj, lazy_cls):  # (and its subclass for joblib's array headers)
            if obj.value is not None:
                return False
            count += 1
        elif isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                return False
            count += 1
        elif isinstance(obj, _NEEDS_WALK):
            return False
        else:
            count += 1  # a leaf of another allowed type (a torch tensor, a numpy scalar, a path, a date)
    return True


def _leaf(obj: Any, budget: Budget, lazy_cls: type) -> tuple[Any, int]:
    if isinstance(obj, _LEAVES):
        return obj, 1
    if isinstance(obj, PendingArray):
        array = obj.result()
        return (array, 1) if not array.dtype.hasobject else (_NOT_LEAF, 0)
    if isinstance(obj, np.dtype):
        return budget.dtype(obj, allow_object=True), 1
    if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        return obj, 1
    if isinstance(obj, (dict, list, tuple, set, frozenset, deque, np.ndarray)):
        return _NOT_LEAF, 0
    if isinstance(obj, lazy_cls) and getattr(obj, "value", None) is not None:
        return _NOT_LEAF, 0
    return obj, 1


def _children(obj: Any, path: str) -> list[Any]:
    if isinstance(obj, dict):
        return [x for pair in obj.items() for x in pair]
    if isinstance(obj, PendingArray):
        return list(obj.result().flat)
    if isinstance(obj, np.ndarray):
        return list(obj.flat)
    if isinstance(obj, (list, tuple, set, frozenset, deque)):
        return list(obj)
    value = getattr(obj, "value", None)  # a LazyArray holding an object array read whole
    return [] if value is None else [value]


def _rebuild(obj: Any, made: list[Any], path: str) -> Any:
    if isinstance(obj, PendingArray):
        obj = obj.result()
    if isinstance(obj, dict):
        items = list(obj.items())
        for i, (key, value) in enumerate(items):
            if made[2 * i] is not key:
                raise PageError(f"{path}: refused: an array or dtype used as a dict key")
            if made[2 * i + 1] is not value:
                obj[key] = made[2 * i + 1]
        return obj
    if isinstance(obj, np.ndarray):
        for i, (old, new) in enumerate(zip(obj.flat, made)):
            if old is not new:
                obj.flat[i] = new
        return obj
    old = list(obj) if isinstance(obj, (list, tuple, set, frozenset, deque)) else [getattr(obj, "value", None)]
    if all(a is b for a, b in zip(old, made)):
        return obj
    if isinstance(obj, list):
        obj[:] = made
        return obj
    if isinstance(obj, deque):
        obj.clear()
        obj.extend(made)
        return obj
    if type(obj) is tuple:
        return tuple(made)
    if isinstance(obj, (set, frozenset, tuple)):
        raise PageError(f"{path}: refused: an array or dtype inside a {type(obj).__name__}")
    obj.value = made[0]
    return obj
