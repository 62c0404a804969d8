"""The joblib internals the page reader relies on, checked one by one, so that a new joblib that changes them fails
here, loudly and with a pointer to the code to check, rather than as a wrong array or a corrupt-page message.

``eval_viewer/backend/pickles.py`` calls ``joblib.numpy_pickle_utils._detect_compressor`` and
``_validate_fileobject_and_memmap`` (private), and reads joblib's array layout itself: the pickled
``joblib.numpy_pickle.NumpyArrayWrapper`` header filled by ``BUILD`` with a state holding ``dtype``, ``shape``,
``order`` and ``numpy_array_alignment_bytes``, then one padding-length byte, the padding, and the raw array bytes.
"""

from __future__ import annotations

import inspect
import io
import pickle
from pathlib import Path
from typing import Any, NoReturn

import joblib
import numpy as np
import pytest

from eval_viewer.backend.sources import LocalSource

# eval_viewer.backend.pickles is imported inside the test that needs it: it imports the joblib internals at module
# level, and a missing one must fail the checks below with their message, not this module's collection.


def _fail(what: str) -> NoReturn:
    pytest.fail(
        f"joblib {joblib.__version__} changed an internal that the page reader relies on: {what}. "
        "Check eval_viewer/backend/pickles.py (parse_page, LazyArray.__setstate__) against this joblib and "
        "update the joblib version bound in pyproject.toml.",
        pytrace=False,
    )


def _require(condition: bool, what: str) -> None:
    if not condition:
        _fail(what)


def _private(name: str) -> Any:
    from joblib import numpy_pickle_utils

    fn = getattr(numpy_pickle_utils, name, None)
    if fn is None:
        _fail(f"joblib.numpy_pickle_utils.{name} is gone")
    return fn


def test_the_private_functions_exist_with_their_signatures() -> None:
    detect = _private("_detect_compressor")
    validate = _private("_validate_fileobject_and_memmap")
    _require(list(inspect.signature(detect).parameters) == ["fileobj"],
             f"_detect_compressor{inspect.signature(detect)} no longer takes (fileobj)")
    params = list(inspect.signature(validate).parameters)
    _require(params[:3] == ["fileobj", "filename", "mmap_mode"],
             f"_validate_fileobject_and_memmap{inspect.signature(validate)} no longer takes (fileobj, filename, "
             "mmap_mode)")


@pytest.mark.parametrize(("compress", "expected"), [(0, "not-compressed"), (("zlib", 3), "zlib")])
def test_compressor_detection_and_stream_on_a_range_file(tmp_path: Path, compress: Any, expected: str) -> None:
    """Both are called on a :class:`RangeFile` (no ``peek``, positional reads): what parse_page passes them."""
    value = {0: {"a": np.arange(5)}}
    joblib.dump(value, tmp_path / "page_0.pkl", compress=compress)
    detect, validate = _private("_detect_compressor"), _private("_validate_fileobject_and_memmap")
    with LocalSource(tmp_path).open("page_0.pkl") as fobj:
        try:
            found = detect(fobj)
        except Exception as exc:  # noqa: BLE001 - any failure here is the change this test is for
            _fail(f"_detect_compressor fails on a file object without peek ({type(exc).__name__}: {exc})")
        _require(found == expected, f"_detect_compressor says {found!r} for a page dumped with "
                                    f"compress={compress!r}, expected {expected!r}")
        fobj.seek(0)
        try:
            with validate(fobj, "page_0.pkl", None) as opened:
                _require(isinstance(opened, tuple) and len(opened) == 2,
                         f"_validate_fileobject_and_memmap yields {type(opened).__name__}, not (stream, mmap_mode)")
                stream, mmap_mode = opened
                _require(mmap_mode is None, f"_validate_fileobject_and_memmap changed mmap_mode to {mmap_mode!r}")
                if expected == "not-compressed":
                    _require(stream is fobj, "_validate_fileobject_and_memmap wraps an uncompressed file")
                else:
                    _require(callable(getattr(stream, "read", None)) and stream.read(1) == b"\x80",
                             "_validate_fileobject_and_memmap does not yield the decompressed pickle stream")
        except TypeError as exc:
            _fail(f"_validate_fileobject_and_memmap is no longer a context manager ({exc})")


class _Stop(Exception):
    pass


def _first_array_header(data: bytes) -> tuple[str, str, dict[str, Any], int]:
    """(module, class, BUILD state, stream offset right after BUILD) of the first array header in a joblib page,
    read with the C unpickler on a stream without peek, as the page reader does."""
    stream = io.BytesIO(data)
    seen: dict[str, Any] = {}

    class Probe:
        def __setstate__(self, state: Any) -> None:
            seen["state"], seen["offset"] = state, stream.tell()
            raise _Stop

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if name.endswith("ArrayWrapper"):
                seen["cls"] = (module, name)
                return Probe
            return super().find_class(module, name)

    try:
        Unpickler(stream).load()
    except _Stop:
        pass
    if "state" not in seen:
        _fail("a page holding an array has no NumpyArrayWrapper header filled by BUILD (__setstate__)")
    module, name = seen["cls"]
    return module, name, seen["state"], seen["offset"]


@pytest.mark.parametrize(
    "array",
    [np.arange(12, dtype=np.float32).reshape(3, 4), np.asfortranarray(np.arange(6.0).reshape(2, 3)),
     np.arange(5, dtype=">i4"), np.zeros((0, 3), dtype=np.int16), np.array([True, False, True])],
    ids=["c-float32", "fortran", "big-endian", "empty", "bool"],
)
def test_array_header_state_and_byte_layout(tmp_path: Path, array: np.ndarray) -> None:
    page = tmp_path / "page_0.pkl"
    joblib.dump({0: {"x": array}}, page)
    data = page.read_bytes()
    module, name, state, offset = _first_array_header(data)
    _require((module, name) == ("joblib.numpy_pickle", "NumpyArrayWrapper"),
             f"the array header is pickled as {module}.{name}, not joblib.numpy_pickle.NumpyArrayWrapper "
             "(the allow-list and find_class name it)")
    _require(isinstance(state, dict), f"the header's state is a {type(state).__name__}, not a dict")
    missing = {"dtype", "shape", "order", "numpy_array_alignment_bytes"} - set(state)
    _require(not missing, f"the NumpyArrayWrapper state lost {sorted(missing)} (keys now: {sorted(state)})")
    _require(state["dtype"] == array.dtype and isinstance(state["dtype"], np.dtype),
             f"state['dtype'] is {state['dtype']!r}, expected the array's numpy dtype {array.dtype!r}")
    _require(tuple(state["shape"]) == array.shape, f"state['shape'] is {state['shape']!r}, expected {array.shape}")
    order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
    _require(state["order"] == order, f"state['order'] is {state['order']!r}, expected {order!r}")
    alignment = state["numpy_array_alignment_bytes"]
    _require(isinstance(alignment, int) and alignment > 0,
             f"state['numpy_array_alignment_bytes'] is {alignment!r}, expected a positive int")
    # after the header: one byte with the padding length, the padding, then the raw bytes in the header's order
    _require(offset < len(data), "nothing follows the array header in the file")
    padding = data[offset]
    start = offset + 1 + padding
    _require(start % alignment == 0,
             f"the array bytes start at {start}, not aligned to {alignment} after a padding-length byte")
    raw = array.tobytes(order="F" if order == "F" else "C")
    _require(data[start:start + len(raw)] == raw,
             "the raw array bytes do not follow the header's padding (joblib changed how it writes arrays)")


def test_pages_read_back_exactly_through_the_page_reader(tmp_path: Path) -> None:
    """End to end, what the checks above protect: lazy (uncompressed) and whole (compressed) pages."""
    try:
        from eval_viewer.backend.pickles import materialize, parse_page
    except ImportError as exc:
        _fail(f"eval_viewer.backend.pickles no longer imports ({exc})")
    value = {i: {"c": np.arange(12, dtype=np.float32).reshape(3, 4) + i,
                 "f": np.asfortranarray(np.arange(6.0).reshape(2, 3)), "be": np.arange(5, dtype=">i4"),
                 "obj": np.array(["a", 1], dtype=object)} for i in range(3)}
    for compress in (0, 3):
        name = f"page_{compress}.pkl"
        joblib.dump(value, tmp_path / name, compress=compress)
        with LocalSource(tmp_path).open(name) as fobj:
            try:
                parsed = parse_page(fobj, name, trust=False)
                out = materialize(parsed.content[2], fobj, name)
            except Exception as exc:  # noqa: BLE001
                _fail(f"a page dumped with compress={compress} no longer parses ({type(exc).__name__}: {exc})")
        for key in ("c", "f", "be"):
            _require(np.array_equal(out[key], value[2][key]),
                     f"array {key!r} of a page dumped with compress={compress} reads back wrong")
        _require(out["obj"].tolist() == ["a", 1], "an object array reads back wrong")
