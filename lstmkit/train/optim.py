"""Optimizers with ``torch.optim``'s update rules, on a dict of NumPy arrays updated in place.

``params`` is ``dict(model.named_parameters())`` (the model's own arrays);
``step(grads)`` takes gradients keyed the same way (a missing key is skipped,
like a parameter whose ``.grad`` is ``None`` in torch).  Updates run in each
parameter's dtype.  ``state_dict()`` holds only arrays, numbers and strings,
so it round-trips through ``np.savez``/``np.load(allow_pickle=False)``
(scalars come back as 0-d arrays; ``load_state_dict`` accepts both).  Keys:
``type``, ``lr``, ``step``, the hyperparameters, and ``<buffer>.<param name>``
for each per-parameter buffer (``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np


class Optimizer:
    """Base: ``params``, a settable ``lr``, a step counter and named per-parameter buffers."""

    name = ""
    buffers: tuple[str, ...] = ()
    hyperparameters: tuple[str, ...] = ()

    def __init__(self, params: Mapping[str, np.ndarray], lr: float):
        if not isinstance(params, Mapping) or not params:
            raise ValueError(f"{type(self).__name__}: params should be a non-empty dict of name -> array")
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        self.params = dict(params)
        self.lr = float(lr)
        self.step_count = 0
        self.state: dict[str, dict[str, np.ndarray]] = {b: {} for b in self.buffers}

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """One update of every parameter that has a gradient in ``grads``, in place."""
        unknown = [k for k in grads if k not in self.params]
        if unknown:
            raise KeyError(f"gradients for unknown parameters: {', '.join(unknown)}")
        self.step_count += 1
        for name, param in self.params.items():
            grad = grads.get(name)
            if grad is None:
                continue
            grad = np.asarray(grad, dtype=param.dtype)
            if grad.shape != param.shape:
                raise ValueError(f"gradient for {name} has shape {grad.shape}, the parameter {param.shape}")
            self._update(name, param, grad)

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray) -> None:
        raise NotImplementedError

    # -- checkpoints ---------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"type", "lr", "step", <hyperparameters>, "<buffer>.<param>": array}`` (copies)."""
        state = {"type": self.name, "lr": self.lr, "step": self.step_count}
        state.update({h: getattr(self, h) for h in self.hyperparameters})
        for buffer, arrays in self.state.items():
            state.update({f"{buffer}.{name}": value.copy() for name, value in arrays.items()})
        return state

    def load_state_dict(self, state: Mapping) -> None:
        """Restore ``lr``, the step counter, hyperparameters and buffers (copied)."""
        kind = str(np.asarray(state.get("type", self.name)))
        if kind != self.name:
            raise ValueError(f"optimizer state is for {kind!r}, this optimizer is {self.name!r}")
        buffers = {b: {} for b in self.buffers}
        for key, value in state.items():
            buffer, _, name = key.partition(".")
            if not name:
                continue
            if buffer not in buffers or name not in self.params:
                raise KeyError(f"unexpected optimizer state entry {key!r}")
            param = self.params[name]
            if np.shape(value) != param.shape:
                raise ValueError(f"optimizer state {key!r} has shape {np.shape(value)}, the parameter {param.shape}")
            buffers[buffer][name] = np.array(value, dtype=param.dtype, copy=True)
        self.lr = float(state["lr"])
        self.step_count = int(state["step"])
        for h in self.hyperparameters:
            if h in state:
                value = np.asarray(state[h])
                setattr(self, h, tuple(float(v) for v in value) if value.ndim else value.item())
        self.state = buffers

    def __repr__(self) -> str:
        hyper = ", ".join(f"{h}={getattr(self, h)}" for h in self.hyperparameters)
        return f"{type(self).__name__}(lr={self.lr}, {hyper})"


class SGD(Optimizer):
    """``torch.optim.SGD``::

        g = grad + weight_decay·p
        b = g (first step), else momentum·b + (1 - dampening)·g      (momentum > 0)
        g = g + momentum·b if nesterov else b
        p = p - lr·g
    """

    name = "sgd"
    buffers = ("momentum_buffer",)
    hyperparameters = ("momentum", "dampening", "nesterov", "weight_decay")

    def __init__(self, params, lr=1e-3, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, lr)
        self.momentum, self.dampening = float(momentum), float(dampening)
        self.nesterov, self.weight_decay = bool(nesterov), float(weight_decay)

    def _update(self, name, param, grad):
        if self.weight_decay != 0:
            grad = grad + self.weight_decay * param
        if self.momentum != 0:
            buf = self.state["momentum_buffer"].get(name)
            if buf is None:
                buf = self.state["momentum_buffer"][name] = grad.copy()
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * grad
            grad = grad + self.momentum * buf if self.nesterov else buf
        param -= self.lr * grad


class Adam(Optimizer):
    """``torch.optim.Adam`` (step ``t`` counts from 1)::

        g = grad + weight_decay·p                        (AdamW instead: p = p·(1 - lr·weight_decay))
        m = m + (1 - β1)(g - m)        v = β2·v + (1 - β2)·g²
        p = p - lr/(1 - β1ᵗ) · m / (sqrt(v)/sqrt(1 - β2ᵗ) + eps)
    """

    name = "adam"
    buffers = ("exp_avg", "exp_avg_sq")
    hyperparameters = ("betas", "eps", "weight_decay")
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps, self.weight_decay = float(eps), float(weight_decay)

    def _update(self, name, param, grad):
        beta1, beta2 = self.betas
        if self.weight_decay != 0:
            if self.decoupled:
                param *= 1 - self.lr * self.weight_decay
            else:
                grad = grad + self.weight_decay * param
        if name not in self.state["exp_avg"]:  # first step: zero moments
            self.state["exp_avg"][name] = np.zeros_like(param)
            self.state["exp_avg_sq"][name] = np.zeros_like(param)
        m, v = self.state["exp_avg"][name], self.state["exp_avg_sq"][name]
        m += (1 - beta1) * (grad - m)
        v *= beta2
        v += (1 - beta2) * grad * grad
        t = self.step_count
        step_size = self.lr / (1 - beta1**t)
        denom = np.sqrt(v) / (1 - beta2**t) ** 0.5 + self.eps
        param -= step_size * (m / denom)


class AdamW(Adam):
    """``torch.optim.AdamW``: Adam with decoupled weight decay ``p = p·(1 - lr·weight_decay)`` (default 0.01)."""

    name = "adamw"
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def make_optimizer(name: str, params, **options) -> Optimizer:
    """``make_optimizer("adam", dict(model.named_parameters()), lr=1e-3, weight_decay=0.0)``."""
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}") from None
    return cls(params, **options)
