"""Training pieces with PyTorch's semantics: losses, optimizers, schedules, gradient clipping.

Everything works on plain dicts of NumPy arrays keyed like ``state_dict()``;
the training loop itself lives in :mod:`lstmkit.run`.
"""
from .clip import clip_grad_norm, grad_norm
from .losses import LOSSES, cross_entropy, mse, sequence_mask
from .optim import OPTIMIZERS, SGD, Adam, AdamW, Optimizer, make_optimizer
from .schedule import SCHEDULERS, ConstantLR, CosineAnnealingLR, ReduceLROnPlateau, StepLR, make_scheduler

__all__ = [
    "mse", "cross_entropy", "sequence_mask", "LOSSES",
    "Optimizer", "SGD", "Adam", "AdamW", "make_optimizer", "OPTIMIZERS",
    "ConstantLR", "StepLR", "CosineAnnealingLR", "ReduceLROnPlateau", "make_scheduler", "SCHEDULERS",
    "clip_grad_norm", "grad_norm",
]
