"""The health thresholds a user tunes, as they live in the URL: ``health_dead=0.9&health_scale_jump=5``.

The backend's :class:`~eval_viewer.backend.health.HealthThresholds` has documented defaults; the URL holds only the
ones a user changed (a default is never written), so a shared link reproduces the view and a link without any keeps
following the defaults if they change. :data:`TUNABLE` lists the thresholds the app offers, in the order the health
panel shows them; the others (``extreme_tolerance``, ``min_values``, ``min_datapoints``) decide what is *measured*,
not what is flagged, and stay at their defaults. :func:`check` is the one place a value is judged, for the URL and for
the panel's inputs alike, so both refuse the same things with the same words. No Dash here: tested directly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eval_viewer.backend.health import HealthThresholds
from eval_viewer.errors import NotFoundError

__all__ = ["Tunable", "TUNABLE", "DEFAULTS", "PREFIX", "check", "parse_health", "health_params", "overrides",
           "thresholds_of", "input_values"]

PREFIX = "health_"
"""URL parameters are ``health_<field>``: plain field names (``dead``, ``uniform``) would read as something else."""
DEFAULTS = HealthThresholds()


@dataclass(frozen=True)
class Tunable:
    """One threshold the health panel offers: its :class:`HealthThresholds` field, its label, what it means, and
    the values it accepts (``low`` / ``high`` inclusive unless ``above``: strictly greater than ``low``)."""

    field: str
    label: str
    hint: str
    low: float = 0.0
    high: float | None = 1.0
    above: bool = False

    @property
    def default(self) -> float:
        return float(getattr(DEFAULTS, self.field))

    @property
    def name(self) -> str:
        return self.field.replace("_", " ")

    @property
    def param(self) -> str:
        return PREFIX + self.field

    def bounds(self) -> str:
        if self.high is None:
            return f"a number {'above' if self.above else 'at least'} {self.low:g}"
        return f"a fraction from {self.low:g} to {self.high:g}"


TUNABLE = (
    Tunable("dead", "dead ≥", "a layer's output is dead on a datapoint when at least this fraction of its values are "
            "exactly 0"),
    Tunable("dead_channel", "dead channels >", "a layer has dead channels when more than this fraction of its channels "
            "are 0 on every datapoint of the pass"),
    Tunable("saturated", "saturated ≥", "saturated when at least this fraction of the values sit at the output's own "
            "non-zero extremes"),
    Tunable("low_variance", "constant: std ≤", "constant when the standard deviation is at most this times "
            "max(|mean|, 1)", high=None),
    Tunable("collapsed", "collapsed ≤", "a head is collapsed when its entropy is at most this fraction of the "
            "uniform bound log(keys)"),
    Tunable("collapsed_vs_typical", "or ≤ typical ×", "…or at most this fraction of the head's median entropy "
            "over the pass"),
    Tunable("uniform", "uniform ≥", "a head is uniform (no focus) when its entropy is at least this fraction of "
            "log(keys)"),
    Tunable("scale_jump", "scale jump ×", "a layer's RMS grew or shrank by at least this factor since the previous "
            "epoch", low=1.0, high=None, above=True),
)
_BY_FIELD = {t.field: t for t in TUNABLE}


def check(field: str, raw: Any) -> float | None:
    """``raw`` (a URL value or an input's text) as a value of threshold ``field``; None for an empty one (the
    default). :class:`ValueError` saying what is wrong for a non-number, NaN or a value out of its range."""
    tunable = _BY_FIELD[field]
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        value = float(raw.strip() if isinstance(raw, str) else raw)
    except (TypeError, ValueError):
        raise ValueError(f"{tunable.name} must be {tunable.bounds()}, not {raw!r}") from None
    low_ok = value > tunable.low if tunable.above else value >= tunable.low
    if not math.isfinite(value) or not low_ok or (tunable.high is not None and value > tunable.high):
        raise ValueError(f"{tunable.name} must be {tunable.bounds()}, not {raw!r}")
    return value


def thresholds_of(values: Mapping[str, float | None] | None) -> HealthThresholds:
    """The thresholds with ``values`` (field -> value; None or missing: the default) applied."""
    chosen: dict[str, Any] = {k: float(v) for k, v in (values or {}).items() if v is not None and k in _BY_FIELD}
    return dataclasses.replace(DEFAULTS, **chosen) if chosen else DEFAULTS


def overrides(thresholds: HealthThresholds | None) -> dict[str, float]:
    """The tunable fields of ``thresholds`` that differ from the defaults (what the URL holds)."""
    if thresholds is None:
        return {}
    return {t.field: float(getattr(thresholds, t.field)) for t in TUNABLE
            if float(getattr(thresholds, t.field)) != t.default}


def parse_health(query: Mapping[str, list[str]]) -> HealthThresholds | None:
    """The thresholds a parsed query string names, or None when it names none (or only defaults).
    :class:`NotFoundError` for a value that is not one (``health_dead=-1``), as for any other malformed link."""
    values: dict[str, float | None] = {}
    for t in TUNABLE:
        given = query.get(t.param)
        raw = given[-1] if given else None
        try:
            values[t.field] = check(t.field, raw)
        except ValueError as err:
            raise NotFoundError(f"The URL's {t.param}: {err}") from None
    chosen = thresholds_of(values)
    return chosen if overrides(chosen) else None


def health_params(thresholds: HealthThresholds | None) -> list[tuple[str, Any]]:
    """The query parameters of ``thresholds``: its non-default tunable values, in :data:`TUNABLE` order."""
    return [(PREFIX + field, f"{value:.12g}") for field, value in overrides(thresholds).items()]


def input_values(thresholds: HealthThresholds | None) -> list[str]:
    """What the panel's inputs show for ``thresholds``, in :data:`TUNABLE` order: a changed value, else empty (the
    default is the input's placeholder)."""
    changed = overrides(thresholds)
    return [f"{changed[t.field]:.12g}" if t.field in changed else "" for t in TUNABLE]
