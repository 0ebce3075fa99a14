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

__all__ = ["save_checkpoint", "load_checkpoint", "load_weights", "Checkpoint", "Checkpointer", "compare_section",
           "check_rng_state", "trainer_state_problems"]


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


# -- validation of a checkpoint against the trainer it is loaded into ----------------------------------
def _kind(value) -> str:
    array = np.asarray(value)
    kind = array.dtype.kind
    return {"f": "number", "i": "integer", "u": "integer", "b": "boolean", "U": "string", "S": "string"}.get(kind, kind)


def _describe(value) -> str:
    array = np.asarray(value)
    if array.ndim == 0:
        return f"{array.item()!r} ({_kind(array)})"
    return f"an array {array.shape} of {array.dtype}"


def compare_section(section: str, template: dict, given, problems: list[str], *, exact_dtype: bool = False,
                    optional: tuple[str, ...] = ()) -> None:
    """Check ``given`` has ``template``'s keys, and each value its kind and shape (and dtype if ``exact_dtype``).

    Keys starting with one of ``optional`` (e.g. an optimizer's buffers before its first step) may be
    missing or extra as long as they fit the template's shapes when present.
    """
    if not isinstance(given, dict):
        problems.append(f"{section}: expected entries, got {type(given).__name__}")
        return
    for key in template:
        if key not in given and not key.startswith(optional):
            problems.append(f"{section}/{key}: missing")
    for key, value in given.items():
        if key not in template:
            problems.append(f"{section}/{key}: unexpected entry")
            continue
        want, got = np.asarray(template[key]), np.asarray(value)
        ok_kind = _kind(want) == _kind(got) or (_kind(want) == "number" and _kind(got) == "integer")
        if not ok_kind or want.shape != got.shape or (exact_dtype and want.dtype != got.dtype):
            expected = (f"{want.dtype} {want.shape}" if exact_dtype or want.ndim else
                        f"a {_kind(want)}" + (f" like {want.item()!r}" if want.dtype.kind == "U" else ""))
            problems.append(f"{section}/{key}: expected {expected}, got {_describe(got)}")
        elif got.dtype.kind == "f" and not exact_dtype and not np.all(np.isfinite(got)):
            problems.append(f"{section}/{key}: not a finite number: {_describe(got)}")


def check_rng_state(name: str, generator: np.random.Generator, state, problems: list[str]) -> None:
    """``state`` must be a valid ``bit_generator.state`` for ``generator``'s kind (tried on a scratch copy)."""
    scratch = type(generator.bit_generator)()
    try:
        scratch.state = state
    except Exception as exc:  # numpy raises TypeError, ValueError, KeyError... for a foreign state
        problems.append(f"rng/{name}: not a {type(scratch).__name__} state ({type(exc).__name__}: "
                        f"{str(exc)[:120]})")


_COUNTERS = ("step", "epoch", "batch", "bad_evals", "train_count", "log_count")
_NUMBERS = ("train_sum", "log_sum")
_OPTIONAL_NUMBERS = ("best_value", "grad_norm")
_OPTIONAL_COUNTERS = ("best_step", "best_epoch")


def trainer_state_problems(state, names, steps_per_epoch: int) -> list[str]:
    """What is wrong with a checkpoint's ``trainer/state``: its keys (``names``: the fields of
    :class:`~lstmkit.run.trainer.TrainerState`), types, ranges, and a position in the run that an
    epoch of ``steps_per_epoch`` steps allows."""
    where = "trainer/state"
    if not isinstance(state, dict):
        return [f"{where}: expected a JSON object, got {type(state).__name__}"]
    problems = []
    names = set(names)
    problems += [f"{where}: unexpected entry {k!r}" for k in state if k not in names]
    problems += [f"{where}: {k} is missing" for k in sorted(names - set(state))]

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    for k in _COUNTERS + _OPTIONAL_COUNTERS:
        v = state.get(k)
        if k in state and not (is_int(v) and v >= 0 or (v is None and k in _OPTIONAL_COUNTERS)):
            problems.append(f"{where}: {k} must be a whole number >= 0, got {v!r}")
    for k in _NUMBERS + _OPTIONAL_NUMBERS:
        v = state.get(k)
        if k in state and not (is_number(v) or (v is None and k in _OPTIONAL_NUMBERS)):
            problems.append(f"{where}: {k} must be a number, got {v!r}")
    if "stopped_early" in state and not isinstance(state["stopped_early"], bool):
        problems.append(f"{where}: stopped_early must be true or false, got {state['stopped_early']!r}")
    if "last_eval" in state and not isinstance(state["last_eval"], dict):
        problems.append(f"{where}: last_eval must be an object, got {state['last_eval']!r}")
    step, epoch, batch = (state.get(k) for k in ("step", "epoch", "batch"))
    if all(is_int(v) and v >= 0 for v in (step, epoch, batch)):
        if batch > steps_per_epoch:  # == steps_per_epoch: the epoch's last step done, the epoch not yet closed
            problems.append(f"{where}: batch {batch} is not a position in an epoch of {steps_per_epoch} steps "
                            f"(0..{steps_per_epoch})")
        elif step != epoch * steps_per_epoch + batch:
            problems.append(f"{where}: step {step} does not match epoch {epoch} and batch {batch} with "
                            f"{steps_per_epoch} steps per epoch (expected step {epoch * steps_per_epoch + batch}); "
                            f"was the data changed?")
    return problems


class Checkpointer:
    """Writes ``checkpoints/last.npz``, ``epoch-NNNN.npz`` (keep_last) and ``best.npz`` of a run folder.

    ``metrics.jsonl`` is flushed (and fsynced) *before* last.npz, so a checkpoint never covers
    records that are not on disk: after ``kill -9`` anywhere, resuming from last.npz drops the
    records past its step and produces them again - no gap, no duplicate.  Each call serialises
    ``trainer.state_dict()`` once: an epoch snapshot is a copy of the last.npz just written.
    best.npz is written when the monitored metric improves, in the middle of the epoch's end
    (before the scheduler steps), so it is a state of its own.
    """

    def __init__(self, folder, policy, config_text: str):
        self.folder, self.policy, self.config_text = folder, policy, config_text

    def __call__(self, kind: str, trainer) -> None:
        from .folder import writing

        state = trainer.state_dict()
        if kind == "best":
            with writing(self.folder.best):
                save_checkpoint(self.folder.best, config=self.config_text, **state)
            return
        if trainer.metrics is not None:
            trainer.metrics.flush()
        with writing(self.folder.last):
            save_checkpoint(self.folder.last, config=self.config_text, **state)
        if kind == "epoch":
            self._snapshot(trainer.state.epoch)

    def _snapshot(self, epoch: int) -> None:
        """``epoch-NNNN.npz``: a copy of last.npz (keep_last > 1), the oldest beyond keep_last removed."""
        from .folder import writing
        from .._atomic import atomic_copy

        if self.policy.keep_last <= 1:
            return
        snapshot = self.folder.checkpoints / f"epoch-{epoch:04d}.npz"
        with writing(snapshot):
            atomic_copy(self.folder.last, snapshot)
        snapshots = sorted(p for p in self.folder.checkpoints.glob("epoch-*.npz") if p.name[6:-4].isdigit())
        for old in snapshots[: max(0, len(snapshots) - (self.policy.keep_last - 1))]:
            old.unlink()

    def resumed(self, trainer) -> None:
        """After a resume: the epoch snapshot a kill -9 prevented (last.npz closed an epoch, no copy yet)."""
        s, every = trainer.state, self.policy.every
        snapshot = self.folder.checkpoints / f"epoch-{s.epoch:04d}.npz"
        if s.batch == 0 and s.epoch > 0 and (s.epoch % every == 0 or trainer.done()) and not snapshot.exists():
            self._snapshot(s.epoch)
