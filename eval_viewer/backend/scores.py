"""Parse a scores file into per-metric float arrays, and decide which direction of a metric is better.

The scores file (see :mod:`eval_viewer.log_format`) holds, per metric, one value per datapoint: a number, ``null``
(NaN written by :func:`~eval_viewer.log_format.write_scores`, or a datapoint the metric could not score) or a list
(one value per class). Lists become ``metric[0]``, ``metric[1]``...; null, NaN and anything that is not a number
become NaN, which :func:`~eval_viewer.backend.model.rank_indices` always ranks as a failure. A value that is not a
number is noted in ``Scores.problems`` rather than failing the file: one bad value must not hide 100k good ones. A
file that is not JSON, has no ``per_datapoint`` object, or whose metrics disagree on the number of datapoints is
unusable and raises :class:`~eval_viewer.errors.ScoresError` naming the file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from eval_viewer.backend.model import Scores
from eval_viewer.errors import ScoresError

__all__ = ["parse_scores", "load_scores", "decode_scores", "higher_is_better", "LOWER_IS_BETTER_WORDS"]

logger = logging.getLogger(__name__)

LOWER_IS_BETTER_WORDS = frozenset(
    {
        "loss", "losses", "error", "errors", "err", "rmse", "mse", "mae", "epe", "chamfer", "cd", "dist", "distance",
        "l1", "l2", "nll", "ce", "bce", "kl", "perplexity", "ppl", "wer", "cer", "fpr", "fnr", "far", "frr", "eer",
        "miss", "ece", "absrel", "sqrel", "rel", "hausdorff", "hd", "hd95", "fid", "lpips", "time", "latency",
        "runtime", "regret", "outlier", "outliers", "fp", "fn",
    }
)
"""Name parts (split on anything that is not a letter or digit) that make a metric lower-is-better."""

_WORD_RE = re.compile(r"[a-z0-9]+")
_MAX_PROBLEMS_PER_METRIC = 3


def higher_is_better(metric: str, overrides: Mapping[str, bool] | None = None) -> bool:
    """Whether a larger value of ``metric`` is better: an explicit override (for ``m[2]``, ``m`` also counts), else
    the name: ``val_loss``, ``EPE``, ``chamfer_dist``, ``abs_rel[3]`` are lower-is-better, anything else higher."""
    overrides = overrides or {}
    base = metric.split("[", 1)[0]
    for name in (metric, base):
        if name in overrides:
            return bool(overrides[name])
    words = _WORD_RE.findall(base.lower())
    joined = "".join(words)
    if any(w in LOWER_IS_BETTER_WORDS or w.endswith(("loss", "error")) for w in words):
        return False
    return joined not in LOWER_IS_BETTER_WORDS


def _as_float(value: Any) -> float | None:
    """The float a JSON value stands for; None when it is not a number (a string, a dict...)."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:  # an integer beyond the float range is still a number
            return math.inf if value > 0 else -math.inf
    return None


class _Expander:
    """Turns one metric's per-datapoint list into one or more float arrays, counting values that are not numbers."""

    def __init__(self, metric: str, values: list[Any], path: Path) -> None:
        self.metric, self.values, self.path = metric, values, path
        self.problems: list[str] = []
        self._bad = 0

    def _note(self, idx: int, value: Any) -> None:
        self._bad += 1
        if self._bad <= _MAX_PROBLEMS_PER_METRIC:
            self.problems.append(
                f"{self.path}: metric {self.metric!r}, datapoint {idx}: {type(value).__name__} {str(value)[:40]!r} "
                "is not a number; kept as NaN"
            )

    def arrays(self) -> dict[str, np.ndarray]:
        values = self.values
        n = len(values)
        widths = [len(v) for v in values if isinstance(v, list)]
        if not widths:
            try:  # the fast path: a flat list of numbers and nulls (numpy would also parse strings like "1.5")
                arr = np.array([math.nan if v is None else v for v in values])
                if arr.shape == (n,) and arr.dtype.kind in "biuf":
                    return {self.metric: arr.astype(np.float64)}
            except (TypeError, ValueError, OverflowError):
                pass
            arr = np.full(n, math.nan)
            for i, v in enumerate(values):
                f = _as_float(v)
                if f is None:
                    self._note(i, v)
                else:
                    arr[i] = f
            return {self.metric: arr}
        classes = max(widths)
        table = np.full((n, classes), math.nan)
        for i, v in enumerate(values):
            if v is None:
                continue
            if not isinstance(v, list):
                self._note(i, v)
                continue
            for c, x in enumerate(v):
                f = _as_float(x)
                if f is None:
                    self._note(i, x)
                else:
                    table[i, c] = f
        return {f"{self.metric}[{c}]": np.ascontiguousarray(table[:, c]) for c in range(classes)}

    def finish(self) -> list[str]:
        if self._bad > _MAX_PROBLEMS_PER_METRIC:
            self.problems.append(
                f"{self.path}: metric {self.metric!r}: {self._bad - _MAX_PROBLEMS_PER_METRIC} more values are not "
                "numbers; kept as NaN"
            )
        return self.problems


def _aggregated(raw: Any, path: Path, problems: list[str]) -> dict[str, float]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{path}: 'aggregated' is a {type(raw).__name__}, not an object; ignored")
        return {}
    out: dict[str, float] = {}
    for metric, value in raw.items():
        if isinstance(value, list):
            for c, x in enumerate(value):
                f = _as_float(x)
                out[f"{metric}[{c}]"] = math.nan if f is None else f
            continue
        f = _as_float(value)
        if f is None:
            problems.append(f"{path}: aggregated {metric!r} is not a number; kept as NaN")
            f = math.nan
        out[str(metric)] = f
    return out


def parse_scores(payload: Any, path: str | os.PathLike[str], overrides: Mapping[str, bool] | None = None) -> Scores:
    """A :class:`Scores` from an already-decoded scores JSON object (``path`` only names the file in messages)."""
    if not isinstance(payload, dict):
        raise ScoresError(f"{path}: expected a JSON object with 'per_datapoint', found a {type(payload).__name__}")
    per_raw = payload.get("per_datapoint")
    if not isinstance(per_raw, dict):
        what = "is missing" if per_raw is None else f"is a {type(per_raw).__name__}, not an object"
        raise ScoresError(f"{path}: 'per_datapoint' {what}; this is not a scores file of the expected format")
    lengths: dict[str, int] = {}
    problems: list[str] = []
    per_datapoint: dict[str, np.ndarray] = {}
    for metric, values in per_raw.items():
        metric = str(metric)
        if not isinstance(values, list):
            problems.append(f"{path}: metric {metric!r} is a {type(values).__name__}, not a list; skipped")
            continue
        lengths[metric] = len(values)
        expander = _Expander(metric, values, path)
        per_datapoint.update(expander.arrays())
        problems.extend(expander.finish())
    if len(set(lengths.values())) > 1:
        counts = ", ".join(f"{m}: {n}" for m, n in sorted(lengths.items(), key=lambda kv: kv[1]))
        raise ScoresError(f"{path}: metrics have different numbers of datapoints ({counts}); the file is inconsistent")
    aggregated = _aggregated(payload.get("aggregated"), path, problems)
    names = list(per_datapoint) + [m for m in aggregated if m not in per_datapoint]
    for arr in per_datapoint.values():
        arr.flags.writeable = False
    return Scores(
        num_datapoints=next(iter(lengths.values()), 0),
        per_datapoint=per_datapoint,
        aggregated=aggregated,
        higher_is_better={m: higher_is_better(m, overrides) for m in names},
        problems=tuple(problems),
        path=os.fspath(path),
    )


def load_scores(path: str | os.PathLike[str], overrides: Mapping[str, bool] | None = None) -> Scores:
    """Read and parse one local scores file; :class:`ScoresError` names the file for a missing, unreadable or bad
    file. (The store reads through its source and calls :func:`decode_scores`.)"""
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except FileNotFoundError:
        raise ScoresError(f"{name}: scores file is missing") from None
    except OSError as exc:
        raise ScoresError(f"{name}: cannot read the scores file ({exc.strerror or exc})") from None
    return decode_scores(data, name, overrides)


def decode_scores(data: bytes, name: str, overrides: Mapping[str, bool] | None = None) -> Scores:
    """Parse the bytes of a scores file; ``name`` (a path or URL) names it in messages."""
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, an int of more than 4300 digits...
        hint = " (empty file: still being written?)" if not data.strip() else ""
        raise ScoresError(f"{name}: not valid JSON{hint}: {exc}") from None
    return parse_scores(payload, name, overrides)
