"""``sequence_classification``: label whole sequences read from ``.npz`` or a UCR-style CSV."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from .base import (SPLITS, CarvedSplitOptions, Fraction, Split, Task, TaskError, accuracy, data_files,
                   log_softmax, pad)
from ..train.losses import sequence_mask


class SequenceClassificationOptions(CarvedSplitOptions):
    """`task.options` of the `sequence_classification` task."""

    valid_fraction: Fraction = Field(0.15, description="Share of each class taken from the train file for validation when task.valid is null.")
    test_fraction: Fraction = Field(0.15, description="Share of each class taken from the train file for testing when task.test is null.")
    split_seed: int = Field(0, description="Seed of the shuffle that splits the train file (fixed by default, so every run sees the same split).")
    normalize: bool = Field(True, description="Standardise each feature with the mean and std of the training sequences' valid steps (feature inputs only).")
    header: bool = Field(False, description="CSV files: skip the first row.")


def _sort_labels(labels):
    """Class names sorted numerically when every label is an integer, else as strings."""
    names = sorted(set(labels))
    try:
        return sorted(names, key=int)
    except ValueError:
        return names


class SequenceClassificationTask(Task):
    """Classify each sequence; the class is read from the last step (bidirectional: both ends).

    Files (``task.train``, optional ``task.valid``/``task.test``):

    - ``.npz``: ``inputs`` float ``(B, T, F)`` or ``(B, T)`` (one feature), or
      integer ``(B, T)`` token ids (optional scalar ``vocab_size``, default
      the largest id + 1); ``labels`` ``(B,)`` ints or strings; optional
      ``lengths`` ``(B,)``.
    - anything else: UCR-style text, one sequence per line
      ``label,x_1,x_2,...`` (commas, or else tabs/spaces); lines may differ in
      length, and empty or ``NaN`` trailing values are padding.

    Split rule when ``task.valid``/``task.test`` are null: stratified — the
    examples of each class (classes in sorted order, examples in file order)
    are shuffled by ``default_rng(split_seed)``; the first
    ``round(test_fraction·n_c)`` go to test, the next
    ``round(valid_fraction·n_c)`` to valid, the rest to train; each split
    keeps file order.  Metric: ``accuracy``.
    """

    name = "sequence_classification"
    predict_input = "an unlabelled CSV text file (one sequence per line) or an .npz file with an array 'inputs'"
    description = "Sequence classification from .npz or UCR-style CSV files with labels (accuracy)."
    options_model = SequenceClassificationOptions
    metric_names = ("accuracy",)
    target, loss = "last", "cross_entropy"

    def __init__(self, options=None, *, base_dir=".", seed=0, splits=None):
        super().__init__(options, base_dir=base_dir, seed=seed, splits=splits)
        files = data_files(self.name, self.base_dir, self.splits, "a .npz or CSV file of labelled sequences")
        loaded = {k: self._load(p) for k, p in files.items() if p is not None}
        kinds = {v[0].dtype.kind == "i" for v in loaded.values()}
        if len(kinds) > 1:
            raise TaskError("task sequence_classification: the files mix token ids and float features")
        self.input_kind = "tokens" if kinds.pop() else "features"
        self.classes = _sort_labels([label for v in loaded.values() for label in v[2]])
        self.output_size = len(self.classes)
        if self.output_size < 2:
            raise TaskError(f"{files['train']}: found one class ({self.classes[0]}); classification needs at least 2")
        index = {c: i for i, c in enumerate(self.classes)}
        raw = {k: (x, n, np.array([index[label] for label in y], dtype=np.int64)) for k, (x, n, y) in loaded.items()}
        self.raw = self._split(raw)
        if self.input_kind == "tokens":
            self.vocab_size = self._vocab_size or int(max(x.max() for x, _, _ in self.raw.values())) + 1
        else:
            self.input_size = self.raw["train"][0].shape[-1]
            self._fit_normalization()

    # -- reading ----------------------------------------------------------------------
    _vocab_size = None

    def _load(self, path: Path):
        """``(inputs (B, T, F) float64 | (B, T) int64, lengths (B,), labels list[str])``."""
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in ("inputs", "labels") if k not in z]
                if missing:
                    raise TaskError(f"{path}: expected arrays 'inputs' and 'labels' (found: {', '.join(z.files)})")
                x, labels = z["inputs"], z["labels"]
                lengths = z["lengths"].astype(np.int64) if "lengths" in z else np.full(len(x), x.shape[1], np.int64)
                if "vocab_size" in z:
                    self._vocab_size = int(z["vocab_size"])
            if np.issubdtype(x.dtype, np.integer):
                if x.ndim != 2:
                    raise TaskError(f"{path}: token inputs should be (batch, time), got {x.shape}")
                x = x.astype(np.int64)
            else:
                x = x[..., None] if x.ndim == 2 else x
                if x.ndim != 3:
                    raise TaskError(f"{path}: inputs should be (batch, time, features), got {x.shape}")
                x = x.astype(np.float64)
            if labels.shape != (len(x),) or lengths.shape != (len(x),):
                raise TaskError(f"{path}: labels and lengths should have shape ({len(x)},)")
            if len(x) and (lengths.min() < 1 or lengths.max() > x.shape[1]):
                raise TaskError(f"{path}: lengths should lie in 1..{x.shape[1]}")
            if x.dtype == np.float64:
                valid = np.arange(x.shape[1]) < lengths[:, None]
                bad = np.argwhere(~np.isfinite(x[valid].reshape(-1, x.shape[2])).all(axis=1))
                if bad.size:
                    b, t = np.argwhere(valid)[int(bad[0, 0])]
                    raise TaskError(f"{path}: inputs[{b}, {t}] is not a finite number (NaN or inf) within the "
                                    f"sequence's length; fill or drop the gaps before training")
            return x, lengths, [str(v) for v in labels.tolist()]
        labels, seqs = [], []
        for n, (i, fields) in enumerate(self._rows(path)):
            labels.append(fields[0].strip())
            seqs.append(self._first_row_values(fields[1:], f"{path}:{i}", n == 0))
        if not seqs:
            raise TaskError(f"{path}: no sequences")
        x, lengths = pad(seqs, np.float64)
        return x[..., None], lengths, labels

    def _rows(self, path: Path):
        lines = path.read_text().splitlines()
        start = 1 if self.options.header else 0
        for i, line in enumerate(lines[start:], start + 1):
            if line.strip():
                yield i, [f.strip() for f in (line.split(",") if "," in line else line.split())]

    def _first_row_values(self, fields, where, first: bool) -> np.ndarray:
        """:meth:`_values`; a non-number in the first row of a file read without a header hints ``header: true``."""
        try:
            return self._values(fields, where)
        except TaskError as exc:
            if first and not self.options.header and "could not convert" in str(exc):
                raise TaskError(f"{exc} (if the first line is a header row, add header: true to task.options)") from None
            raise

    @staticmethod
    def _values(fields, where) -> np.ndarray:
        while fields and fields[-1].lower() in ("", "nan"):
            fields = fields[:-1]
        try:
            values = np.array([float(f) for f in fields])
        except ValueError as exc:
            raise TaskError(f"{where}: {exc}") from None
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise TaskError(f"{where}: a sequence needs at least one value, and no gaps (NaN) before its end")
        return values

    # -- splitting and scaling ---------------------------------------------------------
    def _split(self, raw):
        o = self.options
        x, lengths, y = raw["train"]
        rng = np.random.default_rng(o.split_seed)
        parts = {"train": [], "valid": [], "test": []}
        for c in range(self.output_size):
            members = rng.permutation(np.flatnonzero(y == c))
            n_test = 0 if "test" in raw else int(round(o.test_fraction * len(members)))
            n_valid = 0 if "valid" in raw else int(round(o.valid_fraction * len(members)))
            parts["test"].append(members[:n_test])
            parts["valid"].append(members[n_test : n_test + n_valid])
            parts["train"].append(members[n_test + n_valid :])
        out = {}
        for k in SPLITS:
            if k in raw and k != "train":
                out[k] = raw[k]
                continue
            idx = np.sort(np.concatenate(parts[k]))
            if idx.size == 0:
                raise TaskError(
                    f"task sequence_classification: the {k} split is empty (give task.{k}, "
                    f"or raise task.options.{k}_fraction)" if k != "train" else
                    "task sequence_classification: no training sequences are left"
                )
            width = int(lengths[idx].max())
            out[k] = (x[idx, :width], lengths[idx], y[idx])
        return out

    def _fit_normalization(self):
        x, lengths, _ = self.raw["train"]
        valid = x[sequence_mask(lengths, x.shape[1])]
        if self.options.normalize:
            std = valid.std(axis=0)
            self.mean, self.std = valid.mean(axis=0), np.where(std > 0, std, 1.0)
        else:
            self.mean, self.std = np.zeros(x.shape[-1]), np.ones(x.shape[-1])

    def _scale(self, x, lengths) -> np.ndarray:
        if self.input_kind == "tokens":
            return x.astype(np.int64)
        z = (x - self.mean) / self.std
        z[~sequence_mask(lengths, x.shape[1])] = 0.0
        return z.astype(np.float32)

    def _make_data(self):
        out = {}
        for k, (x, lengths, y) in self.raw.items():
            full = bool(np.all(lengths == x.shape[1]))
            out[k] = Split(self._scale(x, lengths), y, None if full else lengths)
        return out

    # -- scoring and predicting ---------------------------------------------------------
    def metrics(self, outputs, targets, lengths=None):
        return {"accuracy": accuracy(outputs, targets, sequence=False)}

    def read_inputs(self, path):
        """Unlabelled sequences: ``.npz`` with ``inputs`` (and optional ``lengths``), or
        text with one sequence of values per line (no label)."""
        path = Path(path)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "inputs" not in z:
                    raise TaskError(f"{path}: expected an array named 'inputs' (found: {', '.join(z.files)})")
                x = z["inputs"]
                lengths = z["lengths"].astype(np.int64) if "lengths" in z else np.full(len(x), x.shape[1], np.int64)
            if self.input_kind == "features":
                x = (x[..., None] if x.ndim == 2 else x).astype(np.float64)
        else:
            if self.input_kind == "tokens":
                raise TaskError(f"{path}: this task reads token ids; give a .npz file with 'inputs'")
            seqs = [self._first_row_values(fields, f"{path}:{i}", n == 0)
                    for n, (i, fields) in enumerate(self._rows(path))]
            if not seqs:
                raise TaskError(f"{path}: no sequences")
            x, lengths = pad(seqs, np.float64)
            x = x[..., None]
        expected = (2,) if self.input_kind == "tokens" else (3,)
        if x.ndim not in expected or (self.input_kind == "features" and x.shape[-1] != self.input_size):
            raise TaskError(f"{path}: inputs have shape {x.shape}, expected (batch, time"
                            + (")" if self.input_kind == "tokens" else f", {self.input_size})"))
        full = bool(np.all(lengths == x.shape[1]))
        return self._scale(x, lengths), None if full else lengths

    def format_predictions(self, outputs, lengths=None):
        """Per sequence: ``{"label": class, "probabilities": {class: p}}``."""
        probs = np.exp(log_softmax(outputs))
        return [{"label": self.classes[int(np.argmax(p))],
                 "probabilities": {c: round(float(v), 6) for c, v in zip(self.classes, p)}} for p in probs]

    def describe(self):
        sizes = ", ".join(f"{k} {len(v[2])}" for k, v in self.raw.items())
        kind = f"tokens (vocabulary {self.vocab_size})" if self.input_kind == "tokens" else f"{self.input_size} feature(s)"
        return f"sequence_classification: {self.output_size} classes, {kind}; sequences {sizes}"

