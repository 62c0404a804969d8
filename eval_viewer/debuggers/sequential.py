"""``SequentialDebugger``: runs a named set of debuggers on each eval batch and writes their outputs as pages.

The reference API that users' trainers already call is kept (``enabled``, ``__call__(datapoint, model)``,
``reset_buffer()``, ``save_all(output_dir)``), without the reference design's defects:

* forward hooks exist only while ``enabled`` is true (attached on enable, removed on disable), so a disabled debugger
  costs nothing, not even on training steps;
* batches of any size are split into datapoints by ``meta_info["idx"]`` (rule in :mod:`.batching`);
* outputs are copied off the hot path's tensors at once (CUDA: async into pinned buffers, :mod:`.transfer`) and written
  by a background :class:`~.writer.PageWriter` with a queue bounded in bytes;
* pages count real bytes, are written atomically into the folder of the epoch being captured, and any write error is
  raised from ``save_all`` (and the next call) as :class:`~eval_viewer.errors.CaptureError`;
* nothing goes silently wrong in common set-ups: every call of a layer in one forward pass is kept (a new pass starts
  at each call of the model); switching capture on resets ``torch.compile``'s caches when compiled code exists (it
  would not call hooks added later), and a batch in which no hook fired is an error; under ``torch.distributed`` the
  rank is taken from the process group, and two live processes writing one folder under one rank is an error.

Typical trainer use (reference flow; pages are staged until ``save_all`` names the folder)::

    debugger.enabled = epoch in checkpoint_epochs(method, total_epochs)
    if debugger.enabled:
        debugger.reset_buffer()
    for batch in val_loader:            # batch["meta_info"]["idx"]: int, list or tensor
        batch["outputs"] = model(batch["inputs"])
        debugger(batch, model)
    if debugger.enabled:
        debugger.save_all(epoch_dir / "debugger")

or, when the folder is known up front, ``debugger.start_epoch(epoch_dir / "debugger")`` instead of the first lines.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from eval_viewer.debuggers.base import BaseDebugger, ForwardDebugger
from eval_viewer.debuggers.batching import batch_indices, split_batch, split_meta, to_numpy
from eval_viewer.debuggers.layers import get_layer_by_name
from eval_viewer.debuggers.transfer import HostCopier
from eval_viewer.debuggers.writer import PageWriter, Record, WriterStats
from eval_viewer.errors import CaptureError
from eval_viewer.log_format import INDEX_FORWARD_POSITION, INDEX_LAYER, KINDS_KEY, Kind

__all__ = ["SequentialDebugger"]

logger = logging.getLogger(__name__)

_MB = 1024 * 1024


class SequentialDebugger(BaseDebugger):
    """Runs the debuggers of ``debuggers_config`` in order and writes ``{idx: {name: output}}`` pages.

    ``debuggers_config``: ``[{"name": str, "debugger_config": {"class": Cls, "args": {...}}}, ...]``; names must be
    unique (they are the keys in the pages). Layers of forward debuggers are looked up in ``model`` now, so a typo
    fails at start-up. ``page_size_mb``: pages close at this many bytes of captured data; ``max_queue_mb``: the eval
    loop waits only while this many bytes wait for the writer; ``rank``: the process rank under multi-process
    evaluation (rank-sharded page and index names), None for one process, in which case it is taken from
    ``torch.distributed`` when a process group of more than one process is initialised by the time capture starts
    (two processes writing one folder under one rank is refused, see :mod:`.claims`); ``staging_dir``: the folder
    (the run's) that holds ``.eval_viewer_staging/``, where pages wait before ``save_all`` names the epoch's folder
    (default: the run of the last ``save_all``, else the current directory; see :mod:`.staging`: a crash leaves
    them readable there).
    """

    def __init__(
        self,
        debuggers_config: Sequence[Mapping[str, Any]],
        model: torch.nn.Module,
        page_size_mb: float = 100,
        *,
        max_queue_mb: float = 256,
        rank: int | None = None,
        staging_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not page_size_mb > 0 or not max_queue_mb > 0:
            raise CaptureError(f"page_size_mb and max_queue_mb must be positive, got {page_size_mb}, {max_queue_mb}")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 0):
            raise CaptureError(f"rank must be a non-negative int or None, got {rank!r}")
        self.debuggers: dict[str, BaseDebugger] = _build_debuggers(debuggers_config)
        self.forward_debuggers: dict[str, list[ForwardDebugger]] = {}
        """``{layer_name: [debugger, ...]}``, as in the reference; hooks are attached here, not by the trainer."""
        self._layers: list[tuple[ForwardDebugger, torch.nn.Module]] = []
        self._parents: list[tuple[ForwardDebugger, torch.nn.Module]] = []
        for name, debugger in self.debuggers.items():
            if isinstance(debugger, ForwardDebugger):
                try:
                    layer = get_layer_by_name(model, debugger.layer_name)
                except CaptureError as exc:
                    raise CaptureError(f"debugger {name!r}: {exc}") from None
                self.forward_debuggers.setdefault(debugger.layer_name, []).append(debugger)
                self._layers.append((debugger, layer))
                if debugger.layer_name:
                    self._parents.append((debugger, get_layer_by_name(model, debugger.layer_name.rpartition(".")[0])))
        self._model = model
        self._positions: dict[str, int] = {}
        """``{layer_name: 0, 1, ...}``: the order hooked layers finished their first call (index ``forward_position``)."""
        self._warned_missing: set[str] = set()
        self.rank = rank
        self._enabled = False
        self._handles: list[RemovableHandle] = []
        self._copier = HostCopier(max_pinned_bytes=int(max_queue_mb * _MB))
        self._writer = PageWriter(
            page_size_bytes=int(page_size_mb * _MB),
            max_queue_bytes=int(max_queue_mb * _MB),
            rank=rank,
            debuggers={name: _describe(name, d) for name, d in self.debuggers.items()},
            staging_root=staging_dir,
        )

    # ----------------------------------------------------------------- switching capture on and off

    @property
    def enabled(self) -> bool:
        """Whether batches are captured. Setting it attaches (True) or removes (False) every forward hook."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        value = bool(value)
        if value == self._enabled:
            return
        if value:
            handles: list[RemovableHandle] = []
            try:
                if self._layers:  # each call of the model starts a forward pass: earlier layer calls are dropped
                    handles.append(self._model.register_forward_pre_hook(self._new_forward))
                for debugger, layer in self._layers:
                    handles.extend(debugger.attach(layer))
                for debugger, parent in self._parents:
                    handles.extend(debugger.attach_context(parent))
                for layer_name, layer in {d.layer_name: m for d, m in self._layers}.items():
                    handles.append(layer.register_forward_hook(partial(self._layer_ran, layer_name)))
            except BaseException:
                for handle in handles:
                    handle.remove()
                raise
            self._handles = handles
            if self._layers:
                _reset_compiled_code()
            self._warned_missing = set()
            if not self._writer.epoch_open:
                self._begin(None)
        else:
            for handle in self._handles:
                handle.remove()
            self._handles = []
            self._new_forward()  # a capture of a batch nobody asked for is never handed out later
        self._enabled = value

    def _layer_ran(self, layer_name: str, *_: Any) -> None:
        """Forward hook of each hooked layer: note the order layers finish in (health checks' "first bad layer")."""
        if layer_name not in self._positions:
            self._positions[layer_name] = len(self._positions)

    def _new_forward(self, *_: Any) -> None:
        """Forward pre-hook of the model: a new pass begins, so layer calls of an earlier pass are forgotten."""
        for debugger, _layer in self._layers:
            debugger.discard()

    def _begin(self, output_dir: str | os.PathLike[str] | None) -> None:
        """Open a capture epoch in the writer, under this process's rank."""
        if self.rank is None:
            rank = _distributed_rank()
            if rank is not None:
                logger.info("Capture of rank %d of a torch.distributed run: rank-sharded pages", rank)
                self.rank = self._writer.rank = rank
        self._writer.begin(output_dir)

    def start_epoch(self, output_dir: str | os.PathLike[str] | None = None) -> None:
        """Start capturing a new epoch straight into ``output_dir`` (staged until ``save_all`` when None); enables."""
        self._begin(output_dir)
        self.enabled = True

    def reset_buffer(self) -> None:
        """Start a fresh epoch (page 0, new staging); unsaved captures of an open epoch are dropped with a warning."""
        self._begin(None)

    # ----------------------------------------------------------------- capture

    def __call__(self, datapoint: Mapping[str, Any], model: torch.nn.Module) -> dict[str, Any]:
        """Run every debugger on the batch just evaluated; ``{name: batch output}``, or ``{}`` when not enabled.

        The outputs are split into datapoints by ``datapoint["meta_info"]["idx"]`` and queued for writing. Raises
        :class:`CaptureError` if an earlier page of this epoch could not be written. ``idx`` and the scalar
        ``meta_info`` fields are read here (a CUDA tensor there costs a device sync; a DataLoader gives CPU ones);
        the debugger outputs are only copied, asynchronously for CUDA tensors.
        """
        if not self._enabled:
            return {}
        meta = datapoint.get("meta_info") if isinstance(datapoint, Mapping) else None
        if not isinstance(meta, Mapping) or "idx" not in meta:
            raise CaptureError('the datapoint needs meta_info["idx"] (the dataset indices of the batch) to be captured')
        indices = batch_indices(meta["idx"])
        if not self._writer.epoch_open:
            self._begin(None)
        self._writer.check()
        outputs = self._run_debuggers(datapoint, model)
        if not indices:
            return outputs
        snapshots: dict[str, Any] = {}
        total = 0
        for name, output in outputs.items():
            snapshots[name], size = self._copier.snapshot(output, f"debugger {name!r}")
            total += size
        rows = split_meta(meta, len(indices))
        self._writer.submit(partial(_records, snapshots, indices, rows), total)
        return outputs

    def _run_debuggers(self, datapoint: Mapping[str, Any], model: torch.nn.Module) -> dict[str, Any]:
        """Every debugger's output, in config order. Forward debuggers hand over their captures first: a whole-datapoint
        debugger such as GradCAM runs the model again, which fires the hooks again; those re-captures are discarded."""
        captured = {name: d(datapoint, model) for name, d in self.debuggers.items() if isinstance(d, ForwardDebugger)}
        self._check_hooks_fired(captured)
        for name, debugger in self.debuggers.items():
            if not isinstance(debugger, ForwardDebugger):
                captured[name] = debugger(datapoint, model)
        if len(captured) > len(self._layers):
            self._new_forward()
        return {name: captured[name] for name in self.debuggers}

    def _check_hooks_fired(self, captured: Mapping[str, Any]) -> None:
        """Refuse a batch in which no capture hook fired, and warn once per epoch about each layer that did not run.

        An entry of None for every datapoint is what a compiled graph traced without the hooks gives, silently; a
        layer that only some batches use (a conditional branch) is legitimate but worth one line in the log.
        """
        missing = [name for name, value in captured.items() if value is None]
        if captured and len(missing) == len(captured):
            raise CaptureError(
                f"no capture hook fired during this batch (debuggers {', '.join(map(repr, missing))}). Run the model "
                "on the batch between enabling capture and calling the debugger. A torch.compile'd model calls only "
                "the hooks it was traced with: capture resets torch.compile's caches when it is switched on, so "
                "compile with torch.compile (not torch.export/AOT), or capture from the eager model."
            )
        for name in missing:
            if name not in self._warned_missing:
                self._warned_missing.add(name)
                logger.warning("Debugger %r: its layer did not run during a captured batch; its entry is None", name)

    def save_all(self, output_dir: str | os.PathLike[str] | None = None) -> list[Path]:
        """Write everything captured this epoch into ``output_dir`` and its index; the page paths, in order.

        ``output_dir`` may be left out after ``start_epoch(dir)``. Raises :class:`CaptureError` naming the page if
        any page of the epoch failed. The next capture starts a new epoch.
        """
        if not self._writer.epoch_open:
            logger.warning("save_all(%s): nothing was captured since the last save_all", output_dir)
            return []
        # Kinds can depend on the data seen (the recorder tags what it recorded): describe again for the final index.
        self._writer.debuggers = {name: _describe(name, d, self._positions) for name, d in self.debuggers.items()}
        return self._writer.finish(output_dir)

    @property
    def stats(self) -> WriterStats:
        """Pages and bytes written, writer busy time, and the longest stall of the eval loop on the queue."""
        return self._writer.stats

    def close(self) -> None:
        """Remove the hooks and stop the writer thread (unsaved captures are dropped with a warning)."""
        self.enabled = False
        self._writer.close()

    def __enter__(self) -> SequentialDebugger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _records(
    snapshots: Mapping[str, Any], indices: list[int], rows: list[dict[str, Any]]
) -> Iterator[Record]:
    """Runs on the writer thread: finish device copies, split the batch, convert each datapoint to numpy."""
    resolved = HostCopier.resolve(dict(snapshots))
    parts = {name: split_batch(value, len(indices)) for name, value in resolved.items()}
    for i, idx in enumerate(indices):
        yield Record(idx, {name: to_numpy(split[i]) for name, split in parts.items()}, rows[i])


def _distributed_rank() -> int | None:
    """This process's rank when a ``torch.distributed`` group of more than one process is initialised, else None."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return int(dist.get_rank())
    return None


_compiled_frames_at_reset = 0


def _reset_compiled_code() -> None:
    """Drop torch.compile's compiled frames if any were made since our last reset, so the next call sees our hooks.

    Dynamo does not guard on forward hooks added after tracing (``skip_nnmodule_hook_guards``): a model compiled and
    run before capture was switched on would keep running its hook-less graph and capture nothing. Resetting is
    global (other compiled functions recompile on their next call too) and is logged, since it costs a recompile.
    """
    global _compiled_frames_at_reset
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is None:
        return
    frames = int(dynamo.utils.counters["frames"]["ok"])
    if frames == _compiled_frames_at_reset:
        return
    logger.warning(
        "torch.compile'd code ran before capture was switched on and would not call the capture hooks; resetting "
        "torch.compile's caches (torch.compiler.reset()), so the next call recompiles with them"
    )
    torch.compiler.reset()
    _compiled_frames_at_reset = int(dynamo.utils.counters["frames"]["ok"])


def _build_debuggers(config: Sequence[Mapping[str, Any]]) -> dict[str, BaseDebugger]:
    if not isinstance(config, Sequence) or isinstance(config, (str, bytes)):
        raise CaptureError(f"debuggers_config must be a list of debugger entries, got {type(config).__name__}")
    debuggers: dict[str, BaseDebugger] = {}
    for i, entry in enumerate(config):
        where = f"debuggers_config[{i}]"
        if not isinstance(entry, Mapping) or "name" not in entry or "debugger_config" not in entry:
            raise CaptureError(f'{where} must be {{"name": str, "debugger_config": {{"class": ..., "args": {{...}}}}}}')
        name = entry["name"]
        if not isinstance(name, str) or not name:
            raise CaptureError(f"{where}: name must be a non-empty string, got {name!r}")
        if name in debuggers:
            raise CaptureError(f"{where}: duplicate debugger name {name!r} (names are the keys in the pages)")
        spec = entry["debugger_config"]
        cls = spec.get("class") if isinstance(spec, Mapping) else None
        args = spec.get("args", {}) if isinstance(spec, Mapping) else None
        if not callable(cls) or not isinstance(args, Mapping):
            raise CaptureError(f'{where} ({name!r}): debugger_config needs "class" (a class) and "args" (a dict)')
        try:
            debugger = cls(**args)
        except Exception as exc:
            what = getattr(cls, "__qualname__", cls)
            raise CaptureError(f"{where} ({name!r}): {what}(**args) failed: {exc}") from exc
        if not isinstance(debugger, BaseDebugger):
            raise CaptureError(f"{where} ({name!r}): {type(debugger).__qualname__} is not a BaseDebugger")
        debuggers[name] = debugger
    return debuggers


def _describe(name: str, debugger: BaseDebugger, positions: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The index entry of one debugger: its class and the semantic kinds it declares (checked, so typos fail now)."""
    kinds = debugger.call_kinds() if isinstance(debugger, ForwardDebugger) else dict(debugger.kinds())
    for key, kind in kinds.items():
        if not isinstance(key, str) or kind not in Kind.ALL:
            raise CaptureError(
                f"debugger {name!r}: kinds() maps {key!r} to {kind!r}; keys are dotted paths, kinds one of {Kind.ALL}"
            )
    cls = type(debugger)
    entry: dict[str, Any] = {"class": f"{cls.__module__}.{cls.__qualname__}", KINDS_KEY: kinds}
    if isinstance(debugger, ForwardDebugger):
        entry[INDEX_LAYER] = debugger.layer_name
        if positions and debugger.layer_name in positions:
            entry[INDEX_FORWARD_POSITION] = positions[debugger.layer_name]
    return entry
