"""Attention maps of models that never materialise them: recomputed from the model's own q and k, per head.

Fused attention (``torch.nn.functional.scaled_dot_product_attention``, and ``nn.MultiheadAttention`` called with
``need_weights=False``, which uses it) returns only the attended values, so there is nothing for a forward hook to
read. While the chosen module runs, :class:`AttentionDebugger` watches the calls made inside it through a
:class:`torch.overrides.TorchFunctionMode` (entered by a forward pre-hook, left by a forward hook), recomputes
``softmax(q kᵀ · scale + mask)`` from each call's own arguments and then runs the real kernel, so the model's output
is exactly what it would have been. Nothing in the model is edited and nothing runs while capture is off.

Output (one item per attention call, the weights together with what locates them on the image; the first call
has the plain keys, later calls the same keys with ``_1``, ``_2``... appended, in call order across every call of
the module in the forward pass, so a module run several times keeps each run)::

    {"attention": {"weights": (B, heads, Lq', Lk'),         # rows sum to 1
                   "axes": ["head", "query", "key"],        # per datapoint; ["prompt", "head", ...] with groups
                   "query_index": [int],                    # which of the Lq queries were kept
                   "num_queries": Lq, "num_keys": Lk,
                   "query_grid": [h, w] | None, "key_grid": [h', w'] | None,
                   "num_prefix_tokens": int,                # class/register tokens before the grid
                   "key_pool": int,                         # keys summed in key_pool (x key_pool) blocks
                   "module_call": int},                     # which call of the module made it (0, 1, ...)
     "stats": {"entropy": (B,), "max": (B,)},               # mean row entropy (nats), largest weight
     "attention_1": ..., "stats_1": ...}

Kernels whose leading dimension is not the batch (:mod:`eval_viewer.debuggers.layouts`): *windowed* attention
(SAM2/Hiera, ViTDet) is filed per image with its layout in ``"windows"`` (window size, grid of windows, padding,
pooled query windows); queries are cells of the image's query grid (``query_grid``, ``query_index``). Its form is
``windows["form"]``: ``"stitched"``, each row the query's attention placed where its window's keys lie on the image's
key grid (``key_grid``, pooled like any map; ``stats["padding_mass"]``: the mass rows gave to padding tokens outside
the image, rows then sum to 1 minus it), or ``"local"``, each row over the query's own window (``key_grid`` = the
window, padding keys included) and ``windows["key_window_origin"]`` the (row, column) of each kept query's window on
the image's key grid. *Grouped* attention (SAM2's mask
decoder: ``batch × prompts``) keeps the group as the first axis of ``weights`` (``num_prompts`` says how many).
Rows that cannot be mapped to datapoints raise :class:`~eval_viewer.errors.CaptureError`.

``max_tokens`` bounds memory: at most that many evenly spaced queries are kept (their indices are recorded), and
when there are more keys than that, probability mass is summed over blocks of neighbouring keys (2-D blocks on a
grid, prefix tokens kept apart), so rows still sum to 1 and the map still lies on the image. ``nn.MultiheadAttention``
calls with ``need_weights=True`` compute their weights themselves; those are recorded per head too. Dropout on the
attention probabilities (training mode) is not applied to the recorded maps.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from eval_viewer.debuggers.base import ForwardDebugger, call_suffix, datapoint_batch_size
from eval_viewer.debuggers.builtins._attention_math import (
    AttentionMode,
    attention_probabilities,
    limit_grid_tokens,
    limit_tokens,
    pool_keys,
)
from eval_viewer.debuggers.builtins._tensors import cast_float, square_grid
from eval_viewer.debuggers.builtins._torch_attention import (
    NATIVE_MODULES,
    layer_attention_inputs,
    mha_query_key,
    native_layers,
    suspended_hooks,
)
from eval_viewer.debuggers.layouts import (
    Groups,
    Windows,
    first_tensor_shape,
    group_layouts,
    stitch_windows,
    window_layout,
    window_rows,
)
from eval_viewer.errors import CaptureError
from eval_viewer.log_format import Kind

__all__ = ["AttentionDebugger", "attention_probabilities", "limit_tokens", "limit_grid_tokens"]

logger = logging.getLogger(__name__)

class AttentionDebugger(ForwardDebugger):
    """Per-head attention maps of every attention call inside the module ``layer_name`` (see the module docstring).

    ``grid=(h, w)`` names the key/query token grid when it is not a square (plus class tokens) that can be inferred;
    ``infer_grid=False`` turns inference off for sequences that are not images. ``dtype=torch.float16`` halves the
    page size. ``groups=G`` declares that the kernel's leading dimension is ``batch × G`` in batch-major order when
    that cannot be read from the module's inputs (see :mod:`eval_viewer.debuggers.layouts`); ``group_axis`` names
    that axis in the output (SAM2's mask decoder: one entry per prompt). ``windows``: how windowed attention is kept,
    ``"stitch"`` (rows over the whole image's key grid, pooled to ``max_tokens`` keys), ``"local"`` (rows over the
    query's own window, exact at any size, with each window's place on the image) or ``"auto"`` (stitched when the
    image's key grid fits ``max_tokens`` unpooled, else local: pooling keys in blocks as large as a window would
    leave nothing of the map).
    """

    def __init__(
        self,
        layer_name: str,
        max_tokens: int | None = 256,
        grid: tuple[int, int] | None = None,
        infer_grid: bool = True,
        dtype: torch.dtype | None = None,
        groups: int | None = None,
        group_axis: str = "prompt",
        windows: str = "auto",
    ) -> None:
        super().__init__(layer_name)
        if max_tokens is not None and max_tokens < 1:
            raise CaptureError(f"max_tokens must be >= 1 or None, got {max_tokens}")
        if groups is not None and (isinstance(groups, bool) or not isinstance(groups, int) or groups < 1):
            raise CaptureError(f"groups must be a positive int or None, got {groups!r}")
        self.max_tokens = max_tokens
        self.grid = grid
        self.infer_grid = infer_grid
        self.dtype = dtype
        if windows not in ("auto", "stitch", "local"):
            raise CaptureError(f"windows must be 'auto', 'stitch' or 'local', got {windows!r}")
        self.groups = groups
        self.group_axis = group_axis
        self.windows = windows
        self._calls: list[_Call] = []
        self._call_start = 0
        self._module_calls = 0
        self._module_shape: tuple[int, ...] | None = None
        self._parent_shape: tuple[int, ...] | None = None
        self._query_stride: int | None = None
        self._mode: AttentionMode | None = None
        self._paused = False
        self._encoder_call: tuple[tuple, dict[str, Any]] | None = None
        self._fastpath: bool | None = None

    # -- hooks -------------------------------------------------------------------------------------------------------
    def attach(self, module: torch.nn.Module) -> list[RemovableHandle]:
        """Watch ``module`` from its pre-hook to its forward hook (run even when the forward raises).

        PyTorch's own transformer modules inside it (or it itself) are recorded from their weights and run untouched,
        with the watching paused while they run (see :mod:`._torch_attention`), so their fast paths and nested
        tensors behave exactly as without capture.
        """
        handles = [
            module.register_forward_pre_hook(self._enter, with_kwargs=True),
            module.register_forward_hook(self._leave, always_call=True),
        ]
        for root in _native_roots(module):
            handles.append(root.register_forward_pre_hook(self._pause, with_kwargs=True))
            if not isinstance(root, torch.nn.TransformerEncoder):  # an encoder's layers are replayed in _resume
                handles.extend(layer.register_forward_pre_hook(self._record_native, with_kwargs=True)
                               for layer in native_layers(root))
            handles.append(root.register_forward_hook(self._resume, always_call=True))
        return handles

    def _pause(self, module: torch.nn.Module, args: Any, kwargs: Any) -> None:
        """A native module starts: leave the watching mode, whose mere presence would switch its fast path off."""
        if self._mode is not None and not self._paused:
            self._mode.__exit__(None, None, None)
            self._paused = True
        if isinstance(module, torch.nn.TransformerEncoder):
            self._encoder_call = (args, dict(kwargs))

    def _resume(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        call, self._encoder_call = self._encoder_call, None
        if call is not None and output is not None and isinstance(module, torch.nn.TransformerEncoder):
            self._replay_encoder(module, *call)
        if self._mode is not None and self._paused:
            self._mode.__enter__()
            self._paused = False

    def _replay_encoder(self, encoder: torch.nn.TransformerEncoder, args: tuple, kwargs: dict[str, Any]) -> None:
        """Record each layer's attention by running the layers again on the encoder's input, hooks suspended.

        A hook on a layer (or anything inside it) would switch the layer's fused kernel off, so the real forward
        runs with none and stays bit for bit what it is without capture; the replay gives each layer's input.
        """
        bound = inspect.signature(type(encoder).forward).bind(encoder, *args, **kwargs)
        bound.apply_defaults()
        call = dict(bound.arguments)
        x, padding = call["src"], call["src_key_padding_mask"]
        options = {"src_mask": call["mask"], "src_key_padding_mask": padding, "is_causal": call["is_causal"]}
        with torch.no_grad(), suspended_hooks(encoder.layers):
            for layer in encoder.layers:
                self._record_native(layer, (x,), options)
                x = layer(x, **options)

    def _record_native(self, layer: torch.nn.Module, args: Any, kwargs: Any) -> None:
        mha, query, key, padding, mask = layer_attention_inputs(layer, args, kwargs)
        with torch.no_grad():
            q, k, additive = mha_query_key(mha, query.detach(), key.detach(), padding, mask)
        self._record(lambda index: attention_probabilities(q, k, additive, query_index=index), q.shape, k.shape[-2])

    def attach_context(self, parent: torch.nn.Module) -> list[RemovableHandle]:
        """Note the parent's input shape: a windowed block partitions its image before calling its attention."""
        return [parent.register_forward_pre_hook(self._enter_parent, with_kwargs=True)]

    def _enter_parent(self, module: torch.nn.Module, args: Any, kwargs: Any) -> None:
        self._parent_shape = first_tensor_shape(args, kwargs)

    def _enter(self, module: torch.nn.Module, args: Any, kwargs: Any) -> None:
        self._module_shape = first_tensor_shape(args, kwargs)
        stride = getattr(module, "query_stride", None)  # Hiera/SAM2: (s, s) when the module pools its queries
        self._query_stride = int(stride[0]) if isinstance(stride, (tuple, list)) and stride else None
        self._call_start = len(self._calls)
        if isinstance(module, NATIVE_MODULES):
            return  # recorded from its weights by _record_native; its forward runs as it would
        # nn.MultiheadAttention's eval fast path calls a fused kernel that bypasses SDPA; the slow path is exact.
        self._fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        self._mode = AttentionMode(self._record)
        self._paused = False
        self._mode.__enter__()

    def _leave(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._mode is not None:
            if not self._paused:
                self._mode.__exit__(None, None, None)
            self._mode = None
            self._paused = False
        if self._fastpath is not None:
            torch.backends.mha.set_fastpath_enabled(self._fastpath)
            self._fastpath = None
        if output is None:  # the forward raised: keep nothing half-made of this call
            del self._calls[self._call_start:]
            return
        if len(self._calls) == self._call_start:
            logger.warning(
                "AttentionDebugger on %r saw no scaled_dot_product_attention or MultiheadAttention call; "
                "attach it to the module that computes attention", self.layer_name,
            )
        self._module_calls += 1

    def discard(self) -> None:
        super().discard()
        self._calls = []
        self._module_calls = 0

    @property
    def last_capture(self) -> Any:  # type: ignore[override]
        """Whether attention calls wait to be handed over (their raw records), else None; setting None forgets them."""
        return list(self._calls) or None

    @last_capture.setter
    def last_capture(self, value: Any) -> None:
        if value is None:
            self.discard()

    # -- recording ---------------------------------------------------------------------------------------------------
    def _record(self, probabilities: Callable[[torch.Tensor | None], torch.Tensor], q_shape: torch.Size,
                num_keys: int) -> None:
        num_queries = q_shape[-2]
        rows = int(q_shape[0]) if len(q_shape) >= 3 else 1
        windows = window_layout(rows, num_queries, num_keys, self._module_shape, self._parent_shape, self._query_stride)
        with torch.no_grad():
            if windows is not None:
                attn, info, extra = self._windowed(probabilities, windows)
            else:
                attn, info, extra = self._plain(probabilities, num_queries, num_keys)
        row_entropy = -(attn * attn.clamp_min(1e-12).log()).sum(dim=-1)
        stats = {"entropy": row_entropy.flatten(1).mean(dim=1), "max": attn.flatten(1).amax(dim=1), **extra}
        info["weights"] = cast_float(attn, self.dtype)
        info["module_call"] = self._module_calls
        groups = [] if windows is not None else group_layouts(rows, self._module_shape, self._parent_shape)
        self._calls.append(_Call(info, stats, rows, windows, groups))

    def _plain(self, probabilities: Callable[[torch.Tensor | None], torch.Tensor], num_queries: int,
               num_keys: int) -> tuple[torch.Tensor, dict[str, Any], dict[str, torch.Tensor]]:
        """Batch-first (or grouped) rows: keep evenly spaced queries, pool keys on their grid."""
        kept = limit_tokens(num_queries, self.max_tokens)
        index = None if len(kept) == num_queries else torch.tensor(kept)
        attn = probabilities(index).detach()
        while attn.dim() < 4:  # (Lq, Lk) or (B, Lq, Lk): one head, one datapoint
            attn = attn.unsqueeze(0 if attn.dim() == 2 else 1)
        if attn.dim() > 4:  # extra leading dims are folded into the head axis
            attn = attn.reshape(attn.shape[0], -1, *attn.shape[-2:])
        key_grid, prefix = self._grid(num_keys)
        query_grid, _ = self._grid(num_queries)
        attn, pooled_grid, block = pool_keys(attn.float(), key_grid, prefix, self.max_tokens)
        return attn, _token_info(kept, num_queries, num_keys, query_grid, pooled_grid, prefix, block), {}

    def _windowed(self, probabilities: Callable[[torch.Tensor | None], torch.Tensor],
                  windows: Windows) -> tuple[torch.Tensor, dict[str, Any], dict[str, torch.Tensor]]:
        """Windowed rows of the kept image queries: stitched onto the image's key grid, or over their own window."""
        attn = probabilities(None).detach().float()
        while attn.dim() < 4:
            attn = attn.unsqueeze(1)
        num_queries = windows.query_grid[0] * windows.query_grid[1]
        num_keys = windows.key_grid[0] * windows.key_grid[1]
        kept = limit_grid_tokens(windows.query_grid, self.max_tokens)
        cells = torch.tensor(kept, device=attn.device)
        form = self.windows
        if form == "auto":  # stitch only when the image's key grid needs no pooling, which would blur whole windows
            form = "stitch" if self.max_tokens is None or num_keys <= self.max_tokens else "local"
        if form == "stitch":
            placed, padding_mass = stitch_windows(attn, windows, cells)
            placed, pooled_grid, block = pool_keys(placed, windows.key_grid, 0, self.max_tokens)
            info = _token_info(kept, num_queries, num_keys, windows.query_grid, pooled_grid, 0, block)
            info["windows"] = {**windows.describe(), "form": "stitched"}
            return placed, info, {"padding_mass": padding_mass.flatten(1).mean(dim=1)}
        rows, origin = window_rows(attn, windows, cells)
        info = _token_info(kept, num_queries, windows.key_window[0] * windows.key_window[1], windows.query_grid,
                           windows.key_window, 0, 1)
        info["windows"] = {**windows.describe(), "form": "local", "key_window_origin": origin.tolist()}
        return rows, info, {}

    def _grid(self, num_tokens: int) -> tuple[tuple[int, int] | None, int]:
        if self.grid is not None:
            h, w = self.grid
            return ((h, w), num_tokens - h * w) if 0 <= num_tokens - h * w else (None, 0)
        if self.infer_grid:
            found = square_grid(num_tokens)
            if found is not None:
                return found
        return None, 0

    def process_forward(self, module: torch.nn.Module, input: Any, output: Any) -> dict[str, Any]:
        """Unused: calls are recorded by the attention mode and handed over by :meth:`__call__`."""
        return {}

    # -- hand-over -----------------------------------------------------------------------------------------------------
    def __call__(self, datapoint: Mapping[str, Any], model: torch.nn.Module) -> dict[str, Any] | None:
        """Every attention call since the forward pass began, each filed by datapoint (windows and groups mapped)."""
        calls, ran = self._calls, self._module_calls
        self.discard()
        if not calls:
            return {} if ran else None  # {}: the module ran without attention (warned); None: it did not run
        batch = datapoint_batch_size(datapoint)
        self._max_calls_seen = max(self._max_calls_seen, len(calls))
        out: dict[str, Any] = {}
        for i, call in enumerate(calls):
            attention, stats = self._by_datapoint(call, batch)
            out[f"attention{call_suffix(i)}"] = attention
            out[f"stats{call_suffix(i)}"] = stats
        return out

    def _by_datapoint(self, call: _Call, batch: int | None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        info, stats = dict(call.info), dict(call.stats)
        if call.windows is not None:
            if batch is not None and call.windows.batch != batch:
                raise CaptureError(self._unmapped(call, batch))
            info["axes"] = ["head", "query", "key"]
            return info, stats
        if batch is None or call.rows == batch:
            info["axes"] = ["head", "query", "key"]
            return info, stats
        groups = next((g for g in call.groups if g.batch == batch), None)
        if self.groups is not None:
            groups = Groups(batch, self.groups) if batch * self.groups == call.rows else None
        if groups is None:
            raise CaptureError(self._unmapped(call, batch))
        weights = info["weights"]
        info["weights"] = weights.reshape(batch, groups.groups, *weights.shape[1:])
        info["axes"] = [self.group_axis, "head", "query", "key"]
        info[f"num_{self.group_axis}s"] = groups.groups
        return info, {
            "entropy": stats["entropy"].reshape(batch, -1).mean(dim=1),
            "max": stats["max"].reshape(batch, -1).amax(dim=1),
        }

    def _unmapped(self, call: _Call, batch: int) -> str:
        return (
            f"AttentionDebugger on {self.layer_name!r}: an attention call has {call.rows} rows in its leading "
            f"dimension but the batch has {batch} datapoints, and neither the module's input "
            f"{self._module_shape} nor its parent's {self._parent_shape} says how the rows map to datapoints. "
            f"If the rows are batch × G in batch-major order, declare it with AttentionDebugger(..., groups=G); "
            "else attach the debugger to a module whose attention runs on the batch."
        )

    def kinds(self) -> dict[str, str]:
        kinds: dict[str, str] = {}
        for i in range(self._max_calls_seen):
            kinds[f"attention{call_suffix(i)}"] = Kind.ATTENTION
            kinds[f"stats{call_suffix(i)}"] = Kind.STATS
        return kinds

    def call_kinds(self) -> dict[str, str]:
        return self.kinds()  # every call already has its own keys


def _native_roots(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The outermost PyTorch transformer modules in ``module`` (itself included), recorded from their weights."""
    if isinstance(module, NATIVE_MODULES):
        return [module]
    roots: list[torch.nn.Module] = []
    for child in module.children():
        roots.extend(_native_roots(child))
    return roots


@dataclass
class _Call:
    """One attention call as recorded: rows in the kernel's leading dimension and how they may map to datapoints."""

    info: dict[str, Any]
    stats: dict[str, torch.Tensor]
    rows: int
    windows: Windows | None
    groups: list[Groups]


def _token_info(kept: list[int], num_queries: int, num_keys: int, query_grid: tuple[int, int] | None,
                key_grid: tuple[int, int] | None, prefix: int, block: int) -> dict[str, Any]:
    return {
        "query_index": kept,
        "num_queries": int(num_queries),
        "num_keys": int(num_keys),
        "query_grid": list(query_grid) if query_grid else None,
        "key_grid": list(key_grid) if key_grid else None,
        "num_prefix_tokens": int(prefix),
        "key_pool": int(block),
    }
