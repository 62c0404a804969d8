"""Find runs under the ``--log-dir`` paths: which folders are trainer or evaluator runs, their epochs, their debug pages.

A *trainer run* is a folder with ``epoch_N`` sub-folders that hold a validation scores file or a ``debugger`` folder
(gaps allowed, sorted numerically, so ``epoch_10`` follows ``epoch_9``); an *evaluator run* is a folder with an
evaluation scores file. A log dir is either a run itself or a folder of runs at any depth (up to :data:`MAX_DEPTH`);
the walk does not descend into a run. Only names are listed and a few ``stat`` calls made, never a page opened, so
:func:`scan_log_dir` is cheap enough to call on every refresh of the run list, which is how new epochs appear while
the viewer runs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from eval_viewer.backend.model import EpochInfo, RunKind
from eval_viewer.log_format import (
    DEBUGGER_DIR,
    EVALUATION_SCORES,
    VALIDATION_SCORES,
    is_index_name,
    parse_epoch_dir,
    parse_page_name,
)

__all__ = ["FoundRun", "scan_log_dir", "run_at", "is_run_dir", "has_debug", "url_safe", "MAX_DEPTH"]

logger = logging.getLogger(__name__)

MAX_DEPTH = 6
"""How deep below a log dir runs are looked for; deeper folders are not walked (a log dir may be a big tree)."""


@dataclass(frozen=True)
class FoundRun:
    path: Path
    rel: str
    """Path relative to the log dir (POSIX separators), or the folder name when the log dir is the run."""
    kind: RunKind
    epochs: tuple[EpochInfo, ...]


def url_safe(name: str) -> str:
    """``name`` percent-encoded except for letters, digits, ``-._~`` and ``/`` (kept so nested runs read naturally)."""
    return quote(name, safe="/-._~")


def has_debug(debug_dir: Path) -> bool:
    """Whether ``debug_dir`` holds at least one page or index (stops at the first one; pages can be thousands)."""
    try:
        with os.scandir(debug_dir) as entries:
            for entry in entries:
                if parse_page_name(entry.name) is not None or is_index_name(entry.name):
                    return True
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        logger.warning("Cannot list %s: %s", debug_dir, exc)
    return False


def _epoch_infos(run_dir: Path) -> list[EpochInfo]:
    epochs: list[EpochInfo] = []
    try:
        entries = list(os.scandir(run_dir))
    except OSError as exc:
        logger.warning("Cannot list %s: %s", run_dir, exc)
        return []
    for entry in entries:
        number = parse_epoch_dir(entry.name)
        if number is None or not entry.is_dir():
            continue
        path = Path(entry.path)
        debug = has_debug(path / DEBUGGER_DIR)
        if debug or (path / VALIDATION_SCORES).is_file():
            epochs.append(EpochInfo(epoch=number, path=path, has_debug=debug))
    epochs.sort(key=lambda e: e.epoch if e.epoch is not None else -1)
    return epochs


def run_at(path: Path) -> tuple[RunKind, tuple[EpochInfo, ...]] | None:
    """The run at ``path``, if it is one.

    A trainer folder that also holds an evaluation scores file keeps it as a last entry with ``epoch=None`` (a final
    test pass), so nothing on disk is hidden.
    """
    epochs = _epoch_infos(path)
    evaluation = (path / EVALUATION_SCORES).is_file()
    if evaluation:
        epochs.append(EpochInfo(epoch=None, path=path, has_debug=has_debug(path / DEBUGGER_DIR)))
    if not epochs:
        return None
    kind: RunKind = "trainer" if any(e.epoch is not None for e in epochs) else "evaluator"
    return kind, tuple(epochs)


def is_run_dir(path: Path) -> bool:
    return run_at(path) is not None


def scan_log_dir(log_dir: Path) -> list[FoundRun]:
    """Every run at or below ``log_dir``, sorted by relative path. The log dir must exist (the caller checks)."""
    found: list[FoundRun] = []
    top = run_at(log_dir)
    if top is not None:
        name = log_dir.resolve().name or "run"
        return [FoundRun(log_dir, name, *top)]
    stack: list[tuple[Path, int]] = [(log_dir, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            children = sorted(
                (Path(e.path) for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")),
                reverse=True,
            )
        except OSError as exc:
            logger.warning("Cannot list %s: %s", folder, exc)
            continue
        for child in children:
            run = run_at(child)
            if run is not None:
                found.append(FoundRun(child, child.relative_to(log_dir).as_posix(), *run))
            elif depth + 1 < MAX_DEPTH and parse_epoch_dir(child.name) is None and child.name != DEBUGGER_DIR:
                stack.append((child, depth + 1))
    found.sort(key=lambda r: r.rel)
    return found
