"""The offline failure report: the K worst datapoints of a pass as one HTML page that opens from a file, no server.

``python -m eval_viewer export ...`` and :meth:`eval_viewer.api.Logs.export` both call :func:`export_report`. It asks
the provider (:class:`~eval_viewer.backend.LogStore`) for the pass and its ranking (the failure table's own:
lower-is-better metrics flipped, NaN first), reads each datapoint, and has :mod:`eval_viewer.display.report` draw it
with the app's renderers; :func:`eval_viewer.display.html.page` writes the page. Plotly figures stay interactive,
pictures are PNG data URLs; plotly.js is either inside the page (``inline``: one file) or copied from the installed
plotly package beside it (``directory``: ``plotly.min.js``, shared by several reports in one folder). Nothing is
downloaded, when writing or when viewing.

With a second pass (``vs``) each datapoint is shown in both, through the app's paired view, paired by index.
Every mistake in the choice (run, pass, metric, K, mode) is a :class:`~eval_viewer.errors.ViewerError` naming what
there is; the CLI turns it into one line and exit code 2.
"""

from __future__ import annotations

import logging
import pkgutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from eval_viewer.backend import DatapointRecord, LogStore, PassKey
from eval_viewer.backend.compare import Alignment
from eval_viewer.backend.health import Flag, health
from eval_viewer.backend.store import PassLike
from eval_viewer.backend.summary import alignment_for
from eval_viewer.display.html import PLOTLYJS_FILE, page, stylesheet
from eval_viewer.display.report import REPORT_CSS, ReportEntry, ReportSpec, contents, entry_view, report_head
from eval_viewer.display.view import Node
from eval_viewer.errors import NotFoundError, ViewerError
from eval_viewer.log_format import atomic_write_bytes, atomic_write_text

__all__ = ["export_report", "PassChoice", "REPORT_FILE", "PLOTLYJS_MODES"]

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
PLOTLYJS_MODES = ("inline", "directory")
PlotlyJsMode = Literal["inline", "directory"]


@dataclass(frozen=True)
class PassChoice:
    """A pass as a person names it: a run, and optionally a split and a step (the run's default pass, or the latest
    step of the split, for what is left out: :meth:`~eval_viewer.backend.model.RunInfo.choose`)."""

    run: str
    split: str | None = None
    step: int | None = None

    @classmethod
    def of(cls, value: PassChoice | str | PassLike) -> PassChoice:
        """A choice from a run name (its default pass), a :class:`PassKey` or a ``(run, split[, step])`` tuple."""
        if isinstance(value, PassChoice):
            return value
        if isinstance(value, str):
            return cls(value)
        key = PassKey.of(value)
        return cls(key.run, key.split, key.step)

    def resolve(self, store: LogStore) -> PassKey:
        """The pass's key; NotFoundError naming the runs, or the run's passes, when there is no such pass."""
        return store.run(self.run).choose(self.split, self.step).key


def _plotlyjs_bundle() -> bytes:
    """The installed plotly package's own plotly.min.js (the version its figures were written for)."""
    data = pkgutil.get_data("plotly", f"package_data/{PLOTLYJS_FILE}")
    if not data:  # pragma: no cover - a broken plotly install
        raise ViewerError(f"The installed plotly package has no package_data/{PLOTLYJS_FILE}; reinstall plotly")
    return data


def _check_metric(store: LogStore, key: PassKey, metric: str) -> None:
    scores = store.scores(key)
    if metric not in scores.per_datapoint:
        raise NotFoundError(f"No metric {metric!r} in {key} (metrics: {', '.join(scores.metrics) or 'none'})")


def _partner(store: LogStore, alignment: Alignment, vs: PassKey, idx: int) -> tuple[DatapointRecord | None, str]:
    j = alignment.b_of(idx)
    if j is None:
        return None, f"Datapoint {idx} has no partner in {vs} (it has {store.scores(vs).num_datapoints}): shown alone."
    return store.datapoint(vs, j), ""


def _flags(store: LogStore, record: DatapointRecord | None) -> list[Flag]:
    """The health flags of ``record`` from its saved debug outputs alone (:func:`eval_viewer.backend.health.health`;
    checks that need the whole pass, such as channels dead on every datapoint, are the app's Health panel's)."""
    if record is None or not record.debug:
        return []
    return list(health(record, store.debugger_info(record.pass_key)))


def _flag_texts(flags: Sequence[Flag], prefix: str = "") -> list[str]:
    return [f"{prefix}{flag.layer}: {flag.text}" for flag in flags]


def _flag_summary(flags: Sequence[Flag]) -> str:
    counts: dict[str, int] = {}
    for flag in flags:
        counts[flag.kind] = counts.get(flag.kind, 0) + 1
    return ", ".join(f"{kind.replace('_', ' ')} ×{n}" for kind, n in counts.items())


def _pairing_note(alignment: Alignment, vs: PassKey | None) -> tuple[str, ...]:
    alone = alignment.unmatched_a.size
    return (f"Datapoints are paired with {vs} by index ({alignment.size} pairs"
            + (f"; {alone} of pass a have no partner" if alone else "") + ").",)


def export_report(store: LogStore, choice: PassChoice, metric: str, worst: int, out: str | Path, *,
                  vs: PassChoice | None = None, plotlyjs: PlotlyJsMode = "inline", progress: bool = True) -> Path:
    """Write the report of the ``worst`` worst datapoints of ``choice`` by ``metric`` into folder ``out`` (created
    if needed): ``out/report.html``, and ``out/plotly.min.js`` with ``plotlyjs="directory"``. Returns the page's
    path. ``vs``: a second pass, each datapoint shown in both. ``progress``: a progress bar on stderr."""
    if plotlyjs not in PLOTLYJS_MODES:
        raise ViewerError(f"--plotlyjs must be one of {', '.join(PLOTLYJS_MODES)}, not {plotlyjs!r}")
    if worst < 1:
        raise ViewerError(f"--worst must be at least 1, got {worst}")
    key = choice.resolve(store)
    _check_metric(store, key, metric)
    scores = store.scores(key)
    order = scores.ranking(metric)[:worst]
    vs_key: PassKey | None = None
    alignment: Alignment | None = None
    if vs is not None:
        vs_key = vs.resolve(store)
        if vs_key == key:
            raise ViewerError(f"--vs names the report's own pass {key}; choose another run, split or epoch")
        _check_metric(store, vs_key, metric)
        alignment = alignment_for(store, key, vs_key)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ViewerError(f"--out {out} is a file; give a folder for the report")
    spec = ReportSpec(pass_a=key, metric=metric, higher_is_better=scores.higher_is_better,
                      num_datapoints=scores.num_datapoints, shown=len(order), aggregated_a=scores.aggregated,
                      pass_b=vs_key, aggregated_b=store.scores(vs_key).aggregated if vs_key is not None else {},
                      notes=_pairing_note(alignment, vs_key) if alignment is not None else ())
    entries, sections = _entries(store, spec, [int(i) for i in order], alignment, progress)
    title = f"eval-viewer: worst {spec.shown} of {key} by {metric}" + (f" vs {vs_key}" if vs_key else "")
    document = page([report_head(spec), contents(spec, entries), *sections], title=title, plotly_js=plotlyjs,
                    css=stylesheet() + REPORT_CSS)
    try:
        out.mkdir(parents=True, exist_ok=True)
        path = out / REPORT_FILE
        atomic_write_text(path, document)
        if plotlyjs == "directory":
            atomic_write_bytes(out / PLOTLYJS_FILE, _plotlyjs_bundle())
    except OSError as err:
        raise ViewerError(f"Cannot write the report into {out}: {err.strerror or err}") from None
    log.info("Wrote %s: %d datapoints, %.1f MB", path, spec.shown, len(document.encode()) / 2**20)
    return path


def _entries(store: LogStore, spec: ReportSpec, order: Sequence[int], alignment: Alignment | None,
             progress: bool) -> tuple[list[ReportEntry], list[Node]]:
    """Read and draw each datapoint, worst first, under a progress bar (reading pages and encoding pictures is the
    report's whole cost)."""
    entries: list[ReportEntry] = []
    sections: list[Node] = []
    bar = tqdm(order, desc=f"export {spec.pass_a}", unit="datapoint", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    for rank, idx in enumerate(bar, start=1):
        record = store.datapoint(spec.pass_a, idx)
        partner: DatapointRecord | None = None
        why = ""
        if alignment is not None and spec.pass_b is not None:
            partner, why = _partner(store, alignment, spec.pass_b, idx)
        flags_a, flags_b = _flags(store, record), _flags(store, partner)
        paired = spec.pass_b is not None
        texts = _flag_texts(flags_a, "a · " if paired else "") + _flag_texts(flags_b, "b · ")
        summary = _flag_summary(flags_a) + (f" | b: {_flag_summary(flags_b)}" if flags_b else "")
        entry = ReportEntry(rank=rank, record=record, partner=partner, no_partner=why, flags=tuple(texts),
                            flag_summary=summary.strip(" |"), card_flags=tuple(flags_a))
        entries.append(entry)
        sections.append(entry_view(spec, entry))
    bar.close()
    return entries, sections
