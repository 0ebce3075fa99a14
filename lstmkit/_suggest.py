"""Did-you-mean hints: a leaf module every layer may import (it imports nothing of lstmkit)."""
from __future__ import annotations

import difflib

__all__ = ["suggest"]


def suggest(word, choices) -> str:
    """``"; did you mean 'x'?"`` for a close match among ``choices``, else ``""``."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
