"""Building a run from a loaded config: the generators, the task and its data, the model, the thread limit."""
from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np

from ..config.errors import ConfigError, ConfigIssue, RunFailed

__all__ = ["seed_generators", "build_task", "build_model", "thread_limit", "warnings_to"]

Echo = Callable[[str], None]


def seed_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """``(model generator, shuffling generator)``: independent streams from the run's seed.

    The task gets the seed itself (its data streams are ``default_rng([seed, split])``).
    """
    model_seq, shuffle_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(model_seq), np.random.default_rng(shuffle_seq)


def build_task(loaded):
    """The task object of a loaded config and its data splits; data problems raise ConfigError."""
    from ..registry import get_registry

    cfg = loaded.config
    spec = get_registry().task_spec(cfg.task.type)
    splits = {k: getattr(cfg.task, k) for k in ("train", "valid", "test")}
    try:
        task = spec.factory(dict(cfg.task.options), base_dir=loaded.base_dir, seed=cfg.seed,
                            splits=splits if any(v is not None for v in splits.values()) else None)
        data = task.data()
    except (ValueError, OSError, KeyError) as exc:  # TaskError is a ValueError naming the config key
        raise ConfigError([_task_issue(loaded, exc)], str(loaded.path or "")) from None
    except Exception as exc:
        raise RunFailed(f"task {cfg.task.type!r} failed while loading its data: {type(exc).__name__}: {exc}") from exc
    missing = [k for k in ("train", "valid", "test") if k not in data]
    if missing:
        raise RunFailed(f"task {cfg.task.type!r} returned no {', '.join(missing)} split")
    if len(data["train"]) == 0:
        raise ConfigError([ConfigIssue("task", "the training split is empty")], str(loaded.path or ""))
    return task, data


def _task_issue(loaded, exc: Exception) -> ConfigIssue:
    """A task's data error at the config key it concerns: the ``--set`` that set it, else the file's line."""
    from ..config.loader import task_issue

    return task_issue(loaded, exc)


def build_model(loaded, task, generator: np.random.Generator | None = None):
    """The :class:`~lstmkit.model.SequenceModel` a config describes, sized for ``task``."""
    from ..config.memory import check_memory
    from ..model import SequenceModel

    check_memory(loaded, task)  # refuses, with the numbers, what cannot fit - before anything is allocated
    m, cfg = loaded.config.model, loaded.config
    tokens = task.input_kind == "tokens"
    if m.embedding_size is not None and not tokens:
        raise ConfigError([ConfigIssue("model.embedding_size", f"only token tasks use an embedding; task "
                                       f"{task.name!r} has feature inputs (set it to null)")],
                          str(loaded.path or ""))
    try:
        return SequenceModel(
            cell=m.cell, cell_options=dict(m.cell_options) or None,
            input_size=None if tokens else task.input_size, vocab_size=task.vocab_size if tokens else None,
            embedding_size=m.embedding_size if tokens else None, hidden_size=m.hidden_size,
            num_layers=m.num_layers, bidirectional=m.bidirectional, dropout=m.dropout, proj_size=m.proj_size,
            output_size=task.output_size, target=task.target, dtype=cfg.runtime.dtype,
            backend=cfg.runtime.backend, seed=generator if generator is not None else cfg.seed,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError([ConfigIssue("model", str(exc))], str(loaded.path or "")) from None
    except MemoryError as exc:  # the parameters alone do not fit (hidden_size: 100000 asks for ~150 GiB)
        raise ConfigError([ConfigIssue("model.hidden_size", f"the model's parameters do not fit in memory "
                                       f"with hidden_size {m.hidden_size}, num_layers {m.num_layers}: {exc}")],
                          str(loaded.path or "")) from None


@contextlib.contextmanager
def thread_limit(threads: int | None):
    """``runtime.threads`` inside the block: the ceiling of the core's BLAS threads (``None``: auto, the
    usable CPUs; each call still uses one for small work), and one thread for every other pool so that
    the NumPy work around the core never spins against it (``lstmkit/_threads.py``).  The process also
    keeps the memory each step frees for the next (``lstmkit/_malloc.py``)."""
    from .._malloc import retain_freed_memory
    from .._threads import threads as _threads

    retain_freed_memory()
    with _threads(threads, others=1):
        yield


def warnings_to(echo: Echo):
    """Collect UserWarnings raised inside the block and print each as ``warning: ...`` at its end."""
    import warnings

    @contextlib.contextmanager
    def manager():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            yield
        for w in caught:
            echo(f"warning: {w.message}")

    return manager()
