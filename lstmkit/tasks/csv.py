"""``csv``: time-series forecasting from a CSV file (a window of rows -> a later row)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from .base import (SPLITS, CarvedSplitOptions, Fraction, Split, Task, TaskError, carve, data_files,
                   read_csv_table, regression_metrics)


class CSVOptions(CarvedSplitOptions):
    """`task.options` of the `csv` task."""

    columns: list[str] | None = Field(None, description="Input columns (header names); null: every numeric column.")
    targets: list[str] | None = Field(None, description="Columns to forecast; null: the input columns.")
    window: int = Field(32, ge=1, description="Rows the model reads per example.")
    horizon: int = Field(1, ge=1, description="Forecast the row this many steps after the window's last row.")
    stride: int = Field(1, ge=1, description="Rows between the starts of consecutive windows.")
    normalize: bool = Field(True, description="Standardise every column with the mean and std of the training rows only.")
    valid_fraction: Fraction = Field(0.15, description="Share of the train file's rows (before the test part) used for validation when task.valid is null.")
    test_fraction: Fraction = Field(0.15, description="Share of the train file's rows (its end) used for testing when task.test is null.")
    delimiter: str = Field(",", min_length=1, max_length=1, description="Field separator.")

    train_part = "training rows"  # for the error when valid_fraction + test_fraction >= 1


class CSVTask(Task):
    """Forecasting from a CSV file with a header row, rows in time order.

    ``task.train`` is the file; a null ``task.valid``/``task.test`` is carved
    from its end in time order (test: the last ``test_fraction`` of the rows,
    valid: the ``valid_fraction`` before them).  Windows never cross a split
    boundary: in each split, for every start ``i`` (step ``stride``),
    ``inputs = rows[i : i+window, columns]`` and
    ``targets = rows[i+window-1+horizon, targets]``.

    With ``normalize``, columns are standardised ``(x - mean) / std`` using the
    training rows only; the model is trained on that scale, while the metrics
    (``mse``, ``mae``, ``rmse``) and predictions are in the file's units.
    """

    name = "csv"
    description = "Time-series forecasting from a CSV file: a window of rows -> the row `horizon` steps later."
    options_model = CSVOptions
    metric_names = ("mse", "mae", "rmse")
    input_kind, target, loss = "features", "last", "mse"
    predict_input = "a CSV text file with the training file's header and at least `window` rows"

    def __init__(self, options=None, *, base_dir=".", seed=0, splits=None):
        super().__init__(options, base_dir=base_dir, seed=seed, splits=splits)
        o = self.options
        files = data_files(self.name, self.base_dir, self.splits, "a CSV file with a header row")
        header, rows = read_csv_table(files["train"], o.delimiter)
        self._check_names(files["train"], header)
        self.columns = o.columns or self._numeric_columns(files["train"], header, rows)
        self.target_columns = o.targets or list(self.columns)
        tables = {"train": self._table(files["train"], header, rows)}
        for k in ("valid", "test"):
            if files[k] is not None:
                tables[k] = self._table(files[k], *read_csv_table(files[k], o.delimiter))
        train = tables["train"]
        parts = carve(len(train), o.valid_fraction, o.test_fraction, "valid" in tables, "test" in tables)
        self.tables = {k: tables[k] if k in tables and k != "train" else train[part] for k, part in zip(SPLITS, parts)}
        need = o.window + o.horizon
        for k, table in self.tables.items():
            if len(table) < need:
                raise TaskError(
                    f"task csv: the {k} split has {len(table)} rows; window + horizon = {need} are needed "
                    f"(lower task.options.window, or give more rows)"
                )
        names = list(dict.fromkeys(self.columns + self.target_columns))
        self._in = [names.index(c) for c in self.columns]
        self._out = [names.index(c) for c in self.target_columns]
        if o.normalize:
            self.mean = self.tables["train"].mean(axis=0)
            std = self.tables["train"].std(axis=0)
            self.std = np.where(std > 0, std, 1.0)
        else:
            self.mean, self.std = np.zeros(len(names)), np.ones(len(names))
        self.input_size, self.output_size = len(self.columns), len(self.target_columns)

    def _check_names(self, path, header: list[str]) -> None:
        """``task.options.columns``/``targets`` must name header columns (reported at that key, with a suggestion)."""
        from ..registry import suggest

        for key in ("columns", "targets"):
            for name in getattr(self.options, key) or ():
                if name not in header:
                    raise TaskError(f"task.options.{key}: no column {name!r} in {path}{suggest(name, header)} "
                                    f"(the header has: {', '.join(header)})")

    @staticmethod
    def _numeric_columns(path, header, rows) -> list[str]:
        numeric = []
        for j, name in enumerate(header):
            try:
                [float(r[j]) for r in rows]
            except (ValueError, IndexError):
                continue
            numeric.append(name)
        if not numeric:
            raise TaskError(f"{path}: no numeric columns")
        return numeric

    def _table(self, path: Path, header: list[str], rows: list[list[str]], names=None) -> np.ndarray:
        """``(rows, len(names))`` float64 values of ``names`` (default: the input then target columns)."""
        names = names or list(dict.fromkeys(self.columns + self.target_columns))
        missing = [c for c in names if c not in header]
        if missing:
            raise TaskError(f"{path}: no column(s) {', '.join(missing)}; the header has: {', '.join(header)}")
        cols = [header.index(c) for c in names]
        out = np.empty((len(rows), len(cols)))
        for i, row in enumerate(rows):
            try:
                out[i] = [float(row[j]) for j in cols]
            except (ValueError, IndexError):
                raise TaskError(f"{path}: a data row has a missing or non-numeric value in {', '.join(names)}: {row}") from None
        return out

    def _windows(self, table: np.ndarray) -> Split:
        o = self.options
        z = (table - self.mean) / self.std
        starts = np.arange(0, len(table) - o.window - o.horizon + 1, o.stride)
        idx = starts[:, None] + np.arange(o.window)
        inputs = z[idx][:, :, self._in].astype(np.float32)
        targets = z[starts + o.window - 1 + o.horizon][:, self._out].astype(np.float32)
        return Split(inputs, targets, None)

    def _make_data(self):
        return {k: self._windows(t) for k, t in self.tables.items()}

    def denormalize(self, outputs) -> np.ndarray:
        """Model outputs ``(..., len(targets))`` in the file's units."""
        return np.asarray(outputs, dtype=np.float64) * self.std[self._out] + self.mean[self._out]

    def metrics(self, outputs, targets, lengths=None):
        return regression_metrics(self.denormalize(outputs), self.denormalize(targets), sequence=False)

    def read_inputs(self, path):
        """A CSV file with (at least) the input columns and ``window`` rows; the forecast reads its last ``window`` rows."""
        path = Path(path)
        header, rows = read_csv_table(path, self.options.delimiter)
        if len(rows) < self.options.window:
            raise TaskError(f"{path}: {len(rows)} data row(s), but the model reads a window of "
                            f"{self.options.window} rows (task.options.window): give at least {self.options.window}")
        values = self._table(path, header, rows[-self.options.window :], self.columns)
        z = (values - self.mean[self._in]) / self.std[self._in]
        return z[None].astype(np.float32), None

    def format_predictions(self, outputs, lengths=None):
        """Per input: ``{"horizon": h, "forecast": {column: value in the file's units}}``."""
        values = self.denormalize(outputs)
        return [{"horizon": self.options.horizon,
                 "forecast": {c: float(v) for c, v in zip(self.target_columns, row)}} for row in values]

    def describe(self):
        sizes = ", ".join(f"{k} {len(t)}" for k, t in self.tables.items())
        return (f"csv: rows {sizes}; inputs {', '.join(self.columns)} -> {', '.join(self.target_columns)} "
                f"{self.options.horizon} step(s) after a window of {self.options.window}")
