"""What every task shares: ``Split``, the ``Task`` base class, readers and metrics.

A task is built by its ``TaskSpec.factory``::

    task = factory(options, base_dir=config_dir, seed=run_seed, splits={"train": path | None, ...})

and tells the trainer what model it needs (``input_kind``, ``input_size`` or
``vocab_size``, ``output_size``, ``target``, ``loss``), gives the data
(``data()``), scores outputs (``metrics``) and reads/writes ``lstmkit
predict`` files (``read_inputs``, ``format_predictions``).

Problems with the task's data or options raise :class:`TaskError` (a
``ValueError``) whose message names the config key (``task.train``, ...).
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ..train.losses import sequence_mask

SPLITS = ("train", "valid", "test")


class TaskError(ValueError):
    """The task's options or data files are wrong (a configuration error, not a crash).

    ``keys``: the config keys it concerns, most likely culprit first (e.g. ``"task.options.window"``,
    ``"task.options.horizon"``); the report blames the one set by ``--set``, else the first in the file.
    """

    def __init__(self, message: str, *keys: str):
        super().__init__(message)
        self.keys = keys


class TaskOptions(BaseModel):
    """Base of every built-in task's options model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Split:
    """One split of a task's data, batch-first.

    ``inputs``: ``(B, T, F)`` float32 features or ``(B, T)`` int64 token ids.
    ``targets``: for ``target="sequence"`` ``(B, T, out)`` float32 or
    ``(B, T)`` int64 class ids; for ``"last"`` ``(B, out)`` float32 or ``(B,)``
    int64.  ``lengths``: ``(B,)`` int64 valid steps per sequence, or ``None``
    (all ``T``); the loss mask of sequence targets is ``t < lengths[b]``.
    """

    inputs: np.ndarray
    targets: np.ndarray
    lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    def take(self, index) -> "Split":
        """The examples at ``index`` (an index array or slice)."""
        return Split(self.inputs[index], self.targets[index], None if self.lengths is None else self.lengths[index])

    def mask(self) -> np.ndarray | None:
        """``(B, T)`` bool valid-step mask, or ``None`` when every step is valid."""
        if self.lengths is None:
            return None
        return sequence_mask(self.lengths, self.inputs.shape[1])


class Task:
    """Base class of the built-in tasks; a plugin's task may subclass it or just match its attributes.

    Subclasses set ``name``, ``options_model``, ``metric_names``, the model
    attributes, and implement ``_make_data()`` (called once, cached).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options_model: ClassVar[type[TaskOptions]] = TaskOptions
    metric_names: ClassVar[tuple[str, ...]] = ()

    input_kind: str = "features"  # "features" | "tokens"
    input_size: int | None = None
    vocab_size: int | None = None
    output_size: int = 1
    target: str = "sequence"  # "sequence" | "last"
    loss: str = "mse"  # "mse" | "cross_entropy"
    #: What ``lstmkit predict`` reads (the table "Inputs for lstmkit predict" in docs/config.md), for error messages.
    predict_input: ClassVar[str] = ""
    #: The target at step t is an input of a later step (forecasting, next-character prediction): a
    #: bidirectional model reads its own targets, so its scores mean nothing (a warning says so).
    targets_are_future_inputs: ClassVar[bool] = False

    def __init__(self, options: dict | None = None, *, base_dir: Path | str = ".", seed: int | None = 0,
                 splits: dict | None = None):
        self.options = self.options_model(**(options or {}))
        self.base_dir = Path(base_dir)
        self.seed = 0 if seed is None else int(seed)
        self.splits = {k: (splits or {}).get(k) for k in SPLITS}
        self._data: dict[str, Split] | None = None

    @classmethod
    def spec(cls):
        """The ``TaskSpec`` registering this task."""
        from ..specs import TaskSpec

        return TaskSpec(cls.name, cls, options_model=cls.options_model, description=cls.description,
                        metrics=cls.metric_names)

    def data(self) -> dict[str, Split]:
        """``{"train": Split, "valid": Split, "test": Split}``, the same on every call (and for every run with this seed)."""
        if self._data is None:
            self._data = self._make_data()
        return self._data

    def _make_data(self) -> dict[str, Split]:
        raise NotImplementedError

    def metrics(self, outputs, targets, lengths=None) -> dict[str, float]:
        """The task's metrics (names as in ``TaskSpec.metrics``) of model ``outputs`` against a split's targets."""
        raise NotImplementedError

    def baseline(self, split: str) -> tuple[str, np.ndarray] | None:
        """``(name, outputs)``: what a naive predictor outputs on ``split`` (shaped like the model's outputs), so
        its :meth:`metrics` give the number a trained model has to beat; ``None``: no baseline.

        Default: cross-entropy tasks predict the training targets' class frequencies (``log p(class)`` as
        logits: the majority class for accuracy); regression tasks predict the training targets' mean.
        Forecasting tasks override it with repeat-last.
        """
        data = self.data()
        train, target = data["train"], data[split]
        if len(train) == 0 or len(target) == 0:
            return None
        mask = train.mask() if self.target == "sequence" else None
        values = np.asarray(train.targets)
        if mask is not None:
            values = values[mask]
        steps = target.targets.shape[:2] if self.target == "sequence" else target.targets.shape[:1]
        if self.loss == "cross_entropy":
            counts = np.bincount(values.reshape(-1).astype(np.int64), minlength=self.output_size) + 1e-12
            logits = np.log(counts / counts.sum())
            return "majority class", np.broadcast_to(logits, steps + logits.shape).copy()
        mean = values.reshape(-1, values.shape[-1]).astype(np.float64).mean(axis=0)  # per output column
        return "train mean", np.broadcast_to(mean, target.targets.shape).copy()

    def read_inputs(self, path) -> tuple[np.ndarray, np.ndarray | None]:
        """``(inputs, lengths | None)`` from a ``lstmkit predict`` input file, scaled like the training data."""
        raise NotImplementedError

    def format_predictions(self, outputs, lengths=None) -> Any:
        """Model outputs for :meth:`read_inputs`'s inputs as JSON-serialisable predictions."""
        return np.asarray(outputs).tolist()

    def warnings(self) -> list[str]:
        """Problems with the data that do not stop a run but make its results doubtful (printed by
        ``lstmkit run``/``config validate`` and recorded in ``results.json``); call after :meth:`data`."""
        return []

    def describe(self) -> str:
        """One line about the data, for ``--dry-run`` and the run log."""
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.data().items())
        return f"{self.name}: {sizes} sequences"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"


# -- synthetic tasks ----------------------------------------------------------------
def split_rng(seed: int, split: str) -> np.random.Generator:
    """An independent generator per (seed, split): changing one split's size leaves the others alone."""
    return np.random.default_rng([int(seed), SPLITS.index(split)])


def refuse_files(name: str, splits: dict) -> None:
    """A synthetic task given ``task.train/valid/test`` files: a TaskError."""
    given = [k for k in SPLITS if splits.get(k) is not None]
    if given:
        raise TaskError(
            f"task {name!r} generates its data from the seed; task.{given[0]} should be null "
            f"(set the sizes in task.options instead)"
        )


# The options every synthetic task has; only their defaults differ from task to task.
TrainSize = Annotated[int, Field(ge=1, description="Training sequences.")]
ValidSize = Annotated[int, Field(ge=1, description="Validation sequences.")]
TestSize = Annotated[int, Field(ge=1, description="Test sequences.")]
DataSeed = Annotated[int | None, Field(description="Seed of the data; null: the run's seed.")]


class SyntheticOptions(TaskOptions):
    """Base of the options of a :class:`SyntheticTask`.

    A subclass declares its own options, then (last, so they close the task's
    table in ``docs/config.md``) the split sizes and the data seed with the
    shared types, giving only the defaults::

        num_train: TrainSize = 1000
        num_valid: ValidSize = 200
        num_test: TestSize = 200
        data_seed: DataSeed = None
    """


class SyntheticTask(Task):
    """A task that generates its data from the seed and takes no files.

    The seed is ``options.data_seed`` (null: the run's seed); split ``k`` is
    ``_generate(split_rng(seed, k), options.num_<k>)``, each split from its own
    stream.  Subclasses write ``_generate`` (and the task's metrics and I/O).
    """

    options_model: ClassVar[type[SyntheticOptions]] = SyntheticOptions

    def __init__(self, options: dict | None = None, *, base_dir: Path | str = ".", seed: int | None = 0,
                 splits: dict | None = None):
        super().__init__(options, base_dir=base_dir, seed=seed, splits=splits)
        refuse_files(self.name, self.splits)

    def _generate(self, rng: np.random.Generator, count: int) -> Split:
        """``count`` examples drawn from ``rng``."""
        raise NotImplementedError

    def _make_data(self) -> dict[str, Split]:
        o = self.options
        seed = self.seed if o.data_seed is None else o.data_seed
        sizes = {"train": o.num_train, "valid": o.num_valid, "test": o.num_test}
        data = {}
        for k, n in sizes.items():
            try:
                data[k] = self._generate(split_rng(seed, k), n)
            except MemoryError as exc:  # NumPy refuses an allocation that cannot succeed at once
                raise TaskError(f"task {self.name}: its {k} split ({n:,} sequences) does not fit in memory "
                                f"({exc}); lower task.options.num_{k} or the sequence length",
                                f"task.options.num_{k}") from None
        return data


# -- helpers for file tasks ------------------------------------------------------------
def resolve_file(base_dir: Path, value, key: str) -> Path:
    """``value`` (relative to ``base_dir``) as an existing file, or a TaskError naming ``key``."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        raise TaskError(f"{key}: file not found: {path}")
    return path


def data_files(name: str, base_dir: Path, splits: dict, what: str) -> dict[str, Path | None]:
    """The split files of a file task; ``task.train`` is required."""
    if splits.get("train") is None:
        raise TaskError(f"task {name!r} reads its data from a file: set task.train to {what}")
    return {k: None if splits.get(k) is None else resolve_file(base_dir, splits[k], f"task.{k}") for k in SPLITS}


Fraction = Annotated[float, Field(ge=0, lt=1)]


class CarvedSplitOptions(TaskOptions):
    """Base of the options of a file task that carves valid/test out of ``task.train``.

    A subclass declares ``valid_fraction: Fraction`` and ``test_fraction:
    Fraction`` (each with its default and description) and names what is left
    in ``train_part``; their sum must be below 1.
    """

    train_part: ClassVar[str] = "training data"

    @model_validator(mode="after")
    def _fractions(self):
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError(f"valid_fraction + test_fraction should be below 1 (the rest is the {self.train_part})")
        return self


def carve(n: int, valid_fraction: float, test_fraction: float, has_valid: bool, has_test: bool):
    """Contiguous ``(train, valid, test)`` slices of ``n`` ordered items.

    The rule for file tasks whose valid/test come from the train file: the
    last ``round(test_fraction·n)`` items are test, the
    ``round(valid_fraction·n)`` before them valid, the rest train (a split
    that has its own file takes nothing).
    """
    n_test = 0 if has_test else int(round(test_fraction * n))
    n_valid = 0 if has_valid else int(round(valid_fraction * n))
    n_train = n - n_test - n_valid
    return slice(0, n_train), slice(n_train, n_train + n_valid), slice(n_train + n_valid, n)


def pad(sequences, dtype, fill=0) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``(L_i, ...)`` sequences into ``(B, max L, ...)`` plus int64 lengths ``(B,)``."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    if len(sequences) == 0 or lengths.min() < 1:
        raise TaskError("every input sequence needs at least one step")
    first = np.asarray(sequences[0])
    out = np.full((len(sequences), int(lengths.max())) + first.shape[1:], fill, dtype=dtype)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = s
    return out, lengths


def _numbers(fields, where: str) -> list[float]:
    try:
        return [float(f) for f in fields]
    except ValueError as exc:
        raise TaskError(f"{where}: {exc}") from None


def read_feature_sequences(path, num_features: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Feature sequences for ``lstmkit predict``: ``(inputs (B, T, F) float32, lengths or None)``.

    Formats by extension:

    - ``.npy``: an array ``(B, T, F)``, ``(T, F)`` (one sequence), or for
      ``F = 1`` also ``(B, T)``;
    - ``.npz``: ``inputs`` as above, optional ``lengths``;
    - ``.json``: a list of sequences, each a list of steps; a step is a number
      (``F = 1``) or a list of ``F`` numbers;
    - anything else (``.txt``, ``.csv``): one sequence per line, ``F = 1``,
      numbers separated by commas or spaces.

    Sequences of different lengths are padded with zeros and ``lengths`` given.
    """
    path = Path(path)
    lengths = None
    if path.suffix in (".npy", ".npz"):
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as z:
                if "inputs" not in z:
                    raise TaskError(f"{path}: expected an array named 'inputs' (found: {', '.join(z.files)})")
                arr = z["inputs"]
                lengths = z["lengths"].astype(np.int64) if "lengths" in z else None
        if arr.ndim == 2 and num_features == 1 and arr.shape[-1] != 1:
            arr = arr[..., None]
        elif arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[-1] != num_features:
            raise TaskError(f"{path}: expected inputs (batch, time, {num_features}), got shape {arr.shape}")
        return np.ascontiguousarray(arr, dtype=np.float32), lengths
    if path.suffix == ".json":
        try:
            raw = json.loads(path.read_text())
            seqs = [np.asarray(s, dtype=np.float64).reshape(len(s), -1) for s in raw]
        except (ValueError, TypeError) as exc:
            raise TaskError(f"{path}: expected a JSON list of sequences of numbers: {exc}") from None
    else:
        if num_features != 1:
            raise TaskError(f"{path}: this task has {num_features} features per step; use .npy, .npz or .json")
        seqs = []
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                seqs.append(np.array(_numbers(line.replace(",", " ").split(), f"{path}:{i}"))[:, None])
    bad = [s.shape for s in seqs if s.shape[-1] != num_features]
    if bad:
        raise TaskError(f"{path}: expected {num_features} value(s) per step, got steps of {bad[0][-1]}")
    inputs, lengths = pad(seqs, np.float32)
    return inputs, (None if np.all(lengths == inputs.shape[1]) else lengths)


def read_csv_table(path: Path, delimiter: str = ",", encoding: str = "utf-8",
                   key: str | None = "task.train") -> tuple[list[str], list[list[str]], list[int]]:
    """``(header, rows, line numbers)`` of a CSV file with a header row; blank lines skipped.

    An undecodable file is a :class:`TaskError` naming ``key`` and suggesting ``task.options.encoding``
    (``key=None``, for ``lstmkit predict`` inputs: the ``UnicodeDecodeError`` itself).
    """
    try:
        with open(path, newline="", encoding=encoding) as f:
            reader = csv.reader(f, delimiter=delimiter)
            rows, lines = [], []
            for row in reader:
                if row and any(c.strip() for c in row):
                    rows.append(row)
                    lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        if key is None:
            raise
        raise TaskError(f"{path}: cannot read as {encoding} ({exc.reason} at byte {exc.start}); if the file is "
                        f"in another encoding, set task.options.encoding (e.g. latin-1, cp1252, utf-16)",
                        key) from None
    except csv.Error as exc:
        raise TaskError(f"{path}: not a readable CSV file: {exc}", key) from None
    if len(rows) < 2:
        raise TaskError(f"{path}: expected a header row and at least one data row", key)
    header = [h.strip() for h in rows[0]]
    header[0] = header[0].removeprefix("\ufeff").strip()  # the byte-order mark spreadsheets write
    return header, rows[1:], lines[1:]


def _check_encoding(name: str) -> str:
    import codecs

    try:
        codecs.lookup(name)
    except LookupError:
        raise ValueError(f"unknown text encoding {name!r} (e.g. utf-8, latin-1, cp1252, utf-16)") from None
    return name


#: A text encoding Python knows (checked when the config is validated).
Encoding = Annotated[str, AfterValidator(_check_encoding)]


# -- metrics --------------------------------------------------------------------------
def _valid(values: np.ndarray, lengths, steps_axis: int = 1) -> np.ndarray:
    """Valid elements of ``(B, T, ...)`` ``values`` (all when ``lengths`` is None), stacked on axis 0."""
    if lengths is None or values.ndim < 2:
        return values.reshape((-1,) + values.shape[2:]) if values.ndim >= 2 else values
    return values[sequence_mask(lengths, values.shape[steps_axis])]


def regression_metrics(outputs, targets, lengths=None, sequence: bool = True) -> dict[str, float]:
    """``mse``, ``mae`` and ``rmse`` over valid elements (steps past ``lengths`` excluded)."""
    err = np.asarray(outputs, dtype=np.float64) - np.asarray(targets, dtype=np.float64)
    err = _valid(err, lengths) if sequence else err
    mse = float(np.mean(err**2))
    return {"mse": mse, "mae": float(np.mean(np.abs(err))), "rmse": math.sqrt(mse)}


def accuracy(logits, target_ids, lengths=None, sequence: bool = True) -> float:
    """Fraction of valid positions where ``argmax(logits) == target``."""
    hits = np.argmax(np.asarray(logits), axis=-1) == np.asarray(target_ids)
    hits = _valid(hits, lengths) if sequence else hits
    return float(np.mean(hits)) if hits.size else float("nan")


def log_softmax(logits) -> np.ndarray:
    """``log softmax`` over the last axis, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
