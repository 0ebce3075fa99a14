"""``csv``: time-series forecasting from a CSV file (a window of rows -> a later row)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from .base import (SPLITS, CarvedSplitOptions, Encoding, Fraction, Split, Task, TaskError, carve, data_files,
                   read_csv_table, regression_metrics)


#: Cells read as a missing value (compared stripped and case-insensitively).
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none"})


class CSVOptions(CarvedSplitOptions):
    """`task.options` of the `csv` task."""

    columns: list[str] | None = Field(None, description="Input columns (header names); null: every numeric column (a column whose cells are all numbers or missing).")
    targets: list[str] | None = Field(None, description="Columns to forecast; null: the input columns.")
    window: int = Field(32, ge=1, description="Rows the model reads per example.")
    horizon: int = Field(1, ge=1, description="Forecast the row this many steps after the window's last row.")
    stride: int = Field(1, ge=1, description="Rows between the starts of consecutive windows.")
    normalize: bool = Field(True, description="Standardise every column with the mean and std of the training rows only.")
    difference: bool = Field(False, description="Read the changes between consecutive rows and forecast the change from the window's last row (for trending series); metrics and forecasts stay in the file's units.")
    missing: Literal["error", "drop_rows", "ffill", "interpolate"] = Field("error", description="Missing cells (blank, NA, n/a, NaN, null, None): error (reported with file:line), drop_rows (remove the rows), ffill (repeat the previous row's value) or interpolate (linear between neighbours).")
    valid_fraction: Fraction = Field(0.15, description="Share of the train file's rows (before the test part) used for validation when task.valid is null.")
    test_fraction: Fraction = Field(0.15, description="Share of the train file's rows (its end) used for testing when task.test is null.")
    delimiter: str = Field(",", min_length=1, max_length=1, description="Field separator.")
    encoding: Encoding = Field("utf-8", description="Text encoding of the files.")

    train_part = "training rows"  # for the error when valid_fraction + test_fraction >= 1


class CSVTask(Task):
    """Forecasting from a CSV file with a header row, rows in time order.

    ``task.train`` is the file; a null ``task.valid``/``task.test`` is carved
    from its end in time order (test: the last ``test_fraction`` of the rows,
    valid: the ``valid_fraction`` before them).  Windows never cross a split
    boundary: in each split, for every start ``i`` (step ``stride``),
    ``inputs = rows[i : i+window, columns]`` and
    ``targets = rows[i+window-1+horizon, targets]``.

    With ``difference``, the model reads ``d[t] = rows[t+1] - rows[t]``
    (``inputs = d[i : i+window]``, whose last row ends at ``L = i+window``)
    and learns the change ``rows[L+horizon] - rows[L]`` of the targets; a
    forecast is ``rows[L] + change``, so the error of the change is the error
    of the forecast.

    With ``normalize``, inputs and targets are standardised ``(x - mean) /
    std`` using the training rows only; the model is trained on that scale,
    while the metrics (``mse``, ``mae``, ``rmse``) and predictions are in the
    file's units.  Missing cells are handled by ``missing`` in every file
    (and in ``lstmkit predict`` inputs).
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
        self.filled = 0  # missing cells handled by task.options.missing
        files = data_files(self.name, self.base_dir, self.splits, "a CSV file with a header row")
        header, rows, lines = read_csv_table(files["train"], o.delimiter, o.encoding)
        self._check_names(files["train"], header)
        self.columns = o.columns or self._numeric_columns(files["train"], header, rows, lines)
        self.target_columns = o.targets or list(self.columns)
        self.names = list(dict.fromkeys(self.columns + self.target_columns))
        tables = {"train": self._table(files["train"], header, rows, lines, key="task.train")}
        for k in ("valid", "test"):
            if files[k] is not None:
                key = f"task.{k}"
                tables[k] = self._table(files[k], *read_csv_table(files[k], o.delimiter, o.encoding, key), key=key)
        train = tables["train"]
        parts = carve(len(train), o.valid_fraction, o.test_fraction, "valid" in tables, "test" in tables)
        self.tables = {k: tables[k] if k in tables and k != "train" else train[part] for k, part in zip(SPLITS, parts)}
        need = o.window + o.horizon + int(o.difference)
        for k, table in self.tables.items():
            if len(table) < need:
                diff = " + 1 (difference)" if o.difference else ""
                raise TaskError(
                    f"task csv: the {k} split has {len(table)} rows; window + horizon{diff} = {need} are needed "
                    f"(lower task.options.window or task.options.horizon, or give more rows)",
                    "task.options.window", "task.options.horizon")
        self._in = [self.names.index(c) for c in self.columns]
        self._out = [self.names.index(c) for c in self.target_columns]
        n = len(self.names)
        self.mean, self.std = np.zeros(n), np.ones(n)  # of what the model reads (rows, or their changes)
        self.target_mean, self.target_std = np.zeros(len(self._out)), np.ones(len(self._out))
        if o.normalize:
            rows_read = np.diff(self.tables["train"], axis=0) if o.difference else self.tables["train"]
            self.mean, self.std = _mean_std(rows_read)
            if o.difference:
                t = self.tables["train"][:, self._out]
                self.target_mean, self.target_std = _mean_std(t[o.horizon:] - t[: -o.horizon])
            else:
                self.target_mean, self.target_std = self.mean[self._out], self.std[self._out]
        self.input_size, self.output_size = len(self.columns), len(self.target_columns)
        self._predict_last: np.ndarray | None = None

    def _check_names(self, path, header: list[str]) -> None:
        """``task.options.columns``/``targets`` must name header columns (reported at that key, with a suggestion)."""
        from .._suggest import suggest

        for key in ("columns", "targets"):
            for name in getattr(self.options, key) or ():
                if name not in header:
                    raise TaskError(f"task.options.{key}: no column {name!r} in {path}{suggest(name, header)} "
                                    f"(the header has: {', '.join(header)})")

    @staticmethod
    def _numeric_columns(path, header, rows, lines) -> list[str]:
        """Columns whose every cell is a number or missing (and at least one a number)."""
        numeric, why = [], []
        for j, name in enumerate(header):
            cells = [(r[j].strip() if j < len(r) else "", line) for r, line in zip(rows, lines)]
            bad = next(((c, line) for c, line in cells if c.lower() not in MISSING and not _is_number(c)), None)
            if bad is not None:
                why.append(f"{name!r} has {bad[0][:30]!r} at line {bad[1]}")
            elif all(c.lower() in MISSING for c, _ in cells):
                why.append(f"{name!r} is empty")
            else:
                numeric.append(name)
        if not numeric:
            raise TaskError(f"{path}: no numeric columns (a column is numeric when every cell is a number or "
                            f"missing): {'; '.join(why[:5])}", "task.train")
        return numeric

    def _table(self, path: Path, header: list[str], rows: list[list[str]], lines: list[int], names=None,
               key: str = "task.train") -> np.ndarray:
        """``(rows, len(names))`` float64 values of ``names`` (default: the input then target columns), the
        missing cells handled by ``task.options.missing``."""
        names = names or self.names
        absent = [c for c in names if c not in header]
        if absent:
            raise TaskError(f"{path}: no column(s) {', '.join(absent)}; the header has: {', '.join(header)}", key)
        cols = [header.index(c) for c in names]
        out = np.full((len(rows), len(cols)), np.nan)
        for i, (row, line) in enumerate(zip(rows, lines)):
            for c, j in enumerate(cols):
                cell = row[j].strip() if j < len(row) else ""
                if cell.lower() in MISSING:
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    raise TaskError(f"{path}:{line}: column {names[c]!r}: {cell[:40]!r} is not a number", key) from None
                if not math.isfinite(value):
                    raise TaskError(f"{path}:{line}: column {names[c]!r}: {cell!r} is not a finite number", key)
                out[i, c] = value
        return self._fill(out, path, rows, lines, names, cols, key)

    def _fill(self, table: np.ndarray, path, rows, lines, names, cols, key) -> np.ndarray:
        missing = np.isnan(table)
        if not missing.any():
            return table
        policy = self.options.missing
        self.filled += int(missing.sum())  # for describe()
        for c, name in enumerate(names):
            if missing[:, c].all():
                raise TaskError(f"{path}: column {name!r} has no values (every cell is missing)", key)
        i, c = np.argwhere(missing)[0]
        row = rows[i]
        cell = row[cols[c]].strip() if cols[c] < len(row) else ""
        first = f"{path}:{lines[i]}: column {names[c]!r}"
        if policy == "error":
            raise TaskError(f"{first} has a missing value ({'blank' if not cell else repr(cell)}; {int(missing.sum())} "
                            f"missing cell(s) in all). Set task.options.missing to drop_rows, ffill or interpolate",
                            key, "task.options.missing")
        if policy == "drop_rows":
            return table[~missing.any(axis=1)]
        table = table.copy()
        steps = np.arange(len(table))
        for c in range(table.shape[1]):
            gaps = missing[:, c]
            if not gaps.any():
                continue
            if policy == "ffill":
                if gaps[0]:
                    raise TaskError(f"{path}:{lines[0]}: column {names[c]!r}: the first value is missing, so "
                                    f"there is nothing to fill forward (use task.options.missing: interpolate "
                                    f"or drop_rows)", key, "task.options.missing")
                last = np.maximum.accumulate(np.where(gaps, 0, steps))
                table[:, c] = table[last, c]
            else:  # interpolate; the ends take the nearest value
                table[gaps, c] = np.interp(steps[gaps], steps[~gaps], table[~gaps, c])
        return table

    def _windows(self, table: np.ndarray) -> Split:
        o = self.options
        rows_read = np.diff(table, axis=0) if o.difference else table
        z = (rows_read - self.mean) / self.std
        starts = np.arange(0, len(rows_read) - o.window - o.horizon + 1, o.stride)
        idx = starts[:, None] + np.arange(o.window)
        inputs = z[idx][:, :, self._in].astype(np.float32)
        last = starts + o.window if o.difference else starts + o.window - 1  # the window's last row
        targets = table[last + o.horizon][:, self._out]
        if o.difference:
            targets = targets - table[last][:, self._out]
        targets = ((targets - self.target_mean) / self.target_std).astype(np.float32)
        return Split(inputs, targets, None)

    def _make_data(self):
        return {k: self._windows(t) for k, t in self.tables.items()}

    def denormalize(self, outputs) -> np.ndarray:
        """Model outputs ``(..., len(targets))`` in the file's units (with ``difference``: the change)."""
        return np.asarray(outputs, dtype=np.float64) * self.target_std + self.target_mean

    def metrics(self, outputs, targets, lengths=None):
        return regression_metrics(self.denormalize(outputs), self.denormalize(targets), sequence=False)

    def baseline(self, split):
        """Repeat-last: the forecast of each target column is its value in the window's last row (with
        ``difference``: a change of zero), on the model's (normalised) scale."""
        o, table = self.options, self.tables[split]
        n = len(self.data()[split])
        if n == 0:
            return None
        if o.difference:
            return "zero change", np.broadcast_to(-self.target_mean / self.target_std, (n, len(self._out))).copy()
        last = np.arange(0, n * o.stride, o.stride) + o.window - 1  # as in _windows
        return "repeat-last", (table[last][:, self._out] - self.target_mean) / self.target_std

    def read_inputs(self, path):
        """A CSV file with (at least) the input columns (with ``difference``: also the target columns) and
        ``window`` rows (``window + 1`` with ``difference``); the forecast reads its last rows."""
        path, o = Path(path), self.options
        header, rows, lines = read_csv_table(path, o.delimiter, o.encoding, key=None)
        need = o.window + int(o.difference)
        names = self.names if o.difference else self.columns
        values = self._table(path, header, rows, lines, names, key=str(path))
        if len(values) < need:
            raise TaskError(f"{path}: {len(values)} data row(s), but the model reads a window of "
                            f"{o.window} rows (task.options.window){' and the row before it (difference)' if o.difference else ''}: "
                            f"give at least {need}")
        values = values[-need:]
        if o.difference:
            self._predict_last = values[-1:, self._out]  # the forecast is this row plus the predicted change
            z = (np.diff(values, axis=0) - self.mean) / self.std
            return z[None][:, :, self._in].astype(np.float32), None
        z = (values - self.mean[self._in]) / self.std[self._in]
        return z[None].astype(np.float32), None

    def format_predictions(self, outputs, lengths=None):
        """Per input: ``{"horizon": h, "forecast": {column: value in the file's units}}`` (with ``difference``
        also ``"change"``; the forecast is the last row of :meth:`read_inputs`' file plus the change)."""
        values = self.denormalize(outputs)
        if not self.options.difference:
            return [{"horizon": self.options.horizon,
                     "forecast": {c: float(v) for c, v in zip(self.target_columns, row)}} for row in values]
        base = self._predict_last if self._predict_last is not None else np.full((1, len(self._out)), np.nan)
        return [{"horizon": self.options.horizon,
                 "forecast": {c: float(v) for c, v in zip(self.target_columns, base[0] + row)},
                 "change": {c: float(v) for c, v in zip(self.target_columns, row)}} for row in values]

    def warnings(self) -> list[str]:
        """Valid/test target values mostly outside the training rows' range (a level model extrapolates)."""
        if self.options.difference:
            return []
        out, train = [], self.tables["train"]
        for split in ("valid", "test"):
            table = self.tables[split]
            for c, name in zip(self._out, self.target_columns):
                lo, hi = float(train[:, c].min()), float(train[:, c].max())
                values = table[:, c]
                outside = float(np.mean((values < lo) | (values > hi)))
                if outside > 0.1:
                    out.append(f"task csv: {outside:.0%} of the {split} values of {name!r} "
                               f"({values.min():.6g}..{values.max():.6g}) lie outside the training range "
                               f"{lo:.6g}..{hi:.6g}; a model of the levels extrapolates poorly there - consider "
                               f"task.options.difference: true (forecast the change)")
        return out

    def describe(self):
        sizes = ", ".join(f"{k} {len(t)}" for k, t in self.tables.items())
        change = " (as changes)" if self.options.difference else ""
        done = {"drop_rows": "rows dropped", "ffill": "filled forward", "interpolate": "interpolated"}
        gaps = f"; {self.filled} missing cell(s): {done[self.options.missing]}" if self.filled else ""
        return (f"csv: rows {sizes}; inputs {', '.join(self.columns)}{change} -> {', '.join(self.target_columns)} "
                f"{self.options.horizon} step(s) after a window of {self.options.window}{gaps}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _mean_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    std = values.std(axis=0)
    return values.mean(axis=0), np.where(std > 0, std, 1.0)
