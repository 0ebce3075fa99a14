"""Learning-rate schedules with ``torch.optim.lr_scheduler``'s rules, stepped once per epoch.

Each sets ``optimizer.lr``.  ``step(metric=None)`` is called after every
epoch (``ReduceLROnPlateau`` needs the monitored ``metric``).  ``state_dict()``
holds numbers and strings only (``np.savez``-safe).
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np


class Scheduler:
    """Base: remembers ``base_lr`` (the optimizer's lr at creation) and counts epochs."""

    name = ""
    fields: tuple[str, ...] = ()

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0

    def step(self, metric=None) -> None:
        """End of an epoch: update ``optimizer.lr`` (``metric``: the monitored value, for ``plateau``)."""
        self.last_epoch += 1
        self._step(metric)

    def _step(self, metric) -> None:
        pass

    @property
    def lr(self) -> float:
        return self.optimizer.lr

    def state_dict(self) -> dict:
        """``{"type", "base_lr", "last_epoch", <settings and counters>}``: numbers and strings."""
        state = {"type": self.name, "base_lr": self.base_lr, "last_epoch": self.last_epoch}
        state.update({f: getattr(self, f) for f in self.fields})
        return state

    def load_state_dict(self, state: Mapping) -> None:
        """Restore what :meth:`state_dict` saved (0-d arrays from ``np.load`` are fine)."""
        kind = str(np.asarray(state.get("type", self.name)))
        if kind != self.name:
            raise ValueError(f"scheduler state is for {kind!r}, this scheduler is {self.name!r}")
        self.base_lr = float(state["base_lr"])
        self.last_epoch = int(state["last_epoch"])
        for f in self.fields:
            setattr(self, f, np.asarray(state[f]).item())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{f}={getattr(self, f)}" for f in self.fields) + ")"


class ConstantLR(Scheduler):
    """``"none"``: the learning rate never changes."""

    name = "none"


class StepLR(Scheduler):
    """``torch.optim.lr_scheduler.StepLR``: ``lr = lr·gamma`` every ``step_size`` epochs."""

    name = "step"
    fields = ("step_size", "gamma")

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        if not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"step_size should be a positive integer, got {step_size!r}")
        super().__init__(optimizer)
        self.step_size, self.gamma = step_size, float(gamma)

    def _step(self, metric):
        if self.last_epoch % self.step_size == 0:
            self.optimizer.lr = self.optimizer.lr * self.gamma


class CosineAnnealingLR(Scheduler):
    """``torch.optim.lr_scheduler.CosineAnnealingLR`` (closed form)::

        lr = eta_min + (base_lr - eta_min)·(1 + cos(π·epoch/t_max))/2
    """

    name = "cosine"
    fields = ("t_max", "eta_min")

    def __init__(self, optimizer, t_max: int, eta_min: float = 0.0):
        if not isinstance(t_max, int) or t_max < 1:
            raise ValueError(f"t_max should be a positive integer, got {t_max!r}")
        super().__init__(optimizer)
        self.t_max, self.eta_min = t_max, float(eta_min)

    def _step(self, metric):
        cos = (1 + math.cos(math.pi * self.last_epoch / self.t_max)) / 2
        self.optimizer.lr = self.eta_min + (self.base_lr - self.eta_min) * cos


class ReduceLROnPlateau(Scheduler):
    """``torch.optim.lr_scheduler.ReduceLROnPlateau``.

    ``metric`` improves when below ``best·(1 - threshold)`` (``mode="min"``)
    or above ``best·(1 + threshold)`` (``"max"``) — ``threshold_mode="abs"``:
    ``best ∓ threshold``.  After more than ``patience`` epochs without
    improvement, ``lr = max(lr·factor, min_lr)`` (if that changes it by more
    than ``eps``), then ``cooldown`` epochs pass before counting again.
    """

    name = "plateau"
    fields = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps",
              "best", "num_bad_epochs", "cooldown_counter")

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode} is unknown!")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode} is unknown!")
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        super().__init__(optimizer)
        self.mode, self.factor, self.patience = mode, float(factor), int(patience)
        self.threshold, self.threshold_mode = float(threshold), threshold_mode
        self.cooldown, self.min_lr, self.eps = int(cooldown), float(min_lr), float(eps)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def _better(self, value: float) -> bool:
        if self.threshold_mode == "rel":
            scale = 1 - self.threshold if self.mode == "min" else 1 + self.threshold
            return value < self.best * scale if self.mode == "min" else value > self.best * scale
        return value < self.best - self.threshold if self.mode == "min" else value > self.best + self.threshold

    def _step(self, metric):
        if metric is None:
            raise ValueError("ReduceLROnPlateau.step needs the monitored metric: step(metric)")
        value = float(metric)
        if self._better(value):
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = self.optimizer.lr
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0


SCHEDULERS = {"none": ConstantLR, "step": StepLR, "cosine": CosineAnnealingLR, "plateau": ReduceLROnPlateau}


def make_scheduler(name: str, optimizer, **options) -> Scheduler:
    """``make_scheduler("cosine", opt, t_max=20)``; ``"none"`` takes no options."""
    try:
        cls = SCHEDULERS[name]
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}; valid schedulers: {', '.join(SCHEDULERS)}") from None
    return cls(optimizer, **options)
