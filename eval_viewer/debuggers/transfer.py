"""Taking a private copy of a batch's debug outputs on the hot path, cheaply, so the writer can work on it later.

Why copy at all: the writer keeps outputs until their page is written, long after the eval loop has moved on. A loop
that refills its tensors in place, or a slice that keeps a whole activation alive, would otherwise change what gets
saved or break the queue's byte bound. The copy is one contiguous ``clone`` per CPU tensor (memory bandwidth, far
below the disk's cost), and for a CUDA tensor an *asynchronous* copy into a reused pinned host buffer on a side
stream: the eval loop only enqueues it; the writer thread waits for the copy's event, copies the data out of the
pinned buffer and hands the buffer back to the pool.

The CUDA path (guarded by ``tensor.is_cuda``) could not be measured on the machine this was written on (CPU only).
Like any ``non_blocking`` copy, it reads the source when the side stream gets to it: a loop that overwrites a captured
CUDA tensor in place right after the call races with the copy (``record_stream`` only protects against the allocator
reusing the memory).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from eval_viewer.debuggers.batching import check_plain, nbytes

__all__ = ["PinnedPool", "PendingCopy", "HostCopier"]

_MIN_BUCKET = 64 * 1024


class PinnedPool:
    """Reusable host buffers (page-locked when ``pin``), in power-of-two buckets, so the hot path rarely allocates.

    At most ``max_cached_bytes`` of free buffers are kept; the rest go back to the allocator. Thread-safe: the eval
    loop acquires, the writer thread releases.
    """

    def __init__(self, max_cached_bytes: int, *, pin: bool = True) -> None:
        self._max_cached = int(max_cached_bytes)
        self._pin = pin
        self._free: dict[int, list[torch.Tensor]] = {}
        self._cached = 0
        self._lock = threading.Lock()
        self.allocations = 0
        """How many buffers were allocated (not reused), for tests and benchmarks."""

    @staticmethod
    def bucket(size: int) -> int:
        """The buffer size serving a request of ``size`` bytes: the next power of two, at least 64 KiB."""
        return max(_MIN_BUCKET, 1 << max(0, int(size) - 1).bit_length())

    @property
    def cached_bytes(self) -> int:
        return self._cached

    def acquire(self, size: int) -> torch.Tensor:
        """A 1-D uint8 buffer of at least ``size`` bytes, reused when one is free."""
        bucket = self.bucket(size)
        with self._lock:
            free = self._free.get(bucket)
            if free:
                self._cached -= bucket
                return free.pop()
            self.allocations += 1
        return torch.empty(bucket, dtype=torch.uint8, pin_memory=self._pin)

    def release(self, buffer: torch.Tensor) -> None:
        """Give ``buffer`` back; kept for reuse while the cache is under its limit."""
        size = buffer.numel()
        with self._lock:
            if self._cached + size <= self._max_cached:
                self._free.setdefault(size, []).append(buffer)
                self._cached += size


@dataclass
class PendingCopy:
    """A device tensor on its way into a pinned host buffer; :meth:`result` is called on the writer thread."""

    view: torch.Tensor
    buffer: torch.Tensor
    event: Any  # torch.cuda.Event
    pool: PinnedPool

    @property
    def nbytes(self) -> int:
        return self.view.numel() * self.view.element_size()

    def result(self) -> torch.Tensor:
        """Wait for the copy, move the data into ordinary memory and return the buffer to the pool."""
        self.event.synchronize()
        out = self.view.clone()
        self.pool.release(self.buffer)
        return out


class HostCopier:
    """Makes the private host-side snapshot of a debugger output tree (see module docstring)."""

    def __init__(self, max_pinned_bytes: int) -> None:
        self.pool = PinnedPool(max_pinned_bytes, pin=torch.cuda.is_available())
        self._streams: dict[int, Any] = {}

    def snapshot(self, obj: Any, where: str) -> tuple[Any, int]:
        """``(copy of obj, its bytes)``: tensors and arrays copied, containers rebuilt, plain values shared.

        ``where`` names the debugger in the :class:`~eval_viewer.errors.CaptureError` raised for non-plain data.
        """
        check_plain(obj, where)
        return self._snap(obj)

    def _snap(self, obj: Any) -> tuple[Any, int]:
        if isinstance(obj, torch.Tensor):
            if obj.is_cuda:
                pending = self._copy_cuda(obj)
                if isinstance(pending, PendingCopy):
                    return pending, pending.nbytes
                return pending, nbytes(pending)
            if obj.device.type == "cpu":
                copy = obj.detach().clone(memory_format=torch.contiguous_format)
            else:  # another accelerator: a plain synchronous copy
                copy = obj.detach().to("cpu")
            return copy, nbytes(copy)
        if isinstance(obj, np.ndarray):
            return np.array(obj, copy=True, order="C"), int(obj.nbytes)
        if isinstance(obj, Mapping):
            out: dict[Any, Any] = {}
            total = 0
            for key, value in obj.items():
                out[key], size = self._snap(value)
                total += size + nbytes(key)
            return out, total
        if isinstance(obj, tuple) and hasattr(obj, "_asdict"):
            return self._snap(dict(obj._asdict()))
        if isinstance(obj, (list, tuple)):
            items = [self._snap(v) for v in obj]
            values = [v for v, _ in items]
            return (values if isinstance(obj, list) else tuple(values)), sum(s for _, s in items)
        return obj, nbytes(obj)

    def _stream(self, device: torch.device) -> Any:
        index = device.index if device.index is not None else torch.cuda.current_device()
        stream = self._streams.get(index)
        if stream is None:
            stream = self._streams[index] = torch.cuda.Stream(device=index)
        return stream

    def _copy_cuda(self, tensor: torch.Tensor) -> PendingCopy | torch.Tensor:
        tensor = tensor.detach()
        size = tensor.numel() * tensor.element_size()
        if size == 0:
            return torch.empty(tensor.shape, dtype=tensor.dtype)
        with torch.cuda.device(tensor.device):
            stream = self._stream(tensor.device)
            # The side stream starts only after the work that produced the tensor (queued on the current stream).
            stream.wait_stream(torch.cuda.current_stream(tensor.device))
            buffer = self.pool.acquire(size)
            view = buffer[:size].view(tensor.dtype).view(tensor.shape)
            with torch.cuda.stream(stream):
                view.copy_(tensor, non_blocking=True)
                event = torch.cuda.Event(blocking=True)  # the writer thread sleeps on it instead of spinning
                event.record(stream)
            # Keep the allocator from handing the source's memory to someone else before the copy has run.
            tensor.record_stream(stream)
        return PendingCopy(view, buffer, event, self.pool)

    @staticmethod
    def resolve(obj: Any) -> Any:
        """On the writer thread: ``obj`` with every :class:`PendingCopy` replaced by its host tensor."""
        if isinstance(obj, PendingCopy):
            return obj.result()
        if isinstance(obj, dict):
            return {k: HostCopier.resolve(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [HostCopier.resolve(v) for v in obj]
        if isinstance(obj, tuple):
            return tuple(HostCopier.resolve(v) for v in obj)
        return obj
