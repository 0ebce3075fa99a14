"""Warnings about a valid config whose results would be doubtful (the docs' "rules worth knowing").

``run_warnings(loaded, task)`` returns messages, one line each; ``lstmkit run``
and ``config validate`` print them as ``warning: ...`` and the run records
them in ``results.json`` (``"warnings"``).  Nothing here stops a run.
"""
from __future__ import annotations

__all__ = ["run_warnings"]


def run_warnings(loaded, task) -> list[str]:
    """Warnings for a run of ``loaded`` (a :class:`~lstmkit.config.loader.LoadedConfig`, or its validated
    ``Config``) on ``task`` (built, its data loaded): the task's own (``task.warnings()``), then those of
    the config with it."""
    out: list[str] = []
    own = getattr(task, "warnings", None)
    if callable(own):
        try:
            out.extend(str(w) for w in own())
        except Exception as exc:  # a plugin task's check must not stop the run
            out.append(f"task {getattr(task, 'name', '?')!r}: its warnings() failed: {type(exc).__name__}: {exc}")
    m = getattr(loaded, "config", loaded).model
    if m.bidirectional and getattr(task, "targets_are_future_inputs", False):
        out.append(f"model.bidirectional: task {task.name!r} predicts inputs of later steps, and a bidirectional "
                   f"model reads those steps: it sees its own targets, so its loss and metrics look far better "
                   f"than any real forecast (set bidirectional: false)")
    return out
