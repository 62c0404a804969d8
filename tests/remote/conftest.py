"""The remote-log tests reuse the reference-layout writer of the app tests; the S3 server lives in tests/conftest.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))
