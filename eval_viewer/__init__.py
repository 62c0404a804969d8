"""eval-viewer: capture per-datapoint scores and model internals during evaluation, then rank and inspect them.

``eval_viewer.open("work_dir")`` opens logs in a notebook or script (:mod:`eval_viewer.api`);
``python -m eval_viewer --log-dir work_dir`` serves the web app; :mod:`eval_viewer.debuggers` captures.
"""

from __future__ import annotations

from eval_viewer.api import Datapoint, Logs, open

__all__ = ["open", "Logs", "Datapoint"]
