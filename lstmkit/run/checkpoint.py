"""Checkpoints: one ``.npz`` file, readable with ``np.load(path, allow_pickle=False)``.

Keys without a ``/`` are the model's parameters under their torch names
(``rnn.weight_ih_l0``, ``head.weight``, ...): ``{k: torch.from_numpy(z[k])
for k in z.files if "/" not in k}`` loads into a torch module with submodules
``embedding``/``rnn``/``head``.  The rest:

``optimizer/<key>``, ``scheduler/<key>``
    the optimizer's and scheduler's ``state_dict()`` (arrays and numbers);
``trainer/state``
    JSON: step, epoch, position in the epoch, early-stopping state, loss sums;
``rng/<name>``
    JSON: ``bit_generator.state`` of the shuffling and dropout generators;
``lstmkit/config``, ``lstmkit/version``
    the resolved config (YAML) and the lstmkit version that wrote the file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_open

__all__ = ["save_checkpoint", "load_checkpoint", "load_weights", "Checkpoint"]


class Checkpoint(dict):
    """What :func:`load_checkpoint` returns: ``params``, ``optimizer``, ``scheduler``, ``trainer``, ``rng``, ``config``."""


def _json_array(value) -> np.ndarray:
    return np.array(json.dumps(value))


def save_checkpoint(path: str | os.PathLike, *, params: dict[str, np.ndarray], optimizer: dict | None = None,
                    scheduler: dict | None = None, trainer: dict | None = None, rng: dict | None = None,
                    config: str | None = None) -> None:
    """Write a checkpoint atomically (temporary file + rename)."""
    from .. import __version__

    arrays: dict[str, Any] = {}
    for name, value in params.items():
        if "/" in name:
            raise ValueError(f"parameter names cannot contain '/': {name!r}")
        arrays[name] = np.asarray(value)
    for prefix, state in (("optimizer", optimizer), ("scheduler", scheduler)):
        for key, value in (state or {}).items():
            arrays[f"{prefix}/{key}"] = np.asarray(value)
    if trainer is not None:
        arrays["trainer/state"] = _json_array(trainer)
    for name, state in (rng or {}).items():
        arrays[f"rng/{name}"] = _json_array(state)
    if config is not None:
        arrays["lstmkit/config"] = np.array(config)
    arrays["lstmkit/version"] = np.array(__version__)
    for key, value in arrays.items():
        if value.dtype == object:
            raise TypeError(f"checkpoint entry {key!r} is not a plain array or number: {type(value)}")
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def _scalar(value: np.ndarray):
    return value.item() if value.ndim == 0 else value


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (no pickles)."""
    out = Checkpoint(params={}, optimizer={}, scheduler={}, trainer=None, rng={}, config=None, version=None)
    with np.load(Path(path), allow_pickle=False) as z:
        for key in z.files:
            value = z[key]
            prefix, _, rest = key.partition("/")
            if not rest:
                out["params"][key] = value
            elif prefix in ("optimizer", "scheduler"):
                out[prefix][rest] = _scalar(value)
            elif key == "trainer/state":
                out["trainer"] = json.loads(str(value))
            elif prefix == "rng":
                out["rng"][rest] = json.loads(str(value))
            elif key == "lstmkit/config":
                out["config"] = str(value)
            elif key == "lstmkit/version":
                out["version"] = str(value)
    return out


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Only the parameters, keyed like ``SequenceModel.state_dict()`` (torch names)."""
    with np.load(Path(path), allow_pickle=False) as z:
        return {k: z[k] for k in z.files if "/" not in k}
