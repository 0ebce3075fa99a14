"""Argument checks shared by the modules, with PyTorch's wording."""
from __future__ import annotations

import numbers

import numpy as np


def check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")


def check_size(name: str, value, allow_numpy: bool = False) -> int:
    """A positive ``int`` size (``bool`` counts as int, as in PyTorch)."""
    if allow_numpy and isinstance(value, np.integer):
        value = int(value)
    if not isinstance(value, int):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be greater than zero")
    return int(value)


def check_dropout(dropout) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number) or not 0 <= float(dropout) <= 1:
        # float() first, as PyTorch does, so None gives its TypeError.
        float(dropout)
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the probability of an "
            "element being zeroed"
        )
    return float(dropout)


def check_nonlinearity(nonlinearity) -> str:
    if nonlinearity not in ("tanh", "relu") or not isinstance(nonlinearity, str):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    return nonlinearity


def check_array(label: str, what: str, value) -> None:
    # A GPU backend's arrays (CuPy) are accepted too; they stay on the device.
    if not isinstance(value, np.ndarray) and not hasattr(value, "__cuda_array_interface__"):
        raise TypeError(f"{label}: expected {what} to be a numpy.ndarray, got {type(value).__name__}")


def check_dtype(label: str, what: str, value: np.ndarray, dtype: np.dtype) -> None:
    """Input and state must have the weights' dtype (no silent promotion)."""
    if value.dtype != dtype:
        fix = f"Convert {what}: {what}.astype(np.{dtype})"
        if value.dtype in (np.float32, np.float64):
            fix += f", or convert model: model.to(np.{value.dtype})"
        raise ValueError(
            f"{label} {what} dtype ({value.dtype}) does not match weight dtype ({dtype}). {fix}"
        )


def shape_list(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"
