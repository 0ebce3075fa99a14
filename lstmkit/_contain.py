"""Run a plugin's code so that nothing it raises can end the process.

A plugin that calls ``sys.exit()`` or raises ``KeyboardInterrupt`` while it
imports, registers or builds a backend must cost one warning, not the
process.  Only a *real* Ctrl-C is let through: while plugin code runs (in the
main thread) a SIGINT handler notes that the signal arrived, so a
``KeyboardInterrupt`` that follows a SIGINT propagates and one the plugin
raised itself is contained.  ``os._exit`` and crashes of native code cannot
be contained.
"""
from __future__ import annotations

import signal
import threading
from typing import Any, Callable


class _SigintWatch:
    """Notes whether SIGINT arrived while plugin code ran; the previous handler still runs."""

    def __init__(self):
        self.hit = False
        self._previous: Any = None
        self._installed = False

    def _handler(self, signum, frame):
        self.hit = True
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:  # SIG_DFL: stop, as the user asked
            raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                previous = signal.getsignal(signal.SIGINT)
                if previous is not None:  # None: a handler set from C, left alone
                    signal.signal(signal.SIGINT, self._handler)
                    self._previous, self._installed = previous, True
            except (ValueError, OSError):  # no signals here (e.g. an embedded interpreter)
                pass
        return self

    def __exit__(self, *exc_info):
        if self._installed and signal.getsignal(signal.SIGINT) == self._handler:
            signal.signal(signal.SIGINT, self._previous)
        return False


def call_plugin(function: Callable[..., Any], *args, **kwargs) -> tuple[Any, BaseException | None]:
    """``(function(*args, **kwargs), None)``, or ``(None, exception)`` for anything it raised.

    ``SystemExit``, ``KeyboardInterrupt`` and other ``BaseException``\\ s are
    returned like ordinary exceptions, except a ``KeyboardInterrupt`` caused
    by a real SIGINT (the user pressed Ctrl-C), which propagates.
    """
    with _SigintWatch() as watch:
        try:
            return function(*args, **kwargs), None
        except BaseException as exc:  # noqa: B902 - containing every exception is the point
            if isinstance(exc, KeyboardInterrupt) and watch.hit:
                raise
            return None, exc


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` on one line (multi-line messages joined with ``"; "``)."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if isinstance(exc, SystemExit):
        return f"SystemExit (it called sys.exit({exc.code!r}))"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
