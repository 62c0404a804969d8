"""``python -m eval_viewer --log-dir PATH``: see :mod:`eval_viewer.cli`."""

from __future__ import annotations

from eval_viewer.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
