"""The training loop of ``lstmkit run``.

One *step* is one batch: forward, loss, backward, gradient clipping, one
optimizer update — with truncated BPTT (``training.tbptt = k``), one update
per chunk of ``k`` time steps, the recurrent state carried from chunk to
chunk without gradient.  An *epoch* is one pass over the training split in
an order drawn from the shuffling generator.  After every ``eval_every``
epochs (and at the end) the validation split is evaluated, the monitored
metric decides ``best.npz`` and early stopping, and the plateau schedule
steps; other schedules step once per epoch.

Everything that decides the future of a run is in :meth:`Trainer.state_dict`
(the model's parameters and dropout generator, the optimizer, the scheduler,
the shuffling generator as it was at the start of the epoch, the position in
the epoch, early-stopping state, running loss sums), so a run resumed from a
checkpoint continues bit for bit as if it had never stopped.

Ctrl-C (SIGINT) and SIGTERM are deferred to the end of the current step, so
the state a checkpoint captures is always consistent; a second one stops at once.
The trainer prints nothing itself: ``echo`` and ``progress`` are supplied by the
caller (the CLI passes ``click.echo`` and a ``click`` progress bar).
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, ContextManager

import numpy as np

from ..train import LOSSES, clip_grad_norm, grad_norm, make_optimizer, make_scheduler, sequence_mask

__all__ = ["Trainer", "TrainerState", "NonFiniteLoss", "TrainingInterrupted"]


class NonFiniteLoss(RuntimeError):
    """The loss (or the gradient norm) became NaN or infinite."""

    def __init__(self, what: str, value: float, step: int, epoch: int, batch: int):
        self.what, self.value, self.step, self.epoch, self.batch = what, value, step, epoch, batch
        super().__init__(f"non-finite {what} ({value}) at step {step} (epoch {epoch}, batch {batch})")


class TrainingInterrupted(Exception):
    """Ctrl-C.  ``consistent``: the state is at a step boundary (safe to checkpoint)."""

    def __init__(self, consistent: bool = True):
        super().__init__("interrupted")
        self.consistent = consistent


@dataclass
class TrainerState:
    """Progress and bookkeeping, JSON-serialisable (it goes into checkpoints)."""

    step: int = 0  # steps done
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches done in the current epoch
    epoch_rng: dict | None = None  # shuffling generator state at the start of the current epoch
    best_value: float | None = None
    best_step: int | None = None
    best_epoch: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    train_sum: float = 0.0  # since the last evaluation
    train_count: int = 0
    log_sum: float = 0.0  # since the last train record
    log_count: int = 0
    grad_norm: float | None = None
    last_eval: dict = field(default_factory=dict)


def _take_state(state, keep):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(np.ascontiguousarray(s[:, keep]) for s in state)
    return np.ascontiguousarray(state[:, keep])


class Trainer:
    """Trains ``model`` on ``task``'s data as ``config.training`` says.

    ``model``: a :class:`~lstmkit.model.SequenceModel` (or anything with its
    interface); ``data``: ``{"train": Split, "valid": Split, "test": Split}``;
    ``shuffle``: the ``numpy.random.Generator`` that orders the batches;
    ``metrics``: a :class:`~lstmkit.run.metrics.MetricsLog`;
    ``checkpoint(kind, trainer)``: called with ``"last"``, ``"epoch"`` or
    ``"best"`` when one is due (``None``: no checkpoints); ``echo``: prints a
    log line; ``progress(length, label)``: a context manager giving an object
    with ``update(n)``, entered once per epoch (``None``: no progress display); if
    ``progress`` also has ``begin(trainer)``/``end()`` they are called around
    training (a display of the whole run: :class:`~lstmkit.run.progress.RunProgress`).
    """

    def __init__(self, model, task, data: dict, config, *, shuffle: np.random.Generator, metrics=None,
                 checkpoint: Callable[[str, "Trainer"], None] | None = None, echo: Callable[[str], None] = print,
                 progress: Callable[[int, str], ContextManager] | None = None):
        self.model, self.task, self.config = model, task, config
        self.training = config.training
        self.data = {k: self._as_dtype(v) for k, v in data.items()}
        self.shuffle = shuffle
        self.metrics = metrics
        self.checkpoint = checkpoint
        self.echo = echo
        self.progress = progress
        self.loss_fn = LOSSES[task.loss]
        self.target = task.target
        from ..config.schema import EarlyStoppingConfig

        es = self.training.early_stopping or EarlyStoppingConfig()  # null: the schema's defaults
        self.monitor, self.mode, self.patience, self.min_delta = es.metric, es.mode, es.patience, es.min_delta
        self.steps_per_epoch = max(1, math.ceil(len(self.data["train"]) / self.training.batch_size))
        opt = self.training.optimizer.model_dump(exclude={"name"})
        self.optimizer = make_optimizer(self.training.optimizer.name, dict(model.named_parameters()), **opt)
        self.scheduler = make_scheduler(self.training.scheduler.name, self.optimizer, **self._scheduler_options())
        self.state = TrainerState(epoch_rng=self.shuffle.bit_generator.state)
        # Only when asked: a model "with SequenceModel's interface" need not take the keyword.
        recompute = getattr(self.training, "recompute", False)
        self._recompute = {} if recompute is False else {"recompute": recompute}
        self._phase = "idle"
        self._stop_requested = False
        self.started = time.monotonic()

    # -- setup ------------------------------------------------------------------
    def _as_dtype(self, split):
        dtype = self.model.dtype
        changes = {}
        if np.issubdtype(split.inputs.dtype, np.floating) and split.inputs.dtype != dtype:
            changes["inputs"] = split.inputs.astype(dtype)
        if np.issubdtype(split.targets.dtype, np.floating) and split.targets.dtype != dtype:
            changes["targets"] = split.targets.astype(dtype)
        if not changes:
            return split
        import dataclasses

        return dataclasses.replace(split, **changes)

    def _scheduler_options(self) -> dict:
        """The scheduler section's options as ``make_scheduler`` keywords, plus what depends on the run."""
        s = self.training.scheduler
        options = s.model_dump(exclude={"name"})
        if s.name == "cosine" and s.t_max is None:
            options["t_max"] = self.planned_epochs()
        if s.name == "plateau":
            options["mode"] = self.mode
        return options

    def planned_epochs(self) -> int:
        """Epochs the run will take if it does not stop early."""
        by_steps = math.ceil(self.training.max_steps / self.steps_per_epoch) if self.training.max_steps else None
        return min(x for x in (self.training.epochs, by_steps) if x is not None)

    def planned_steps(self) -> int:
        by_epochs = self.training.epochs * self.steps_per_epoch if self.training.epochs else None
        return min(x for x in (by_epochs, self.training.max_steps) if x is not None)

    def generators(self) -> dict[str, np.random.Generator]:
        """Every random generator the run draws from after set-up: shuffling and the model's (dropout)."""
        gens = {"shuffle": self.shuffle}
        seen = {id(self.shuffle)}
        for name, owner in (("model", self.model), ("rnn", getattr(self.model, "rnn", None))):
            gen = getattr(owner, "generator", None)
            if isinstance(gen, np.random.Generator) and id(gen) not in seen:
                gens[name] = gen
                seen.add(id(gen))
        return gens

    # -- checkpoint state ----------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a checkpoint stores (see :mod:`lstmkit.run.checkpoint`)."""
        rng = {name: gen.bit_generator.state for name, gen in self.generators().items() if name != "shuffle"}
        trainer = asdict(self.state)
        return {"params": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "trainer": trainer, "rng": rng}

    def check_state(self, checkpoint: dict) -> list[str]:
        """What in ``checkpoint`` does not fit this trainer (``[]``: it can be loaded).

        Every entry is compared with this trainer's own :meth:`state_dict`: the same keys, kinds,
        shapes (parameters: the same dtype), finite numbers, generator states of the right kind,
        and a position in the run that the data allows (``batch < steps_per_epoch``,
        ``step == epoch * steps_per_epoch + batch``).
        """
        from .checkpoint import check_rng_state, compare_section, trainer_state_problems

        problems: list[str] = []
        template = self.state_dict()
        compare_section("params", template["params"], checkpoint.get("params"), problems, exact_dtype=True)
        buffers = tuple(f"{b}." for b in getattr(self.optimizer, "buffers", ()))
        optimizer = dict(template["optimizer"])  # buffers (allocated by the first step) are shaped like the params
        optimizer.update({f"{b}{name}": value for b in buffers for name, value in template["params"].items()})
        compare_section("optimizer", optimizer, checkpoint.get("optimizer"), problems, optional=buffers)
        compare_section("scheduler", template["scheduler"], checkpoint.get("scheduler"), problems)
        problems += trainer_state_problems(checkpoint.get("trainer"), [f.name for f in fields(TrainerState)],
                                           self.steps_per_epoch)
        gens = self.generators()
        rng = checkpoint.get("rng")
        if not isinstance(rng, dict) or set(rng) != set(gens) - {"shuffle"}:
            problems.append(f"rng: expected the states of {sorted(set(gens) - {'shuffle'})}, got "
                            f"{sorted(rng) if isinstance(rng, dict) else type(rng).__name__}")
        else:
            for name, state in rng.items():
                check_rng_state(name, gens[name], state, problems)
        if isinstance(checkpoint.get("trainer"), dict) and "epoch_rng" in checkpoint["trainer"]:
            check_rng_state("trainer/state epoch_rng", self.shuffle, checkpoint["trainer"]["epoch_rng"], problems)
        return problems

    def load_state_dict(self, checkpoint: dict) -> None:
        """Restore from :func:`~lstmkit.run.checkpoint.load_checkpoint`'s result.

        Raises ``ValueError`` listing every problem :meth:`check_state` finds; nothing is changed then.
        """
        problems = self.check_state(checkpoint)
        if problems:
            raise ValueError("; ".join(problems))
        self.model.load_state_dict(checkpoint["params"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.state = TrainerState(**checkpoint["trainer"])
        gens = self.generators()
        for name, state in checkpoint["rng"].items():
            if name in gens:
                gens[name].bit_generator.state = state
        self.shuffle.bit_generator.state = self.state.epoch_rng

    # -- the loop -----------------------------------------------------------------
    def done(self) -> bool:
        s, t = self.state, self.training
        return (s.stopped_early or (t.epochs is not None and s.epoch >= t.epochs)
                or (t.max_steps is not None and s.step >= t.max_steps))

    def after_step(self, step: int) -> None:
        """Called after every step (a hook for tests and subclasses)."""

    def fit(self) -> str:
        """Train until the end (``"completed"``) or early stopping (``"stopped_early"``).

        Raises :class:`TrainingInterrupted` on Ctrl-C and :class:`NonFiniteLoss`.
        """
        begin, end = (getattr(self.progress, name, None) for name in ("begin", "end"))  # a whole-run display
        if begin is not None:
            begin(self)
        try:
            with self._sigint_deferred():
                try:
                    self._loop()
                except (KeyboardInterrupt, TrainingInterrupted):
                    raise TrainingInterrupted(self._recover()) from None
        finally:
            if end is not None:
                end()
        return "stopped_early" if self.state.stopped_early else "completed"

    def _recover(self) -> bool:
        """After an interrupt: restore the step-start state if possible; ``True`` if consistent.

        Before the step's first update only the generators have moved (dropout masks): they are
        put back, and the state is that of the previous step boundary.  After an update (e.g.
        the second chunk of a truncated-BPTT step) the state cannot be rolled back.
        """
        if self._phase == "compute":
            for name, gen in self.generators().items():
                gen.bit_generator.state = self._snapshot[name]
            self._phase = "idle"
        return self._phase == "idle"

    def _loop(self) -> None:
        train = self.data["train"]
        n, bs, t = len(train), self.training.batch_size, self.training
        while not self.done():
            s = self.state
            self.shuffle.bit_generator.state = s.epoch_rng
            order = self.shuffle.permutation(n)
            label = f"epoch {s.epoch + 1}" + (f"/{t.epochs}" if t.epochs else "")
            with self._bar(self.steps_per_epoch - s.batch, label) as bar:
                for b in range(s.batch, self.steps_per_epoch):
                    if self._stop_requested:
                        raise TrainingInterrupted()
                    loss = self._train_step(order[b * bs:(b + 1) * bs])
                    s.batch = b + 1
                    self._after(loss)
                    bar.update(1)
                    self.after_step(s.step)
                    if t.max_steps is not None and s.step >= t.max_steps:
                        break
            if s.batch == self.steps_per_epoch:  # the epoch is complete
                s.epoch += 1
                s.batch = 0
                s.epoch_rng = self.shuffle.bit_generator.state
                last = self.done()
                if s.epoch % t.eval_every == 0 or last:
                    self._evaluate_and_track()
                if t.scheduler.name != "plateau":
                    self.scheduler.step()
                if self.checkpoint is not None:
                    every = self.config.outputs.checkpoint.every
                    if s.epoch % every == 0 or self.done():
                        self.checkpoint("epoch", self)
            else:  # max_steps reached inside an epoch
                self._evaluate_and_track()
                if self.checkpoint is not None:
                    self.checkpoint("last", self)
            if self.metrics is not None:
                self.metrics.flush()
            if self._stop_requested and not self.done():
                raise TrainingInterrupted()

    def _after(self, loss: float) -> None:
        s = self.state
        s.train_sum += loss
        s.train_count += 1
        s.log_sum += loss
        s.log_count += 1
        if s.step % self.config.outputs.log_every == 0 and self.metrics is not None:
            self.metrics.append({"event": "train", "step": s.step, "epoch": s.epoch + 1,
                                 "loss": s.log_sum / s.log_count, "lr": self.optimizer.lr,
                                 "grad_norm": s.grad_norm})
            s.log_sum, s.log_count = 0.0, 0

    def _train_step(self, index: np.ndarray) -> float:
        """One step on the examples at ``index``; returns the batch's loss."""
        s, t = self.state, self.training
        self._snapshot = {name: gen.bit_generator.state for name, gen in self.generators().items()}
        self._phase = "compute"
        batch = self.data["train"].take(index)
        x, y, lengths = batch.inputs, batch.targets, batch.lengths
        steps = x.shape[1] if lengths is None else int(lengths.max())
        if steps < x.shape[1]:
            x = x[:, :steps]
            if self.target == "sequence":
                y = y[:, :steps]
        k = t.tbptt or steps
        alive = np.arange(len(x))
        state, losses = None, []
        for a in range(0, steps, k):
            b = min(a + k, steps)
            lc = None
            if lengths is not None:
                keep = lengths[alive] > a
                if not keep.all():
                    alive = alive[keep]
                    state = _take_state(state, keep)
                lc = np.minimum(lengths[alive] - a, b - a)
                if np.all(lc == b - a):
                    lc = None
            full = len(alive) == len(x)
            xc = x[:, a:b] if full else x[alive, a:b]
            if self.target == "sequence":
                yc = y[:, a:b] if full else y[alive, a:b]
                mask = None if lc is None else sequence_mask(lc, b - a)
            else:
                yc = y if full else y[alive]
                ends = (lengths[alive] <= b) if lengths is not None else np.full(len(alive), b == steps)
                mask = None if ends.all() else ends
                if not ends.any():  # nobody's last step is in this chunk: carry the state only
                    _, state = self.model.forward(np.ascontiguousarray(xc), lc, state, return_state=True)
                    continue
            outputs, state_n, backward = self.model.forward_train(np.ascontiguousarray(xc), lc, state,
                                                                  **self._recompute)
            loss, d_outputs = self.loss_fn(outputs, yc, mask)
            if not math.isfinite(loss):
                raise NonFiniteLoss("loss", loss, s.step + 1, s.epoch + 1, s.batch + 1)
            grads = backward(d_outputs)
            norm = clip_grad_norm(grads, t.grad_clip) if t.grad_clip is not None else grad_norm(grads)
            if not math.isfinite(norm):
                raise NonFiniteLoss("gradient norm", norm, s.step + 1, s.epoch + 1, s.batch + 1)
            self._phase = "update"  # from here on this step has changed the parameters
            self.optimizer.step(grads)
            losses.append(loss)
            s.grad_norm = norm
            state = state_n
        self._phase = "idle"
        s.step += 1
        return float(np.mean(losses)) if losses else float("nan")

    # -- evaluation -----------------------------------------------------------------
    def evaluate(self, split: str = "valid") -> dict[str, float]:
        """``{"loss": ..., <task metrics>}`` on a split (model in eval mode; no generator is drawn from)."""
        data = self.data[split]
        return evaluate_split(self.model, self.task, data, batch_size=max(self.training.batch_size, 256))

    def _evaluate_and_track(self) -> None:
        s = self.state
        record: dict[str, Any] = {"event": "eval", "step": s.step, "epoch": s.epoch if s.batch == 0 else s.epoch + 1}
        if s.train_count:
            record["train.loss"] = s.train_sum / s.train_count
        if len(self.data.get("valid", ())) > 0:
            record.update({f"valid.{k}": v for k, v in self.evaluate("valid").items()})
        record["lr"] = self.optimizer.lr
        value = record.get(self.monitor)  # None: nothing to monitor (e.g. an empty validation split)
        improved = False
        if value is not None:
            best = s.best_value
            if math.isfinite(value) and (best is None or (
                    value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta)):
                s.best_value, s.best_step, s.best_epoch, s.bad_evals = value, s.step, record["epoch"], 0
                improved = True
            else:
                s.bad_evals += 1
                if self.patience is not None and s.bad_evals >= self.patience:
                    s.stopped_early = True
        record["best"] = improved
        if self.training.scheduler.name == "plateau" and value is not None:
            self.scheduler.step(value)
        s.train_sum, s.train_count = 0.0, 0
        s.last_eval = {k: v for k, v in record.items() if k not in ("event", "best")}
        if self.metrics is not None:
            self.metrics.append(record)
        if improved and self.checkpoint is not None and self.config.outputs.checkpoint.save_best:
            self.checkpoint("best", self)
        self.echo(self._eval_line(record))
        if s.stopped_early:
            self.echo(f"early stopping: {self.monitor} has not improved for {s.bad_evals} evaluation(s) "
                      f"(best {s.best_value:.6g} at epoch {s.best_epoch})")

    def _eval_line(self, record: dict) -> str:
        t = self.training
        epochs = f"/{t.epochs}" if t.epochs else ""
        steps = f"/{self.planned_steps()}"
        parts = [f"epoch {record['epoch']}{epochs}", f"step {record['step']}{steps}"]
        for key, value in record.items():
            if key in ("event", "step", "epoch", "best", "lr"):
                continue
            parts.append(f"{key} {value:.5g}" if isinstance(value, float) else f"{key} {value}")
        parts.append(f"lr {record['lr']:.3g}")
        parts.append(f"{time.monotonic() - self.started:.1f}s")
        return "  ".join(parts) + ("  *" if record.get("best") else "")

    # -- Ctrl-C, SIGTERM and the progress display ---------------------------------------------------
    @contextlib.contextmanager
    def _sigint_deferred(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._stop_requested:  # a second signal: stop now
                raise KeyboardInterrupt
            self._stop_requested = True
            what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            self.echo(f"{what}: stopping after this step (press Ctrl-C again to stop at once) ...")

        # SIGTERM (kill, a scheduler's timeout) is handled like Ctrl-C: a final checkpoint, status interrupted.
        signals = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
        previous = {signum: signal.signal(signum, handler) for signum in signals}
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    def request_stop(self) -> None:
        """Stop after the current step, as Ctrl-C does."""
        self._stop_requested = True

    def _bar(self, length: int, label: str) -> ContextManager:
        return self.progress(length, label) if self.progress is not None else contextlib.nullcontext(_NoBar())


class _NoBar:
    def update(self, n: int) -> None:
        pass


def evaluate_split(model, task, split, batch_size: int = 256) -> dict[str, float]:
    """Loss and task metrics of ``model`` on one split (``{"loss": ..., "mae": ...}``)."""
    if len(split) == 0:
        return {}
    return score_outputs(task, split, predict_split(model, task, split, batch_size))


def predict_split(model, task, split, batch_size: int = 256) -> np.ndarray:
    """``model``'s outputs for every example of ``split`` (eval mode; sequence outputs padded to the split's
    ``T`` with zeros past each length): ``(B, T, out)`` for sequence targets, ``(B, out)`` for last-step ones."""
    was_training = model.training
    model.eval()
    outputs = []
    try:
        for start in range(0, len(split), batch_size):
            part = split.take(slice(start, start + batch_size))
            x, lengths = part.inputs, part.lengths
            if np.issubdtype(x.dtype, np.floating) and x.dtype != model.dtype:
                x = x.astype(model.dtype)
            full = x.shape[1]
            steps = full if lengths is None else int(lengths.max())
            out = model.forward(np.ascontiguousarray(x[:, :steps]), lengths)
            if task.target == "sequence" and steps < full:
                padded = np.zeros((out.shape[0], full) + out.shape[2:], dtype=out.dtype)
                padded[:, :steps] = out
                out = padded
            outputs.append(out)
    finally:
        model.train(was_training)
    return np.concatenate(outputs)


def score_outputs(task, split, outputs) -> dict[str, float]:
    """``{"loss": ..., <task metrics>}`` of ``outputs`` (as :func:`predict_split` gives them) on ``split``."""
    targets = split.targets
    if np.issubdtype(targets.dtype, np.floating):
        targets = targets.astype(outputs.dtype)
    mask = split.mask() if task.target == "sequence" else None
    loss, _ = LOSSES[task.loss](outputs, targets, mask)
    return {"loss": loss, **{k: float(v) for k, v in task.metrics(outputs, split.targets, split.lengths).items()}}
