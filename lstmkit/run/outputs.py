"""What ``lstmkit evaluate`` adds to the metrics: every prediction beside its target
(``--save-predictions FILE``), per-class metrics and a confusion matrix for classification, and
per-column metrics for tasks with named target columns (``csv``).

Predictions are in the units a person reads: class names (``sequence_classification``), characters
(``char_lm``), the file's units (``csv``); masked steps past a sequence's length are left out.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from .._atomic import atomic_write_text
from .folder import writing

__all__ = ["confusion_report", "column_metrics", "prediction_rows", "write_predictions", "PREDICTION_FORMATS"]

PREDICTION_FORMATS = (".csv", ".jsonl", ".json")


def _labels(task) -> list[str]:
    """Names of the classes of a cross-entropy task."""
    classes = getattr(task, "classes", None)
    if classes is not None:
        return [str(c) for c in classes]
    decode = getattr(task, "decode", None)
    if decode is not None:
        return [decode([i]) for i in range(task.output_size)]
    return [str(i) for i in range(task.output_size)]


def confusion_report(task, outputs, targets) -> dict | None:
    """For a task classifying whole sequences (cross-entropy on the last step): ``{"labels": [...],
    "confusion": [[count of target i predicted j]], "per_class": {label: {"precision", "recall", "f1",
    "support"}}}`` (a metric with no defined value, e.g. precision of a class never predicted: ``None``);
    ``None`` for other tasks."""
    if task.loss != "cross_entropy" or task.target != "last":
        return None
    labels = _labels(task)
    k = len(labels)
    predicted = np.argmax(np.asarray(outputs), axis=-1).astype(np.int64)
    actual = np.asarray(targets).astype(np.int64)
    matrix = np.bincount(actual * k + predicted, minlength=k * k).reshape(k, k)
    per_class = {}
    for i, label in enumerate(labels):
        hits, said, support = int(matrix[i, i]), int(matrix[:, i].sum()), int(matrix[i].sum())
        precision = hits / said if said else None
        recall = hits / support if support else None
        f1 = (2 * precision * recall / (precision + recall) if precision and recall else
              0.0 if precision is not None and recall is not None else None)
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return {"labels": labels, "confusion": matrix.tolist(), "per_class": per_class}


def column_metrics(task, outputs, targets) -> dict | None:
    """``{column: {"mse", "mae", "rmse"}}`` in the data's units, for a task with named ``target_columns``
    (``csv``); ``None`` for other tasks."""
    columns = getattr(task, "target_columns", None)
    if columns is None or task.loss != "mse":
        return None
    from ..tasks.base import regression_metrics

    pred, true = _in_units(task, outputs), _in_units(task, targets)
    return {c: regression_metrics(pred[..., j], true[..., j], sequence=False) for j, c in enumerate(columns)}


def _in_units(task, values) -> np.ndarray:
    denormalize = getattr(task, "denormalize", None)
    return denormalize(values) if denormalize is not None else np.asarray(values, dtype=np.float64)


def prediction_rows(task, split, outputs) -> list[dict]:
    """One row per prediction: ``index`` (the example in the split), ``step`` (sequence targets, 1-based,
    valid steps only), then ``prediction``/``target`` (one pair per output column for regression, named
    ``prediction.<column>``/``target.<column>`` when the task names its columns; classes by name, with
    the predicted class's ``probability``)."""
    targets = np.asarray(split.targets)
    sequence = task.target == "sequence"
    lengths = split.lengths
    rows = []
    if task.loss == "cross_entropy":
        from ..tasks.base import log_softmax

        labels = _labels(task)
        probs = np.exp(log_softmax(outputs))
        predicted = np.argmax(probs, axis=-1)
        for b in range(len(targets)):
            steps = range(int(lengths[b]) if lengths is not None else targets.shape[1]) if sequence else [None]
            for t in steps:
                at = (b,) if t is None else (b, t)
                row = {"index": b} if t is None else {"index": b, "step": t + 1}
                row.update(prediction=labels[int(predicted[at])], target=labels[int(targets[at])],
                           correct=bool(predicted[at] == targets[at]), probability=round(float(probs[at + (predicted[at],)]), 6))
                rows.append(row)
        return rows
    pred, true = _in_units(task, outputs), _in_units(task, targets)
    columns = getattr(task, "target_columns", None) or [str(j) for j in range(pred.shape[-1])]
    names = [("prediction", "target")] if len(columns) == 1 and not hasattr(task, "target_columns") else \
        [(f"prediction.{c}", f"target.{c}") for c in columns]
    for b in range(len(true)):
        steps = range(int(lengths[b]) if lengths is not None else true.shape[1]) if sequence else [None]
        for t in steps:
            at = (b,) if t is None else (b, t)
            row = {"index": b} if t is None else {"index": b, "step": t + 1}
            for j, (p, q) in enumerate(names):
                row[p], row[q] = float(pred[at + (j,)]), float(true[at + (j,)])
            rows.append(row)
    return rows


def write_predictions(path: str | Path, rows: list[dict]) -> None:
    """``rows`` to ``path``, atomically: ``.csv`` (a header row), ``.jsonl`` (one object a line) or ``.json``
    (one list)."""
    path = Path(path)
    kind = path.suffix.lower()
    if kind == ".csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["index"], lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("true" if v is True else "false" if v is False else v) for k, v in r.items()}
                         for r in rows)
        text = out.getvalue()
    elif kind == ".jsonl":
        text = "".join(json.dumps(r) + "\n" for r in rows)
    else:
        text = json.dumps(rows, indent=1) + "\n"
    with writing(path):
        atomic_write_text(path, text)
