"""Compute backends: how a layer runs.

Look backends up by name with :func:`lstmkit.registry.get_backend` and
:func:`lstmkit.registry.available_backends`: the registry imports this
package, never the other way round.
"""
from __future__ import annotations

from .base import Backend, step_offsets
from .reference import ReferenceBackend

__all__ = ["Backend", "ReferenceBackend", "step_offsets"]
