"""Losses returning ``(loss, gradient)``: the value as a Python float and ``d loss / d prediction``.

Both are means over the *valid* elements (``mask``), as ``torch.nn.MSELoss``
and ``torch.nn.CrossEntropyLoss`` with ``reduction="mean"`` are over all
elements.  Arithmetic runs in float64; the gradient has the prediction's dtype.
"""
from __future__ import annotations

import numpy as np


def sequence_mask(lengths, steps: int) -> np.ndarray:
    """``(B, steps)`` bool mask, ``mask[b, t] = t < lengths[b]``."""
    return np.arange(steps) < np.asarray(lengths)[:, None]


def _mask(mask, shape, what: str):
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise ValueError(f"{what}: mask should have shape {shape}, got {mask.shape}")
    return mask


def mse(pred, target, mask=None):
    """Mean squared error ``L = Σ m (pred - target)² / (Σ m · F)``.

    ``pred``, ``target``: ``(..., F)`` float.  ``mask``: ``(...)`` (per
    position, e.g. :func:`sequence_mask`) or ``(..., F)``; ``None``: all valid.
    Returns ``(L, dL/dpred = 2 m (pred - target) / count)``.
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"mse: pred shape {pred.shape} and target shape {target.shape} differ")
    diff = pred.astype(np.float64) - target
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape == pred.shape[:-1]:
            mask = mask[..., None]
        if mask.shape not in (pred.shape, pred.shape[:-1] + (1,)):
            raise ValueError(f"mse: mask should have shape {pred.shape[:-1]} or {pred.shape}, got {mask.shape}")
        mask = np.broadcast_to(mask, pred.shape)
        diff = diff * mask
        count = int(mask.sum())
    else:
        count = diff.size
    count = max(count, 1)
    loss = float(np.sum(diff * diff) / count)
    return loss, (2.0 / count * diff).astype(pred.dtype)


def cross_entropy(logits, target_ids, mask=None):
    """Softmax cross-entropy from logits, ``L = Σ m (logsumexp(z) - z[y]) / Σ m``.

    ``logits``: ``(..., C)`` float; ``target_ids``: ``(...)`` ints in ``[0, C)``;
    ``mask``: ``(...)`` or ``None`` (all valid).  Returns
    ``(L, dL/dz = m (softmax(z) - onehot(y)) / Σ m)``.
    """
    logits = np.asarray(logits)
    target_ids = np.asarray(target_ids)
    if logits.shape[:-1] != target_ids.shape:
        raise ValueError(
            f"cross_entropy: logits (..., C) {logits.shape} and targets {target_ids.shape} do not match"
        )
    if not np.issubdtype(target_ids.dtype, np.integer):
        raise ValueError(f"cross_entropy: targets should be integer class ids, got {target_ids.dtype}")
    classes = logits.shape[-1]
    if target_ids.size and (target_ids.min() < 0 or target_ids.max() >= classes):
        raise ValueError(f"cross_entropy: target ids should lie in 0..{classes - 1}, got {target_ids.min()}..{target_ids.max()}")
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=-1))
    picked = np.take_along_axis(z, target_ids[..., None], axis=-1)[..., 0]
    nll = log_norm - picked
    mask = _mask(mask, target_ids.shape, "cross_entropy")
    weights = np.ones(target_ids.shape) if mask is None else mask.astype(np.float64)
    count = max(float(weights.sum()), 1.0)
    loss = float(np.sum(nll * weights) / count)
    grad = np.exp(z - log_norm[..., None])
    np.put_along_axis(grad, target_ids[..., None], np.take_along_axis(grad, target_ids[..., None], -1) - 1.0, -1)
    grad *= (weights / count)[..., None]
    return loss, grad.astype(logits.dtype)


LOSSES = {"mse": mse, "cross_entropy": cross_entropy}
