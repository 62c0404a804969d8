"""One tree of errors whose messages are safe to show a user.

Every error the viewer shows a person derives from :class:`ViewerError`; the app turns one into a message at a single
boundary and keeps everything else working. Messages name the file and say what is wrong and what to do, never a
traceback.

    ViewerError
    ├── LogDirError            a --log-dir that does not exist or holds no run
    ├── ScoresError            a missing or malformed scores file, mismatched datapoint counts
    ├── PageError              a corrupt, truncated or unreadable debug page or index
    │   └── UntrustedPickleError   a page holds a class outside the allow-list
    ├── NotFoundError          an unknown run, epoch, metric or datapoint
    └── CaptureError           the capture side: a failed page write, a bad debugger config, an unknown layer
"""

from __future__ import annotations

__all__ = [
    "ViewerError",
    "LogDirError",
    "ScoresError",
    "PageError",
    "UntrustedPickleError",
    "NotFoundError",
    "CaptureError",
]


class ViewerError(Exception):
    """Base of every error meant for a user; ``str(err)`` is the message to show."""


class LogDirError(ViewerError):
    pass


class ScoresError(ViewerError):
    pass


class PageError(ViewerError):
    pass


class UntrustedPickleError(PageError):
    pass


class NotFoundError(ViewerError, LookupError):
    pass


class CaptureError(ViewerError):
    pass
