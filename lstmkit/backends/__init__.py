"""Compute backends: how a layer runs.  ``get_backend(name)``; ``"auto"`` is the fastest available."""
from __future__ import annotations

from .base import Backend, step_offsets
from .reference import ReferenceBackend

_NUMPY = ReferenceBackend()


def _load_cython():
    try:
        from .cython import CythonBackend
    except ImportError as exc:  # compiled core not built
        return None, f"the compiled core could not be imported: {exc}"
    return CythonBackend(), None


_CYTHON, _CYTHON_REASON = _load_cython()


def available_backends() -> list[str]:
    """Names of the backends that can run here, fastest first."""
    return (["cython"] if _CYTHON is not None else []) + ["numpy"]


def get_backend(name: str | Backend | None = "auto") -> Backend:
    """The backend named ``name``; ``"auto"``/``None`` picks the fastest available."""
    if isinstance(name, Backend):
        return name
    if name in (None, "auto"):
        return _CYTHON if _CYTHON is not None else _NUMPY
    if name == "numpy":
        return _NUMPY
    if name == "cython":
        if _CYTHON is None:
            raise ValueError(f"backend 'cython' is unavailable: {_CYTHON_REASON}")
        return _CYTHON
    raise ValueError(
        f"unknown backend {name!r}; valid backends: auto, {', '.join(available_backends())}"
    )


__all__ = ["Backend", "ReferenceBackend", "available_backends", "get_backend", "step_offsets"]
