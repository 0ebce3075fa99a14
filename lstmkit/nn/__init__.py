"""The PyTorch-shaped modules."""
from .layers import Embedding, Linear
from .cell import GRUCell, LSTMCell, RecurrentCell, RNNCell
from .module import Module
from .rnn import GRU, LSTM, RNN, Recurrent

__all__ = [
    "Module", "Linear", "Embedding", "Recurrent", "LSTM", "GRU", "RNN",
    "RecurrentCell", "LSTMCell", "GRUCell", "RNNCell",
]
