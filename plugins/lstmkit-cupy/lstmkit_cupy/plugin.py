"""The lstmkit hook implementations of lstmkit-cupy (the ``lstmkit`` entry point).

Importing this module never imports CuPy: :func:`is_available` looks for it
when the registry asks, and the factory imports it when the backend is built.
"""
from __future__ import annotations

import importlib.util
import sys

from lstmkit.hookspecs import hookimpl
from lstmkit.specs import BackendSpec

#: ``backend="auto"`` picks the available backend with the highest priority.
#: Built-ins: ``cython`` 100, ``numpy`` 0.  ``cupy`` sits between them so that
#: ``auto`` keeps computing on the CPU wherever the compiled core is built
#: (every normal install): a GPU pays off only for large batches and hidden
#: sizes, every call on NumPy arrays copies them to the device and back, the
#: first call compiles kernels, and results would change (at rounding level)
#: with the machine a script runs on.  Ask for the GPU with ``backend="cupy"``.
#: Only without the compiled core does ``auto`` prefer ``cupy`` to the pure
#: NumPy reference, and ``available_backends()`` stays fastest first with
#: ``numpy`` last.
PRIORITY = 50

INSTALL_HINT = "pip install cupy-cuda12x"


def is_available() -> tuple[bool, str]:
    """``(True, "")`` when CuPy imports and sees a CUDA GPU, else ``(False, reason)``.

    Cheap and never raises: without CuPy it only asks the import system
    whether a ``cupy`` package exists; with CuPy it imports it and asks the
    CUDA runtime for the number of devices.
    """
    try:
        if "cupy" not in sys.modules and importlib.util.find_spec("cupy") is None:
            return False, f"CuPy is not installed ({INSTALL_HINT})"
    except Exception as exc:  # a broken import system entry must not break lstmkit
        return False, f"CuPy is not installed ({INSTALL_HINT}); looking for it failed: {type(exc).__name__}: {exc}"
    try:
        import cupy
    except Exception as exc:
        return False, f"CuPy is installed but does not import: {type(exc).__name__}: {exc}"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # cudaErrorNoDevice, cudaErrorInsufficientDriver, no libcuda...
        return False, f"no CUDA GPU found: {type(exc).__name__}: {exc}"
    if count < 1:
        return False, "no CUDA GPU found: the CUDA runtime reports 0 devices"
    return True, ""


def create_backend():
    """The ``cupy`` backend on the current CUDA device (imports CuPy)."""
    from .backend import CupyBackend

    return CupyBackend()


SPEC = BackendSpec(
    "cupy",
    create_backend,
    is_available,
    priority=PRIORITY,
    description="NVIDIA GPU through CuPy: cuBLAS GEMMs, fused CUDA gate kernels (plugin lstmkit-cupy).",
)


@hookimpl
def register_backends(register):
    register(SPEC)
