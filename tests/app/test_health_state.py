"""The health thresholds in the URL (:mod:`eval_viewer.app.health_state`), without a browser: a changed threshold
round-trips through the query string beside the rest of the view, a default is never written, and a value that is
not a threshold is refused with a message naming it."""

from __future__ import annotations

import dataclasses

import pytest

from eval_viewer.app.callbacks.health import typed_thresholds
from eval_viewer.app.health_state import TUNABLE, check, input_values, thresholds_of
from eval_viewer.app.state import ViewState, parse_query, to_query
from eval_viewer.backend.health import HealthThresholds
from eval_viewer.errors import NotFoundError


def test_changed_thresholds_round_trip_and_defaults_stay_out_of_the_url() -> None:
    chosen = dataclasses.replace(HealthThresholds(), saturated=0.01, scale_jump=4.0, low_variance=1e-9)
    state = ViewState(run="a", split="val", step=3, metric="loss", idx=7, health=chosen)
    query = to_query(state)
    assert query == ("?run=a&split=val&epoch=3&metric=loss&idx=7&health_saturated=0.01&health_low_variance=1e-09"
                     "&health_scale_jump=4")
    assert parse_query(query) == state
    assert to_query(ViewState(run="a", health=HealthThresholds())) == "?run=a"  # the defaults: nothing written
    assert parse_query("?run=a&health_dead=0.95").health is None  # a default named in a link is the default
    assert parse_query("?run=a&health_saturated=").health is None


def test_every_tunable_field_is_a_threshold_field_and_shows_its_documented_default() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(HealthThresholds)}
    for t in TUNABLE:
        assert t.default == fields[t.field]
    assert input_values(None) == [""] * len(TUNABLE)
    assert input_values(thresholds_of({"uniform": 0.9}))[[t.field for t in TUNABLE].index("uniform")] == "0.9"


@pytest.mark.parametrize(("query", "words"), [
    ("health_dead=-0.1", "dead must be a fraction from 0 to 1, not '-0.1'"),
    ("health_uniform=1.5", "uniform must be a fraction from 0 to 1, not '1.5'"),
    ("health_saturated=lots", "saturated must be a fraction from 0 to 1, not 'lots'"),
    ("health_low_variance=-1e-6", "low variance must be a number at least 0, not '-1e-6'"),
    ("health_scale_jump=1", "scale jump must be a number above 1, not '1'"),
    ("health_collapsed=nan", "collapsed must be a fraction from 0 to 1, not 'nan'"),
])
def test_a_bad_threshold_in_a_link_is_refused_with_its_name(query: str, words: str) -> None:
    with pytest.raises(NotFoundError, match=words.replace("(", r"\(")):
        parse_query("?run=a&" + query)


def test_typed_values_are_judged_one_by_one() -> None:
    values, errors = typed_thresholds({"dead": "0.5", "saturated": " ", "uniform": "-2", "scale_jump": "1e"})
    assert values == {"dead": 0.5, "saturated": None}
    assert errors == ["uniform must be a fraction from 0 to 1, not '-2'",
                      "scale jump must be a number above 1, not '1e'"]
    assert check("scale_jump", "2.5") == 2.5 and check("low_variance", 0) == 0.0
