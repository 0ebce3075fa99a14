"""The naive baseline of a run's task: what its metrics are for a model that learned nothing useful.

Each task names its naive predictor (:meth:`~lstmkit.tasks.base.Task.baseline`): repeat-last (or a
change of zero) for forecasting, the majority class for classification, the unigram distribution for
``char_lm`` (whose perplexity is then the unigram perplexity), the training mean for other regressions.
Its outputs are scored by the task's own metrics and loss, exactly as a model's are.
"""
from __future__ import annotations

import math

import numpy as np

from ..train import losses

__all__ = ["baseline_metrics", "baseline_text"]


def baseline_metrics(task, data: dict) -> dict | None:
    """``{"method": name, "valid": {"loss": ..., <metrics>}, "test": {...}}`` (non-empty splits only);
    ``None`` when the task has none (a plugin's task without ``baseline``, or whose data the inherited
    default does not fit: the baseline is for reading the metrics, never a reason for a run to fail)."""
    find = getattr(task, "baseline", None)
    if find is None:
        return None
    out: dict = {}
    for split in ("valid", "test"):
        if len(data.get(split, ())) == 0:
            continue
        part = data[split]
        try:
            found = find(split)
            if found is None:
                continue
            name, outputs = found
            targets = part.targets
            if np.issubdtype(targets.dtype, np.floating):
                outputs, targets = np.asarray(outputs, dtype=np.float64), targets.astype(np.float64)
            mask = part.mask() if task.target == "sequence" else None
            loss, _ = getattr(losses, task.loss)(outputs, targets, mask)  # the function LOSSES names, unwrapped
            metrics = {k: float(v) for k, v in task.metrics(outputs, part.targets, part.lengths).items()}
        except Exception:  # a plugin task whose data the default baseline does not fit: no baseline, no failure
            return None
        out["method"] = name
        out[split] = {"loss": float(loss), **metrics}
    return out or None


def baseline_text(baseline: dict | None, split: str = "valid") -> str | None:
    """``baseline (repeat-last) on valid: loss 0.012  mse 0.012 ...`` or ``None``."""
    if not baseline or split not in baseline:
        return None
    values = "  ".join(f"{k} {v:.5g}" for k, v in baseline[split].items() if isinstance(v, float) and math.isfinite(v))
    return f"baseline ({baseline['method']}) on {split}: {values}"
