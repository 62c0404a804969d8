"""The comparison part of the URL and what it resolves to: ``vs_run=R&vs_split=val&vs_epoch=N`` and friends.

The main pass (``run``, ``split``, ``epoch``) is pass *a*, the reference; ``vs_*`` names pass *b*. ``align=KEY``
aligns datapoints by a meta_info key (by index without it), ``filter=`` picks which deltas the table lists and ← →
walk (``all``, ``regressed``, ``improved``, ``forgotten``, ``changed``), ``change=``, ``good=``, ``bad=`` override the
thresholds (:class:`~eval_viewer.backend.compare.Thresholds`), ``focus=`` names the item key whose card the paired
view puts first. With ``idx=I`` (a datapoint of pass a) the paired view is shown. No Dash here: tested directly.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from eval_viewer.backend import LogStore, PassKey
from eval_viewer.backend.compare import DELTA_FILTERS, Deltas, Thresholds, deltas
from eval_viewer.backend.summary import alignment_for
from eval_viewer.errors import NotFoundError
from eval_viewer.log_format import SPLIT_VAL

__all__ = ["CompareState", "parse_vs", "vs_params", "vs_pass", "compare_deltas", "compare_position",
           "ComparePosition", "list_order", "pass_token", "parse_pass_token", "AT_LEAST", "at_least"]


@dataclass(frozen=True)
class CompareState:
    run: str
    split: str | None = None
    step: int | None = None
    align: str | None = None
    filter: str = "all"
    change: float | None = None
    good: float | None = None
    bad: float | None = None
    focus: str | None = None

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.change, self.good, self.bad)


def _last(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values and values[-1] != "" else None


def _number(query: dict[str, list[str]], name: str, kind: type) -> Any:
    raw = _last(query, name)
    if raw is None:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise NotFoundError(f"The URL's {name}={raw!r} is not a number") from None


def parse_vs(query: dict[str, list[str]]) -> CompareState | None:
    """The comparison a parsed query string names, or None without ``vs_run``."""
    run = _last(query, "vs_run")
    if run is None:
        return None
    split = _last(query, "vs_split")
    epoch = _number(query, "vs_epoch", int)
    step = epoch if epoch is not None else _number(query, "vs_step", int)
    if split is None and epoch is not None:
        split = SPLIT_VAL
    chosen = _last(query, "filter") or "all"
    return CompareState(run=run, split=split, step=step, align=_last(query, "align"),
                        filter=chosen if chosen in DELTA_FILTERS else "all",
                        change=_number(query, "change", float), good=_number(query, "good", float),
                        bad=_number(query, "bad", float), focus=_last(query, "focus"))


def vs_params(vs: CompareState | None) -> list[tuple[str, Any]]:
    """The query parameters of ``vs`` (None left out), after the main state's."""
    if vs is None:
        return []
    step_name = "vs_epoch" if vs.split == SPLIT_VAL else "vs_step"
    return [("vs_run", vs.run), ("vs_split", vs.split), (step_name, vs.step), ("align", vs.align),
            ("filter", None if vs.filter == "all" else vs.filter), ("change", vs.change), ("good", vs.good),
            ("bad", vs.bad), ("focus", vs.focus)]


def vs_pass(store: LogStore, vs: CompareState) -> PassKey:
    """Pass b: the named pass, the latest step of a named split, or the run's default pass."""
    run = store.run(vs.run)
    if vs.split is None and vs.step is None:
        return run.default_pass.key
    if vs.split is not None and vs.step is None and run.steps(vs.split) and None not in run.steps(vs.split):
        return run.find(vs.split, run.steps(vs.split)[-1]).key
    return run.find(vs.split or SPLIT_VAL, vs.step).key


_cache: OrderedDict[tuple[Any, ...], Deltas] = OrderedDict()
_lock = threading.Lock()


def compare_deltas(store: LogStore, a: PassKey, vs: CompareState, metric: str) -> Deltas:
    """Deltas of ``metric`` from pass ``a`` to the pass ``vs`` names; the last few are kept (← → and the panels ask
    for the same ones)."""
    b = vs_pass(store, vs)
    key = (id(store), store.version, a, b, metric, vs.align, vs.thresholds)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    sa, sb = store.scores(a), store.scores(b)
    for scores, name in ((sa, a), (sb, b)):
        if metric not in scores.per_datapoint:
            raise NotFoundError(f"{name} has no metric {metric!r} (metrics: {', '.join(scores.metrics) or 'none'})")
    found = deltas(sa.per_datapoint[metric], sb.per_datapoint[metric], metric, sa.higher_is_better.get(metric, True),
                   alignment_for(store, a, b, vs.align), vs.thresholds)
    with _lock:
        _cache[key] = found
        while len(_cache) > 8:
            _cache.popitem(last=False)
    return found


def list_order(d: Deltas, which: str) -> np.ndarray:
    """Rows of the list ``which`` as the table shows them and ← → walk them: the biggest improvement first for
    ``improved``, the worst regression first otherwise."""
    return d.order(which, worst_first=which != "improved")


@dataclass(frozen=True)
class ComparePosition:
    """Where datapoint ``idx`` (of pass a) sits in the filtered delta list, worst regression first."""

    rank: int | None
    total: int
    prev_idx: int | None
    next_idx: int | None
    partner: int | None


def compare_position(d: Deltas, which: str, idx: int) -> ComparePosition:
    """Rank and neighbours of ``idx`` in the list ``which`` (``rank`` None when it is not in that list: then ← → go
    to the list's first and last)."""
    order = d.idx_a[list_order(d, which)]
    partner = d.alignment.b_of(idx)
    where = np.flatnonzero(order == idx)
    if where.size == 0:
        first = int(order[0]) if order.size else None
        return ComparePosition(None, int(order.size), None, first, partner)
    pos = int(where[0])
    prev_idx = int(order[pos - 1]) if pos > 0 else None
    next_idx = int(order[pos + 1]) if pos + 1 < order.size else None
    return ComparePosition(pos + 1, int(order.size), prev_idx, next_idx, partner)


# ------------------------------------------------------------------------------------------------- common failures
AT_LEAST = ("all", "most", "any")
"""How many of the chosen passes a datapoint must fail in to be listed: every one, more than half, or one."""


def at_least(which: str, passes: int) -> int:
    """The smallest failure count listed for ``which`` (one of :data:`AT_LEAST`) among ``passes`` passes."""
    if which == "all":
        return passes
    if which == "any":
        return 1
    return passes // 2 + 1


def pass_token(key: PassKey) -> str:
    """A pass as one dropdown value: ``run|split|step`` (run names are URL-safe, so they hold no ``|``)."""
    return f"{key.run}|{key.split}|{'' if key.step is None else key.step}"


def parse_pass_token(token: str) -> PassKey:
    """The pass a :func:`pass_token` names; :class:`NotFoundError` for anything else."""
    run, split, step = (str(token).rsplit("|", 2) + ["", ""])[:3] if str(token).count("|") >= 2 else ("", "", "")
    if not run or not split:
        raise NotFoundError(f"Not a pass: {token!r}")
    try:
        return PassKey(run, split, int(step) if step else None)
    except ValueError:
        raise NotFoundError(f"Not a pass: {token!r}") from None
