"""``meta.json``: versions, platform, backend, threads, plugins, and one record per session.

A session is one ``lstmkit run`` (or ``--resume``) process: its command line,
working directory, start, end and status (``running``, ``completed``,
``stopped_early``, ``interrupted``, ``failed``).  A session found ``running``
by a later process that holds the folder's lock was killed (``kill -9``, a
power cut): it is marked ``killed``.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import sys

import numpy as np

from .._atomic import atomic_write_json
from .folder import RunFolder, writing

__all__ = ["now", "write_meta", "start_meta", "finish_meta", "read_meta", "mark_killed", "backend_name"]


def now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _versions() -> dict:
    from importlib import metadata

    import scipy

    from .. import __version__

    out = {"lstmkit": __version__, "python": sys.version.split()[0], "numpy": np.__version__,
           "scipy": scipy.__version__}
    for dist in ("pydantic", "click", "pluggy", "pyyaml", "threadpoolctl", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _threads(limit) -> dict:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"limit": limit, "pools": "threadpoolctl not installed"}
    return {"limit": limit, "pools": [{k: p.get(k) for k in ("user_api", "internal_api", "version", "num_threads")}
                                      for p in threadpool_info()]}


def _plugins() -> list[dict]:
    from ..registry import get_registry

    return [{"name": p.name, "distribution": p.distribution, "version": p.version, "status": p.status,
             "provides": p.provides} for p in get_registry().plugins.values() if not p.builtin]


def backend_name(loaded) -> str:
    from ..registry import get_registry

    return get_registry().backend_spec(loaded.config.runtime.backend).name


def read_meta(folder: RunFolder) -> dict:
    """The folder's ``meta.json`` (``{}`` if missing or unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads(folder.meta.read_text(encoding="utf-8"))
        if isinstance(meta, dict):
            return meta
    return {}


def write_meta(folder: RunFolder, meta: dict) -> None:
    with writing(folder.meta):
        atomic_write_json(folder.meta, meta)


def mark_killed(meta: dict) -> int:
    """Mark sessions still ``running`` as ``killed`` (call it holding the lock); returns how many."""
    killed = 0
    for session in meta.get("sessions", []) if isinstance(meta.get("sessions"), list) else []:
        if isinstance(session, dict) and session.get("status") == "running":
            session.update(status="killed", noticed=now())
            killed += 1
    if killed and meta.get("status") == "running":
        meta["status"] = "killed"
    return killed


def start_meta(folder: RunFolder, loaded, argv, resumed: bool) -> dict:
    """meta.json at the start of a session (a resumed run's earlier sessions kept, killed ones marked)."""
    session = {"command": list(argv) if argv is not None else sys.argv, "cwd": os.getcwd(), "start": now(),
               "end": None, "status": "running", "resumed": resumed, "pid": os.getpid()}
    meta = read_meta(folder) if resumed else {}
    mark_killed(meta)
    cfg = loaded.config
    meta.update({
        "versions": _versions(),
        "platform": {"system": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "backend": {"requested": cfg.runtime.backend, "used": backend_name(loaded)},
        "dtype": cfg.runtime.dtype,
        "threads": _threads(cfg.runtime.threads),
        "plugins": _plugins(),
        "seed": cfg.seed, "seed_was_random": loaded.seed_was_random or meta.get("seed_was_random", False),
        "config_file": str(loaded.path.resolve()) if loaded.path and not resumed else meta.get("config_file"),
        "run_dir": str(folder.path),
        "status": "running",
        "start": meta.get("start", session["start"]), "end": None,
    })
    if not isinstance(meta.get("sessions"), list):
        meta["sessions"] = []
    meta["sessions"].append(session)
    return meta


def finish_meta(folder: RunFolder, meta: dict, status: str, step: int) -> None:
    """Record the end of this session and write meta.json."""
    meta["sessions"][-1].update(end=now(), status=status, step=step)
    meta.update(status=status, end=now())
    write_meta(folder, meta)
