"""The Training tab: which view is shown, the step slider, the chosen step's composites and one datapoint across steps.

One callback keeps the tab, the slider and the selectors in step with the URL's fragment (``#view=training&step=N``,
:class:`eval_viewer.app.state.TrainingView`; Dash lets a component be input and output of one callback, not of two)
and with the listing: every ``LOG_VERSION`` change (the store's snapshot, renewed in the background) brings new steps
to the slider, and a view left at the latest step follows training. It publishes what to draw to ``TRAIN_SELECTION``
(with the files' versions, so a step that is rewritten is drawn again and an unchanged one is not); a second callback
draws from there, as plain ``<img>`` PNGs of the saved composites (:func:`eval_viewer.display.composite.snapshot_card`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import dash
from dash import Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from eval_viewer.app import ids
from eval_viewer.app.boundary import guarded
from eval_viewer.app.dash_view import to_dash
from eval_viewer.app.state import EVALUATION, TRAINING, default_run, parse_query, parse_training, training_fragment
from eval_viewer.backend import LogStore, PassKey, RunInfo
from eval_viewer.display.composite import snapshot_card
from eval_viewer.display.view import Problem
from eval_viewer.errors import ScoresError, ViewerError
from eval_viewer.log_format import SNAPSHOT_COMPOSITE, SNAPSHOT_DEBUGGER, SPLIT_TRAIN

__all__ = ["register", "training_run", "default_compare", "step_marks", "MAX_CARDS", "COMPARED"]

log = logging.getLogger(__name__)

MAX_CARDS = 16
"""Composites shown for one step (a snapshot keeps ``max_videos`` datapoints, 4 by default)."""
COMPARED = 4
"""Steps compared side by side when none are chosen: evenly spaced from the first to the latest."""
_LABELLED_MARKS = 8
_CONTROLS = (ids.VIEW_TABS, ids.TRAIN_STEP, ids.TRAIN_DATAPOINT, ids.TRAIN_COMPARE)


def training_run(store: LogStore, search: str | None) -> RunInfo | None:
    """The run the URL's query names (the app's default run when it names none or one that is not there)."""
    runs = store.runs()
    if not runs:
        return None
    try:
        name = parse_query(search).run
    except ViewerError:
        name = None
    known = {run.name: run for run in runs}
    return known[name] if name in known else default_run(store, runs)


def default_compare(steps: tuple[int, ...], count: int = COMPARED) -> list[int]:
    """``count`` steps evenly spaced over ``steps``, the first and the latest included."""
    if len(steps) <= count:
        return list(steps)
    picks = {round(i * (len(steps) - 1) / (count - 1)) for i in range(count)}
    return [steps[i] for i in sorted(picks)]


def step_marks(steps: tuple[int, ...]) -> dict[int, str]:
    """Slider marks: one per step (the slider snaps to them), labelled for a few evenly spaced ones and the last."""
    labelled = set(default_compare(steps, _LABELLED_MARKS))
    return {s: (str(s) if s in labelled else "") for s in steps}


def _datapoints(store: LogStore, key: PassKey) -> list[tuple[int, Any]]:
    """``(idx, sample)`` of every datapoint of a snapshot: its scores' count, else what its index lists."""
    meta = store.meta_table(key)
    try:
        count = store.scores(key).num_datapoints
    except ScoresError:
        count = len(next(iter(meta.values()), []))
    samples = meta.get("sample") or [None] * count
    return [(i, samples[i] if i < len(samples) else None) for i in range(count)]


def _indexing(store: LogStore, key: PassKey) -> bool:
    status = store.debug_status(key)
    return status is not None and not status.ready


def register(app: dash.Dash, store: LogStore) -> None:
    @app.callback(
        Output(ids.URL, "hash"),
        Output(ids.VIEW_TABS_BOX, "hidden"),
        Output(ids.VIEW_TABS, "value"),
        Output(ids.EVALUATION_VIEW, "hidden"),
        Output(ids.TRAINING_VIEW, "hidden"),
        Output(ids.TRAIN_STEP, "min"),
        Output(ids.TRAIN_STEP, "max"),
        Output(ids.TRAIN_STEP, "marks"),
        Output(ids.TRAIN_STEP, "value"),
        Output(ids.TRAIN_DATAPOINT, "options"),
        Output(ids.TRAIN_DATAPOINT, "value"),
        Output(ids.TRAIN_COMPARE, "options"),
        Output(ids.TRAIN_COMPARE, "value"),
        Output(ids.TRAIN_SELECTION, "data"),
        Output(ids.TRAIN_CAPTION, "children"),
        Input(ids.URL, "search"),
        Input(ids.URL, "hash"),
        Input(ids.LOG_VERSION, "data"),
        Input(ids.VIEW_TABS, "value"),
        Input(ids.TRAIN_STEP, "value"),
        Input(ids.TRAIN_DATAPOINT, "value"),
        Input(ids.TRAIN_COMPARE, "value"),
        State(ids.TRAIN_SELECTION, "data"),
    )
    @guarded(lambda box: (no_update,) * 14 + (box,))
    def sync(search: str | None, fragment: str | None, _version: Any, tab: str | None, step: int | None,
             idx: int | None, compare: list[int] | None, selection: dict[str, Any] | None) -> tuple[Any, ...]:
        """URL fragment + listing -> the tab, the slider and the selectors; a control moved -> the fragment."""
        run = training_run(store, search)
        steps = tuple(s for s in run.steps(SPLIT_TRAIN) if s is not None) if run is not None else ()
        if run is None or not steps:
            return (no_update, True, EVALUATION, False, True, *(no_update,) * 8,
                    None if selection else no_update, None)
        wanted = parse_training(fragment)
        moved = set(ctx.triggered_prop_ids.values()) & set(_CONTROLS)  # several inputs can arrive in one call
        if ids.VIEW_TABS in moved:
            wanted = replace(wanted, view=tab)
        if ids.TRAIN_STEP in moved:
            wanted = replace(wanted, step=None if step == steps[-1] else step)  # the latest: follow training
        if ids.TRAIN_DATAPOINT in moved:
            wanted = replace(wanted, idx=idx)
        if ids.TRAIN_COMPARE in moved:
            wanted = replace(wanted, steps=tuple(sorted(int(s) for s in compare or ())))
        new_fragment = training_fragment(wanted)
        evaluable = any(p.split != SPLIT_TRAIN and p.has_scores for p in run.passes)
        scored = evaluable or any(p.has_scores for p in run.passes)
        # snapshots saved without scores (no ground truth or predictions): nothing to rank, no Evaluation view
        shown = (wanted.view or (EVALUATION if evaluable else TRAINING)) if scored else TRAINING
        chosen = wanted.step if wanted.step in steps else steps[-1]
        key = PassKey(run.name, SPLIT_TRAIN, chosen)
        datapoints = _datapoints(store, key)
        options = [{"label": f"#{i}" + ("" if s is None else f" · sample {s}"), "value": i} for i, s in datapoints]
        shown_idx = wanted.idx if wanted.idx is not None and 0 <= wanted.idx < len(datapoints) else 0
        compared = [s for s in wanted.steps if s in steps] or default_compare(steps)
        keys = [key] + [PassKey(run.name, SPLIT_TRAIN, s) for s in compared]
        new_selection = None
        if shown == TRAINING:
            new_selection = {"run": run.name, "step": chosen, "idx": shown_idx, "steps": compared,
                             "versions": [store.pass_version(k) for k in keys]}
        follow = "follows the latest step" if wanted.step not in steps else f"step {chosen}"
        caption = f"{len(steps)} snapshots, steps {steps[0]} to {steps[-1]} · {follow}"
        return (
            new_fragment if moved and new_fragment != (fragment or "") else no_update,
            not scored,
            shown,
            shown == TRAINING,
            shown != TRAINING,
            steps[0],
            steps[-1],
            step_marks(steps),
            chosen,
            options,
            shown_idx,
            [{"label": f"step {s}", "value": s} for s in steps],
            compared,
            new_selection if new_selection != selection else no_update,
            caption,
        )

    @app.callback(
        Output(ids.TRAIN_STEP_BODY, "children"),
        Output(ids.TRAIN_ACROSS_BODY, "children"),
        Output(ids.TRAIN_POLL, "disabled"),
        Input(ids.TRAIN_SELECTION, "data"),
        Input(ids.TRAIN_POLL, "n_intervals"),
    )
    @guarded(lambda box: (box, None, True))
    def draw(selection: dict[str, Any] | None, _ticks: int | None) -> tuple[Any, ...]:
        """The chosen step's composites, and the chosen datapoint at each compared step."""
        if not selection:
            raise PreventUpdate
        run, idx = selection["run"], int(selection["idx"])
        key = PassKey(run, SPLIT_TRAIN, int(selection["step"]))
        pending = False
        gallery = []
        for i, _ in _datapoints(store, key)[:MAX_CARDS]:
            card, missing = _card(store, key, i, f"#{i}")
            gallery.append(card)
            pending = pending or missing
        across = []
        for s in selection["steps"]:
            card, missing = _card(store, PassKey(run, SPLIT_TRAIN, int(s)), idx, f"step {s}")
            across.append(card)
            pending = pending or missing
        if not gallery:
            pending = pending or _indexing(store, key)
            gallery = [to_dash(Problem("No composites yet", f"step {key.step} lists no datapoints yet"))]
        return gallery, across, not pending


def _card(store: LogStore, key: PassKey, idx: int, title: str) -> tuple[Any, bool]:
    """One composite card, and whether its composite is missing while its pages are still being indexed."""
    try:
        record = store.datapoint(key, idx)
    except ViewerError as err:
        return to_dash(Problem(title, str(err))), False
    has_picture = any(i.key == SNAPSHOT_COMPOSITE for i in record.debug.get(SNAPSHOT_DEBUGGER, ()))
    return to_dash(snapshot_card(record, title)), not has_picture and _indexing(store, key)
