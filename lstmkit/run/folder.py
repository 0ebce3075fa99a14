"""The run folder: its file names, which files are lstmkit's, the overwrite rules, the lock.

::

    config.yaml          the resolved config: actual seed, absolute paths
    meta.json            versions, platform, backend, threads, plugins, command lines, times, status
    metrics.jsonl        one JSON object per logged step and per evaluation
    metrics.csv          the same records as a table (spreadsheets, pandas)
    results.json         final metrics and status
    loss.png             train/valid loss curves (needs matplotlib)
    checkpoints/         last.npz (resume from it), best.npz, epoch-NNNN.npz (keep_last)
    tensorboard/         events.out.tfevents.* (outputs.tensorboard: true; see :mod:`.tensorboard`)
    .lstmkit.lock        while a run writes here: its pid (removed when it ends; see :mod:`.lock`)

lstmkit's files are exactly these names (and the ``.<name>.*.tmp`` files its
atomic writes leave behind when a process is killed); ``--overwrite`` removes
nothing else, and never follows a symbolic link out of the folder.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..config.errors import ExitCode, LstmkitError, RunFailed

__all__ = ["RunFolder", "WriteFailed", "writing", "default_run_dir", "is_run_folder", "non_empty_output",
           "overwrite_refusal", "choose_run_dir", "make_dir"]

CONFIG, META, METRICS, RESULTS, PLOT = "config.yaml", "meta.json", "metrics.jsonl", "results.json", "loss.png"
METRICS_CSV, CHECKPOINTS, LOCK, TENSORBOARD = "metrics.csv", "checkpoints", ".lstmkit.lock", "tensorboard"
TOP_FILES = (CONFIG, META, METRICS, METRICS_CSV, RESULTS, PLOT)
_CHECKPOINT_NAME = re.compile(r"^(last|best|epoch-\d{4,})\.npz$")
_EVENTS_NAME = re.compile(r"^events\.out\.tfevents\.")  # TensorBoard's event files
# atomic_open's temporary names: ".<target>.<random>.tmp"
_TMP_NAME = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]+\.tmp$")

Echo = Callable[[str], None]


class WriteFailed(RunFailed):
    """A file of the run could not be written (disk full, I/O error); the previous version is kept."""


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an ``OSError`` while writing ``path`` into :class:`WriteFailed` naming it.

    Writes go through :mod:`lstmkit._atomic`, which removes its temporary file on
    failure, so the message can promise that nothing was half-written.
    """
    try:
        yield
    except WriteFailed:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise WriteFailed(f"cannot write {path}: {reason} (errno {exc.errno}); nothing was half-written: "
                          f"the previous version of the file, if any, is kept") from None


def make_dir(path: Path) -> None:
    """``mkdir -p`` with the failure reported as a message naming the folder (exit 2)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise LstmkitError(f"output folder {path} cannot be created: a file is in the way", ExitCode.USAGE) from None
    except OSError as exc:
        raise LstmkitError(f"output folder {path} cannot be created: {exc.strerror or exc}", ExitCode.USAGE) from None


@dataclass
class RunFolder:
    """Paths inside a run folder."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def meta(self) -> Path:
        return self.path / META

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def metrics_csv(self) -> Path:
        return self.path / METRICS_CSV

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def plot(self) -> Path:
        return self.path / PLOT

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.npz"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.npz"

    def checkpoint(self, which: str = "auto") -> Path:
        """``best``, ``last`` or ``auto`` (best if there is one, else last)."""
        if which == "auto":
            which = "best" if self.best.is_file() else "last"
        path = self.best if which == "best" else self.last if which == "last" else self.checkpoints / which
        if not path.is_file():
            raise LstmkitError(f"no checkpoint {path}", ExitCode.RUN_FAILED)
        return path

    def linked_checkpoints(self) -> str | None:
        """Why ``checkpoints`` cannot be written into (a link or a file), or ``None``."""
        where = self.checkpoints
        if where.is_symlink():
            return f"{where} is a symbolic link (to {os.readlink(where)}); lstmkit writes only inside the run folder"
        if where.exists() and not where.is_dir():
            return f"{where} is not a folder"
        return None

    def own_files(self) -> list[Path]:
        """The files lstmkit wrote here: the known names (regular files only, links are never followed)."""
        out = [self.path / n for n in TOP_FILES if _regular(self.path / n)]
        if self.checkpoints.is_dir() and not self.checkpoints.is_symlink():
            out += sorted(p for p in self.checkpoints.iterdir() if _CHECKPOINT_NAME.match(p.name) and _regular(p))
        board = self.path / TENSORBOARD
        if board.is_dir() and not board.is_symlink():
            out += sorted(p for p in board.iterdir() if _EVENTS_NAME.match(p.name) and _regular(p))
        return out

    def orphans(self) -> list[Path]:
        """Temporary files of lstmkit's atomic writes left by a killed process."""
        known = set(TOP_FILES)
        out = [p for p in self.path.iterdir() if _orphan(p, lambda t: t in known)] if self.path.is_dir() else []
        if self.checkpoints.is_dir() and not self.checkpoints.is_symlink():
            out += [p for p in self.checkpoints.iterdir() if _orphan(p, _CHECKPOINT_NAME.match)]
        return sorted(out)

    def remove_orphans(self) -> list[Path]:
        """Remove :meth:`orphans` (call it holding the lock: no live writer can own them)."""
        removed = []
        for p in self.orphans():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
        return removed

    def clear(self) -> None:
        """Remove what an earlier run wrote here: :meth:`own_files` and :meth:`orphans`, nothing else."""
        refusal = self.linked_checkpoints()
        if refusal:
            raise LstmkitError(f"--overwrite refused: {refusal}; remove it or choose another folder", ExitCode.USAGE)
        for p in self.own_files() + self.orphans():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        for folder in (self.checkpoints, self.path / TENSORBOARD):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if it is now empty


def _regular(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _orphan(path: Path, is_target) -> bool:
    m = _TMP_NAME.match(path.name)
    return bool(m) and bool(is_target(m.group("target"))) and _regular(path)


def default_run_dir(name: str, create: bool = False) -> Path:
    """``runs/<name>/<timestamp>`` under the working directory (``-2``, ``-3``... if taken).

    ``create``: make it, atomically: two runs started in the same second get two folders.
    """
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path.cwd() / "runs" / name / stamp
    path, n = base, 1
    if create:
        make_dir(base.parent)
    while True:
        if not create and not path.exists():
            return path
        if create:
            try:
                path.mkdir()
                return path
            except FileExistsError:
                pass
            except OSError as exc:
                raise LstmkitError(f"output folder {path} cannot be created: {exc.strerror or exc}",
                                   ExitCode.USAGE) from None
        n += 1
        path = base.with_name(f"{stamp}-{n}")


def is_run_folder(path: Path) -> bool:
    """A folder ``lstmkit run`` wrote: it has ``checkpoints/last.npz`` or a ``meta.json`` that lstmkit wrote
    (a JSON object with ``sessions``; it is the first file a run writes)."""
    folder = RunFolder(Path(path))
    if _regular(folder.last):
        return True
    if not _regular(folder.meta):
        return False
    try:
        meta = json.loads(folder.meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("sessions"), list)


def _user_entries(path: Path) -> list[str]:
    """What is in the folder besides a lock and orphaned temporary files."""
    folder = RunFolder(path)
    skip = {folder.lock} | set(folder.orphans())
    return sorted(p.name for p in path.iterdir() if p not in skip)


def non_empty_output(path: Path) -> str | None:
    """Why ``-o path`` is refused without --overwrite (``None``: it is new or empty)."""
    if not (path.is_dir() and _user_entries(path)):
        return None
    lines = [f"output folder {path} is not empty. Either"]
    if is_run_folder(path):
        lines += ["  - add --overwrite to replace the run in it,",
                  f"  - continue that run with: lstmkit run --resume {path}"]
    else:
        lines += [f"  - add --overwrite to write the run there (it is not a run folder: only lstmkit's own files "
                  f"would be replaced, your other files are kept),"]
    lines.append("  - or choose another folder with -o DIR (or leave outputs.dir null for runs/<name>/<timestamp>)")
    return "\n".join(lines)


def overwrite_refusal(path: Path) -> str | None:
    """Why even ``--overwrite`` cannot write into ``path`` (``None``: it can)."""
    folder = RunFolder(path)
    if not path.is_dir():
        return None
    refusal = folder.linked_checkpoints()
    if refusal:
        return refusal
    if is_run_folder(path):
        return None
    # Not a run folder: a file there under one of lstmkit's names is the user's; replacing it would lose it.
    clash = [n for n in TOP_FILES if (path / n).exists() or (path / n).is_symlink()]
    clash += [n for n in (CHECKPOINTS, TENSORBOARD) if (path / n).exists()]
    if clash:
        return (f"{path} is not a run folder and holds {', '.join(clash)}, which the run would replace; "
                f"--overwrite only replaces files an earlier run wrote: move them or choose another folder")
    return None


def choose_run_dir(loaded, overwrite: bool) -> Path:
    """The run folder of a new run (refusals exit 2); a non-empty one is checked, not yet cleared."""
    out = loaded.config.outputs.dir
    if out is None:
        return default_run_dir(loaded.config.name)
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise LstmkitError(f"output folder {path} is a file", ExitCode.USAGE)
    refusal = non_empty_output(path)
    if refusal is not None and not overwrite:
        raise LstmkitError(refusal, ExitCode.USAGE)
    if refusal is not None:
        blocked = overwrite_refusal(path)
        if blocked:
            raise LstmkitError(f"--overwrite refused: {blocked}", ExitCode.USAGE)
    return path
