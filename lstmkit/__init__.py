"""lstmkit: PyTorch's LSTM, GRU and RNN — same arguments, shapes, parameter names,
gate order, equations and errors — on NumPy, with a Cython+BLAS core.

>>> import numpy as np, lstmkit
>>> lstm = lstmkit.LSTM(10, 20, num_layers=2, seed=0)
>>> out, (h_n, c_n) = lstm(np.zeros((5, 3, 10), dtype=np.float32))
>>> out.shape, h_n.shape, c_n.shape
((5, 3, 20), (2, 3, 20), (2, 3, 20))
"""
from .hookspecs import hookimpl

__version__ = "0.1.0"

# The modules load on first use, so ``import lstmkit`` (and ``lstmkit --help``)
# does not import NumPy.
_LAZY = {
    **{name: ".nn" for name in ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "Recurrent",
                                 "RecurrentCell", "Module", "Linear", "Embedding")},
    "SequenceModel": ".model",
    **{name: "._threads" for name in ("threads", "set_threads", "get_threads")},
}

__all__ = [*_LAZY, "utils", "hookimpl", "__version__"]


def __getattr__(name):
    import importlib

    if name == "utils":
        return importlib.import_module(".utils", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lstmkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
