"""Progress of a whole run: one bar on a terminal, plain lines elsewhere.

On a terminal the bar is redrawn in place (``\\r``) at most ten times a second::

    epoch 3/10  step 140/500  28% |#######...............|  41.5 steps/s  ETA 9s  loss 0.0123

Log lines (evaluations, warnings) go through :meth:`RunProgress.echo`, which erases the bar, prints
the line and draws the bar again below it; when the run ends the bar is erased, so no stale bar line is
left in the terminal.  Elsewhere (a pipe, a file, a CI log) the same information is printed as a plain
line at every tenth of the run.

The trainer knows nothing of this: it calls ``progress(length, label)`` once per epoch (a context manager
whose ``update(1)`` follows each step) and, when the object has them, ``begin(trainer)`` before
training and ``end()`` after it; the bar reads the trainer's state (step, epoch, running loss).
"""
from __future__ import annotations

import contextlib
import math
import shutil
import time
from typing import Callable

__all__ = ["RunProgress"]

_BAR = 20  # characters of the bar itself


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class RunProgress:
    """The progress display of one run.

    ``write(text)``: writes text to the terminal without a newline (flushed); ``tty``: redraw a bar in
    place (else: plain lines); ``echo``: prints one line (default: ``write(line + "\\n")``);
    ``clock``: seconds (``time.monotonic``; tests pass a fake); ``width``: terminal columns (default: asked).
    """

    def __init__(self, write: Callable[[str], None], tty: bool, *, echo: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, width: int | None = None, every: float = 0.1):
        self.write, self.tty, self.clock, self.every = write, tty, clock, every
        self._echo = echo or (lambda line: write(line + "\n"))
        self.width = width
        self.trainer = None
        self._shown = False  # a bar is on the terminal's current line
        self._drawn_at = -math.inf
        self._next_line = 0

    # -- the trainer's side --------------------------------------------------------------
    def begin(self, trainer) -> None:
        """Training starts (or resumes) at ``trainer.state.step`` of ``trainer.planned_steps()``."""
        self.trainer = trainer
        self.total = max(1, trainer.planned_steps())
        self.first_step = trainer.state.step
        self.started = self.clock()
        self._next_line = self._line_mark(self.first_step)

    def end(self) -> None:
        """Training ended (completed, stopped, interrupted, failed): erase the bar."""
        self._erase()
        self.trainer = None

    def __call__(self, length: int, label: str):
        return contextlib.nullcontext(self)

    def update(self, n: int = 1) -> None:
        """A step was done (called by the trainer through the per-epoch context)."""
        if self.trainer is None:
            return
        step = self.trainer.state.step
        if self.tty:
            now = self.clock()
            if now - self._drawn_at >= self.every or step >= self.total:
                self._draw(now)
        elif step >= self._next_line and step < self.total:
            self._echo(self.text(self.clock(), bar=False))
            self._next_line = self._line_mark(step)

    def echo(self, line: str) -> None:
        """Print a log line above the bar (the bar is erased first and drawn again after)."""
        shown = self._shown
        self._erase()
        self._echo(line)
        if shown and self.trainer is not None:
            self._draw(self.clock())

    # -- drawing -------------------------------------------------------------------------
    def _line_mark(self, step: int) -> int:
        tenth = max(1, math.ceil(self.total / 10))
        return (step // tenth + 1) * tenth

    def text(self, now: float, bar: bool = True) -> str:
        """``epoch 3/10  step 140/500  28% |###...|  41.5 steps/s  ETA 9s  loss 0.0123`` (no bar: ``bar=False``)."""
        t = self.trainer
        s, epochs = t.state, t.training.epochs
        step, done = s.step, s.step - self.first_step
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed if done else 0.0
        eta = (self.total - step) / rate if rate else math.inf
        epoch = s.epoch + (1 if s.batch else 0) or 1
        parts = [f"epoch {epoch}" + (f"/{epochs}" if epochs else ""), f"step {step}/{self.total}",
                 f"{100 * step // self.total}%"]
        tail = [f"{rate:.1f} steps/s", f"ETA {_duration(eta)}"]
        running = (s.train_sum / s.train_count) if s.train_count else None
        if running is not None and math.isfinite(running):
            tail.append(f"loss {running:.4g}")
        if not bar:
            return "progress: " + "  ".join(parts + tail)
        width = self.width or shutil.get_terminal_size((80, 24)).columns
        head, rest = "  ".join(parts), "  ".join(tail)
        if len(head) + len(rest) + 2 + _BAR + 3 < width:  # the bar only where the whole line fits
            filled = _BAR * step // self.total
            head += f" |{'#' * filled}{'.' * (_BAR - filled)}|"
        return (head + "  " + rest)[: max(width - 1, 1)]

    def _draw(self, now: float) -> None:
        self.write("\r" + self.text(now) + "\x1b[K")
        self._shown, self._drawn_at = True, now

    def _erase(self) -> None:
        if self._shown:
            self.write("\r\x1b[K")
            self._shown = False
