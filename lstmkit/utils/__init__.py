"""Utilities; ``lstmkit.utils.rnn`` mirrors ``torch.nn.utils.rnn``."""

from . import rnn

__all__ = ["rnn"]
