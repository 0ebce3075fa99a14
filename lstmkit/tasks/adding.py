"""``adding``: the adding problem (Hochreiter & Schmidhuber, 1997) — sum the two marked numbers."""
from __future__ import annotations

import numpy as np
from pydantic import Field

from .base import Split, Task, TaskOptions, read_feature_sequences, refuse_files, regression_metrics, split_rng


class AddingOptions(TaskOptions):
    """`task.options` of the `adding` task."""

    seq_len: int = Field(50, ge=2, description="Steps per sequence; one marker falls in each half.")
    num_train: int = Field(2000, ge=1, description="Training sequences.")
    num_valid: int = Field(500, ge=1, description="Validation sequences.")
    num_test: int = Field(500, ge=1, description="Test sequences.")
    data_seed: int | None = Field(None, description="Seed of the data; null: the run's seed.")


class AddingTask(Task):
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

    def __init__(self, options=None, *, base_dir=".", seed=0, splits=None):
        super().__init__(options, base_dir=base_dir, seed=seed, splits=splits)
        refuse_files(self.name, self.splits)

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

    def _make_data(self):
        o = self.options
        seed = self.seed if o.data_seed is None else o.data_seed
        sizes = {"train": o.num_train, "valid": o.num_valid, "test": o.num_test}
        return {k: self._generate(split_rng(seed, k), n) for k, n in sizes.items()}

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
