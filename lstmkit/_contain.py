"""Run a plugin's code so that nothing it raises can end the process.

A plugin that calls ``sys.exit()`` or raises ``KeyboardInterrupt`` while it
imports, registers or builds a backend must cost one warning, not the
process.  Only a *real* signal is let through: while plugin code runs (in the
main thread) a handler notes that SIGINT (Ctrl-C) or SIGTERM (when Python
handles it: ``lstmkit run`` turns it into ``KeyboardInterrupt``) arrived, so
what its handler raises propagates, and a ``KeyboardInterrupt`` the plugin
raised itself is contained.  ``os._exit`` and crashes of native code cannot
be contained.
"""
from __future__ import annotations

import signal
import threading
from typing import Any, Callable


class _SignalWatch:
    """Notes whether SIGINT or a Python-handled SIGTERM arrived while plugin code ran; the previous
    handlers still run."""

    def __init__(self):
        self.hit = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame):
        self.hit = True
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:  # SIG_DFL of SIGINT: stop, as the user asked
            raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in ("SIGINT", "SIGTERM"):
            signum = getattr(signal, name, None)
            try:
                previous = signal.getsignal(signum) if signum is not None else None
                # None: a handler set from C, left alone; SIGTERM's default ends the process outright.
                if previous is not None and (name == "SIGINT" or callable(previous)):
                    signal.signal(signum, self._handler)
                    self._previous[signum] = previous
            except (ValueError, OSError):  # no signals here (e.g. an embedded interpreter)
                pass
        return self

    def __exit__(self, *exc_info):
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._handler:
                signal.signal(signum, previous)
        return False


def call_plugin(function: Callable[..., Any], *args, **kwargs) -> tuple[Any, BaseException | None]:
    """``(function(*args, **kwargs), None)``, or ``(None, exception)`` for anything it raised.

    ``SystemExit``, ``KeyboardInterrupt`` and other ``BaseException``\\ s are
    returned like ordinary exceptions, except one raised after a real SIGINT
    or SIGTERM (the user pressed Ctrl-C, a scheduler stops the run), which
    propagates.
    """
    with _SignalWatch() as watch:
        try:
            return function(*args, **kwargs), None
        except BaseException as exc:  # noqa: B902 - containing every exception is the point
            if watch.hit and not isinstance(exc, Exception):
                raise
            return None, exc


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` on one line (multi-line messages joined with ``"; "``)."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if isinstance(exc, SystemExit):
        return f"SystemExit (it called sys.exit({exc.code!r}))"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
