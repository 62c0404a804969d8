"""One writer per folder and rank: a claim file that makes two processes writing the same page names an error.

Pages and the index of one rank have fixed names (``page_K.pkl``, ``index.json``; ``page_rank{R}_K.pkl`` with a
rank), so two processes that write one folder under the same rank overwrite each other's pages, and each removes
the other's as stale when it finishes: a 2-process run without ``rank=`` lost 5 of 11 datapoints that way. Before
writing into a folder a writer creates ``.eval_viewer_writer[_rank{R}].json`` (exclusively) naming its host and
process; the claim stays while the process lives (so a writer that finishes later still sees it) and is removed at
exit. Another live process of the same host holding the claim is a :class:`~eval_viewer.errors.CaptureError`;
a claim of a process that has ended is stale and taken over; a claim from another host cannot be checked and is
taken over with a warning. The file starts with a dot, so no reader mistakes it for part of the log.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
from pathlib import Path

from eval_viewer.debuggers.files import process_alive
from eval_viewer.errors import CaptureError
from eval_viewer.log_format import FILE_MODE

__all__ = ["claim_folder", "claim_name"]

logger = logging.getLogger(__name__)

_held: set[Path] = set()


def claim_name(rank: int | None) -> str:
    return ".eval_viewer_writer.json" if rank is None else f".eval_viewer_writer_rank{int(rank)}.json"


def claim_folder(folder: Path, rank: int | None) -> None:
    """Claim ``folder`` for this process's pages of ``rank``, or raise if another live process holds it."""
    path = folder / claim_name(rank)
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
        except FileExistsError:
            holder = _read(path)
            if holder == me:
                return
            if holder is not None and _conflicts(holder, me):
                raise CaptureError(_message(folder, rank, holder)) from None
            path.unlink(missing_ok=True)  # stale, unreadable or from another host: take it over
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        if not _held:
            atexit.register(_release_all)
        _held.add(path)
        return
    raise CaptureError(f"could not claim {folder} for writing debug pages: {path} keeps changing")


def _release_all() -> None:
    """At exit: remove the claims this process still holds (a crash leaves them; they are then stale)."""
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    for path in list(_held):
        if _read(path) == me:
            path.unlink(missing_ok=True)
    _held.clear()


def _read(path: Path) -> dict[str, object] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _conflicts(holder: dict[str, object], me: dict[str, object]) -> bool:
    if holder.get("host") != me["host"]:
        logger.warning("Taking over the page-writer claim of host %s in this folder (cannot check that it ended)",
                       holder.get("host"))
        return False
    return process_alive(holder.get("pid"))


def _message(folder: Path, rank: int | None, holder: dict[str, object]) -> str:
    who = "rank None (one process)" if rank is None else f"rank {rank}"
    return (
        f"another process (pid {holder.get('pid')}) is writing debug pages of {who} into {folder}; two writers of "
        "one rank would overwrite each other's pages. Under multi-process evaluation give each process its own "
        "rank (SequentialDebugger(..., rank=RANK); taken from torch.distributed when it is initialised) or its own "
        f"folder. If that process has ended, delete {claim_name(rank)} in that folder."
    )
