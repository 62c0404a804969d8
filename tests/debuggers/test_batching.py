"""Pure parts of the capture path: byte counts, index parsing, batch splitting, conversion, snapshots."""

from __future__ import annotations

import sys
from collections import namedtuple

import numpy as np
import pytest
import torch

from eval_viewer.debuggers.batching import batch_indices, check_plain, nbytes, split_batch, split_meta, to_numpy
from eval_viewer.debuggers.transfer import HostCopier, PinnedPool
from eval_viewer.errors import CaptureError


def test_nbytes_counts_tensor_and_array_data_not_object_headers() -> None:
    t = torch.zeros(64, 32, 32)
    assert nbytes(t) == 64 * 32 * 32 * 4
    assert sys.getsizeof(t) < 1000  # the reference design's measure, which never split a page
    assert nbytes(np.zeros((10, 10), dtype=np.float16)) == 200
    assert nbytes(torch.zeros(3, dtype=torch.bfloat16)) == 6
    assert nbytes({"a": t[0], "b": [np.zeros(5, dtype=np.int64), "héllo"]}) == 1 + 32 * 32 * 4 + 1 + 40 + 6


@pytest.mark.parametrize(
    ("idx", "expected"),
    [
        (7, [7]),
        (np.int64(3), [3]),
        ([4, 5, 6], [4, 5, 6]),
        ((1, 2), [1, 2]),
        (torch.tensor([9, 8]), [9, 8]),
        (torch.tensor(5), [5]),
        (np.array([1, 2], dtype=np.uint8), [1, 2]),
        ([torch.tensor(3), torch.tensor(4)], [3, 4]),
        ([], []),
    ],
)
def test_batch_indices_accepts_int_list_and_tensor(idx: object, expected: list[int]) -> None:
    assert batch_indices(idx) == expected


@pytest.mark.parametrize(
    "idx",
    [1.5, "3", [1, -2], [1, 2.0], True, torch.tensor([1.0, 2.0]), torch.zeros(2, 2, dtype=torch.long), None],
)
def test_batch_indices_rejects_what_would_misfile_a_datapoint(idx: object) -> None:
    with pytest.raises(CaptureError, match="idx"):
        batch_indices(idx)


def test_split_batch_splits_leading_batch_dim_and_copies_the_rest() -> None:
    fm = torch.arange(3 * 2 * 4).reshape(3, 2, 4)
    small = torch.ones(5)  # no batch dim: copied
    out = {"fm": fm, "layer_name": "backbone.0", "stats": {"per_dp": np.arange(3), "n": 4}, "pair": (fm, small)}
    parts = split_batch(out, 3)
    assert len(parts) == 3
    for i, part in enumerate(parts):
        assert torch.equal(part["fm"], fm[i])
        assert part["layer_name"] == "backbone.0"
        assert part["stats"]["per_dp"] == i and part["stats"]["n"] == 4
        assert isinstance(part["pair"], tuple) and torch.equal(part["pair"][0], fm[i])
        assert part["pair"][1] is small


def test_split_batch_of_one_drops_the_batch_dim() -> None:
    (only,) = split_batch({"fm": torch.zeros(1, 4, 8, 8), "scalar": 2.5}, 1)
    assert only["fm"].shape == (4, 8, 8)
    assert only["scalar"] == 2.5
    assert split_batch([np.zeros((2, 3))], 2)[1][0].shape == (3,)
    assert split_batch(None, 2) == [None, None]
    assert split_batch(torch.zeros(2), 0) == []


def test_split_meta_keeps_scalars_per_datapoint() -> None:
    meta = {
        "idx": [10, 11],
        "name": ["a.png", "b.png"],
        "split": "val",
        "difficulty": torch.tensor([0.5, float("nan")]),
        "flags": np.array([True, False]),
        "boxes": [[1, 2], [3, 4]],  # list per datapoint, not a scalar: not tabulated
        "shape": (3, 32, 32),  # a tuple of another length: not tabulated
    }
    rows = split_meta(meta, 2)
    assert rows == [
        {"name": "a.png", "split": "val", "difficulty": 0.5, "flags": True},
        {"name": "b.png", "split": "val", "difficulty": None, "flags": False},
    ]


def test_to_numpy_makes_pages_torch_free() -> None:
    Pair = namedtuple("Pair", ["x", "y"])
    converted = to_numpy(
        {
            "bf16": torch.ones(2, dtype=torch.bfloat16),
            "f16": torch.ones(2, dtype=torch.float16),
            "zero_d": torch.tensor(3.0),
            "np_scalar": np.float32(1.5),
            "shape": torch.Size([2, 3]),
            "pair": Pair(torch.zeros(1), "s"),
            "grad": torch.ones(2, requires_grad=True) * 2,
            "list": [torch.tensor([1, 2])],
        }
    )
    assert converted["bf16"].dtype == np.float32
    assert converted["f16"].dtype == np.float16
    assert converted["zero_d"] == 3.0 and type(converted["zero_d"]) is float
    assert type(converted["np_scalar"]) is float
    assert converted["shape"] == (2, 3) and type(converted["shape"]) is tuple
    assert set(converted["pair"]) == {"x", "y"}
    assert isinstance(converted["grad"], np.ndarray)
    assert converted["list"][0].tolist() == [1, 2]


def test_check_plain_names_the_debugger_and_key_path() -> None:
    check_plain({"a": [1, "x", None, np.zeros(2), torch.zeros(2)], 3: (1.0,)}, "debugger 'd'")
    with pytest.raises(CaptureError, match=r"debugger 'd'.*a\[1\]"):
        check_plain({"a": [1, object()]}, "debugger 'd'")
    with pytest.raises(CaptureError, match="object-dtype"):
        check_plain(np.array([{}, 1], dtype=object), "debugger 'd'")
    with pytest.raises(CaptureError, match="dict key"):
        check_plain({(1, 2): 1}, "debugger 'd'")


def test_snapshot_is_a_private_copy_with_real_byte_count() -> None:
    copier = HostCopier(max_pinned_bytes=1 << 20)
    source = torch.zeros(4, 8)
    array = np.zeros(5)
    snap, size = copier.snapshot({"t": source[:, :2], "a": array, "s": "x"}, "debugger 'd'")
    source.fill_(1.0)
    array[:] = 1.0
    assert torch.count_nonzero(snap["t"]) == 0 and snap["t"].is_contiguous() and snap["t"].shape == (4, 2)
    assert not snap["a"].any()
    assert size == 4 * 2 * 4 + 5 * 8 + 1 + 1 + 1 + 1  # data + key bytes + "x"
    assert HostCopier.resolve(snap)["s"] == "x"
    with pytest.raises(CaptureError, match="debugger 'd'"):
        copier.snapshot({"bad": {1, 2}}, "debugger 'd'")


def test_pinned_pool_reuses_buffers_by_bucket() -> None:
    pool = PinnedPool(max_cached_bytes=1 << 20, pin=False)
    assert PinnedPool.bucket(1) == 64 * 1024 and PinnedPool.bucket(100_000) == 131072
    a = pool.acquire(100_000)
    pool.release(a)
    b = pool.acquire(120_000)
    assert b is a and pool.allocations == 1
    big = pool.acquire(2 << 20)  # larger than the cache: allocated, and not kept on release
    pool.release(big)
    assert pool.cached_bytes == 0 and pool.allocations == 2
