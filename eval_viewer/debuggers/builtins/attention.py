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

    {"attention": {"form": "map" | "top_k",                 # what the byte budget kept (see _attention_budget)
                   "weights": (B, heads, Lq', Lk'),         # form "map" only; rows sum to 1
                   "top_k": {"index": (B, heads, Lq', k) int, "values": (B, heads, Lq', k), "k": k,
                             "key_grid": [h, w] | None, "num_prefix_tokens": int},  # exact, unpooled keys;
                                                            # absent when the map is kept with key_pool 1
                   "summary": {"entropy", "top_k_mass", "max": (B, heads), "k": k, "queries": Lq},  # every row
                   "chosen": {"query_index": (B, P), "weights": (B, heads, P, L), "key_grid", ...},  # queries=
                   "axes": ["head", "query", "key"],        # per datapoint; ["prompt", "head", ...] with groups
                   "query_index": [int],                    # which of the Lq queries were kept
                   "num_queries": Lq, "num_keys": Lk,
                   "query_grid": [h, w] | None, "key_grid": [h', w'] | None,
                   "num_prefix_tokens": int,                # class/register tokens before the grid
                   "key_pool": int,                         # keys summed in key_pool (x key_pool) blocks
                   "module_call": int},                     # which call of the module made it (0, 1, ...)
     "stats": {"entropy": (B,), "max": (B,)},               # mean row entropy (nats) over every row, largest weight
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
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from eval_viewer.debuggers.base import Calls, ForwardDebugger, call_suffix, datapoint_batch_size
from eval_viewer.debuggers.builtins._attention_budget import (
    FORM_MAP,
    FORM_TOP_K,
    QuerySource,
    cells_of_points,
    chunk_size,
    datapoint_queries,
    nbytes_per_datapoint,
    row_summary,
    summary_of_rows,
    top_k_rows,
)
from eval_viewer.debuggers.builtins._attention_math import (
    AttentionMode,
    attention_probabilities,
    limit_grid_tokens,
    limit_tokens,
    pool_keys,
)
from eval_viewer.debuggers.builtins._targets import input_size
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

DEFAULT_MAX_BYTES = 96 * 1024
"""Bytes of maps per debugger and datapoint by default: SAM2's 19 attention modules stay under 5 MB per image."""

class AttentionDebugger(ForwardDebugger):
    """Per-head attention maps of every attention call inside the module ``layer_name`` (see the module docstring).

    ``grid=(h, w)`` names the key/query token grid when it is not a square (plus class tokens) that can be inferred;
    ``infer_grid=False`` turns inference off for sequences that are not images. ``dtype=torch.float16`` stores the kept
    weights (maps, top-k values, chosen rows) rounded to float16, halving their bytes, and the byte budget counts
    them at that size; summaries and stats stay float32. ``groups=G`` declares that the kernel's leading dimension is
    ``batch × G`` in batch-major order when that cannot be read from the module's inputs (see
    :mod:`eval_viewer.debuggers.layouts`); ``group_axis`` names that axis in the output (SAM2's mask decoder: one
    entry per prompt). ``windows``: how windowed attention is kept,
    ``"stitch"`` (rows over the whole image's key grid, pooled to ``max_tokens`` keys), ``"local"`` (rows over the
    query's own window, exact at any size, with each window's place on the image) or ``"auto"`` (stitched when the
    image's key grid fits ``max_tokens`` unpooled, else local: pooling keys in blocks as large as a window would
    leave nothing of the map).

    The storage budget (per datapoint; see :mod:`._attention_budget`): per-head summaries over every query are always
    kept; ``top_k`` keys of each kept query are kept exactly (indices and values) when the map is not, or is pooled;
    the maps of the debugger's calls are kept in call order while they fit ``max_bytes`` together (None: no limit).
    ``queries`` names each datapoint's chosen queries (a dotted path into the batch dict such as
    ``"meta_info.points"``, or a callable of the batch dict): ``query_coords="xy"`` reads them as (x, y) points in
    the input image's pixels (its size from ``inputs``, or ``inputs[input_key]``), ``"index"`` as query indices;
    their rows are kept exactly, outside the budget (the module's q and k are held until the hand-over for them).
    ``calls="first"`` or ``"last"`` keeps the attention of the module's first or last call in a forward pass only.
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
        top_k: int = 8,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        queries: QuerySource | None = None,
        query_coords: str = "xy",
        input_key: str | None = None,
        calls: Calls = "all",
    ) -> None:
        super().__init__(layer_name, calls)
        if max_tokens is not None and max_tokens < 1:
            raise CaptureError(f"max_tokens must be >= 1 or None, got {max_tokens}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise CaptureError(f"top_k must be a positive int, got {top_k!r}")
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0):
            raise CaptureError(f"max_bytes must be an int >= 0 or None, got {max_bytes!r}")
        if query_coords not in ("xy", "index"):
            raise CaptureError(f"query_coords must be 'xy' or 'index', got {query_coords!r}")
        self.top_k = top_k
        self.max_bytes = max_bytes
        self.queries = queries
        self.query_coords = query_coords
        self.input_key = input_key
        self._warned_chosen = False
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
        self._holds_fastpath = False

    # -- hooks -------------------------------------------------------------------------------------------------------
    def attach(self, module: torch.nn.Module) -> list[RemovableHandle]:
        """Watch ``module`` from its pre-hook to its forward hook (run even when the forward raises).

        PyTorch's own transformer modules inside it (or it itself) are recorded from their weights and run untouched,
        with the watching paused while they run (see :mod:`._torch_attention`), so their fast paths and nested
        tensors behave exactly as without capture. ``_leave`` is registered last: when ``module`` is itself an
        ``nn.TransformerEncoder``, its layers are replayed by ``_resume``, a forward hook on the same module, and
        hooks run in registration order, so the count of calls (and the warning when there are none) comes after.
        """
        handles = [module.register_forward_pre_hook(self._enter, with_kwargs=True)]
        for root in _native_roots(module):
            handles.append(root.register_forward_pre_hook(self._pause, with_kwargs=True))
            if not isinstance(root, torch.nn.TransformerEncoder):  # an encoder's layers are replayed in _resume
                handles.extend(layer.register_forward_pre_hook(self._record_native, with_kwargs=True)
                               for layer in native_layers(root))
            handles.append(root.register_forward_hook(self._resume, always_call=True))
        handles.append(module.register_forward_hook(self._leave, always_call=True))
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
        _hold_fastpath_off()
        self._holds_fastpath = True
        self._mode = AttentionMode(self._record)
        self._paused = False
        self._mode.__enter__()

    def _leave(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._mode is not None:
            if not self._paused:
                self._mode.__exit__(None, None, None)
            self._mode = None
            self._paused = False
        if self._holds_fastpath:
            _release_fastpath()
            self._holds_fastpath = False
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
                call = self._windowed(probabilities, windows)
            else:
                call = self._plain(probabilities, num_queries, num_keys)
        call.info["module_call"] = self._module_calls
        call.rows, call.windows = rows, windows
        call.groups = [] if windows is not None else group_layouts(rows, self._module_shape, self._parent_shape)
        call.probabilities = probabilities if self.queries is not None else None  # chosen rows: at the hand-over
        self._calls.append(call)

    def _plain(self, probabilities: Callable[[torch.Tensor | None], torch.Tensor], num_queries: int,
               num_keys: int) -> _Call:
        """Batch-first (or grouped) rows: keep evenly spaced queries, pool keys on their grid; summarise every row."""
        kept = limit_tokens(num_queries, self.max_tokens)
        index = None if len(kept) == num_queries else torch.tensor(kept)
        exact = _rows_heads_first(probabilities(index).detach().float())
        if index is None:
            summary = row_summary(exact, self.top_k)
        else:  # every query, a chunk at a time: the map keeps a few, the summary speaks for all
            step = chunk_size(exact.shape[0] * exact.shape[1], num_keys)
            parts = [row_summary(_rows_heads_first(probabilities(torch.arange(i, min(i + step, num_queries))).float()),
                                 self.top_k) for i in range(0, num_queries, step)]
            summary = tuple(torch.cat(values, dim=-1) for values in zip(*parts))
        key_grid, prefix = self._grid(num_keys)
        query_grid, _ = self._grid(num_queries)
        top = top_k_rows(exact, self.top_k, self.dtype)
        top.update(key_grid=list(key_grid) if key_grid else None, num_prefix_tokens=int(prefix))
        attn, pooled_grid, block = pool_keys(exact, key_grid, prefix, self.max_tokens)
        info = _token_info(kept, num_queries, num_keys, query_grid, pooled_grid, prefix, block)
        return _Call(info, attn, summary_of_rows(*summary, self.top_k), top, {})

    def _windowed(self, probabilities: Callable[[torch.Tensor | None], torch.Tensor], windows: Windows) -> _Call:
        """Windowed rows of the kept image queries: stitched onto the image's key grid, or over their own window."""
        attn = _rows_heads_first(probabilities(None).detach().float())
        summary = tuple(_per_image_query(values, windows) for values in row_summary(attn, self.top_k))
        num_queries = windows.query_grid[0] * windows.query_grid[1]
        num_keys = windows.key_grid[0] * windows.key_grid[1]
        kept = limit_grid_tokens(windows.query_grid, self.max_tokens)
        cells = torch.tensor(kept, device=attn.device)
        form = self.windows
        if form == "auto":  # stitch only when the image's key grid needs no pooling, which would blur whole windows
            form = "stitch" if self.max_tokens is None or num_keys <= self.max_tokens else "local"
        if form == "stitch":
            placed, padding_mass = stitch_windows(attn, windows, cells)
            top = top_k_rows(placed, self.top_k, self.dtype)
            top.update(key_grid=list(windows.key_grid), num_prefix_tokens=0)
            placed, pooled_grid, block = pool_keys(placed, windows.key_grid, 0, self.max_tokens)
            info = _token_info(kept, num_queries, num_keys, windows.query_grid, pooled_grid, 0, block)
            info["windows"] = {**windows.describe(), "form": "stitched"}
            extra = {"padding_mass": padding_mass.flatten(1).mean(dim=1)}
            return _Call(info, placed, summary_of_rows(*summary, self.top_k), top, extra)
        rows, origin = window_rows(attn, windows, cells)
        top = top_k_rows(rows, self.top_k, self.dtype)
        top.update(key_grid=list(windows.key_window), num_prefix_tokens=0)
        info = _token_info(kept, num_queries, windows.key_window[0] * windows.key_window[1], windows.query_grid,
                           windows.key_window, 0, 1)
        info["windows"] = {**windows.describe(), "form": "local", "key_window_origin": origin.tolist()}
        return _Call(info, rows, summary_of_rows(*summary, self.top_k), top, {})

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
        """Every attention call since the forward pass began, each filed by datapoint (windows and groups mapped),
        maps kept in call order while they fit ``max_bytes`` per datapoint (see :mod:`._attention_budget`)."""
        calls, ran = self._calls, self._module_calls
        self.discard()
        if not calls:
            return {} if ran else None  # {}: the module ran without attention (warned); None: it did not run
        if self.calls != "all":  # the attention calls of the module's first or last call only
            which = calls[0 if self.calls == "first" else -1].info["module_call"]
            calls = [c for c in calls if c.info["module_call"] == which]
        batch = datapoint_batch_size(datapoint)
        self._max_calls_seen = max(self._max_calls_seen, len(calls))
        out: dict[str, Any] = {}
        spent = 0
        for i, call in enumerate(calls):
            datapoints, groups = self._layout(call, batch)
            attention, stats = self._by_datapoint(call, datapoints, groups)
            cost = nbytes_per_datapoint(call.weights, datapoints, self.dtype)
            if self.max_bytes is None or spent + cost <= self.max_bytes:
                spent += cost
                attention["form"] = FORM_MAP
                if attention["key_pool"] == 1:
                    del attention["top_k"]  # the map itself is exact: its top-k would repeat it
            else:
                attention["form"] = FORM_TOP_K
                del attention["weights"]
            if call.probabilities is not None:
                chosen = self._chosen(call, datapoint, datapoints, groups)
                if chosen is not None:
                    attention["chosen"] = chosen
            out[f"attention{call_suffix(i)}"] = attention
            out[f"stats{call_suffix(i)}"] = stats
        return out

    def _layout(self, call: _Call, batch: int | None) -> tuple[int, int | None]:
        """How many datapoints the call's rows are, and the group count when each holds several rows (or None)."""
        if call.windows is not None:
            if batch is not None and call.windows.batch != batch:
                raise CaptureError(self._unmapped(call, batch))
            return call.windows.batch, None
        if batch is None or call.rows == batch:
            return call.rows, None
        groups = next((g for g in call.groups if g.batch == batch), None)
        if self.groups is not None:
            groups = Groups(batch, self.groups) if batch * self.groups == call.rows else None
        if groups is None:
            raise CaptureError(self._unmapped(call, batch))
        return batch, groups.groups

    def _by_datapoint(self, call: _Call, datapoints: int, groups: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
        def split(tensor: torch.Tensor) -> torch.Tensor:
            return tensor if groups is None else tensor.reshape(datapoints, groups, *tensor.shape[1:])

        info = dict(call.info)
        info["weights"] = split(cast_float(call.weights, self.dtype))
        info["top_k"] = {k: split(v) if isinstance(v, torch.Tensor) else v for k, v in call.top_k.items()}
        summary = {k: split(v) if isinstance(v, torch.Tensor) else v for k, v in call.summary.items()}
        info["summary"] = summary
        info["axes"] = ["head", "query", "key"] if groups is None else [self.group_axis, "head", "query", "key"]
        if groups is not None:
            info[f"num_{self.group_axis}s"] = groups
        stats = {"entropy": summary["entropy"].flatten(1).mean(dim=1), "max": summary["max"].flatten(1).amax(dim=1),
                 **call.extra}
        return info, stats

    def _chosen(self, call: _Call, datapoint: Mapping[str, Any], datapoints: int,
                groups: int | None) -> dict[str, Any] | None:
        """Exact rows of each datapoint's chosen queries, or None where they cannot be placed (warned once)."""
        assert self.queries is not None and call.probabilities is not None
        wanted = datapoint_queries(datapoint, self.queries, self.query_coords, datapoints)
        num_queries = call.info["num_queries"]
        query_grid, prefix = (call.windows.query_grid, 0) if call.windows is not None else self._grid(num_queries)
        if self.query_coords == "xy":
            size = input_size(datapoint.get("inputs"), self.input_key)
            if query_grid is None or size is None:
                if not self._warned_chosen:  # token queries (a decoder's prompts) are expected; no image size is not
                    logger.log(logging.INFO if query_grid is None else logging.WARNING,
                               "AttentionDebugger on %r: chosen (x, y) queries kept no rows: the %s", self.layer_name,
                               f"{num_queries} queries lie on no image grid" if query_grid is None else
                               "input image size is unknown (set input_key)")
                    self._warned_chosen = True
                return None
            wanted = cells_of_points(wanted, size, query_grid) + prefix
        if wanted.numel() and not 0 <= int(wanted.min()) <= int(wanted.max()) < num_queries:
            raise CaptureError(f"AttentionDebugger on {self.layer_name!r}: chosen queries {wanted.tolist()} are not "
                               f"all among the module's {num_queries} queries")
        with torch.no_grad():
            if call.windows is not None:
                attn = _rows_heads_first(call.probabilities(None).float())
                picked = [window_rows(attn, call.windows, cells.to(attn.device)) for cells in wanted]
                weights = torch.stack([rows[b] for b, (rows, _) in enumerate(picked)])
                origin = torch.stack([o for _, o in picked])
                return {"query_index": wanted, "weights": cast_float(weights, self.dtype),
                        "key_grid": list(call.windows.key_window), "num_prefix_tokens": 0, "key_window_origin": origin}
            per = groups or 1
            rows = [_rows_heads_first(call.probabilities(index).float())[b * per:(b + 1) * per]
                    for b, index in enumerate(wanted)]
            weights = torch.stack([r if groups else r[0] for r in rows])
        key_grid, key_prefix = self._grid(call.info["num_keys"])
        return {"query_index": wanted, "weights": cast_float(weights, self.dtype),
                "key_grid": list(key_grid) if key_grid else None, "num_prefix_tokens": int(key_prefix)}

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


_FASTPATH_HOLDS: list[Any] = [0, None]  # [debuggers inside a watched module now, the setting before the first]


def _hold_fastpath_off() -> None:
    """MHA's fused fast path off while any debugger watches; several on one module give it back once, in any order."""
    if _FASTPATH_HOLDS[0] == 0:
        _FASTPATH_HOLDS[1] = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
    _FASTPATH_HOLDS[0] += 1


def _release_fastpath() -> None:
    _FASTPATH_HOLDS[0] -= 1
    if _FASTPATH_HOLDS[0] == 0:
        torch.backends.mha.set_fastpath_enabled(bool(_FASTPATH_HOLDS[1]))


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
    """One attention call as recorded (every tensor rows-first) and how its rows may map to datapoints."""

    info: dict[str, Any]
    weights: torch.Tensor
    summary: dict[str, Any]
    top_k: dict[str, Any]
    extra: dict[str, torch.Tensor]
    rows: int = 0
    windows: Windows | None = None
    groups: list[Groups] = field(default_factory=list)
    probabilities: Callable[[torch.Tensor | None], torch.Tensor] | None = None


def _rows_heads_first(attn: torch.Tensor) -> torch.Tensor:
    """Kernel probabilities as ``(rows, heads, queries, keys)``: one head or one row added, extra dims folded."""
    while attn.dim() < 4:  # (Lq, Lk) or (B, Lq, Lk): one head, one datapoint
        attn = attn.unsqueeze(0 if attn.dim() == 2 else 1)
    if attn.dim() > 4:  # extra leading dims are folded into the head axis
        attn = attn.reshape(attn.shape[0], -1, *attn.shape[-2:])
    return attn


def _per_image_query(values: torch.Tensor, windows: Windows) -> torch.Tensor:
    """Per-row values ``(B · windows, heads, Lq_w)`` -> ``(B, heads, image query cells)`` (padding rows dropped)."""
    window_of, token_of = windows.query_slots()
    per_window = values.reshape(windows.batch, windows.per_image, *values.shape[1:]).permute(0, 2, 1, 3)
    return per_window[:, :, window_of.to(values.device), token_of.to(values.device)]


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
