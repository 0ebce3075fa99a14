"""The built-in cells, backends and tasks, registered through the same hooks as any plugin."""
from __future__ import annotations

from .cells import GRUCellType, LSTMCellType, RNNReluCellType, RNNTanhCellType
from .hookspecs import hookimpl
from .specs import BackendSpec, CellSpec


@hookimpl
def register_cells(register):
    for cell_type in (LSTMCellType, GRUCellType, RNNTanhCellType, RNNReluCellType):
        register(CellSpec(cell_type.name, cell_type, description=cell_type.description))


def _numpy_backend():
    from .backends.reference import ReferenceBackend

    return ReferenceBackend()


def _cython_backend():
    from .backends.cython import CythonBackend

    return CythonBackend()


def _cython_available() -> tuple[bool, str]:
    try:
        from . import _core  # noqa: F401
    except ImportError as exc:
        return False, f"the compiled core is not built ({exc}); reinstall lstmkit with a C compiler"
    return True, ""


@hookimpl
def register_backends(register):
    register(BackendSpec("numpy", _numpy_backend, priority=0,
                         description="Reference: the cell equations step by step in NumPy."))
    register(BackendSpec("cython", _cython_backend, _cython_available, priority=100,
                         description="Compiled core: Cython loops calling BLAS (scipy.linalg.cython_blas)."))


@hookimpl
def register_tasks(register):
    # Imported here: task code loads only when the registry first collects tasks.
    from .tasks import builtin_task_specs

    for spec in builtin_task_specs():
        register(spec)
