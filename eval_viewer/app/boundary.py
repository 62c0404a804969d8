"""The one place where an error becomes something the user sees.

A :class:`~eval_viewer.errors.ViewerError` from the store (a corrupt page, an unknown run in a shared link) is a
message meant for the user: it is shown in the panel that asked, and every other panel keeps working. Any other
exception is a bug: it is logged with its traceback on the server and the panel says so in one line, instead of the
callback failing and leaving a stale panel behind.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from dash import html
from dash.exceptions import PreventUpdate

from eval_viewer.errors import ViewerError

__all__ = ["error_box", "guarded", "message_of"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def error_box(message: str, *, title: str = "Cannot show this") -> html.Div:
    """A visible, styled message in place of a panel's content."""
    return html.Div(
        [html.Div(title, className="ev-error-title"), html.Div(message, className="ev-error-message")],
        className="ev-error",
        role="alert",
    )


def message_of(err: BaseException) -> tuple[str, str]:
    """``(title, message)`` for ``err``: the user-facing text of a ViewerError, a pointer to the log for a bug."""
    if isinstance(err, ViewerError):
        return "Cannot show this", str(err)
    return "Internal error", f"{type(err).__name__}: {err} (the server log has the traceback)"


def guarded(on_error: Callable[[html.Div], Any]) -> Callable[[Callable[P, R]], Callable[P, R | Any]]:
    """Decorate a callback so an exception becomes ``on_error(error_box)`` (the callback's outputs) instead of a 500.

    ``PreventUpdate`` passes through untouched: it is Dash's way of saying "nothing to do", not an error.
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R | Any]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Any:
            try:
                return fn(*args, **kwargs)
            except PreventUpdate:
                raise
            except ViewerError as err:
                log.info("%s: %s", fn.__name__, err)
                title, message = message_of(err)
                return on_error(error_box(message, title=title))
            except Exception as err:  # a bug: keep the app alive, keep the traceback in the log
                log.exception("callback %s failed", fn.__name__)
                title, message = message_of(err)
                return on_error(error_box(message, title=title))

        return wrapper

    return decorate

