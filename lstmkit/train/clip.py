"""Global-norm gradient clipping, ``torch.nn.utils.clip_grad_norm_``."""
from __future__ import annotations

from typing import Mapping

import numpy as np


def grad_norm(grads: Mapping[str, np.ndarray]) -> float:
    """The joint L2 norm ``sqrt(Σ_k ‖g_k‖²)`` of all gradients, accumulated in float64."""
    return float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values())))


def clip_grad_norm(grads: Mapping[str, np.ndarray], max_norm: float) -> float:
    """Scale every gradient in place so their joint L2 norm is at most ``max_norm``.

    ``norm = sqrt(Σ_k ‖g_k‖²)`` (accumulated in float64); when
    ``max_norm / (norm + 1e-6) < 1`` every ``g_k`` is multiplied by it.
    Returns ``norm`` before clipping (``inf``/``nan`` pass through, as in torch:
    the trainer checks it).
    """
    if max_norm is None or max_norm <= 0:
        raise ValueError(f"max_norm should be a positive number, got {max_norm!r}")
    norm = grad_norm(grads)
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for g in grads.values():
            g *= np.asarray(coef, dtype=g.dtype)
    return norm
