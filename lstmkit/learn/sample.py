"""``lstmkit sample``: text from a trained ``char_lm`` run, as karpathy's min-char-rnn samples it.

The model reads ``prime``, then each next character is drawn from
``softmax(logits / temperature)`` and fed back with the recurrent state
(:meth:`lstmkit.tasks.char_lm.CharLMTask.sample` does the drawing).  Low
temperatures pick likely characters (``greedy``: always the most likely one),
high temperatures flatten the distribution.
"""
from __future__ import annotations

import math

from ..config.errors import ExitCode, LstmkitError

__all__ = ["sample_run"]


def sample_run(run_dir, prime: str | None = None, length: int = 200, temperature: float = 1.0, *,
               greedy: bool = False, seed: int | None = None, checkpoint: str = "auto") -> str:
    """``prime`` followed by ``length`` generated characters, from the run folder ``run_dir``'s weights.

    Errors (:class:`~lstmkit.config.errors.LstmkitError`, exit code 2): a run
    whose task cannot sample (not ``char_lm``), characters of ``prime`` outside
    the run's vocabulary, ``temperature <= 0`` (use ``greedy``), ``length < 0``.
    ``seed`` makes the draw reproducible (``None``: fresh randomness).
    """
    if not greedy and not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise LstmkitError(f"--temperature should be a number > 0, got {temperature}; for the most likely character "
                           f"at every step use --greedy", ExitCode.USAGE)
    if length < 0:
        raise LstmkitError(f"--length should be >= 0, got {length}", ExitCode.USAGE)
    from ..run.session import open_run

    loaded, task, _data, model, _path = open_run(run_dir, checkpoint)
    if not callable(getattr(task, "sample", None)):
        raise LstmkitError(f"{run_dir} trained task {loaded.config.task.type!r}; lstmkit sample needs a character "
                           f"language model (task type char_lm)", ExitCode.USAGE)
    if prime:
        unknown = sorted(set(prime) - set(task.vocab))
        if unknown:
            vocab = "".join(task.vocab)
            raise LstmkitError(f"--prime has characters the run never saw: {''.join(unknown)!r}; its vocabulary "
                               f"({len(vocab)} characters) is {vocab!r}", ExitCode.USAGE)
    return task.sample(model, prime or None, length, 0.0 if greedy else float(temperature), rng=seed)
