"""Config schema v1 for ``lstmkit run``: pydantic v2 models, one per section.

Every model forbids unknown keys and is strict: a YAML string is not silently
turned into a number or a boolean (``hidden_size: "64"`` and ``bidirectional:
yes`` are errors).  The descriptions here are the single source of the
reference in ``docs/config.md``, the comments of ``lstmkit config init`` and
the JSON Schema of ``lstmkit config schema``.

Plugin-provided parts (``model.cell_options``, ``task.options``) are plain
mappings here; they are validated in a second pass by the cell's or task's own
options model (see :mod:`lstmkit.config.loader`).
"""
from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

SCHEMA_VERSION = 1
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
DEFAULT_BACKEND = "auto"


class Section(BaseModel):
    """Base of every config section: unknown keys rejected, no type coercion."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


# -- model ----------------------------------------------------------------------
class ModelConfig(Section):
    """The network: optional embedding (token tasks) -> recurrent stack -> linear head."""

    cell: str = Field("lstm", description="Recurrent cell by registered name: lstm, gru, rnn_tanh, rnn_relu, "
                                          "or a plugin's cell (`lstmkit cells` lists them).")
    cell_options: dict[str, Any] = Field(default_factory=dict, description="Options of the cell, checked by the "
                                         "cell's own options model (the built-in cells take none).")
    hidden_size: int = Field(64, ge=1, description="Features in the hidden state h (as in nn.LSTM).")
    num_layers: int = Field(1, ge=1, description="Stacked recurrent layers.")
    bidirectional: bool = Field(False, description="Run each layer forwards and backwards and concatenate.")
    dropout: float = Field(0.0, ge=0.0, le=1.0, description="Dropout on the outputs of every recurrent layer "
                           "except the last (as in nn.LSTM; needs num_layers > 1).")
    proj_size: int = Field(0, ge=0, description="LSTM only: project h to this size (0: no projection; "
                           "must be smaller than hidden_size).")
    embedding_size: Optional[int] = Field(None, ge=1, description="Token tasks only (copy, char_lm, "
                                          "sequence_classification of token ids): width of the embedding. "
                                          "null: hidden_size.")

    @model_validator(mode="after")
    def _proj_below_hidden(self):
        return _check(self, "proj_size", proj_problem(self.hidden_size, self.proj_size))


# -- task -----------------------------------------------------------------------
class TaskConfig(Section):
    """What to learn: a registered task, its options and (for file tasks) its data files."""

    type: str = Field(..., description="Task by registered name: sine, adding, copy, char_lm, csv, "
                                       "sequence_classification, or a plugin's task.")
    options: dict[str, Any] = Field(default_factory=dict, description="Options of the task, checked by the "
                                    "task's own options model (see the task tables below).")
    train: Optional[str] = Field(None, description="File tasks: the training data file. Relative paths are "
                                 "resolved against the config file's directory.")
    valid: Optional[str] = Field(None, description="File tasks: a separate validation file (null: split off "
                                 "the training file, see the task's options).")
    test: Optional[str] = Field(None, description="File tasks: a separate test file (null: split off the "
                                "training file, see the task's options).")


# -- training ---------------------------------------------------------------------
_DECAY = "L2 penalty added to the gradient."


class SGDConfig(Section):
    """`torch.optim.SGD`."""

    name: Literal["sgd"] = Field("sgd", description="Optimizer: sgd, adam or adamw.")
    lr: float = Field(0.01, gt=0.0, description="Learning rate.")
    momentum: float = Field(0.0, ge=0.0, description="Momentum factor.")
    nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0).")
    weight_decay: float = Field(0.0, ge=0.0, description=_DECAY)

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self):
        return _check(self, "nesterov", nesterov_problem(self.nesterov, self.momentum))


class AdamConfig(Section):
    """`torch.optim.Adam`."""

    name: Literal["adam"] = Field("adam", description="Optimizer: sgd, adam or adamw.")
    lr: float = Field(0.001, gt=0.0, description="Learning rate.")
    betas: list[float] = Field([0.9, 0.999], min_length=2, max_length=2, description="Decay rates of the first and second "
                                       "moment estimates, each in [0, 1).")
    eps: float = Field(1e-8, gt=0.0, description="Added to the denominator for numerical stability.")
    weight_decay: float = Field(0.0, ge=0.0, description=_DECAY)

    @model_validator(mode="after")
    def _betas_in_range(self):
        return _check(self, "betas", betas_problem(self.betas))


class AdamWConfig(AdamConfig):
    """`torch.optim.AdamW`: Adam with decoupled weight decay."""

    name: Literal["adamw"] = Field("adamw", description="Optimizer: sgd, adam or adamw.")
    weight_decay: float = Field(0.01, ge=0.0, description="Decoupled weight decay: p = p·(1 - lr·weight_decay) "
                                                          "every step.")


def _tag_of(default: str):
    def tag(value):
        if isinstance(value, dict):
            return value.get("name", default)
        return getattr(value, "name", default)

    return tag


OptimizerConfig = Annotated[
    Union[Annotated[SGDConfig, Tag("sgd")], Annotated[AdamConfig, Tag("adam")], Annotated[AdamWConfig, Tag("adamw")]],
    Discriminator(_tag_of("adam"), custom_error_type="invalid_choice",
                  custom_error_message="unknown optimizer", custom_error_context={"choices": "sgd, adam, adamw"}),
]


class NoSchedulerConfig(Section):
    """A constant learning rate."""

    name: Literal["none"] = Field("none", description="Learning-rate schedule: none, step, cosine or plateau.")


class StepSchedulerConfig(Section):
    """`torch.optim.lr_scheduler.StepLR`, stepped once per epoch."""

    name: Literal["step"] = Field("step", description="Learning-rate schedule: none, step, cosine or plateau.")
    step_size: int = Field(10, ge=1, description="Multiply the learning rate by gamma every step_size epochs.")
    gamma: float = Field(0.1, gt=0.0, description="Multiplicative factor.")


class CosineSchedulerConfig(Section):
    """`torch.optim.lr_scheduler.CosineAnnealingLR`, stepped once per epoch."""

    name: Literal["cosine"] = Field("cosine", description="Learning-rate schedule: none, step, cosine or plateau.")
    t_max: Optional[int] = Field(None, ge=1, description="Epochs of one half cosine period "
                                 "(null: training.epochs).")
    eta_min: float = Field(0.0, ge=0.0, description="Smallest learning rate.")


class PlateauSchedulerConfig(Section):
    """`torch.optim.lr_scheduler.ReduceLROnPlateau` on the monitored metric, after each evaluation."""

    name: Literal["plateau"] = Field("plateau", description="Learning-rate schedule: none, step, cosine or "
                                                            "plateau.")
    factor: float = Field(0.1, gt=0.0, lt=1.0, description="Multiply the learning rate by this on a plateau.")
    patience: int = Field(10, ge=0, description="Evaluations without improvement before reducing.")
    threshold: float = Field(1e-4, ge=0.0, description="Relative improvement that counts.")
    min_lr: float = Field(0.0, ge=0.0, description="Lower bound on the learning rate.")


SchedulerConfig = Annotated[
    Union[Annotated[NoSchedulerConfig, Tag("none")], Annotated[StepSchedulerConfig, Tag("step")],
          Annotated[CosineSchedulerConfig, Tag("cosine")], Annotated[PlateauSchedulerConfig, Tag("plateau")]],
    Discriminator(_tag_of("none"), custom_error_type="invalid_choice",
                  custom_error_message="unknown scheduler",
                  custom_error_context={"choices": "none, step, cosine, plateau"}),
]


class EarlyStoppingConfig(Section):
    """Which evaluation metric is "best", and when to stop for lack of progress."""

    metric: str = Field("valid.loss", description="Monitored metric: valid.loss, train.loss, or valid.<task "
                        "metric> (e.g. valid.accuracy). It also picks best.npz and drives the plateau "
                        "schedule.")
    mode: Literal["min", "max"] = Field("min", description="min: lower is better; max: higher is better.")
    patience: Optional[int] = Field(None, ge=1, description="Stop after this many evaluations without "
                                    "improvement. null: never stop early.")
    min_delta: float = Field(0.0, ge=0.0, description="Smallest change that counts as an improvement.")


class TrainingConfig(Section):
    """How to train: length, batches, optimizer, schedule, clipping, truncated BPTT, evaluation."""

    epochs: Optional[int] = Field(10, ge=1, description="Passes over the training split (null: until "
                                  "max_steps).")
    max_steps: Optional[int] = Field(None, ge=1, description="Stop after this many steps (batches), "
                                     "whichever of epochs and max_steps comes first. null: no limit.")
    batch_size: int = Field(32, ge=1, description="Sequences per step.")
    optimizer: OptimizerConfig = Field(default_factory=AdamConfig, description="Optimizer and its "
                                       "hyper-parameters; `name` picks the others' defaults.")
    scheduler: SchedulerConfig = Field(default_factory=NoSchedulerConfig, description="Learning-rate "
                                       "schedule, stepped once per epoch (plateau: per evaluation).")
    grad_clip: Optional[float] = Field(1.0, gt=0.0, description="Clip the global L2 norm of the gradients "
                                       "to this (torch's clip_grad_norm_). null: no clipping.")
    tbptt: Optional[int] = Field(None, ge=1, description="Truncated BPTT: cut each batch into chunks of this "
                                 "many time steps, one optimizer update per chunk, the recurrent state "
                                 "carried across chunks (no gradient through it). null: full BPTT.")
    recompute: Union[Literal[False, "auto"], Annotated[int, Field(ge=1)]] = Field(
        False, description="Trade time for memory in backpropagation through time: keep the recurrent state "
        "every this many time steps (auto: the square root of the sequence or tbptt chunk length) and recompute "
        "the rest in the backward, about one more forward pass per step (see Recomputation in "
        "docs/training.md). false: keep every step's activations.")
    eval_every: int = Field(1, ge=1, description="Evaluate on the validation split every this many epochs "
                            "(and always after the last one).")
    early_stopping: Optional[EarlyStoppingConfig] = Field(default_factory=EarlyStoppingConfig,
                                                          description="Monitored metric and early stopping; "
                                                          "null is the same as the defaults.")

    @model_validator(mode="after")
    def _some_limit(self):
        return _check(self, "epochs", limit_problem(self.epochs, self.max_steps))

    @field_validator("recompute", mode="before")
    @classmethod
    def _recompute_choice(cls, value):
        problem = recompute_problem(value)
        if problem:
            raise ValueError(problem)
        return value


# -- runtime, outputs, plugins ----------------------------------------------------
class RuntimeConfig(Section):
    """Where and how the numbers are computed."""

    backend: str = Field(DEFAULT_BACKEND, description="Compute backend: auto (the fastest available), cython, "
                         "numpy, or a plugin's (`lstmkit backends` lists them).")
    dtype: Literal["float32", "float64"] = Field("float32", description="Floating-point type of parameters "
                                                  "and activations.")
    threads: Optional[int] = Field(None, ge=1, description="The most threads one call into the compiled core "
                                   "may use (its BLAS, or a recurrent layer's own two-thread loop); it uses one for "
                                   "small work and never more than the CPUs other processes leave free; results "
                                   "are the same at any setting. NumPy's BLAS and OpenMP run on one thread "
                                   "meanwhile. null: auto, the CPUs this process may use (see Threads in "
                                   "docs/config.md).")


class CheckpointConfig(Section):
    """When to write checkpoints/last.npz and best.npz."""

    every: int = Field(1, ge=1, description="Write checkpoints/last.npz every this many epochs (and always "
                       "at the end, on Ctrl-C and on max_steps).")
    keep_last: int = Field(1, ge=1, description="Checkpoints to keep: last.npz plus the keep_last - 1 newest "
                           "epoch snapshots epoch-NNNN.npz (the newest is a copy of last.npz).")
    save_best: bool = Field(True, description="Keep checkpoints/best.npz: the weights with the best "
                            "monitored metric so far.")


class OutputsConfig(Section):
    """The run folder and what goes in it."""

    dir: Optional[str] = Field(None, description="Run folder. null: runs/<name>/<timestamp>/ under the "
                               "working directory. `lstmkit run -o DIR` overrides it.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Checkpoint policy.")
    log_every: int = Field(50, ge=1, description="Write the mean training loss to metrics.jsonl every this "
                           "many steps.")
    tensorboard: bool = Field(False, description="Also write TensorBoard event files (every metric of "
                              "metrics.jsonl) to tensorboard/ in the run folder; needs the tensorboard extra: "
                              "pip install \"lstmkit[tensorboard]\".")


class PluginsConfig(Section):
    """Plugins the run needs."""

    require: list[str] = Field(default_factory=list, description="Plugins that must be installed and "
                               "loaded, as distribution or plugin names with an optional version "
                               "(\"lstmkit-peephole>=0.2\"); checked before anything runs (exit 4).")


class Config(Section):
    """A run: model, task, training, runtime, outputs, plugins."""

    version: Literal[1] = Field(1, description="Config schema version; 1.")
    name: Optional[str] = Field(None, pattern=NAME_PATTERN, max_length=100,
                                description="Run name, used for runs/<name>/. null: the config file's "
                                "name without its extension.")
    seed: Optional[int] = Field(0, ge=0, lt=2**63, description="Seed of everything random (data, "
                                "initialisation, dropout, shuffling). null: a random seed, written to "
                                "the run's config.yaml.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The network.")
    task: TaskConfig = Field(..., description="What to learn.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="How to train.")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="Backend, dtype, threads.")
    outputs: OutputsConfig = Field(default_factory=OutputsConfig, description="The run folder.")
    plugins: PluginsConfig = Field(default_factory=PluginsConfig, description="Required plugins.")

    @model_validator(mode="after")
    def _tbptt_needs_one_direction(self):
        problem = tbptt_problem(self.training.tbptt, self.model.bidirectional)
        if problem:
            raise ValueError(f"[training] [tbptt] {problem}")
        return self

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True,
                              json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema",
                                                 "title": "lstmkit run config (version 1)"})


# -- rules across fields ------------------------------------------------------------
# Each rule is written once and used twice: by the sections' validators, and (when some other value
# of the config is wrong, so pydantic never reaches them) by cross_field_problems() on the raw data,
# so that one report holds every range problem (docs/config.md promises at most two rounds).
def proj_problem(hidden_size: int, proj_size: int) -> str | None:
    if proj_size and proj_size >= hidden_size:
        return f"proj_size ({proj_size}) has to be smaller than hidden_size ({hidden_size})"
    return None


def nesterov_problem(nesterov: bool, momentum: float) -> str | None:
    return "Nesterov momentum requires a momentum > 0" if nesterov and momentum <= 0 else None


def betas_problem(betas) -> str | None:
    return None if all(0.0 <= b < 1.0 for b in betas) else f"each beta should be in [0, 1), got {list(betas)}"


def limit_problem(epochs, max_steps) -> str | None:
    if epochs is None and max_steps is None:
        return "set training.epochs or training.max_steps (both are null: training would never stop)"
    return None


def tbptt_problem(tbptt, bidirectional: bool) -> str | None:
    if tbptt is not None and bidirectional:
        return ("truncated BPTT carries the state forward in time, which a bidirectional model cannot use; "
                "set tbptt: null or bidirectional: false")
    return None


def recompute_problem(value) -> str | None:
    if value is False or value == "auto" or (type(value) is int and value >= 1):
        return None
    shown = json.dumps(value, default=repr)  # as YAML writes it: true, null, "x"
    return f"should be false, auto or a number of time steps >= 1, got {shown}"


#: The other keys each rule reads: when one of them came from the command line, the report points at it.
RULE_INPUTS = {
    ("model", "proj_size"): (("model", "hidden_size"),),
    ("training", "optimizer", "nesterov"): (("training", "optimizer", "momentum"),),
    ("training", "epochs"): (("training", "max_steps"),),
    ("training", "tbptt"): (("model", "bidirectional"),),
}


def _check(model: BaseModel, field: str, problem: str | None):
    if problem:
        raise _field_error(field, problem)
    return model


def cross_field_problems(data: dict) -> list[tuple[tuple, str]]:
    """``[(key path, message)]`` of the rules above on raw config ``data``; wrong-typed values are skipped
    (the schema reports those), absent ones take their defaults."""

    def section(*path):
        node = data
        for part in path:
            node = node.get(part, {}) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else None

    def value(node: dict | None, model: type[BaseModel], name: str, *kinds):
        if node is None:
            return _SKIP
        v = node.get(name, model.model_fields[name].get_default(call_default_factory=True))
        ok = any(v is None if k is None else isinstance(v, k) and not (k is not bool and isinstance(v, bool))
                 for k in kinds)
        return v if ok else _SKIP

    out = []

    def rule(path, problem_of, *values):
        if all(v is not _SKIP for v in values):
            problem = problem_of(*values)
            if problem:
                out.append((path, problem))

    model, training = section("model"), section("training")
    rule(("model", "proj_size"), proj_problem, value(model, ModelConfig, "hidden_size", int),
         value(model, ModelConfig, "proj_size", int))
    optimizer = section("training", "optimizer")
    kind = {"sgd": SGDConfig, "adam": AdamConfig, "adamw": AdamWConfig}.get(
        (optimizer or {}).get("name", "adam"))
    if kind is SGDConfig:
        rule(("training", "optimizer", "nesterov"), nesterov_problem, value(optimizer, kind, "nesterov", bool),
             value(optimizer, kind, "momentum", int, float))
    elif kind is not None:
        betas = value(optimizer, kind, "betas", list)
        if betas is not _SKIP and len(betas) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                                         and math.isfinite(b) for b in betas):
            rule(("training", "optimizer", "betas"), betas_problem, betas)
    rule(("training", "epochs"), limit_problem, value(training, TrainingConfig, "epochs", int, None),
         value(training, TrainingConfig, "max_steps", int, None))
    rule(("training", "tbptt"), tbptt_problem, value(training, TrainingConfig, "tbptt", int, None),
         value(model, ModelConfig, "bidirectional", bool))
    return out


_SKIP = object()


def _field_error(field: str, message: str) -> ValueError:
    # pydantic reports ValueErrors from validators at the model's location; the loader
    # moves "[field] message" down to the field, so the user sees the exact key and line.
    return ValueError(f"[{field}] {message}")


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a config file, for editors (``lstmkit config schema``)."""
    schema = Config.model_json_schema()
    # `base: other.yaml` (config/compose.py) is read before validation; a config with a base may leave out
    # what the base gives, so the top-level required keys apply only to a config without one.
    schema["properties"] = {"base": {"type": "string", "title": "Base", "description": "Another config file "
                                     "(relative to this one) that this one starts from, merged key by key."},
                            **schema["properties"]}
    required = schema.pop("required", [])
    if required:
        schema["if"] = {"not": {"required": ["base"]}}
        schema["then"] = {"required": required}
    return {"$schema": schema.pop("$schema"), **schema}
