"""lstmkit: PyTorch's LSTM, GRU and RNN — same arguments, shapes, parameter names,
gate order, equations and errors — on NumPy, with a Cython+BLAS core.

>>> import numpy as np, lstmkit
>>> lstm = lstmkit.LSTM(10, 20, num_layers=2, seed=0)
>>> out, (h_n, c_n) = lstm(np.zeros((5, 3, 10), dtype=np.float32))
>>> out.shape, h_n.shape, c_n.shape
((5, 3, 20), (2, 3, 20), (2, 3, 20))
"""
from . import utils
from .hookspecs import hookimpl
from .model import SequenceModel
from .nn import GRU, Embedding, GRUCell, Linear, LSTM, LSTMCell, Module, Recurrent, RecurrentCell, RNN, RNNCell

__version__ = "0.1.0"

__all__ = [
    "LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell",
    "Recurrent", "RecurrentCell", "Module", "Linear", "Embedding", "SequenceModel",
    "utils", "hookimpl", "__version__",
]
