"""Recurrent cell types: the equations of each cell, once.

``get_cell(name)`` returns the cell type registered under ``name``.
"""
from __future__ import annotations

from .base import CellType, sigmoid
from .gru import GRUCellType
from .lstm import LSTMCellType
from .rnn import RNNReluCellType, RNNTanhCellType

BUILTIN_CELLS: tuple[type[CellType], ...] = (
    LSTMCellType,
    GRUCellType,
    RNNTanhCellType,
    RNNReluCellType,
)

_CELLS: dict[str, CellType] = {cls.name: cls() for cls in BUILTIN_CELLS}


def available_cells() -> list[str]:
    """Names of the cells that can be built, sorted."""
    return sorted(_CELLS)


def get_cell(name: str | CellType) -> CellType:
    """The cell type registered as ``name`` (a ``CellType`` passes through)."""
    if isinstance(name, CellType):
        return name
    try:
        return _CELLS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown cell {name!r}; valid cells: {', '.join(available_cells())}"
        ) from None


__all__ = [
    "CellType",
    "LSTMCellType",
    "GRUCellType",
    "RNNTanhCellType",
    "RNNReluCellType",
    "available_cells",
    "get_cell",
    "sigmoid",
]
