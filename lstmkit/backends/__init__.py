"""Compute backends: how a layer runs.  Look them up by name through :mod:`lstmkit.registry`."""
from __future__ import annotations

from .base import Backend, step_offsets
from .reference import ReferenceBackend


def get_backend(name="auto") -> Backend:
    """The backend named ``name`` (see :func:`lstmkit.registry.get_backend`)."""
    from ..registry import get_backend

    return get_backend(name)


def available_backends() -> list[str]:
    """Names of the backends that can run here, fastest first."""
    from ..registry import available_backends

    return available_backends()


__all__ = ["Backend", "ReferenceBackend", "available_backends", "get_backend", "step_offsets"]
