"""Whether the datapoint on screen is still the same datapoint after switching run or pass, and where it is there.

Switching epoch inside a run keeps the index: the passes of one run score the same dataset. Across runs an index
means nothing by itself (another run may have shuffled, filtered or used another split), so the datapoint is followed
only when the logs show it is the same one:

1. **Same meta key.** A scalar ``meta_info`` field that names a datapoint (:data:`KEY_FIELDS`: ``path``, ``image_id``,
   ...; its values unique in the pass we leave) is looked up in the other pass: the datapoint opens wherever it sits
   there, at another index if need be, and the note says so.
2. **Same index and same dataset.** Without such a key: both passes have as many datapoints, and at this index every
   meta field the two share agrees (at least one must).

Otherwise the view goes back to the overview, and the note says why. Pure: the store's meta tables and counts in,
a :class:`Carried` out; no Dash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eval_viewer.app.state import ViewState
from eval_viewer.backend import LogStore

__all__ = ["Carried", "KEY_FIELDS", "carry_datapoint", "match_datapoint"]

KEY_FIELDS = ("path", "file", "filename", "file_name", "image_path", "img_path", "image_id", "img_id", "sample_id",
              "uid", "uuid", "key", "name", "id")
"""meta_info fields that name a datapoint, most specific first."""

Meta = Mapping[str, Sequence[Any]]


@dataclass(frozen=True)
class Carried:
    """The datapoint to show after a switch (None: none, the overview) and what to tell the user (None: nothing,
    it is plainly the same datapoint at the same index)."""

    idx: int | None
    note: str | None = None


def _key_field(old: Meta, new: Meta) -> str | None:
    for name in KEY_FIELDS:
        if name in old and name in new:
            values = [v for v in old[name] if v is not None]
            if values and len(set(map(str, values))) == len(values):
                return name
    return None


def match_datapoint(idx: int, old: Meta, old_n: int, new: Meta, new_n: int, *, same_run: bool,
                    where: str) -> Carried:
    """Where datapoint ``idx`` of the pass we leave (``old`` meta, ``old_n`` datapoints) is in the pass we go to
    (``new``, ``new_n``), named ``where`` in notes. See the module docstring for the rules."""
    key = _key_field(old, new)
    value = old[key][idx] if key is not None and idx < len(old[key]) else None
    if key is not None and value is not None:
        matches = [i for i, v in enumerate(new[key]) if v is not None and str(v) == str(value)]
        if not matches:
            return Carried(None, f"{where} has no datapoint with {key} {value!r} (datapoint #{idx} before the "
                                 "switch): back to the overview.")
        if matches[0] == idx:
            return Carried(idx)
        return Carried(matches[0], f"Datapoint #{idx} ({key} {value!r}) is #{matches[0]} in {where}: opened it there.")
    if old_n != new_n or idx >= new_n:
        return Carried(None, f"{where} has {new_n} datapoints, not {old_n}: datapoint #{idx} there is not the one "
                             "you were looking at. Back to the overview.")
    if same_run:
        return Carried(idx)
    common = [name for name in old if name in new and idx < len(old[name]) and idx < len(new[name])]
    differing = [name for name in common if str(old[name][idx]) != str(new[name][idx])]
    if common and not differing:
        return Carried(idx)
    reason = (f"its meta info differs there ({', '.join(differing[:3])})" if differing
              else "no meta info tells whether it is the same datapoint")
    return Carried(None, f"Datapoint #{idx} of {where} may be another datapoint: {reason}. Back to the overview.")


def carry_datapoint(store: LogStore, old: ViewState, new: ViewState) -> Carried:
    """The datapoint to show in resolved state ``new`` after leaving resolved state ``old`` (whose ``idx`` is set)."""
    assert old.idx is not None
    if old.pass_key == new.pass_key:
        return Carried(old.idx)
    old_n = store.scores(old.pass_key).num_datapoints
    new_n = store.scores(new.pass_key).num_datapoints
    same_run = old.run == new.run
    if same_run and old_n == new_n:
        return Carried(old.idx)  # the passes of one run score one dataset: no meta needs reading
    where = f"run {new.run!r} ({new.pass_key.label})" if not same_run else new.pass_key.label
    carried = match_datapoint(old.idx, store.meta_table(old.pass_key), old_n, store.meta_table(new.pass_key), new_n,
                              same_run=same_run, where=where)
    if carried.idx is None and any(not status.ready for status in (store.debug_status(k) for k in
                                                                   (old.pass_key, new.pass_key)) if status):
        return Carried(None, f"{carried.note} (Their pages are still being indexed: meta info is not known yet.)")
    return carried
