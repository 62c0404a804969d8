"""The one place where an error becomes something the user sees.

A :class:`~eval_viewer.errors.ViewerError` from the store (a corrupt page, an unknown run in a shared link) is a
message meant for the user: it is shown in the panel that asked, and every other panel keeps working. Any other
exception is a bug: it is logged with its traceback on the server and the panel says so in one line, instead of the
callback failing and leaving a stale panel behind.

Two ways in, one behaviour: :func:`guarded` wraps a callback that has a panel to put the message in;
:func:`on_callback_error` is the app-wide handler (``Dash(on_error=...)``, set by ``create_app``) that catches what
any other callback raises, so no callback answers a 500: it logs the same way and shows the message in the page's
notice area.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from dash import html, set_props
from dash.exceptions import PreventUpdate

from eval_viewer.errors import ViewerError

__all__ = ["error_box", "guarded", "message_of", "on_callback_error"]

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



def on_callback_error(err: Exception) -> None:
    """``Dash(on_error=...)``: a callback without its own boundary raised ``err``; its outputs stay as they were
    and the notice area says what happened."""
    if isinstance(err, ViewerError):
        log.info("callback: %s", err)
    else:
        log.error("callback failed", exc_info=err)
    title, message = message_of(err)
    try:
        from eval_viewer.app import ids

        set_props(ids.NOTICE, {"children": error_box(message, title=title)})
    except Exception:  # noqa: BLE001 - outside a callback context (tests): the log has it
        log.debug("no notice area to show the error in", exc_info=True)
