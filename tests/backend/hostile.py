"""Hostile debug pages, one per class of attack found in issue 9, written into a run the viewer opens.

Each builder writes ``RUN/epoch_0/debugger/page_0.pkl`` holding datapoint 0 (the hostile one) and a healthy
``page_1.pkl`` holding datapoint 1, plus a scores file for two datapoints, so a test can check that the hostile page
ends as a ``ViewerError`` naming it while the rest of the log keeps working. Nothing here *loads* a page: loading
them is what the tests do, in a subprocess under resource limits.

``python tests/backend/hostile.py KIND DIR`` writes one; ``KINDS`` lists them.
"""

from __future__ import annotations

import io
import json
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import joblib
import numpy as np

HEALTHY = {"dbg": {"x": np.arange(4, dtype=np.float32)}, "recorder": {"meta_info": {"idx": 1}}}


class Call:
    """Pickles as ``fn(*args)``: how a hand-made page asks an allowed callable for something."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.fn, self.args)


def _segv_dtype() -> np.dtype:
    d = np.dtype("V8", False, True)
    d.__setstate__((3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 0))
    return d


def _np(name: str) -> Any:
    core = getattr(np, "_core", None) or np.core
    return getattr(core.multiarray if name != "_frombuffer" else core.numeric, name)


def _inflating_storage(nbytes: int) -> bytes:
    """A zip-format torch storage whose single record inflates to ``nbytes`` zero bytes."""
    import torch

    buf = io.BytesIO()
    torch.save(torch.zeros(4).untyped_storage(), buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"K\x10t", b"J" + nbytes.to_bytes(4, "little") + b"t")
                dst.writestr(info.filename, data)
            elif info.filename.endswith("data/0"):
                with dst.open(info.filename, "w", force_zip64=True) as f:
                    chunk = bytes(1 << 20)
                    for _ in range(nbytes >> 20):
                        f.write(chunk)
            else:
                dst.writestr(info.filename, data)
    return out.getvalue()


def _laughs() -> list[Any]:
    node: list[Any] = ["lol"] * 10
    for _ in range(30):
        node = [node] * 10
    return node


def _raw_pickle(inner_ops: bytes) -> bytes:
    """``{0: {"dbg": <inner>}}`` around hand-written opcodes (pickle.dumps itself would recurse too deep)."""
    return b"\x80\x04}K\x00}\x8c\x03dbg" + inner_ops + b"ss."


def _deep(levels: int) -> bytes:
    return _raw_pickle(b"]" * levels + b"a" * (levels - 1))


def _cycle() -> Any:
    loop: list[Any] = []
    loop.append(loop)
    return {"a": loop}


def _stride0() -> Any:
    import torch

    return torch.zeros(1).expand(500_000_000)


def _tensor_ctor() -> Any:
    import torch

    return Call(torch.Tensor, 500_000_000)


def _storage_bomb() -> Any:
    import torch

    return Call(torch.storage._load_from_bytes, _inflating_storage(1 << 30))


BUILDERS = {
    "dtype_joblib": lambda: np.frombuffer(b"AAAAAAAA", dtype=_segv_dtype()),
    "dtype_frombuffer": lambda: Call(_np("_frombuffer"), b"AAAAAAAA", _segv_dtype(), (1,), "C"),
    "dtype_scalar": lambda: Call(_np("scalar"), _segv_dtype(), b"AAAAAAAA"),
    "dtype_ndarray": lambda: np.frombuffer(b"AAAAAAAA", dtype=_segv_dtype()),  # numpy's own pickling (plain pickle)
    "bytearray": lambda: Call(bytearray, 3 << 30),
    "list_range": lambda: Call(list, range(60_000_000)),
    "ndarray_reconstruct": lambda: Call(_np("_reconstruct"), np.ndarray, (500_000_000,), np.dtype("f8")),
    "tensor_ctor": _tensor_ctor,
    "tensor_stride0": _stride0,
    "storage_inflate": _storage_bomb,
    "laughs": _laughs,
    "cycle": _cycle,
    "deep": None,  # hand-written opcodes
}
KINDS = tuple(BUILDERS)
PLAIN_PICKLE = {"dtype_ndarray"}
"""Written with plain pickle (numpy's own array pickling) instead of joblib.dump."""


def write_run(root: Path, kind: str) -> Path:
    """A run at ``root`` whose page_0.pkl is the hostile page ``kind``; returns the hostile page's path."""
    debug = root / "epoch_0" / "debugger"
    debug.mkdir(parents=True, exist_ok=True)
    (root / "epoch_0" / "validation_scores.json").write_text(
        json.dumps({"aggregated": {"acc": 0.5}, "per_datapoint": {"acc": [0.1, 0.9]}}))
    joblib.dump({1: HEALTHY}, debug / "page_1.pkl")
    page = debug / "page_0.pkl"
    if kind == "deep":
        page.write_bytes(_deep(100_000))
    elif kind in PLAIN_PICKLE:
        page.write_bytes(pickle.dumps({0: {"dbg": BUILDERS[kind]()}}, protocol=4))
    else:
        joblib.dump({0: {"dbg": BUILDERS[kind]()}}, page)
    return page


if __name__ == "__main__":
    print(write_run(Path(sys.argv[2]), sys.argv[1]))
