"""Exit codes and the errors ``lstmkit`` reports to users (no traceback, a documented exit code).

Plain exceptions: the library never imports Click.  ``lstmkit.cli`` turns a
:class:`LstmkitError` into ``Error: message`` on stderr and its exit code.
This module is light: the CLI imports it at start-up.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable


class ExitCode(enum.IntEnum):
    """What ``lstmkit`` returns to the shell."""

    OK = 0
    RUN_FAILED = 1
    USAGE = 2
    INVALID_CONFIG = 3
    UNAVAILABLE = 4  # a plugin or backend is missing or unavailable
    INTERRUPTED = 130


class LstmkitError(Exception):
    """An error shown to the user as ``Error: message`` with its :class:`ExitCode`.

    ``message`` may be extended after construction (``str()`` follows it).
    """

    exit_code = ExitCode.RUN_FAILED
    #: Printed before the message by the CLI (``RunInterrupted``: none).
    prefix = "Error: "

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = int(exit_code)

    def format_message(self) -> str:
        return self.message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config: where (``file:line:col`` or ``--set ...``), the dotted key, what is wrong."""

    key: str
    message: str
    where: str | None = None

    def __str__(self) -> str:
        parts = [p for p in (self.where, self.key) if p]
        return ": ".join(parts + [self.message])


class ConfigError(LstmkitError):
    """An invalid config: every problem found, at once (exit code 3)."""

    exit_code = ExitCode.INVALID_CONFIG

    def __init__(self, issues: Iterable[ConfigIssue] | str, source: str | None = None):
        if isinstance(issues, str):
            issues = [ConfigIssue("", issues)]
        self.issues = list(issues)
        self.source = source
        super().__init__(self._text())

    def _text(self) -> str:
        what = f"invalid config {self.source}" if self.source else "invalid config"
        if len(self.issues) == 1:
            issue = self.issues[0]
            if issue.where and self.source and issue.where.startswith(self.source):
                return f"invalid config: {issue}"  # the location names the file already
            return f"{what}: {issue}"
        lines = [f"{what} ({len(self.issues)} problems):"] + [f"  {issue}" for issue in self.issues]
        return "\n".join(lines)


class UnavailableError(LstmkitError):
    """A cell, backend, task or required plugin that is unknown or cannot run here (exit code 4)."""

    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, problems: Iterable[str] | str, source: str | None = None):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            where = f" for {source}" if source else ""
            message = (f"{len(self.problems)} problems{where}:\n" + "\n".join(f"  {p}" for p in self.problems))
        super().__init__(message)


class RunFailed(LstmkitError):
    """The run started and failed (non-finite loss, an error in a task): exit code 1."""

    exit_code = ExitCode.RUN_FAILED


class RunInterrupted(LstmkitError):
    """Ctrl-C: the state was saved (or why not) and the process exits 130."""

    exit_code = ExitCode.INTERRUPTED
    prefix = ""
