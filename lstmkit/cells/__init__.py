"""Recurrent cell types: the equations of each cell, once."""
from __future__ import annotations

from .base import CellType, sigmoid
from .gru import GRUCellType
from .lstm import LSTMCellType
from .rnn import RNNReluCellType, RNNTanhCellType


def get_cell(name, options=None) -> CellType:
    """The cell registered as ``name`` (see :func:`lstmkit.registry.get_cell`)."""
    from ..registry import get_cell

    return get_cell(name, options)


def available_cells() -> list[str]:
    """Names of the registered cells, sorted."""
    from ..registry import available_cells

    return available_cells()


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
