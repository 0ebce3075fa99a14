"""The PyTorch-shaped modules."""
from .cell import GRUCell, LSTMCell, RecurrentCell, RNNCell
from .module import Module
from .rnn import GRU, LSTM, RNN, Recurrent

__all__ = ["Module", "Recurrent", "LSTM", "GRU", "RNN", "RecurrentCell", "LSTMCell", "GRUCell", "RNNCell"]
