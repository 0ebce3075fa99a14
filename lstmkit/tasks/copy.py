"""``copy``: the copy (memory) task — read symbols, wait, then write them back."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from .base import (DataSeed, Split, SyntheticOptions, SyntheticTask, TaskError, TestSize, TrainSize,
                   ValidSize)


class CopyOptions(SyntheticOptions):
    """`task.options` of the `copy` task."""

    num_symbols: int = Field(8, ge=1, description="Alphabet size K (symbols 1..K).")
    copy_len: int = Field(10, ge=1, description="Symbols to memorise per sequence (S).")
    delay: int = Field(20, ge=1, description="Blank steps between the symbols and the recall (the last one is the delimiter).")
    num_train: TrainSize = 2000
    num_valid: ValidSize = 400
    num_test: TestSize = 400
    data_seed: DataSeed = None


class CopyTask(SyntheticTask):
    """Token ids: 0 blank, ``1..K`` symbols, ``K+1`` delimiter.  With ``S = copy_len``,
    ``D = delay``, each sequence has ``T = 2S + D`` steps::

        inputs   s_1 .. s_S   0 .. 0 (D-1)   K+1   0 .. 0 (S)
        targets  0 .. 0 (S + D)                    s_1 .. s_S

    Cross-entropy at every step over ``K + 1`` classes (blank, symbols); the
    ``accuracy`` metric counts only the last ``S`` (recall) steps,
    ``sequence_accuracy`` the sequences recalled without a mistake.  Guessing
    scores ``1/K``.
    """

    name = "copy"
    description = "The copy/memory task: recall a sequence of symbols after a delay (tokens; accuracy on the recall)."
    options_model = CopyOptions
    metric_names = ("accuracy", "sequence_accuracy")
    input_kind, target, loss = "tokens", "sequence", "cross_entropy"
    predict_input = "a text file with one line of copy_len symbols per sequence (e.g. '3 1 4 1 5')"

    def __init__(self, options=None, *, base_dir=".", seed=0, splits=None):
        super().__init__(options, base_dir=base_dir, seed=seed, splits=splits)
        self.vocab_size = self.options.num_symbols + 2
        self.output_size = self.options.num_symbols + 1

    @property
    def seq_len(self) -> int:
        return 2 * self.options.copy_len + self.options.delay

    def _encode(self, symbols: np.ndarray) -> np.ndarray:
        """``(B, S)`` symbols -> ``(B, T)`` input ids."""
        S, D = self.options.copy_len, self.options.delay
        inputs = np.zeros((len(symbols), self.seq_len), dtype=np.int64)
        inputs[:, :S] = symbols
        inputs[:, S + D - 1] = self.options.num_symbols + 1
        return inputs

    def _generate(self, rng, count) -> Split:
        S = self.options.copy_len
        symbols = rng.integers(1, self.options.num_symbols + 1, (count, S))
        targets = np.zeros((count, self.seq_len), dtype=np.int64)
        targets[:, -S:] = symbols
        return Split(self._encode(symbols), targets, None)

    def metrics(self, outputs, targets, lengths=None):
        S = self.options.copy_len
        hits = np.argmax(np.asarray(outputs)[:, -S:], axis=-1) == np.asarray(targets)[:, -S:]
        return {"accuracy": float(hits.mean()), "sequence_accuracy": float(hits.all(axis=1).mean())}

    def baseline(self, split):
        """Majority class at each position (the training targets' frequencies per step: blank before the
        recall, the most frequent symbol in it)."""
        data, train = self.data()[split], self.data()["train"]
        if not len(data) or not len(train):
            return None
        onehot = np.eye(self.output_size)[np.asarray(train.targets)]  # (B, T, K)
        logits = np.log(onehot.mean(axis=0) + 1e-12)
        return "majority class per position", np.broadcast_to(logits, (len(data),) + logits.shape).copy()

    def read_inputs(self, path):
        """A text file, one sequence per line: the ``copy_len`` symbols (1..K) to memorise, separated by spaces or commas."""
        path = Path(path)
        S, K = self.options.copy_len, self.options.num_symbols
        rows = []
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                symbols = [int(v) for v in line.replace(",", " ").split()]
            except ValueError as exc:
                raise TaskError(f"{path}:{i}: {exc}") from None
            if len(symbols) != S or not all(1 <= s <= K for s in symbols):
                raise TaskError(f"{path}:{i}: expected {S} symbols in 1..{K}, got {line.strip()!r}")
            rows.append(symbols)
        if not rows:
            raise TaskError(f"{path}: no sequences")
        return self._encode(np.array(rows, dtype=np.int64)), None

    def format_predictions(self, outputs, lengths=None):
        """The recalled symbols of each sequence (argmax of the last ``copy_len`` steps)."""
        S = self.options.copy_len
        return np.argmax(np.asarray(outputs)[:, -S:], axis=-1).tolist()

    def describe(self):
        o = self.options
        return (f"copy: {o.num_train}/{o.num_valid}/{o.num_test} sequences of {self.seq_len} steps, "
                f"recall {o.copy_len} of {o.num_symbols} symbols after {o.delay} steps")
