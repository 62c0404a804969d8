"""Safe page loading: the allow-list refuses code before it runs; arrays are read lazily and exactly."""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess
import sys
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import torch

from eval_viewer.backend.lru import ByteLRU
from eval_viewer.backend.pages import read_datapoint
from eval_viewer.backend.pickles import LazyArray, materialize, parse_page
from eval_viewer.backend.sources import LocalSource, RangeFile
from eval_viewer.errors import PageError, UntrustedPickleError


def _open(path: Path) -> RangeFile:
    return LocalSource(path.parent).open(path.name)


def _parse(path: Path, trust: bool = False) -> Any:
    with _open(path) as f:
        return parse_page(f, str(path), trust=trust)


def _read(path: Path, idx: int, trust: bool = False) -> Any:
    return read_datapoint(LocalSource(path.parent), path.name, idx, trust=trust, lru=ByteLRU(1 << 20))


class _MakesFile:
    """A payload that, if unpickled by plain pickle, creates a file."""

    def __init__(self, target: Path, via: str) -> None:
        self.target, self.via = target, via

    def __reduce__(self) -> tuple[Any, ...]:
        if self.via == "system":
            return (os.system, (f"touch {self.target}",))
        if self.via == "open":
            return (builtins.open, (str(self.target), "w"))
        return (builtins.exec, (f"open({str(self.target)!r}, 'w').close()",))


@pytest.mark.parametrize("via", ["system", "open", "exec"])
@pytest.mark.parametrize("compress", [0, 3])
def test_malicious_pickle_is_refused_before_it_runs(tmp_path: Path, via: str, compress: int) -> None:
    target = tmp_path / "pwned"
    page = tmp_path / "page_0.pkl"
    joblib.dump({0: {"ok": np.zeros(3)}, 1: {"evil": _MakesFile(target, via)}}, page, compress=compress)
    with pytest.raises(UntrustedPickleError) as err:
        _parse(page)
    message = str(err.value)
    assert str(page) in message and "--trust-pickles" in message
    assert {"system": "posix.system", "open": "io.open", "exec": "builtins.exec"}[via] in message
    assert not target.exists()


def test_refused_in_a_nested_object_array_too(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    arr = np.empty(1, dtype=object)
    arr[0] = _MakesFile(target, "system")
    page = tmp_path / "page_0.pkl"
    joblib.dump({0: {"x": arr}}, page)
    with pytest.raises(UntrustedPickleError):
        _parse(page)
    assert not target.exists()


def test_plain_pickle_sanity_check_the_payload_really_creates_the_file(tmp_path: Path) -> None:
    """The payload above is real: plain pickle runs it (in a subprocess, to keep this process clean)."""
    target = tmp_path / "pwned"
    blob = tmp_path / "blob.pkl"
    blob.write_bytes(pickle.dumps(_MakesFile(target, "system")))
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(blob)!r}, 'rb'))"], check=True)
    assert target.exists()


def test_trust_pickles_loads_other_classes(tmp_path: Path) -> None:
    page = tmp_path / "page_0.pkl"
    joblib.dump({0: {"ratio": Fraction(1, 3)}}, page)
    with pytest.raises(UntrustedPickleError, match="fractions.Fraction"):
        _parse(page)
    assert _read(page, 0, trust=True) == {"ratio": Fraction(1, 3)}


def test_allowed_types_round_trip(tmp_path: Path) -> None:
    value = {
        "od": OrderedDict(a=1), "set": {1, 2}, "fs": frozenset({3}), "bytes": b"\x00\x01",
        "np_scalar": np.float32(1.5), "np_int": np.int64(7), "dtype": np.dtype("float16"), "tuple": (1, "a"),
        "path": Path("/data/img.png"), "torch_dtype": torch.float16, "none": None,
    }
    page = tmp_path / "page_0.pkl"
    joblib.dump({5: value}, page)
    assert _read(page, 5) == value


def test_torch_tensors_become_numpy_through_weights_only_loading(tmp_path: Path) -> None:
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    page = tmp_path / "page_0.pkl"
    joblib.dump({0: {"t": t, "slice": t[1:, 2:], "bf16": t.to(torch.bfloat16), "p": torch.nn.Parameter(t)}}, page)
    out = _read(page, 0)
    np.testing.assert_array_equal(out["t"], t.numpy())
    np.testing.assert_array_equal(out["slice"], t[1:, 2:].numpy())
    assert out["bf16"].dtype == np.float32
    np.testing.assert_array_equal(out["p"], t.numpy())


def test_torch_storage_loader_refuses_code_inside_the_storage_bytes(tmp_path: Path) -> None:
    """torch.storage._load_from_bytes would torch.load(weights_only=False); ours uses weights_only=True."""
    import io

    target = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save(_MakesFile(target, "system"), buf)
    from torch.storage import _load_from_bytes

    class Sneaky:
        def __reduce__(self) -> tuple[Any, ...]:
            return (_load_from_bytes, (buf.getvalue(),))

    page = tmp_path / "page_0.pkl"
    joblib.dump({0: {"x": Sneaky()}}, page)
    with pytest.raises(PageError):
        _parse(page)
    assert not target.exists()


def test_arrays_stay_on_disk_until_read_and_come_back_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    c = rng.random((4, 50, 60)).astype(np.float32)
    f = np.asfortranarray(rng.random((7, 3)))
    big_endian = np.arange(10, dtype=">i4")
    page = tmp_path / "page_0.pkl"
    joblib.dump({i: {"c": c + i, "f": f, "be": big_endian, "empty": np.zeros((0, 3))} for i in range(3)}, page)
    parsed = _parse(page)
    assert isinstance(parsed.content[1]["c"], LazyArray)
    assert parsed.resident_bytes < c.nbytes  # arrays are not in memory after parsing
    out = _read(page, 2)
    np.testing.assert_array_equal(out["c"], c + 2)
    np.testing.assert_array_equal(out["f"], f)
    np.testing.assert_array_equal(out["be"], big_endian)
    assert out["be"].dtype.isnative and out["empty"].shape == (0, 3)
    assert not out["c"].flags.writeable  # shared with the cache


def test_compressed_and_plain_pickle_pages_load_whole(tmp_path: Path) -> None:
    value = {0: {"a": np.arange(5)}, 1: {"a": np.arange(6)}}
    joblib.dump(value, tmp_path / "page_0.pkl", compress=("zlib", 3))
    (tmp_path / "page_1.pkl").write_bytes(pickle.dumps(value, protocol=2))
    for name in ("page_0.pkl", "page_1.pkl"):
        np.testing.assert_array_equal(_read(tmp_path / name, 1)["a"], np.arange(6))


def test_list_of_pairs_page_from_older_writers(tmp_path: Path) -> None:
    page = tmp_path / "page_0.pkl"
    joblib.dump([(3, {"a": 1}), (4, {"a": 2})], page)
    assert _read(page, 4) == {"a": 2}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"this is not a pickle at all", "corrupt or truncated"),
        (pickle.dumps([1, 2, 3]), "holds a list, expected a dict"),
        (pickle.dumps({"a": 1}), "key 'a' is not a datapoint index"),
    ],
)
def test_corrupt_pages_raise_page_error_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    page = tmp_path / "page_0.pkl"
    page.write_bytes(content)
    with pytest.raises(PageError) as err:
        _parse(page)
    assert str(page) in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated_page(tmp_path: Path, fraction: float) -> None:
    page = tmp_path / "page_0.pkl"
    joblib.dump({i: {"x": np.full((50, 50), i, dtype=np.float32)} for i in range(4)}, page)
    data = page.read_bytes()
    page.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(PageError, match="truncated|corrupt"):
        _parse(page)


def test_page_truncated_in_place_after_parsing_fails_cleanly(tmp_path: Path) -> None:
    """A writer that rewrites a page in place while we read: a clean PageError, never a crash or wrong data."""
    page = tmp_path / "page_0.pkl"
    joblib.dump({i: {"x": np.full((100, 100), i, dtype=np.float32)} for i in range(4)}, page)
    with _open(page) as f:
        parsed = parse_page(f, str(page), trust=False)
        with open(page, "r+b") as w:  # truncate the same inode in place, as joblib.dump(path) would
            w.truncate(100)
        with pytest.raises(PageError, match="truncated"):
            materialize(parsed.content[3], f, str(page))


class _Calls:
    """A payload that calls ``fn(*args)`` when unpickled (each fn here is a name on the allow-list)."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.fn, self.args)


@pytest.mark.parametrize("mode", ["r", "w+"])
def test_numpy_memmap_on_the_allow_list_cannot_open_other_files(tmp_path: Path, mode: str) -> None:
    """``numpy.memmap`` is allowed as an array class, but called it would read any file, or truncate it ("w+")."""
    victim = tmp_path / "secret.txt"
    victim.write_bytes(b"precious data")
    page = tmp_path / "page_0.pkl"
    joblib.dump({0: {"x": _Calls(np.memmap, str(victim), "u1", mode, 0, (3,))}}, page)
    with pytest.raises(PageError, match=str(page)):
        _parse(page)
    assert victim.read_bytes() == b"precious data"


def test_numpy_ndarray_constructor_cannot_turn_page_bytes_into_object_pointers(tmp_path: Path) -> None:
    """``ndarray(shape, object, buffer=b"...")`` would make PyObject pointers out of bytes the page chose (zeros here,
    so that the test stays harmless when it fails)."""
    page = tmp_path / "page_0.pkl"
    joblib.dump({0: {"x": _Calls(np.ndarray, (1,), np.dtype(object), b"\0" * 8)}}, page)
    with pytest.raises(PageError, match=str(page)):
        _parse(page)


def test_pickled_arrays_and_memmaps_still_load_as_arrays(tmp_path: Path) -> None:
    mm = np.memmap(tmp_path / "data.bin", dtype=np.float32, mode="w+", shape=(4,))
    mm[:] = [1, 2, 3, 4]
    value = {0: {"a": np.arange(6).reshape(2, 3), "mm": mm, "obj": np.array(["a", 1], dtype=object)}}
    for protocol in (2, 5):
        page = tmp_path / f"page_{protocol}.pkl"
        page.write_bytes(pickle.dumps(value, protocol=protocol))
        out = _read(page, 0)
        np.testing.assert_array_equal(out["a"], np.arange(6).reshape(2, 3))
        assert type(out["mm"]) is np.ndarray and out["mm"].tolist() == [1, 2, 3, 4]
        assert out["obj"].tolist() == ["a", 1]


@pytest.mark.parametrize(
    "args",
    [(-5, np.dtype("f4"), (3,), "C"), (0, np.dtype("f4"), (10**12,), "C"), (0, np.dtype(object), (2,), "C")],
)
def test_a_page_cannot_call_the_array_header_with_its_own_offset_dtype_and_shape(tmp_path: Path, args: Any) -> None:
    """joblib fills its array header by BUILD (checked); called with arguments it would choose any offset, size, or
    an object dtype whose "bytes" become pointers when read."""
    from joblib.numpy_pickle import NumpyArrayWrapper

    page = tmp_path / "page_0.pkl"
    page.write_bytes(pickle.dumps({0: {"x": _Calls(NumpyArrayWrapper, *args)}}, protocol=4))
    with pytest.raises(UntrustedPickleError, match=str(page)):
        _parse(page)


@pytest.mark.parametrize("lazy", [LazyArray(-5, np.dtype("f4"), (3,), "C"), LazyArray(0, np.dtype(object), (1,), "C")])
def test_reading_a_bad_lazy_array_is_a_page_error(tmp_path: Path, lazy: LazyArray) -> None:
    page = tmp_path / "page_0.pkl"
    page.write_bytes(b"\0" * 64)
    with _open(page) as f, pytest.raises(PageError, match="corrupt array header"):
        materialize(lazy, f, str(page))
