"""The listing snapshot: which runs, passes, scores files and debug pages exist, taken in one walk per log dir.

Requests never walk the log tree: they read the current :class:`Snapshot`, an immutable value that a background
thread (:class:`Refresher`) replaces every few seconds, or at once when asked. Taking one is the only place that lists
folders; everything else is a dictionary lookup, so an arrow press costs the same on a log of 1 run or 5,000 passes,
and on a local disk or a bucket.

What is a run (unchanged from the reference layout): a folder with ``epoch_N`` sub-folders holding a validation scores
file or a ``debugger`` folder (a trainer; its passes are split ``val``, step N) and/or an evaluation scores file (an
evaluator run, or a trainer's final test pass: split ``test``, no step) and/or a ``train`` folder of ``step_N``
snapshot folders (training snapshots: split ``train``, step N; a run with only these is a run too). A log dir is a
run itself or a folder of runs at any depth up to :data:`MAX_DEPTH`; the walk does not descend into a run beyond its
epoch, snapshot and debugger folders.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from eval_viewer.backend.model import PassInfo, PassKey, RunInfo, RunKind
from eval_viewer.backend.sources import Source, Stat, join
from eval_viewer.log_format import (
    DEBUGGER_DIR,
    EVALUATION_SCORES,
    SPLIT_ORDER,
    SPLIT_TEST,
    SPLIT_TRAIN,
    SPLIT_VAL,
    TRAIN_DIR,
    TRAINING_SCORES,
    VALIDATION_SCORES,
    is_index_name,
    parse_epoch_dir,
    parse_page_name,
    parse_step_dir,
)

__all__ = ["DebugListing", "PassFiles", "Snapshot", "take_snapshot", "Refresher", "url_safe", "MAX_DEPTH"]

logger = logging.getLogger(__name__)

MAX_DEPTH = 6
"""How deep below a log dir runs are looked for; deeper folders are not walked (a log dir may be a big tree)."""


def url_safe(name: str) -> str:
    """``name`` percent-encoded except for letters, digits, ``-._~`` and ``/`` (kept so nested runs read naturally)."""
    return quote(name, safe="/-._~")


@dataclass(frozen=True)
class DebugListing:
    """The files of one ``debugger`` folder: pages and index files with their stats."""

    pages: Mapping[str, Stat] = field(default_factory=dict)
    index_files: Mapping[str, Stat] = field(default_factory=dict)
    exists: bool = False
    """The folder is there, even with nothing in it yet (a writer that has only just started, or saved nothing)."""

    def __bool__(self) -> bool:
        return bool(self.pages or self.index_files)


@dataclass(frozen=True)
class PassFiles:
    """Where one pass's files are inside its source."""

    source: Source
    folder: str
    scores: str | None
    """Relative path of the scores file; None when the pass only has debug pages."""
    scores_stat: Stat | None
    debug: DebugListing

    @property
    def debug_dir(self) -> str:
        return join(self.folder, DEBUGGER_DIR)


@dataclass(frozen=True)
class Snapshot:
    """Runs (by name) and the files of every pass, as listed at ``taken_at``; ``version`` changes when they do."""

    runs: Mapping[str, RunInfo]
    files: Mapping[PassKey, PassFiles]
    taken_at: float
    version: str


def _split_order(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def _walk(source: Source) -> dict[str, tuple[dict[str, Stat], list[str]]]:
    """Every relevant folder's listing: containers and runs up to MAX_DEPTH, inside a run only its epoch folders and
    their (and its own) ``debugger`` folders."""
    listings: dict[str, tuple[dict[str, Stat], list[str]]] = {}
    for folder, files, dirs in source.walk(MAX_DEPTH + 3):
        listings[folder] = (files, list(dirs))
        parent, _, name = folder.rpartition("/")
        if name == DEBUGGER_DIR:
            dirs[:] = []
        elif parse_epoch_dir(name) is not None or (
                parse_step_dir(name) is not None and parent.rpartition("/")[2] == TRAIN_DIR):
            dirs[:] = [d for d in dirs if d == DEBUGGER_DIR]
        elif name == TRAIN_DIR and any(parse_step_dir(d) is not None for d in dirs):
            dirs[:] = [d for d in dirs if parse_step_dir(d) is not None]  # a run's training snapshots
        elif EVALUATION_SCORES in files or any(parse_epoch_dir(d) is not None for d in dirs):
            dirs[:] = [d for d in dirs if d in (DEBUGGER_DIR, TRAIN_DIR) or parse_epoch_dir(d) is not None]
        elif folder.count("/") + (1 if folder else 0) >= MAX_DEPTH:
            dirs[:] = []
    return listings


def _debug_listing(listings: Mapping[str, tuple[dict[str, Stat], list[str]]], folder: str) -> DebugListing:
    entry = listings.get(join(folder, DEBUGGER_DIR))
    if entry is None:
        return DebugListing()
    files = entry[0]
    return DebugListing(
        pages={n: s for n, s in files.items() if parse_page_name(n) is not None},
        index_files={n: s for n, s in files.items() if is_index_name(n)},
        exists=True,
    )


def _train_passes(source: Source, listings: Mapping[str, tuple[dict[str, Stat], list[str]]],
                  folder: str) -> list[tuple[PassKey, PassFiles]]:
    """The training snapshot passes of the run at ``folder``: ``train/step_N/`` folders with pages or scores."""
    train = join(folder, TRAIN_DIR)
    if parse_step_dir(folder.rpartition("/")[2]) is not None or train not in listings:
        return []
    passes = []
    for d in listings[train][1]:
        step = parse_step_dir(d)
        if step is None:
            continue
        step_folder = join(train, d)
        scores = listings.get(step_folder, ({}, []))[0].get(TRAINING_SCORES)
        debug = _debug_listing(listings, step_folder)
        if scores is not None or debug:
            passes.append((PassKey("", SPLIT_TRAIN, step), PassFiles(
                source, step_folder, join(step_folder, TRAINING_SCORES) if scores else None, scores, debug)))
    return passes


def _runs_in(source: Source) -> list[tuple[str, RunKind, list[tuple[PassKey, PassFiles]]]]:
    """``(relative folder, kind, [(key without run name, files)])`` of every run in ``source``."""
    listings = _walk(source)
    found = []
    for folder, (files, dirs) in listings.items():
        base = folder.rsplit("/", 1)[-1]
        if folder and (base == DEBUGGER_DIR or parse_epoch_dir(base) is not None):
            continue  # part of the run at its parent
        passes: list[tuple[PassKey, PassFiles]] = []
        for d in dirs:
            step = parse_epoch_dir(d)
            if step is None:
                continue
            epoch_folder = join(folder, d)
            epoch_files = listings.get(epoch_folder, ({}, []))[0]
            debug = _debug_listing(listings, epoch_folder)
            scores = epoch_files.get(VALIDATION_SCORES)
            if scores is not None or debug:
                passes.append((PassKey("", SPLIT_VAL, step), PassFiles(
                    source, epoch_folder, join(epoch_folder, VALIDATION_SCORES) if scores else None, scores, debug)))
        passes.extend(_train_passes(source, listings, folder))
        evaluation = files.get(EVALUATION_SCORES)
        if evaluation is not None:
            passes.append((PassKey("", SPLIT_TEST, None), PassFiles(
                source, folder, join(folder, EVALUATION_SCORES), evaluation, _debug_listing(listings, folder))))
        if not passes:
            continue
        kind: RunKind = "trainer" if any(k.split in (SPLIT_VAL, SPLIT_TRAIN) for k, _ in passes) else "evaluator"
        passes.sort(key=lambda kf: (_split_order(kf[0].split), -1 if kf[0].step is None else kf[0].step))
        found.append((folder, kind, passes))
    found.sort(key=lambda r: r[0])
    return found


class _Names:
    """Stable, unique, URL-safe run names across snapshots: a run keeps its name for the life of the store."""

    def __init__(self) -> None:
        self._names: dict[tuple[str, str], str] = {}

    def name(self, source: Source, rel: str) -> str:
        key = (source.identity, rel)
        name = self._names.get(key)
        if name is not None:
            return name
        root_name = source.identity.rstrip("/").rsplit("/", 1)[-1] or "run"
        taken = set(self._names.values())
        name = url_safe(rel or root_name)
        if name in taken:
            name = url_safe(f"{root_name}/{rel}" if rel else root_name)
        base, n = name, 2
        while name in taken:
            name, n = f"{base}~{n}", n + 1
        self._names[key] = name
        return name


def take_snapshot(sources: Sequence[Source], names: _Names | None = None) -> Snapshot:
    """List every source once and build the snapshot (the only function that walks the logs)."""
    names = names or _Names()
    runs: dict[str, RunInfo] = {}
    files: dict[PassKey, PassFiles] = {}
    signature: list[object] = []
    seen: set[str] = set()
    for source in sources:
        source.refresh()
        for rel, kind, passes in _runs_in(source):
            real = source.real_key(rel) or f"{source.identity}/{rel}"
            if real in seen:  # the same run folder named twice (two --log-dir, or one inside another)
                continue
            seen.add(real)
            name = names.name(source, rel)
            infos = []
            for bare, pass_files in passes:
                key = PassKey(name, bare.split, bare.step)
                infos.append(PassInfo(key=key, location=source.url(pass_files.folder),
                                      has_scores=pass_files.scores is not None, has_debug=bool(pass_files.debug)))
                files[key] = pass_files
                signature.append((key, pass_files.scores_stat, tuple(sorted(pass_files.debug.pages.items())),
                                  tuple(sorted(pass_files.debug.index_files.items()))))
            runs[name] = RunInfo(name=name, location=source.url(rel), kind=kind, passes=tuple(infos))
    # a digest, not hash(): the same listing gives the same version in every process (gunicorn workers, restarts)
    version = hashlib.sha1(repr(signature).encode()).hexdigest()[:16]
    return Snapshot(runs=dict(sorted(runs.items())), files=files, taken_at=time.time(), version=version)


class Refresher:
    """Keeps a snapshot current: takes a new one every ``interval_s`` seconds on a daemon thread and when asked.

    ``on_change(old, new)`` runs after a snapshot whose version differs (the store refreshes its page indexes there).
    A failing refresh keeps the previous snapshot and logs why.
    """

    def __init__(self, sources: Sequence[Source], interval_s: float,
                 on_change: Callable[[Snapshot, Snapshot], None] | None = None) -> None:
        self._sources = list(sources)
        self._names = _Names()
        self._interval = interval_s
        self._on_change = on_change
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._done = threading.Condition()
        self._generation = 0
        self.snapshot = take_snapshot(self._sources, self._names)
        self._thread: threading.Thread | None = None
        if interval_s > 0:
            self._thread = threading.Thread(target=self._loop, name="eval-viewer-snapshot", daemon=True)
            self._thread.start()

    def refresh(self) -> Snapshot:
        """Take a new snapshot now (in the calling thread) and return it."""
        with self._lock:
            old = self.snapshot
            new = take_snapshot(self._sources, self._names)
            self.snapshot = new
        if new.version != old.version and self._on_change is not None:
            self._on_change(old, new)
        with self._done:
            self._generation += 1
            self._done.notify_all()
        return new

    def request(self) -> None:
        """Ask the background thread for a new snapshot soon, without waiting for it."""
        if self._thread is None:
            self.refresh()
        else:
            self._wake.set()

    def _loop(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - keep the last good snapshot, try again next time
                logger.warning("Refreshing the run listing failed; keeping the previous one", exc_info=True)

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
