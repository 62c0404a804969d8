"""Unpickle a debug page safely and cheaply: an allow-list of classes, and arrays left on disk until asked for.

**Safety.** A pickle names the callables it wants run; the page unpickler resolves only names on an allow-list
(builtins containers, ``collections``, numpy arrays, dtypes and scalars, torch tensors, storages and dtypes, paths and
dates) and refuses anything else with :class:`~eval_viewer.errors.UntrustedPickleError` *before* it is called, so a
payload that would run code never runs. Allowed names that are dangerous to *call* are swapped for safe stand-ins:
``torch.storage._load_from_bytes`` (which calls ``torch.load`` with ``weights_only=False``) for a loader with
``weights_only=True``; ``numpy.ndarray`` and ``numpy.memmap``, which a pickle only needs as the class argument of
``_reconstruct``, for a token that only ``_reconstruct`` accepts (called, ``ndarray(shape, object, buffer=...)`` turns
page bytes into object pointers and ``memmap(path, mode="w+")`` opens and truncates any file); and joblib's array
header for a class that can only be filled by ``__setstate__``. ``trust_pickles=True`` lifts the list.

**Cost.** Pages are joblib files: each array's raw bytes follow its pickled header in the file. Instead of reading
them (joblib.load) or memory-mapping them (joblib's ``mmap_mode``), parsing records a :class:`LazyArray` (offset,
dtype, shape, order) and seeks past the bytes, so parsing a page costs its pickle structure, not its arrays; reading
one datapoint then reads exactly its own arrays (:func:`materialize`). The structure is parsed by the C unpickler
(joblib's own loader is the pure-Python one, ten times slower: 1.2 s instead of 0.1 s for a 100 MB page of 3000
datapoints), fed by a reader without ``peek`` so that it never reads ahead into array bytes. Plain positional reads
through :class:`~eval_viewer.backend.sources.RangeFile` rather than ``np.memmap``: the same bytes are read, a page
truncated in place by a writer gives a clean :class:`PageError` instead of a SIGBUS that kills the viewer, no file
descriptor or mapping is held per array, and the same code reads a page on object storage with range requests. Compressed joblib pages and plain
pickles cannot be read lazily and are loaded whole.
"""

from __future__ import annotations

import _compat_pickle
import io
import math
import logging
import pickle
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np

try:  # private joblib API, checked by tests/backend/test_joblib_internals.py
    from joblib.numpy_pickle_utils import _detect_compressor, _validate_fileobject_and_memmap
except ImportError as _exc:  # pragma: no cover - only with a joblib that changed them
    raise ImportError(
        f"joblib {joblib.__version__} no longer has the private functions the page reader uses ({_exc}); "
        "check eval_viewer/backend/pickles.py against this joblib "
        "(tests/backend/test_joblib_internals.py says what changed)"
    ) from _exc

from eval_viewer.backend import untrusted
from eval_viewer.backend.sources import RangeFile, Stat
from eval_viewer.backend.untrusted import Budget, PendingArray, finish, safe_dtype
from eval_viewer.errors import PageError, UntrustedPickleError

__all__ = ["LazyArray", "LAZY_TYPES", "ParsedPage", "PageBuffer", "parse_page", "materialize", "load_skeleton",
           "TRUST_HINT"]

logger = logging.getLogger(__name__)

TRUST_HINT = (
    "If you trust these logs, start the viewer with --trust-pickles (LogStore(..., trust_pickles=True)); "
    "unpickling an unknown class can run arbitrary code."
)

_ALLOWED: dict[str, frozenset[str]] = {
    "builtins": frozenset(
        {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "complex", "bool",
         "slice", "range", "object"}
    ),
    "collections": frozenset({"OrderedDict", "defaultdict", "deque", "Counter"}),
    "_codecs": frozenset({"encode"}),  # protocol-2 pickles spell bytes as _codecs.encode(str, "latin1")
    "datetime": frozenset({"datetime", "date", "time", "timedelta", "timezone"}),
    "pathlib": frozenset({"Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"}),
    "numpy": frozenset({"ndarray", "dtype", "memmap"}),
    "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy.core.numeric": frozenset({"_frombuffer"}),
    "numpy._core.numeric": frozenset({"_frombuffer"}),
    "joblib.numpy_pickle": frozenset({"NumpyArrayWrapper"}),
    "torch._utils": frozenset({"_rebuild_tensor_v2", "_rebuild_tensor", "_rebuild_parameter",
                               "_rebuild_parameter_with_state", "_rebuild_device_tensor_from_numpy"}),
    "torch._tensor": frozenset({"_rebuild_from_type_v2"}),
    "torch": frozenset({"Tensor", "Size", "device"}),
    "torch.nn.parameter": frozenset({"Parameter"}),
}
_NUMPY_DTYPE_MODULES = ("numpy.dtypes",)
_ARRAY_CLASSES = frozenset({("numpy", "ndarray"), ("numpy", "memmap")})
_RECONSTRUCT = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")})
_np_reconstruct = np.arange(1).__reduce__()[0]  # numpy's own _reconstruct, wherever this numpy keeps it
_SIZED_CALLS = frozenset({"builtins", "collections"})
_STAND_INS: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): untrusted.codecs_encode,
    ("numpy", "dtype"): untrusted.dtype_ctor,
    ("torch.storage", "_load_from_bytes"): untrusted.load_storage,
    ("torch._utils", "_rebuild_tensor_v2"): untrusted.rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): untrusted.rebuild_tensor,
    ("torch._utils", "_rebuild_device_tensor_from_numpy"): untrusted.rebuild_from_numpy,
    ("torch._tensor", "_rebuild_from_type_v2"): untrusted.rebuild_from_type_v2,
    **{(m, "scalar"): untrusted.np_scalar for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "_frombuffer"): untrusted.np_frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
}
"""Allowed names whose real callables a page could misuse, and the bounded stand-ins it gets (:mod:`.untrusted`)."""
_TORCH_CLASSES = frozenset({("torch", "Tensor"), ("torch.nn.parameter", "Parameter")})
_BOUNDED: dict[tuple[str, str], Any] = {}


class _ArrayClass:
    """What ``numpy.ndarray`` and ``numpy.memmap`` resolve to in an untrusted page: not callable, only accepted by
    :meth:`_PageUnpickler._reconstruct` (see the module docstring)."""

    __slots__ = ()


_ARRAY_CLASS = _ArrayClass()


class LazyArray:
    """One array of a joblib page: where its bytes are in the page (``offset``), or, when they could not be left
    there (a compressed page, an object array), the array itself (``value``).

    joblib pickles a ``NumpyArrayWrapper`` header and writes the raw bytes right after it; the unpickler builds this
    class in its place and, in :meth:`__setstate__`, notes the offset and skips the bytes.
    """

    __slots__ = ("offset", "dtype", "shape", "order", "value")

    def __init__(self, offset: int, dtype: np.dtype, shape: tuple[int, ...], order: str, value: Any = None) -> None:
        self.offset, self.dtype, self.shape, self.order, self.value = offset, dtype, shape, order, value

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def __reduce__(self) -> tuple[Any, ...]:  # for skeleton caches: rebuilt by the constructor, no file access
        return (LazyArray, (self.offset, self.dtype, self.shape, self.order, self.value))

    def __repr__(self) -> str:
        return f"LazyArray(offset={self.offset}, dtype={self.dtype}, shape={self.shape}, order={self.order!r})"

    def __setstate__(self, state: Any) -> None:
        ctx: _Context = _CTX.current
        if not isinstance(state, dict) or not isinstance(state.get("dtype"), np.dtype):
            raise PageError(f"{ctx.path}: corrupt array header")
        dtype: np.dtype = state["dtype"] if ctx.trust else ctx.budget.dtype(state["dtype"], allow_object=True)
        if dtype.hasobject and not state["dtype"].hasobject:  # its flags were cleared: bytes would become pointers
            raise PageError(f"{ctx.path}: refused: raw bytes read as a dtype holding Python objects ({dtype})")
        try:
            shape = tuple(map(int, state["shape"]))  # (map and min: no generator per array, a page has thousands)
        except (KeyError, TypeError, ValueError):
            raise PageError(f"{ctx.path}: corrupt array header (shape)") from None
        if (shape and min(shape) < 0) or len(shape) > untrusted.MAX_NDIM:
            raise PageError(f"{ctx.path}: corrupt array header (shape {shape})")
        order = "F" if state.get("order") == "F" else "C"
        self.offset, self.dtype, self.shape, self.order, self.value = -1, dtype, shape, order, None
        reader = ctx.reader
        if dtype.hasobject:  # a nested pickle stream of Python objects, through the same allow-list
            self.value = _PageUnpickler(reader, ctx).load()
            return
        if state.get("numpy_array_alignment_bytes") is not None:
            padding = reader.read(1)
            if len(padding) != 1:
                raise PageError(f"{ctx.path}: truncated (ends inside an array header; still being written?)")
            if padding[0]:
                reader.read(padding[0])
        if ctx.lazy:
            self.offset = reader.tell()
            nbytes = math.prod(shape) * dtype.itemsize
            ctx.skipped += nbytes
            end = self.offset + nbytes
            if end > ctx.size:
                raise PageError(
                    f"{ctx.path}: truncated: an array of {nbytes} bytes at offset {self.offset} runs past the "
                    f"end of the file ({ctx.size} bytes); is it still being written?"
                )
            reader.seek(end)
            return
        nbytes = math.prod(shape) * dtype.itemsize
        inflated = min(untrusted.INFLATE_RATIO * ctx.size, untrusted.MAX_INFLATED)
        if ctx.eager + nbytes > inflated and not ctx.trust:
            raise PageError(f"{ctx.path}: refused: its arrays inflate to more than {inflated} bytes "
                            f"({untrusted.INFLATE_RATIO} times the compressed page); it is damaged or hostile")
        data = reader.read(nbytes)
        if len(data) != nbytes:
            raise PageError(f"{ctx.path}: truncated (an array ends early; still being written?)")
        self.value = np.frombuffer(data, dtype=dtype).reshape(shape, order=order)
        ctx.eager += nbytes


class _HeaderArray(LazyArray):
    """What a page's joblib ``NumpyArrayWrapper`` becomes. joblib pickles it empty and fills it with ``BUILD``
    (:meth:`LazyArray.__setstate__`, which checks the header); a page that *calls* it would choose its own offset,
    dtype and shape, so that is refused. Skeleton caches store it as a plain :class:`LazyArray`."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise UntrustedPickleError(f"{_CTX.current.path}: an array header is called with arguments, not filled in")


LAZY_TYPES = frozenset({LazyArray, _HeaderArray})
"""The exact types a parsed page's arrays have (for a type lookup instead of ``isinstance`` in hot loops)."""


class _Context:
    def __init__(self, reader: Any, path: str, size: int, lazy: bool, trust: bool) -> None:
        self.reader, self.path, self.size, self.lazy, self.trust = reader, path, size, lazy, trust
        self.skeleton = False  # reading a skeleton cache entry, where LazyArray is built by its constructor
        self.skipped = 0  # bytes of arrays left on disk
        self.budget = Budget(path, size)
        self.eager = 0  # bytes of arrays read whole


_CTX = threading.local()


class _RangeReader:
    """A file reader for the C unpickler over a :class:`~eval_viewer.backend.sources.RangeFile`: buffered positional
    reads in 64 KiB chunks (one range request each on remote storage), no ``peek`` (so the unpickler never reads ahead
    of the pickle stream into array bytes), and a ``seek`` that stays in the buffer when it can."""

    _CHUNK = 1 << 16

    def __init__(self, file: RangeFile) -> None:
        self._file = file
        self._buf = b""
        self._start = 0  # file offset of _buf[0]
        self._pos = 0  # offset in _buf

    def tell(self) -> int:
        return self._start + self._pos

    def seek(self, offset: int) -> None:
        rel = offset - self._start
        if 0 <= rel <= len(self._buf):
            self._pos = rel
        else:
            self._buf, self._start, self._pos = b"", offset, 0

    def _fill(self, want: int) -> None:
        here = self.tell()
        rest = self._buf[self._pos:]
        more = self._file.read_at(here + len(rest), max(want - len(rest), self._file.read_ahead, self._CHUNK))
        self._buf, self._start, self._pos = rest + more, here, 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._file.size - self.tell()
        if len(self._buf) - self._pos < n:
            self._fill(n)
        data = self._buf[self._pos:self._pos + n]
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readline(self) -> bytes:
        while True:
            end = self._buf.find(b"\n", self._pos)
            if end >= 0:
                return self.read(end + 1 - self._pos)
            before = len(self._buf) - self._pos
            self._fill(before + self._CHUNK)
            if len(self._buf) - self._pos == before:  # end of file
                return self.read(before)


class PageBuffer(RangeFile):
    """A page read whole into memory (one sequential read, :mod:`.bulk`): :func:`parse_page` parses its structure
    straight from the buffer and :func:`materialize` hands its arrays out as read-only views of it, so the page's bytes
    are in memory once, however many arrays are taken from it. ``data`` must be the page's ``stat.size`` bytes (bytes,
    or a read-only view of a buffer :func:`~.bulk.reused_buffers` reuses)."""

    def __init__(self, data: bytes | memoryview, stat: Stat, name: str) -> None:
        super().__init__(stat, name)
        self.data = data
        self._view = memoryview(data)

    def read_at(self, offset: int, n: int) -> bytes:
        return self._view[offset:offset + n]  # type: ignore[return-value] - bytes-like, no copy

    def read(self, n: int = -1) -> bytes:  # the file protocol (joblib's compressor check, decompression): copies
        return bytes(super().read(n))


class _NoPeek:
    """A decompressing joblib stream without ``peek``, for the C unpickler (see :class:`_PreadReader`)."""

    def __init__(self, stream: Any) -> None:
        self.read, self.readline, self.readinto = stream.read, stream.readline, stream.readinto

    def tell(self) -> int:  # pragma: no cover - arrays of compressed pages are never lazy
        return -1


@dataclass(frozen=True)
class ParsedPage:
    """A page's ``{datapoint_idx: output}`` with arrays left on disk, and what it costs to keep in memory."""

    content: dict[int, Any]
    resident_bytes: int
    """Approximate memory of ``content`` (arrays that had to be loaded whole count fully; lazy ones barely)."""


class _PageUnpickler(pickle.Unpickler):
    """The C unpickler with an allow-listed ``find_class`` and lazy joblib arrays (see the module docstring)."""

    def __init__(self, reader: Any, ctx: _Context) -> None:
        super().__init__(reader)
        self._ctx = ctx

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names, as pickle maps them
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if (module, name) == ("joblib.numpy_pickle", "NumpyArrayWrapper"):
            return _HeaderArray
        if (module, name) == (__name__, "LazyArray") and self._ctx.skeleton:
            return LazyArray
        trust = self._ctx.trust
        if trust:
            return super().find_class(module, name)
        if (module, name) in _ARRAY_CLASSES:
            return _ARRAY_CLASS
        if (module, name) in _RECONSTRUCT:
            return self._reconstruct
        stand_in = _STAND_INS.get((module, name))
        if stand_in is not None:
            return stand_in
        if name in _ALLOWED.get(module, ()):
            obj = super().find_class(module, name)
            if (module, name) in _TORCH_CLASSES:
                return untrusted.TorchClass(obj)
            if module in _SIZED_CALLS:
                bounded = _BOUNDED.get((module, name))
                if bounded is None:
                    bounded = _BOUNDED[(module, name)] = untrusted.bounded_builtin(name, obj)
                return bounded
            return obj
        if module in _NUMPY_DTYPE_MODULES or module == "torch":
            obj = super().find_class(module, name)  # importing numpy/torch submodules runs no page-chosen code
            if _is_dtype_class(obj):
                return obj
        raise UntrustedPickleError(
            f"{self._ctx.path}: refused to load {module}.{name}: it is not on the allow-list of safe types "
            f"(builtins, collections, numpy arrays and dtypes, torch tensors and storages). {TRUST_HINT}"
        )

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> PendingArray:
        """numpy's ``_reconstruct`` for the array classes of the page only: an empty stand-in that ``BUILD`` fills
        through checks (:class:`~eval_viewer.backend.untrusted.PendingArray`); no memory is taken for ``shape``."""
        if subtype is not _ARRAY_CLASS:
            raise UntrustedPickleError(
                f"{self._ctx.path}: refused to reconstruct an array of {type(subtype).__name__}, not numpy.ndarray"
            )
        return PendingArray()


def _is_dtype_class(obj: Any) -> bool:
    if isinstance(obj, type) and issubclass(obj, np.dtype):
        return True
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(obj, torch.dtype)


def _normalize(raw: Any, path: str) -> dict[int, Any]:
    """``{int idx: output}`` from a page's top-level object: our dict, or another tool's list of (idx, output)."""
    items: Any
    if isinstance(raw, dict):
        items = raw.items()
    elif isinstance(raw, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in raw):
        items = raw
    else:
        raise PageError(
            f"{path}: holds a {type(raw).__name__}, expected a dict {{datapoint_idx: {{debugger_name: output}}}}"
        )
    content: dict[int, Any] = {}
    for key, value in items:
        try:
            idx = int(key)
        except (TypeError, ValueError):
            raise PageError(f"{path}: key {key!r} is not a datapoint index") from None
        content[idx] = value
    return content


def resident_bytes(obj: Any) -> int:
    """Rough memory of a parsed object: loaded arrays count fully, containers and lazy arrays a little each."""
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes) + 112
    if isinstance(obj, (str, bytes, bytearray)):
        return len(obj) + 49
    if isinstance(obj, dict):
        return 64 + sum(resident_bytes(k) + resident_bytes(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return 56 + sum(resident_bytes(v) for v in obj)
    if isinstance(obj, LazyArray):
        return 96 + (resident_bytes(obj.value) if obj.value is not None else 0)
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int):  # torch tensors and friends
        return nbytes + 112
    return 64


def parse_page(fobj: RangeFile, path: str, *, trust: bool) -> ParsedPage:
    """Parse an open page (any :class:`~eval_viewer.backend.sources.RangeFile`) into a :class:`ParsedPage`.

    Raises :class:`UntrustedPickleError` for a class off the allow-list and :class:`PageError` for anything else
    wrong (corrupt, truncated, not a dict of datapoints); the message names ``path``.
    """
    size = fobj.size
    fobj.seek(0)
    if size == 0:
        raise PageError(f"{path}: empty file (is it still being written?)")
    try:
        lazy = _detect_compressor(fobj) == "not-compressed"  # arrays of compressed pages have no file offset
        with _validate_fileobject_and_memmap(fobj, path, None) as (stream, _):
            if isinstance(stream, str):
                raise PageError(f"{path}: written by joblib older than 0.10, which the viewer cannot read")
            # a page in memory: BytesIO shares its bytes (no copy) and reads in C; array bytes are skipped by seek
            reader = (io.BytesIO(fobj.data) if isinstance(fobj, PageBuffer) else _RangeReader(fobj)) if lazy \
                else _NoPeek(stream)
            ctx = _Context(reader, path, size, lazy, trust)
            _CTX.current = ctx
            try:
                with ctx.budget:
                    raw = _PageUnpickler(reader, ctx).load()
                    if not trust:
                        raw = finish(raw, ctx.budget, LazyArray)
            finally:
                _CTX.current = None
    except PageError:
        raise
    except MemoryError:
        raise PageError(f"{path}: corrupt: it asks for more memory than there is") from None
    except Exception as exc:  # a corrupt pickle can raise almost anything; none of it may escape raw
        what = "truncated (is it still being written?)" if isinstance(exc, EOFError) else "corrupt or truncated"
        raise PageError(f"{path}: {what}: {type(exc).__name__}: {exc}") from None
    content = _normalize(raw, path)
    # Python objects take a few times their pickled size; counted from the file, not by walking 100k objects.
    structure = max(size - ctx.skipped - ctx.eager, 0) if lazy else size
    return ParsedPage(content=content, resident_bytes=4 * structure + ctx.eager + 1024)


def load_skeleton(blob: bytes, path: str, *, trust: bool) -> Any:
    """A datapoint skeleton written by :mod:`.skeletons` (same allow-list as the page it came from)."""
    reader = io.BytesIO(blob)
    ctx = _Context(reader, path, len(blob), lazy=False, trust=trust)
    ctx.skeleton = True
    try:
        with ctx.budget:
            value = _PageUnpickler(reader, ctx).load()
            return value if trust else finish(value, ctx.budget, LazyArray)
    except PageError:
        raise
    except Exception as exc:
        raise PageError(f"{path}: damaged skeleton cache entry ({type(exc).__name__}: {exc})") from None


def _read_lazy(fobj: RangeFile, lazy: LazyArray, path: str) -> np.ndarray:
    bad_shape = min(lazy.shape, default=0) < 0
    if not isinstance(lazy.dtype, np.dtype) or lazy.dtype.hasobject or lazy.offset < 0 or bad_shape:
        raise PageError(f"{path}: corrupt array header ({lazy!r}): raw bytes can only be read as plain numbers")
    dtype = safe_dtype(lazy.dtype, path)  # never trust the object flags of a dtype that came out of a pickle
    nbytes = math.prod(lazy.shape) * dtype.itemsize
    if lazy.offset + nbytes > fobj.size:
        raise PageError(f"{path}: truncated: an array of {nbytes} bytes at offset {lazy.offset} runs past the end of "
                        f"the file ({fobj.size} bytes)")
    data = fobj.read_at(lazy.offset, nbytes) if nbytes else b""  # one read (one range request remotely)
    if len(data) != nbytes:
        raise PageError(f"{path}: truncated: array at offset {lazy.offset} ends early (rewritten while reading?)")
    out = np.frombuffer(data, dtype=dtype).reshape(lazy.shape, order="F" if lazy.order == "F" else "C")
    if not out.dtype.isnative:
        out = out.astype(out.dtype.newbyteorder("="))
        out.flags.writeable = False
    return out  # read-only (a view of immutable bytes): cached and shared, a caller must copy before changing it


_GAP = 1 << 16
"""Arrays of one datapoint closer than this are fetched in one read (joblib writes them one after another, with only
their small pickled headers between)."""


def _lazy_ranges(value: Any) -> list[tuple[int, int]]:
    """The merged byte ranges ``(start, end)`` of every array of ``value`` still on disk, for one fetch each."""
    spans: list[tuple[int, int]] = []
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, LazyArray):
            if item.value is not None:
                stack.append(item.value)
            elif item.offset >= 0 and isinstance(item.dtype, np.dtype) and item.nbytes:
                spans.append((item.offset, item.offset + item.nbytes))
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start - merged[-1][1] <= _GAP:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class _Prefetched(RangeFile):
    """A remote page with one datapoint's array bytes fetched up front, one request per merged range: reading a
    datapoint costs a round trip or two instead of one per array. Reads outside those ranges go to the page."""

    def __init__(self, inner: RangeFile, ranges: list[tuple[int, int]]) -> None:
        super().__init__(inner.stat, inner.name)
        self._inner = inner
        self._blocks = [(start, memoryview(inner.read_at(start, end - start))) for start, end in ranges]

    def read_at(self, offset: int, n: int) -> bytes:
        for start, block in self._blocks:
            if start <= offset and offset + n <= start + len(block):
                return block[offset - start: offset - start + n]  # type: ignore[return-value] - bytes-like, no copy
        return self._inner.read_at(offset, n)


def materialize(value: Any, fobj: RangeFile, path: str, convert: Callable[[Any], Any] | None = None,
                _memo: dict[int, Any] | None = None) -> Any:
    """A copy of ``value`` with every :class:`LazyArray` read from ``fobj`` into memory, containers rebuilt; what
    the page shares stays shared in the copy (read once, copied once).

    Loaded arrays shared with the cached page are made read-only so a caller cannot change the cache. ``convert``
    is applied to other leaves (the store uses it to turn torch tensors into numpy arrays).
    """
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if _memo is None and fobj.coalesce:
        fobj = _Prefetched(fobj, _lazy_ranges(value))
    memo: dict[int, Any] = {} if _memo is None else _memo
    hit = memo.get(id(value))
    if hit is not None:
        return hit[1]
    out = _materialize(value, fobj, path, convert, memo)
    memo[id(value)] = (value, out)  # the original is kept alive with its id
    return out


def _materialize(value: Any, fobj: RangeFile, path: str, convert: Callable[[Any], Any] | None,
                 memo: dict[int, Any]) -> Any:
    if isinstance(value, LazyArray):
        if value.value is not None:
            return materialize(value.value, fobj, path, convert, memo)
        return _read_lazy(fobj, value, path)
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
        return value
    if isinstance(value, dict):
        return {k: materialize(v, fobj, path, convert, memo) for k, v in value.items()}
    if isinstance(value, list):
        return [materialize(v, fobj, path, convert, memo) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(materialize(v, fobj, path, convert, memo) for v in value)
    if convert is None:
        return value
    converted = convert(value)
    if isinstance(converted, np.ndarray) and converted is not value:
        converted.flags.writeable = False
    return converted


