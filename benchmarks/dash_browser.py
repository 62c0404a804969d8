"""A minimal stand-in for Dash's renderer, for benchmarks: it POSTs callbacks exactly as the browser does.

The browser keeps every component property it knows; when one changes (a click, a new URL, a callback's answer) it
sends one ``/_dash-update-component`` request per server callback that has the property as an Input, carrying that
callback's Inputs and States with their current values and the changed ones in ``changedPropIds``, then applies the
answers and goes on with the callbacks their new values trigger (never the callback that produced them). This module
does the same through Flask's test client, reading the callbacks from ``app.callback_map`` and the starting values
from ``app.layout``, so a benchmark names *what the user did* and the requests follow from the app itself: it works
unchanged on an older version of the app whose ids or callbacks differ. Clientside callbacks are skipped (they run
in the browser). Every ``dcc.Location`` follows the address as the browser's do: a callback that writes the address
through one (``search``, ``pathname``, ``hash``) changes it in all of them. Only stdlib imports, so it can be
imported next to any version of the package.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["payload", "Browser", "Request"]

Prop = tuple[str, str]
_ADDRESS = ("search", "pathname", "hash")


def payload(outputs: list[tuple[str, str]], inputs: list[tuple[str, str, Any]],
            state: Iterable[tuple[str, str, Any]] = (), changed: Iterable[Prop] | None = None) -> dict[str, Any]:
    """The JSON body Dash's renderer POSTs for one callback (several outputs joined with ``..``); ``changed`` are the
    inputs that triggered it (default: the first)."""
    out = [{"id": i, "property": p} for i, p in outputs]
    changed = list(changed) if changed is not None else [inputs[0][:2]]
    return {
        "output": ".." + "...".join(f"{i}.{p}" for i, p in outputs) + ".." if len(outputs) > 1
        else f"{outputs[0][0]}.{outputs[0][1]}",
        "outputs": out if len(outputs) > 1 else out[0],
        "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs],
        "state": [{"id": i, "property": p, "value": v} for i, p, v in state],
        "changedPropIds": [f"{i}.{p}" for i, p in changed],
    }


def _split_output(key: str) -> list[tuple[str, str]]:
    """``"..a.x...b.y.."`` or ``"a.x@hash"`` -> ``[("a", "x"), ...]`` (the property keeps an ``@hash`` suffix, as the
    renderer sends it for ``allow_duplicate`` outputs)."""
    parts = key[2:-2].split("...") if key.startswith("..") else [key]
    pairs = []
    for part in parts:
        ident, _, prop = part.replace("\\.", "\0").rpartition(".")
        pairs.append((ident.replace("\0", "."), prop))
    return pairs


@dataclass
class Request:
    """One callback request: which callback, its server time (ms, the whole test-client round trip), response size."""

    output: str
    ms: float
    nbytes: int
    status: int
    body: bytes = field(repr=False, default=b"")


class Browser:
    """The page's property values and the callbacks they trigger; ``act`` changes properties as a user would."""

    def __init__(self, app: Any, skip: Callable[[str], bool] = lambda output: False) -> None:
        self.app = app
        self.client = app.server.test_client()
        self.props: dict[Prop, Any] = {}
        self.skip = skip
        self.callbacks = {k: v for k, v in app.callback_map.items() if v.get("callback") is not None}
        layout = app.layout() if callable(app.layout) else app.layout
        self.locations: list[str] = []
        for component in [layout, *layout._traverse()]:
            ident = getattr(component, "id", None)
            if not isinstance(ident, str):
                continue
            if getattr(component, "_type", None) == "Location":
                self.locations.append(ident)
            for name, value in component.to_plotly_json()["props"].items():
                if name not in ("id", "children"):
                    self.props[(ident, name)] = value

    def callbacks_on(self, prop: Prop) -> list[str]:
        return [k for k, v in self.callbacks.items() if {"id": prop[0], "property": prop[1]} in v["inputs"]]

    def _request(self, key: str, changed: list[Prop]) -> dict[str, Any]:
        cb = self.callbacks[key]
        outputs = _split_output(key)
        inputs = [(d["id"], d["property"], self.props.get((d["id"], d["property"]))) for d in cb["inputs"]]
        state = [(d["id"], d["property"], self.props.get((d["id"], d["property"]))) for d in cb["state"]]
        return payload(outputs, inputs, state, changed)

    def act(self, changes: dict[Prop, Any]) -> list[Request]:
        """Set ``changes`` (what the user did), then run every callback this triggers, wave after wave, as the
        renderer would; returns the requests in the order sent."""
        self.props.update(changes)
        sent: list[Request] = []
        pending: list[tuple[Prop, str | None]] = [(p, None) for p in changes]
        while pending:
            wave: dict[str, list[Prop]] = {}
            for prop, source in pending:
                for key in self.callbacks_on(prop):
                    if key != source and not self.skip(key):
                        wave.setdefault(key, []).append(prop)
            pending = []
            answers = []
            for key, changed in wave.items():
                body = self._request(key, changed)
                started = time.perf_counter()
                response = self.client.post("/_dash-update-component", json=body)
                ms = (time.perf_counter() - started) * 1000
                data = response.get_data()
                sent.append(Request(key, ms, len(data), response.status_code, data))
                if response.status_code == 204:  # PreventUpdate
                    continue
                if response.status_code != 200:
                    raise RuntimeError(f"{key}: {response.status_code}: {data[:500]!r}")
                answers.append((key, json.loads(data)["response"]))
            for key, answer in answers:
                for ident, values in answer.items():
                    for name, value in values.items():
                        self.props[(ident, name)] = value
                        pending.append(((ident, name), key))
                        if ident in self.locations and name in _ADDRESS:  # the other Locations follow the address
                            for other in self.locations:
                                if other != ident and self.props.get((other, name)) != value:
                                    self.props[(other, name)] = value
                                    pending.append(((other, name), None))
        return sent
