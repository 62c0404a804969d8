"""The plain values the backend hands out: what the app, the notebook API and the HTML report all consume.

Frozen dataclasses of plain Python and numpy values, no Dash, no file handles. Every run, epoch and datapoint has a
stable name: ``RunInfo.name`` (URL-safe), a :class:`PassKey` ``(run, split, step)`` for each scored pass, and ``idx``
(the datapoint's position in the scores lists, equal to the ``datapoint_idx`` key of the debug pages). Debug items are
found by ``(debugger name, item key)``, never by position, so the same item is found again in another pass or run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["PassKey", "PassInfo", "RunInfo", "Scores", "Item", "DatapointRecord", "rank_indices"]

RunKind = Literal["trainer", "evaluator"]


@dataclass(frozen=True, order=True)
class PassKey:
    """Names one scored pass over the data: ``(run, split, step)``.

    ``split`` is ``"val"`` for a trainer's ``epoch_N/validation_scores.json`` (``step`` = N) and ``"test"`` for an
    ``evaluation_scores.json`` (``step`` = None: that split has no steps). A trainer run with a final evaluation has
    passes of both splits, each with its own key and URL; ``step=None`` never means "not chosen".
    """

    run: str
    split: str
    step: int | None = None

    def __str__(self) -> str:
        return f"{self.run} · {self.split}" + ("" if self.step is None else f" {self.step}")

    @property
    def label(self) -> str:
        """How a user reads the pass within its run: ``epoch 9`` (a val step) or ``test``."""
        if self.step is None:
            return self.split
        if self.split == "train":
            return f"train step {self.step}"  # a training snapshot (eval_viewer.debuggers.snapshots)
        return f"epoch {self.step}" if self.split == "val" else f"{self.split} {self.step}"

    @classmethod
    def of(cls, value: PassKey | tuple[str, str, int | None] | tuple[str, str]) -> PassKey:
        """A key from a key or a plain ``(run, split[, step])`` tuple or list (notebooks, JSON round trips)."""
        if isinstance(value, PassKey):
            return value
        if isinstance(value, (tuple, list)) and len(value) in (2, 3):
            return cls(str(value[0]), str(value[1]), None if len(value) == 2 or value[2] is None else int(value[2]))
        raise TypeError(f"expected a PassKey or a (run, split, step) tuple, got {value!r}")


@dataclass(frozen=True)
class PassInfo:
    """One pass as listed by the last snapshot: where its files are and whether it has debug pages."""

    key: PassKey
    location: str
    """The folder holding its scores file and ``debugger/`` (a path or URL, for messages)."""
    has_scores: bool
    has_debug: bool

    @property
    def run(self) -> str:
        return self.key.run

    @property
    def split(self) -> str:
        return self.key.split

    @property
    def step(self) -> int | None:
        return self.key.step

    @property
    def label(self) -> str:
        """How the app names it in a dropdown: ``epoch 9`` or ``test``."""
        return self.key.label


@dataclass(frozen=True)
class RunInfo:
    name: str
    """Stable, URL-safe name: the path relative to the ``--log-dir`` it was found under (folder name for a run dir)."""
    location: str
    """The run folder, as a path or URL (for messages)."""
    kind: RunKind
    passes: tuple[PassInfo, ...]
    """Sorted by split (``val`` first, then ``test``, then others) and step; gaps in steps allowed."""

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.split for p in self.passes))

    def steps(self, split: str) -> tuple[int | None, ...]:
        return tuple(p.step for p in self.passes if p.split == split)

    def find(self, split: str, step: int | None = None) -> PassInfo:
        for info in self.passes:
            if info.split == split and info.step == step:
                return info
        from eval_viewer.errors import NotFoundError

        known = ", ".join(p.label for p in self.passes) or "none"
        what = split if step is None else f"{split} step {step}"
        raise NotFoundError(f"Run {self.name!r} has no pass {what} (passes: {known})")

    def choose(self, split: str | None = None, step: int | None = None) -> PassInfo:
        """The pass a partial choice names: the default pass when neither is given, the latest step of ``split``
        when only the split is (``val`` when only a step is); NotFoundError naming the passes otherwise."""
        if split is None and step is None:
            return self.default_pass
        steps = self.steps(split) if split is not None else ()
        if split is not None and step is None and steps and None not in steps:
            step = steps[-1]
        return self.find(split or "val", step)

    @property
    def default_pass(self) -> PassInfo:
        """What opens when nothing is chosen: the latest validated epoch, else the first other evaluation pass (the
        test pass). Never a training snapshot (split ``train``) while the run has anything else; a run with only
        training snapshots opens on its latest scored one (else its latest)."""
        stepped = [p for p in self.passes if p.split == "val" and p.has_scores]
        if stepped:
            return stepped[-1]
        evaluated = [p for p in self.passes if p.split != "train"]
        if evaluated:
            return ([p for p in evaluated if p.has_scores] or evaluated)[0]
        return ([p for p in self.passes if p.has_scores] or list(self.passes))[-1]


@dataclass(frozen=True)
class Scores:
    """Every metric of one epoch (or evaluator run), per datapoint and aggregated.

    Per-class list metrics ``m`` are expanded into ``m[0]``, ``m[1]``, ...; missing values and NaN are NaN, and NaN
    always ranks as a failure, never as a success.
    """

    num_datapoints: int
    per_datapoint: Mapping[str, np.ndarray]
    """metric -> float64 array of length ``num_datapoints``."""
    aggregated: Mapping[str, float]
    """metric -> float (NaN where the file has null); per-class lists expanded like ``per_datapoint``."""
    higher_is_better: Mapping[str, bool]
    problems: tuple[str, ...] = ()
    """User-facing notes on values that could not be read (kept as NaN) or counts that differ from other epochs."""
    path: str | None = None
    """The scores file these came from (a path or URL)."""
    _rankings: dict[tuple[str, bool], np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.per_datapoint)

    def to_pandas(self) -> Any:
        """The per-datapoint scores as a pandas DataFrame (one column per metric, indexed by datapoint ``idx``).

        pandas is optional: it is imported here, and a clear ImportError says how to get it."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Scores.to_pandas() needs pandas: pip install pandas") from None
        frame = pd.DataFrame({m: np.asarray(v) for m, v in self.per_datapoint.items()})
        frame.index.name = "idx"
        return frame

    def ranking(self, metric: str, worst_first: bool = True) -> np.ndarray:
        """Datapoint indices ordered worst-first (or best-first); NaN counts as worst either way. Stable on ties.

        Computed once per (metric, direction) and kept: the table re-sorts on every click, so the second call is a
        dictionary lookup. The returned array is read-only because it is shared.
        """
        key = (metric, bool(worst_first))
        cached = self._rankings.get(key)
        if cached is not None:
            return cached
        if metric not in self.per_datapoint:
            from eval_viewer.errors import NotFoundError

            known = ", ".join(self.per_datapoint) or "none"
            raise NotFoundError(f"No metric {metric!r} in {self.path or 'these scores'} (metrics: {known})")
        order = rank_indices(self.per_datapoint[metric], self.higher_is_better.get(metric, True), worst_first)
        order.flags.writeable = False
        self._rankings[key] = order
        return order


def rank_indices(values: np.ndarray, higher_is_better: bool, worst_first: bool = True) -> np.ndarray:
    """Indices of ``values`` from worst to best (or best to worst), NaN always worst, stable on ties.

    NaN means "no score" (a failed datapoint, a missing value): it must never look like a success, so it comes first
    worst-first and last best-first. One ``lexsort`` (O(n log n), stable): a few ms for 100k datapoints.
    """
    values = np.asarray(values, dtype=np.float64)
    nan = np.isnan(values)
    goodness = values if higher_is_better else -values
    if worst_first:
        # Primary key: NaN first (False sorts before True, so sort on ~nan); secondary: goodness ascending.
        return np.lexsort((np.where(nan, 0.0, goodness), ~nan)).astype(np.int64)
    return np.lexsort((np.where(nan, 0.0, -goodness), nan)).astype(np.int64)


@dataclass(frozen=True)
class Item:
    """One saved value with its semantic kind (:class:`eval_viewer.log_format.Kind`)."""

    key: str
    """Dotted path inside its section or debugger output (``"image"``, ``"stats.mean"``); ``""`` for the whole."""
    kind: str
    value: Any


@dataclass(frozen=True)
class DatapointRecord:
    """Everything saved about one datapoint of one epoch of one run."""

    pass_key: PassKey
    idx: int
    scores: Mapping[str, float]
    inputs: tuple[Item, ...] = ()
    labels: tuple[Item, ...] = ()
    predictions: tuple[Item, ...] = ()
    meta_info: Mapping[str, Any] = field(default_factory=dict)
    debug: Mapping[str, tuple[Item, ...]] = field(default_factory=dict)
    """debugger name -> its items, in the order the debuggers ran."""
    problems: tuple[str, ...] = ()
    """User-facing messages for what could not be read (a corrupt page...); the rest of the record is still valid."""
    notes: Mapping[str, str] = field(default_factory=dict)
    """Per section (``"inputs"``, ``"labels"``): where its items came from when not from a datapoint recorder (values
    found under usual names in a debugger's output)."""
    class_names: tuple[str, ...] | None = None
    """Names of class ids, as the log's viewer sidecar declares them (``log_format.VIEWER_CLASS_NAMES``)."""
    palette: tuple[tuple[int, int, int], ...] | None = None
    """Class colours the sidecar declares (``log_format.VIEWER_PALETTE``); None: the built-in palette."""

    @property
    def run(self) -> str:
        return self.pass_key.run

    def debug_item(self, debugger: str, key: str = "") -> Item:
        """The item ``key`` of debugger ``debugger``: the same name finds the same item in every pass and run."""
        for item in self.debug.get(debugger, ()):
            if item.key == key:
                return item
        from eval_viewer.errors import NotFoundError

        if debugger not in self.debug:
            known = ", ".join(self.debug) or "none"
            raise NotFoundError(f"{self.pass_key}, datapoint {self.idx}: no debugger {debugger!r} (debuggers: {known})")
        keys = ", ".join(repr(i.key) for i in self.debug[debugger])
        raise NotFoundError(f"{self.pass_key}, datapoint {self.idx}: debugger {debugger!r} has no item {key!r} ({keys})")

    def items(self) -> list[tuple[str, str, Item]]:
        """Every item as ``(section, debugger name or "", item)``: ``inputs``, ``labels``, ``predictions``, ``debug``."""
        out: list[tuple[str, str, Item]] = []
        for section in ("inputs", "labels", "predictions"):
            out.extend((section, "", item) for item in getattr(self, section))
        for name, items in self.debug.items():
            out.extend(("debug", name, item) for item in items)
        return out
