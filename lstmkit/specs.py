"""What plugins register: cell, backend and task specifications."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

from ._contain import call_plugin, describe
from .cells import CellType
from .cells.base import declaration_problem


def _validated_options(kind: str, name: str, options_model, options: dict | None) -> dict:
    """Options checked by the spec's pydantic model (or refused when there is none)."""
    options = dict(options or {})
    if options_model is None:
        if options:
            raise ValueError(f"{kind} {name!r} takes no options, got: {', '.join(sorted(options))}")
        return options
    try:
        return options_model(**options).model_dump()
    except Exception as exc:  # pydantic.ValidationError: one readable line per problem
        errors = getattr(exc, "errors", None)
        if errors is None:
            raise
        lines = []
        for error in errors():
            key = ".".join(str(part) for part in error.get("loc", ())) or "(options)"
            if error.get("type") == "extra_forbidden":
                valid = ", ".join(options_model.model_fields) or "none"
                lines.append(f"unknown option {key!r} (valid options: {valid})")
            else:
                lines.append(f"{key}: {error.get('msg')} (got {error.get('input')!r})")
        raise ValueError(f"invalid options for {kind} {name!r}: " + "; ".join(lines)) from None


@dataclass(frozen=True)
class CellSpec:
    """A recurrent cell.

    ``name``: the name users write (``Recurrent("peephole", ...)``,
    ``model.cell: peephole``); must equal ``cell_type.name``.
    ``cell_type``: a :class:`~lstmkit.cells.CellType` subclass — its parameter
    layout (``parameter_shapes``), gate count (``num_gates``), state tensors
    (``state_names``) and reference ``forward_step``/``backward_step``
    written against an array module.  Its constructor takes the options.
    ``options_model``: a pydantic model validating those options (config
    ``model.cell_options``), or ``None`` for a cell without options.
    """

    name: str
    cell_type: type[CellType]
    options_model: Any = None
    description: str = ""

    def __post_init__(self):
        _check_name("CellSpec", self.name)
        _check_options_model("CellSpec", self.name, self.options_model)
        if not (isinstance(self.cell_type, type) and issubclass(self.cell_type, CellType)):
            raise TypeError(f"CellSpec {self.name!r}: cell_type must be a CellType subclass, got {self.cell_type!r}")
        problem = declaration_problem(self.cell_type)
        if problem:
            raise TypeError(f"CellSpec {self.name!r}: {problem}")
        if self.cell_type.name != self.name:
            raise ValueError(
                f"CellSpec name {self.name!r} differs from {self.cell_type.__name__}.name {self.cell_type.name!r}"
            )

    @property
    def num_gates(self) -> int:
        return self.cell_type.num_gates

    @property
    def state_names(self) -> tuple[str, ...]:
        return self.cell_type.state_names

    def create(self, options: dict | None = None) -> CellType:
        """A cell instance with validated ``options``.

        A constructor that raises ``SystemExit`` or ``KeyboardInterrupt`` (not a
        real Ctrl-C) gets a ``RuntimeError`` naming the cell instead of ending the process.
        """
        cell, exc = call_plugin(self.cell_type, **_validated_options("cell", self.name, self.options_model, options))
        if exc is None:
            return cell
        if isinstance(exc, Exception):
            raise exc
        raise RuntimeError(f"cell {self.name!r}: its constructor raised {describe(exc)}") from exc


def _always_available() -> tuple[bool, str]:
    return True, ""


def _check_name(spec: str, name) -> None:
    """A name users write in code, configs and on the command line."""
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ValueError(f"{spec}: name should be a non-empty string without spaces, got {name!r}")


def _check_options_model(spec: str, name: str, model) -> None:
    """``None`` or a pydantic (v2) model class: the listings read its fields, ``create`` validates with it."""
    if model is not None and not (isinstance(model, type) and hasattr(model, "model_fields")
                                  and hasattr(model, "model_validate")):
        got = model.__name__ if isinstance(model, type) else repr(model)
        raise TypeError(f"{spec} {name!r}: options_model should be a pydantic model class or None, got {got}")


def _check_callable(spec: str, name: str, what: str, value) -> None:
    if not callable(value):
        raise TypeError(f"{spec} {name!r}: {what} should be callable, got {value!r}")


@dataclass(frozen=True)
class BackendSpec:
    """A compute backend.

    ``factory()``: returns the :class:`~lstmkit.backends.Backend`, called once
    on first use; import heavy modules (CuPy) inside it, not at plugin
    import.  ``is_available()``: ``(True, "")`` or ``(False, reason)`` —
    cheap.  The registry runs both contained: one that raises (anything,
    ``SystemExit`` included) or answers wrongly makes the backend
    unavailable with that reason, and its plugin failed.  ``priority``:
    ``backend="auto"`` picks the available backend with the highest priority
    (built-ins: ``cython`` 100, ``numpy`` 0); a plugin above them gets a
    warning once when ``auto`` picks it.
    """

    name: str
    factory: Callable[[], Any]
    is_available: Callable[[], tuple[bool, str]] = _always_available
    priority: int = 0
    description: str = ""

    def __post_init__(self):
        _check_name("BackendSpec", self.name)
        if self.name == "auto":
            raise ValueError("BackendSpec: the name 'auto' is reserved (backend='auto' picks by priority)")
        _check_callable("BackendSpec", self.name, "factory", self.factory)
        _check_callable("BackendSpec", self.name, "is_available", self.is_available)
        # Ranked with the others on every backend='auto' lookup: a string or NaN would break or scramble it.
        if isinstance(self.priority, bool) or not isinstance(self.priority, numbers.Real) \
                or not math.isfinite(self.priority):
            raise TypeError(f"BackendSpec {self.name!r}: priority should be a finite number, got {self.priority!r}")


@dataclass(frozen=True)
class TaskSpec:
    """A task for ``lstmkit run``: data, loss and metrics.

    ``factory(options, ...)`` builds the task object (see ``docs/config.md``);
    ``options_model`` validates ``task.options``.
    """

    name: str
    factory: Callable[..., Any]
    options_model: Any = None
    description: str = ""
    metrics: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        _check_name("TaskSpec", self.name)
        _check_callable("TaskSpec", self.name, "factory", self.factory)
        _check_options_model("TaskSpec", self.name, self.options_model)
