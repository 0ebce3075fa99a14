"""``adding``: the adding problem (Hochreiter & Schmidhuber, 1997) — sum the two marked numbers."""
from __future__ import annotations

import numpy as np
from pydantic import Field

from .base import (DataSeed, Split, SyntheticOptions, SyntheticTask, TestSize, TrainSize, ValidSize,
                   read_feature_sequences, regression_metrics)


class AddingOptions(SyntheticOptions):
    """`task.options` of the `adding` task."""

    seq_len: int = Field(50, ge=2, description="Steps per sequence; one marker falls in each half.")
    num_train: TrainSize = 2000
    num_valid: ValidSize = 500
    num_test: TestSize = 500
    data_seed: DataSeed = None


class AddingTask(SyntheticTask):
    """``inputs[b, t] = (u_t, m_t)``: ``u_t ~ U(0, 1)``, and ``m_t = 1`` at exactly two
    steps (one in the first half, one in the second), else 0.
    ``targets[b] = (Σ_t m_t u_t,)``, read from the last step.  Predicting the
    mean (1.0) scores an MSE of about 0.167; a model that solves it, < 0.01.
    """

    name = "adding"
    description = "The adding problem: sum the two marked numbers of a long sequence (regression on the last step)."
    options_model = AddingOptions
    metric_names = ("mse",)
    input_kind, input_size, output_size, target, loss = "features", 2, 1, "last", "mse"
    predict_input = "a .json, .npy or .npz file of (T, 2) sequences"

    def _generate(self, rng: np.random.Generator, count: int) -> Split:
        T = self.options.seq_len
        values = rng.uniform(0.0, 1.0, (count, T))
        half = T // 2
        first = rng.integers(0, half, count)
        second = rng.integers(half, T, count)
        markers = np.zeros((count, T))
        rows = np.arange(count)
        markers[rows, first] = markers[rows, second] = 1.0
        inputs = np.stack([values, markers], axis=-1).astype(np.float32)
        targets = (values[rows, first] + values[rows, second])[:, None].astype(np.float32)
        return Split(inputs, targets, None)

    def metrics(self, outputs, targets, lengths=None):
        return {"mse": regression_metrics(outputs, targets, sequence=False)["mse"]}

    def read_inputs(self, path):
        """Sequences of ``(value, marker)`` steps: ``.json`` (``[[[0.3, 0], [0.7, 1], ...], ...]``), ``.npy`` or ``.npz``."""
        return read_feature_sequences(path, 2)

    def format_predictions(self, outputs, lengths=None):
        """The predicted sum of each sequence."""
        return [float(v) for v in np.asarray(outputs, dtype=np.float64)[:, 0]]

    def describe(self):
        o = self.options
        return f"adding: {o.num_train}/{o.num_valid}/{o.num_test} sequences of {o.seq_len} steps"
