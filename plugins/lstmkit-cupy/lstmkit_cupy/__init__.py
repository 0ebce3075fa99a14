"""lstmkit-cupy: a ``cupy`` backend for lstmkit (NVIDIA GPUs through CuPy).

Installing the distribution registers the backend through the ``lstmkit``
entry point (:mod:`lstmkit_cupy.plugin`); use it with ``backend="cupy"``::

    lstm = lstmkit.LSTM(256, 512, num_layers=2, backend="cupy")

Importing this package does not import CuPy.  :class:`CupyBackend` imports it
when constructed without ``xp``; ``CupyBackend(xp=numpy)`` runs the same code
on the CPU.
"""
from .backend import CupyBackend
from .plugin import INSTALL_HINT, PRIORITY, is_available

__version__ = "0.1.0"

__all__ = ["CupyBackend", "INSTALL_HINT", "PRIORITY", "is_available", "__version__"]
