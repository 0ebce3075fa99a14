"""``sine``: forecast a noisy sum of sine waves ``horizon`` steps ahead, at every step."""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from .base import (DataSeed, Split, SyntheticOptions, SyntheticTask, TestSize, TrainSize, ValidSize,
                   read_feature_sequences, regression_metrics)


class SineOptions(SyntheticOptions):
    """`task.options` of the `sine` task."""

    seq_len: int = Field(50, ge=1, description="Steps per sequence.")
    horizon: int = Field(1, ge=1, description="Forecast this many steps ahead: target[t] = signal[t + horizon].")
    components: int = Field(3, ge=1, description="Sine waves summed per sequence.")
    min_period: float = Field(8.0, gt=0, description="Shortest period of a component, in steps.")
    max_period: float = Field(40.0, gt=0, description="Longest period of a component, in steps.")
    noise: float = Field(0.05, ge=0, description="Standard deviation of the Gaussian noise added to the inputs.")
    num_train: TrainSize = 1000
    num_valid: ValidSize = 200
    num_test: TestSize = 200
    data_seed: DataSeed = None

    @model_validator(mode="after")
    def _periods(self):
        if self.min_period > self.max_period:
            raise ValueError(f"min_period ({self.min_period}) should not exceed max_period ({self.max_period})")
        return self


class SineTask(SyntheticTask):
    """Each sequence is ``s(t) = Σ_k a_k sin(2π t / p_k + φ_k)`` with ``K = components``
    random waves (``p_k ~ U(min_period, max_period)``, ``φ_k ~ U(0, 2π)``,
    amplitudes ``a_k ~ U(0.2, 1)`` normalised to sum to 1, so ``|s| ≤ 1``).

    ``inputs[b, t, 0] = s(t) + noise·N(0, 1)``, ``targets[b, t, 0] = s(t + horizon)``
    (clean) for ``t < seq_len``.  Regression, MSE loss on every step.
    """

    name = "sine"
    description = "Forecast a noisy sum of sine waves `horizon` steps ahead, at every step (regression)."
    options_model = SineOptions
    metric_names = ("mse", "mae", "rmse")
    input_kind, input_size, output_size, target, loss = "features", 1, 1, "sequence", "mse"
    predict_input = "one sequence of numbers per line (text), or a .npy/.npz/.json file"
    targets_are_future_inputs = True  # targets[t] = s(t + horizon) is an input horizon steps later

    def _generate(self, rng: np.random.Generator, count: int) -> Split:
        o = self.options
        steps = np.arange(o.seq_len + o.horizon)
        amp = rng.uniform(0.2, 1.0, (count, o.components, 1))
        amp /= amp.sum(axis=1, keepdims=True)
        period = rng.uniform(o.min_period, o.max_period, (count, o.components, 1))
        phase = rng.uniform(0, 2 * np.pi, (count, o.components, 1))
        signal = (amp * np.sin(2 * np.pi * steps / period + phase)).sum(axis=1)  # (count, T + horizon)
        noisy = signal[:, : o.seq_len] + o.noise * rng.standard_normal((count, o.seq_len))
        inputs = noisy[..., None].astype(np.float32)
        targets = signal[:, o.horizon :, None].astype(np.float32)
        return Split(inputs, targets, None)

    def metrics(self, outputs, targets, lengths=None):
        return regression_metrics(outputs, targets, lengths)

    def baseline(self, split):
        """Repeat-last: the forecast of ``s(t + horizon)`` is the value observed at step ``t``."""
        data = self.data()[split]
        return ("repeat-last", np.asarray(data.inputs, dtype=np.float64)) if len(data) else None

    def read_inputs(self, path):
        """Sequences of observed values (one per line in a text file, or .npy/.npz/.json)."""
        return read_feature_sequences(path, 1)

    def format_predictions(self, outputs, lengths=None):
        """Per sequence: ``{"horizon": h, "forecast": value after the last step, "per_step": [...]}``."""
        outputs = np.asarray(outputs, dtype=np.float64)
        result = []
        for b, seq in enumerate(outputs[..., 0]):
            n = seq.shape[0] if lengths is None else int(lengths[b])
            result.append({"horizon": self.options.horizon, "forecast": float(seq[n - 1]),
                           "per_step": [float(v) for v in seq[:n]]})
        return result

    def describe(self):
        o = self.options
        return (f"sine: {o.num_train}/{o.num_valid}/{o.num_test} sequences of {o.seq_len} steps, "
                f"{o.components} waves, forecast {o.horizon} step(s) ahead")

