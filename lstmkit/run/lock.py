"""The lock on a run folder: one lstmkit process writes into it at a time."""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import time
from pathlib import Path

from ..config.errors import ExitCode, LstmkitError
from .folder import RunFolder

__all__ = ["RunLock", "FolderBusy", "wait_until_free"]


class FolderBusy(LstmkitError):
    """Another live lstmkit process writes into the run folder (exit code 2)."""

    exit_code = ExitCode.USAGE


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _read_holder(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _held(path: Path) -> dict | None:
    """The holder of the lock file at ``path`` while a live process holds it, else ``None``."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the pid in the file decides
        holder = _read_holder(path)
        pid = holder.get("pid")
        return holder if isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid) else None
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # taken (and dropped at close) only if nobody holds it
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return _read_holder(path) or {"pid": "?"}
        raise
    finally:
        os.close(fd)
    return None


def wait_until_free(folder: RunFolder, timeout: float, echo=None) -> dict | None:
    """Wait up to ``timeout`` seconds while another live process holds ``folder``'s lock.

    For a worker of a killed sweep: told to stop, it saves its checkpoint and lets go, and
    the resumed trial then continues from it.  Returns the holder still there at the end, or ``None``.
    """
    end = time.monotonic() + timeout
    holder = _held(folder.lock)
    if holder is not None and echo is not None:
        echo(f"waiting up to {max(timeout, 0):.0f} s for process {holder.get('pid', '?')} to let go of {folder.path}")
    while holder is not None and time.monotonic() < end:
        time.sleep(0.1)
        holder = _held(folder.lock)
    return holder


class RunLock:
    """An exclusive lock on a run folder: ``.lstmkit.lock`` holding ``{"pid", "start", "command"}``.

    POSIX: ``fcntl.flock`` on the file (the kernel drops it when the process dies,
    even on ``kill -9``); elsewhere the file is created with ``O_EXCL``.  A lock
    file whose pid is dead is taken over (:attr:`took_over` says whose).  The file
    is removed on :meth:`release`.
    """

    def __init__(self, folder: RunFolder, command: list[str] | None = None):
        self.folder, self.command = folder, command or []
        self.fd: int | None = None
        self.took_over: dict | None = None

    def acquire(self) -> "RunLock":
        path = self.folder.lock
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            fcntl = None
        for _ in range(20):  # a holder may remove the file between our open and our lock: try again
            previous = _read_holder(path)
            try:
                if fcntl is None:  # pragma: no cover - Windows
                    pid = previous.get("pid")
                    if previous and not (isinstance(pid, int) and _pid_alive(pid)):
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                else:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileExistsError:  # pragma: no cover - Windows
                raise self._busy(previous) from None
            except OSError as exc:
                raise LstmkitError(f"cannot lock the run folder {self.folder.path}: cannot create {path}: "
                                   f"{exc.strerror or exc}", ExitCode.USAGE) from None
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise self._busy(_read_holder(path)) from None
                    raise
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(path))
                except FileNotFoundError:
                    same = False
                if not same:  # the file we locked was removed by its previous holder
                    os.close(fd)
                    continue
            self.fd = fd
            if previous.get("pid") not in (None, os.getpid()):
                self.took_over = previous
            self._write_holder()
            return self
        raise self._busy(_read_holder(path))  # pragma: no cover - a lock changing hands 20 times

    def _busy(self, holder: dict) -> FolderBusy:
        who = f"process {holder.get('pid', '?')}"
        if holder.get("start"):
            who += f", started {holder['start']}"
        if holder.get("command"):
            who += f": {' '.join(map(str, holder['command']))}"
        return FolderBusy(f"the run folder {self.folder.path} is in use by another lstmkit run ({who}). Wait for it "
                          f"to end, or choose another folder with -o DIR")

    def _write_holder(self) -> None:
        text = json.dumps({"pid": os.getpid(), "start": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                           "command": list(self.command)})
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.write(self.fd, text.encode())

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.folder.lock.unlink()  # before unlocking: a waiter then re-checks and retries
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()
