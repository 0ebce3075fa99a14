"""Recurrent cell types: the equations of each cell, once.

Look cells up by name with :func:`lstmkit.registry.get_cell` and
:func:`lstmkit.registry.available_cells`: the registry imports this package,
never the other way round.
"""
from __future__ import annotations

from .base import CellType, sigmoid
from .gru import GRUCellType
from .lstm import LSTMCellType
from .rnn import RNNReluCellType, RNNTanhCellType

__all__ = [
    "CellType",
    "LSTMCellType",
    "GRUCellType",
    "RNNTanhCellType",
    "RNNReluCellType",
    "sigmoid",
]
