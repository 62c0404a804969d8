"""What the bounds of :mod:`eval_viewer.backend.untrusted` must *not* refuse: every honest page still reads exactly,
with protocol-2 and protocol-5 pickles, structured, datetime and object arrays, shared objects, tensors of all kinds.
The hostile side is ``test_hostile_pages.py`` (in subprocesses under resource limits)."""

from __future__ import annotations

import pickle
from collections import Counter, OrderedDict, defaultdict, deque
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import torch

from eval_viewer.backend.lru import ByteLRU
from eval_viewer.backend.pages import read_datapoint
from eval_viewer.backend.pickles import parse_page
from eval_viewer.backend.sources import LocalSource
from eval_viewer.backend.untrusted import MAX_DEPTH, safe_dtype
from eval_viewer.errors import PageError


def _read(path: Path, idx: int) -> Any:
    return read_datapoint(LocalSource(path.parent), path.name, idx, trust=False, lru=ByteLRU(1 << 24))


HONEST_ARRAYS = {
    "structured": np.array([(1.5, [1, 2]), (2.5, [3, 4])], dtype=[("a", "<f4"), ("b", "u1", (2,))]),
    "subarray": np.zeros(3, dtype=np.dtype(("<f4", (2, 2)))),
    "datetime": np.array(["2024-01-01", "2025-06-30"], dtype="datetime64[ns]"),
    "timedelta": np.array([1, 2], dtype="timedelta64[s]"),
    "big_endian": np.arange(5, dtype=">i4"),
    "strings": np.array(["ab", "cde"]),
    "byte_strings": np.array([b"x", b"yz"]),
    "bool": np.array([True, False]),
    "complex": np.array([1 + 2j]),
    "objects": np.array(["a", 1, None], dtype=object),
    "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
}


@pytest.mark.parametrize("writer", ["joblib", "pickle2", "pickle5", "joblib_zlib"])
def test_honest_arrays_and_containers_read_exactly(tmp_path: Path, writer: str) -> None:
    # (range, complex and bytearray are left out: under pytest an imported dill pickles them with its own functions)
    shared = {"meta": [1, 2, 3]}
    value = {
        **HONEST_ARRAYS,
        "a": shared, "b": shared, "od": OrderedDict(x=1), "dd": defaultdict(None, {"k": [1]}), "cnt": Counter("aab"),
        "dq": deque([1, 2], maxlen=5), "set": {1, 2}, "fs": frozenset({"q"}), "bytes": b"\x00\xff",
        "scalar": np.float32(2.5),
        "dtype": np.dtype([("a", "<f4")]), "tensor": torch.arange(6.0).reshape(2, 3), "half": torch.ones(2).half(),
        "param": torch.nn.Parameter(torch.ones(2)), "view": torch.arange(10.0)[2:8:2],
        "expanded": torch.ones(1).expand(16),  # a small stride-0 view: within the page's budget
    }
    page = tmp_path / "page_0.pkl"
    if writer.startswith("pickle"):
        page.write_bytes(pickle.dumps({0: value}, protocol=int(writer[-1])))
    else:
        joblib.dump({0: value}, page, compress=("zlib", 3) if writer.endswith("zlib") else 0)
    out = _read(page, 0)
    for key, expected in HONEST_ARRAYS.items():
        assert out[key].dtype.kind == expected.dtype.kind and out[key].shape == expected.shape, key
        np.testing.assert_array_equal(out[key], expected, err_msg=key)
    assert out["a"] is out["b"], "what the page shares stays shared"
    assert out["od"] == value["od"] and out["dd"] == value["dd"] and out["cnt"] == value["cnt"]
    assert list(out["dq"]) == [1, 2] and out["set"] == {1, 2} and out["fs"] == frozenset({"q"})
    assert out["dtype"] == value["dtype"]
    np.testing.assert_array_equal(out["tensor"], np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(out["view"], [2.0, 4.0, 6.0])
    np.testing.assert_array_equal(out["expanded"], np.ones(16))


def test_a_dtype_is_rebuilt_and_an_object_flag_cleared_by_the_page_is_refused() -> None:
    d = np.dtype("V8", False, True)
    d.__setstate__((3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 0))  # flags cleared: hasobject lies
    assert not d.hasobject
    with pytest.raises(PageError, match="Python objects"):
        safe_dtype(d, "page_0.pkl")
    assert safe_dtype(np.dtype(">f8"), "p") == np.dtype(">f8")
    with pytest.raises(PageError, match="inconsistent"):
        bad = np.dtype("V8", False, True)
        bad.__setstate__((3, "|", None, ("a",), {"a": (np.dtype("f8"), 4)}, 8, 1, 0))  # field runs past the end
        safe_dtype(bad, "p")


def test_sharing_within_bounds_is_kept_and_nesting_at_the_limit_reads(tmp_path: Path) -> None:
    leaf = list(range(50))
    nested: Any = leaf
    for _ in range(MAX_DEPTH - 4):
        nested = [nested]
    page = tmp_path / "page_0.pkl"
    joblib.dump({0: {"shared": [leaf] * 1000, "nested": nested}}, page)
    out = _read(page, 0)
    assert all(x is out["shared"][0] for x in out["shared"])
    with LocalSource(tmp_path).open("page_0.pkl") as f:
        assert parse_page(f, "page_0.pkl", trust=False).content[0]["shared"][0] == leaf


def test_an_object_array_in_an_otherwise_plain_page_is_an_array(tmp_path: Path) -> None:
    """The plain-tree shortcut must still hand joblib's object arrays (read whole, inside an array header) to the
    full walk."""
    page = tmp_path / "page_0.pkl"
    for compress in (0, 3):
        joblib.dump({i: {"obj": np.array(["a", 1], dtype=object), "x": np.arange(3)} for i in range(3)}, page,
                    compress=compress)
        out = _read(page, 2)
        assert isinstance(out["obj"], np.ndarray) and out["obj"].tolist() == ["a", 1]
