"""What the user is looking at, as it lives in the URL: ``?run=NAME&split=val&epoch=N&metric=M&idx=I``.

The query string is the app's single source of truth, so a reload or a shared link opens the same view. This module
turns it into a :class:`ViewState` and back, and resolves a partial state (``?run=a``) against the store into a
complete one (the run's default pass: its latest validated epoch; the first metric). It knows nothing of Dash, so it
is tested without a browser.

A pass is named by its split and step: ``split=val&epoch=9`` (a trainer's validation epoch), ``split=test`` (an
evaluation pass, no step), ``split=S&step=K`` for other stepped splits. Older links (``?run=R&epoch=9``, or an
evaluator run with no epoch) keep working: an epoch without a split means ``val``. The comparison (``vs_*``,
:mod:`eval_viewer.app.compare_state`) and the health thresholds a user changed (``health_dead=0.9``,
:mod:`eval_viewer.app.health_state`) ride along in the same query string.

Run names come from the store's index of the ``--log-dir`` paths named on the command line; a URL can only pick one
of those names and never carries a filesystem path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, urlencode

import numpy as np

from eval_viewer.app.compare_state import CompareState, parse_vs, vs_params
from eval_viewer.app.health_state import health_params, parse_health
from eval_viewer.backend import LogStore, PassKey, RunInfo, Scores
from eval_viewer.backend.health import HealthThresholds
from eval_viewer.errors import NotFoundError
from eval_viewer.log_format import SPLIT_VAL

__all__ = ["ViewState", "Resolved", "Position", "parse_query", "to_query", "resolve", "position", "with_idx",
           "pass_value", "parse_pass_value", "default_run", "TrainingView", "parse_training", "training_fragment",
           "TRAINING", "EVALUATION", "AttentionChoice", "NO_SCORES"]


@dataclass(frozen=True)
class AttentionChoice:
    """The attention query and head a user chose for one item (``key``: its item key), kept in the URL as
    ``attn=<head>,<query>,<item key>`` (``mean`` / an empty query: the mean over heads / the most peaked query), so
    a shared link reopens on them; they carry over to other datapoints, passes and runs showing that item."""

    key: str
    head: int | None = None
    query: int | None = None

    def param(self) -> str:
        return f"{'mean' if self.head is None else self.head},{'' if self.query is None else self.query},{self.key}"

    @staticmethod
    def parse(value: str) -> AttentionChoice:
        """The choice of an ``attn`` value; :class:`NotFoundError` saying what is wrong with a malformed one."""
        head, sep, rest = value.partition(",")
        query, sep2, key = rest.partition(",")
        try:
            if not (sep and sep2 and key):
                raise ValueError
            choice = AttentionChoice(key, None if head == "mean" else int(head), int(query) if query else None)
        except ValueError:
            raise NotFoundError(f"The URL's attn={value!r} is not <head or mean>,<query or nothing>,<item key>") \
                from None
        if (choice.head is not None and choice.head < 0) or (choice.query is not None and choice.query < 0):
            raise NotFoundError(f"The URL's attn={value!r} names a negative head or query")
        return choice


@dataclass(frozen=True)
class ViewState:
    """Run, pass (split and step), metric and datapoint; ``None`` means "not chosen", except ``step`` of a chosen
    split without steps (a test pass)."""

    run: str | None = None
    split: str | None = None
    step: int | None = None
    metric: str | None = None
    idx: int | None = None
    vs: CompareState | None = None
    """The pass compared with this one (``vs_run=...``, :mod:`eval_viewer.app.compare_state`), or None."""
    attn: AttentionChoice | None = None
    """The attention query and head chosen for one item (``attn=...``), or None."""
    health: HealthThresholds | None = None
    """The health thresholds the user changed (``health_dead=...``, :mod:`eval_viewer.app.health_state`); None: the
    documented defaults. The health summary, the failure table's health columns and the cards' badges all use them."""

    @property
    def pass_key(self) -> PassKey:
        """The pass of a resolved state."""
        if self.run is None or self.split is None:
            raise NotFoundError("No pass chosen")
        return PassKey(self.run, self.split, self.step)


@dataclass(frozen=True)
class Resolved:
    """A complete, checked state with what the store said about it."""

    state: ViewState
    run: RunInfo
    scores: Scores


@dataclass(frozen=True)
class Position:
    """Where a datapoint sits in the worst-first ranking of the chosen metric (``rank`` counts from 1)."""

    rank: int
    total: int
    prev_idx: int | None
    next_idx: int | None
    in_table: bool = False
    """The order is the failure table's current filter and sort (not the metric's ranking)."""


def _int_param(query: dict[str, list[str]], name: str) -> int | None:
    values = query.get(name)
    if not values or values[-1] == "":
        return None
    try:
        return int(values[-1])
    except ValueError:
        raise NotFoundError(f"The URL's {name}={values[-1]!r} is not a whole number") from None


def parse_query(search: str | None) -> ViewState:
    """The state named by a query string (with or without the leading ``?``); unknown parameters are ignored."""
    query = parse_qs((search or "").lstrip("?"), keep_blank_values=False)
    run = query.get("run", [None])[-1]
    metric = query.get("metric", [None])[-1]
    split = query.get("split", [None])[-1]
    epoch = _int_param(query, "epoch")
    step = epoch if epoch is not None else _int_param(query, "step")
    if split is None and epoch is not None:
        split = SPLIT_VAL  # links from before passes had splits
    attn = query.get("attn", [None])[-1]
    return ViewState(run=run, split=split, step=step, metric=metric, idx=_int_param(query, "idx"), vs=parse_vs(query),
                     attn=AttentionChoice.parse(attn) if attn else None, health=parse_health(query))


def to_query(state: ViewState) -> str:
    """The query string of ``state``, parameters in a fixed order and ``None`` left out; a validation pass's step is
    written ``epoch`` (what a trainer calls it), any other split's ``step``."""
    step_name = "epoch" if state.split == SPLIT_VAL else "step"
    params = [("run", state.run), ("split", state.split), (step_name, state.step), ("metric", state.metric),
              ("idx", state.idx), *vs_params(state.vs), ("attn", state.attn.param() if state.attn else None),
              *health_params(state.health)]
    kept = [(k, str(v)) for k, v in params if v is not None]
    return "?" + urlencode(kept) if kept else ""


def resolve(store: LogStore, state: ViewState, *, strict: bool = True) -> Resolved:
    """Fill in what ``state`` leaves open and check the rest against the store.

    Defaults: the most recently written trainer run (:func:`default_run`), its default pass (latest validated
    epoch, else its test pass), the first metric, no datapoint. With ``strict`` a named run, pass, metric or
    datapoint that does not exist raises :class:`NotFoundError` (a stale shared link should say so, not show
    something else) and nothing of the state is applied; without it they fall back to the defaults, which is what switching runs or passes wants.
    A pass listed without a scores file (training snapshots alone) resolves with :data:`NO_SCORES`.
    """
    runs = store.runs()
    if not runs:
        raise NotFoundError("No runs found in the log directories")
    if state.run is None:
        run = default_run(store, runs)
    elif strict or state.run in {r.name for r in runs}:
        run = store.run(state.run)
    else:
        run = default_run(store, runs)
    key = _resolve_pass(run, state.split, state.step, strict)
    scores = store.scores(key) if run.find(key.split, key.step).has_scores else NO_SCORES
    metric = state.metric
    if metric not in scores.metrics:
        if metric is not None and strict:
            known = ", ".join(scores.metrics) or "none"
            raise NotFoundError(f"Run {run.name!r} has no metric {metric!r} (metrics: {known})")
        metric = scores.metrics[0] if scores.metrics else None
    idx = state.idx
    if idx is not None and not 0 <= idx < scores.num_datapoints:
        if strict:
            raise NotFoundError(
                f"Run {run.name!r} has no datapoint {idx} (it has {scores.num_datapoints}, numbered from 0)"
            )
        idx = None
    return Resolved(ViewState(run=run.name, split=key.split, step=key.step, metric=metric, idx=idx, vs=state.vs,
                              attn=state.attn, health=state.health), run, scores)


NO_SCORES = Scores(0, {}, {}, {})
"""What a pass saved without a scores file resolves to (training snapshots written with neither ground truth nor
predictions have no metric to save): no metrics, no datapoints to rank. The app says so instead of failing; a scores
file that is listed but cannot be read still raises its error."""

_LOCAL_VERSION = re.compile(r"^\d+:(\d+)$")


def default_run(store: LogStore, runs: tuple[RunInfo, ...]) -> RunInfo:
    """The run the app opens on: the trainer run whose latest validated epoch was written last (what a user is
    training now), else the first run. A scores file's write time is known for local logs (remote listings carry an
    ETag, not a time: there the first trainer run, alphabetically, is taken)."""
    trainers = [run for run in runs if any(p.split == SPLIT_VAL and p.has_scores for p in run.passes)]
    if not trainers:
        return runs[0]

    def written(run: RunInfo) -> int:
        files = store.snapshot.files.get(run.default_pass.key)
        stat = files.scores_stat if files is not None else None
        match = _LOCAL_VERSION.match(stat.version) if stat is not None else None
        return int(match.group(1)) if match else 0

    return max(trainers, key=written)  # max keeps the first of equals: alphabetical among unknown times


def _resolve_pass(run: RunInfo, split: str | None, step: int | None, strict: bool) -> PassKey:
    """The pass ``(split, step)`` names in ``run``; its default pass when none is named (or, leniently, when the
    named one is not there). A split named without a step takes its latest step."""
    try:
        return run.choose(split, step).key
    except NotFoundError:
        if strict:
            raise
        same_split = [p for p in run.passes if p.split == split and p.has_scores]
        return (same_split[-1] if same_split else run.default_pass).key


def position(scores: Scores, metric: str | None, idx: int) -> Position:
    """Rank of ``idx`` in the worst-first ranking by ``metric`` (index order without a metric) and its neighbours."""
    order = scores.ranking(metric, worst_first=True) if metric else np.arange(scores.num_datapoints)
    where = np.flatnonzero(order == idx)
    if where.size == 0:
        raise NotFoundError(f"Datapoint {idx} is not in the ranking by {metric!r}")
    pos = int(where[0])
    prev_idx = int(order[pos - 1]) if pos > 0 else None
    next_idx = int(order[pos + 1]) if pos + 1 < len(order) else None
    return Position(rank=pos + 1, total=len(order), prev_idx=prev_idx, next_idx=next_idx)


def with_idx(state: ViewState, idx: int | None) -> ViewState:
    """``state`` looking at datapoint ``idx`` (``None``: back to the overview)."""
    return replace(state, idx=idx)



def pass_value(split: str | None, step: int | None) -> str | None:
    """The pass selector's value for a pass: ``"val:9"``, ``"test"``."""
    if split is None:
        return None
    return split if step is None else f"{split}:{step}"


def parse_pass_value(value: str | None) -> tuple[str | None, int | None]:
    """``(split, step)`` of a pass selector value (``(None, None)`` for none or a malformed one)."""
    if not value:
        return None, None
    split, _, step = str(value).partition(":")
    if not step:
        return split, None
    try:
        return split, int(step)
    except ValueError:
        return None, None


# ----------------------------------------------------------------------------------------------- the Training tab
TRAINING = "training"
EVALUATION = "evaluation"


@dataclass(frozen=True)
class TrainingView:
    """The Training tab's part of the URL: ``#view=training&step=N&idx=I&steps=a,b,c``.

    It lives in the URL's fragment, beside the query string rather than in it: the query's ``step`` names a pass
    (``split=S&step=K``) and the selectors rewrite the query when the run changes, so a fragment of its own keeps the
    tab, its step and its comparison across a run switch, a reload and a shared link. ``None`` / ``()``: not chosen
    (the view the run calls for, the latest step, which the view then follows as training writes new ones, the first
    datapoint, evenly spaced steps). Values that are not whole numbers are ignored, like a missing one.
    """

    view: str | None = None
    step: int | None = None
    idx: int | None = None
    steps: tuple[int, ...] = ()


def _whole(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def parse_training(fragment: str | None) -> TrainingView:
    """The Training tab's state of a URL fragment (with or without the leading ``#``)."""
    query = parse_qs((fragment or "").lstrip("#"), keep_blank_values=False)
    view = query.get("view", [None])[-1]
    steps = [_whole(s) for s in query.get("steps", [""])[-1].split(",")]
    return TrainingView(view=view if view in (TRAINING, EVALUATION) else None,
                        step=_whole(query.get("step", [None])[-1]), idx=_whole(query.get("idx", [None])[-1]),
                        steps=tuple(s for s in steps if s is not None))


def training_fragment(view: TrainingView) -> str:
    """The URL fragment of ``view`` (``""`` when nothing is chosen)."""
    params = [("view", view.view), ("step", view.step), ("idx", view.idx),
              ("steps", ",".join(map(str, view.steps)) if view.steps else None)]
    kept = [(k, str(v)) for k, v in params if v is not None]
    return "#" + urlencode(kept, safe=",") if kept else ""
