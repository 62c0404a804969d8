"""Where pages wait before ``save_all`` names their folder, and what a crash leaves behind.

In the reference flow (``reset_buffer()`` ... ``save_all(dir)``) the epoch's folder is only known at the end, so full
pages are *staged*. They are staged beside the log, never in the system temp folder (a crash there lost every
completed page, and a tmpfs loses them at reboot): in ``<root>/.eval_viewer_staging/<host>-<pid>-<time>/``, where
``root`` is the ``staging_dir`` given to the debugger, else the run folder of the last ``save_all`` (its
``epoch_N/debugger`` -> the run), else the current directory. Hidden (the viewer skips dot folders), on the log's file
system (``save_all`` moves pages in by rename). Every staged page is complete (written atomically) and the staging
folder keeps its own ``index.json`` after every page, so it is a readable debugger folder at every instant.

On the next start (:func:`recover`), staging folders whose process is gone are reported with what they hold and the
call that moves them into an epoch's folder (:func:`move_in`); leftover temp files of interrupted page writes
(``.page_K.pkl.XXXX.tmp``) of this rank are removed from a folder the writer has claimed (:func:`clean_temp_files`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from eval_viewer import log_format as lf
from eval_viewer.debuggers.files import process_alive
from eval_viewer.errors import CaptureError

__all__ = ["STAGING_DIR", "staging_root", "new_staging_folder", "recover", "move_in", "clean_temp_files"]

logger = logging.getLogger(__name__)

STAGING_DIR = ".eval_viewer_staging"
_OWNER = "owner.json"


def staging_root(explicit: Path | None, last_target: Path | None) -> Path:
    """The folder that holds ``.eval_viewer_staging``: ``explicit``, else the run of ``last_target``, else the cwd."""
    if explicit is not None:
        return explicit
    if last_target is not None:
        epoch = last_target.parent if last_target.name == lf.DEBUGGER_DIR else last_target
        return epoch.parent if lf.parse_epoch_dir(epoch.name) is not None else epoch
    return Path.cwd()


def new_staging_folder(root: Path) -> Path:
    """A fresh private staging folder under ``root/.eval_viewer_staging`` with an owner record; errors name it."""
    folder = root / STAGING_DIR / f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
    try:
        folder.mkdir(parents=True)
        lf.atomic_write_text(folder / _OWNER, json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}))
    except OSError as exc:
        raise CaptureError(f"could not create the staging folder {folder} for debug pages: {exc.strerror or exc} "
                           "(choose another with SequentialDebugger(staging_dir=...))") from exc
    logger.info("Debug pages are staged in %s until save_all names the epoch's folder", folder)
    return folder


def _alive(folder: Path) -> bool:
    try:
        owner = json.loads((folder / _OWNER).read_text())
    except (OSError, ValueError):
        return False
    if owner.get("host") != socket.gethostname():
        return True  # another machine's process: not ours to judge
    return process_alive(owner.get("pid"))


def recover(root: Path) -> list[Path]:
    """Staging folders under ``root`` left by processes that are gone, each reported with its pages; returned so a
    caller can :func:`move_in` them. Nothing is deleted: every completed page stays readable where it is."""
    base = root / STAGING_DIR
    found: list[Path] = []
    try:
        entries = sorted(p for p in base.iterdir() if p.is_dir())
    except OSError:
        return found
    for folder in entries:
        if _alive(folder):
            continue
        pages = sorted(p.name for p in folder.iterdir() if lf.parse_page_name(p.name) is not None)
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        if not pages:
            _remove_empty(folder)
            continue
        found.append(folder)
        logger.warning(
            "%d completed debug pages of an interrupted capture are kept in %s (readable there, with their "
            "index.json); move them into the epoch's folder with "
            "eval_viewer.debuggers.staging.move_in(%r, 'RUN/epoch_N/debugger')", len(pages), str(folder), str(folder))
    return found


def move_in(staged: str | os.PathLike[str], output_dir: str | os.PathLike[str]) -> list[Path]:
    """Move the pages and index files of a staging folder into ``output_dir`` (an epoch's ``debugger`` folder); the
    moved pages. Refuses to overwrite a page already there."""
    from eval_viewer.debuggers.files import move_atomic

    src, dst = Path(staged), Path(output_dir)
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CaptureError(f"could not create {dst}: {exc.strerror or exc}") from exc
    moved = []
    names = sorted(p.name for p in src.iterdir() if lf.parse_page_name(p.name) is not None or lf.is_index_name(p.name))
    for name in names:
        if lf.parse_page_name(name) is not None and (dst / name).exists():
            raise CaptureError(f"{dst / name} already exists; not overwriting it with {src / name}")
    for name in sorted(names, key=lf.is_index_name):  # pages first, the index last
        try:
            move_atomic(src / name, dst / name)
        except OSError as exc:
            raise CaptureError(f"could not move {src / name} into {dst}: {exc.strerror or exc}") from exc
        if lf.parse_page_name(name) is not None:
            moved.append(dst / name)
    _remove_empty(src)
    return moved


def clean_temp_files(folder: Path, rank: int | None) -> int:
    """Remove this rank's temp files of interrupted page writes in ``folder`` (which the caller has claimed, so no
    live process of this rank is writing them); the number removed."""
    removed = 0
    try:
        candidates = list(folder.glob(".page*.tmp"))
    except OSError:
        return 0
    for tmp in candidates:
        name = tmp.name[1:].rsplit(".", 2)[0]  # ".page_3.pkl.ab12cd.tmp" -> "page_3.pkl"
        parsed = lf.parse_page_name(name)
        if parsed is not None and parsed[0] == rank:
            tmp.unlink(missing_ok=True)
            removed += 1
    if removed:
        logger.info("Removed %d temp files of interrupted page writes in %s", removed, folder)
    return removed


def _remove_empty(folder: Path) -> None:
    (folder / _OWNER).unlink(missing_ok=True)
    try:
        folder.rmdir()
        folder.parent.rmdir()  # the .eval_viewer_staging folder itself, once empty
    except OSError:
        pass
