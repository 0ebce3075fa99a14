"""``lstmkit run``: the trainer, checkpoints, the run folder, resume, metrics.

``run(config_path, overrides, ...)`` does what the command does (see
``docs/config.md``); :class:`Trainer` is the loop; checkpoints are plain
``.npz`` files (:func:`load_checkpoint`, :func:`load_weights`).  Importing
this package is cheap; NumPy-heavy modules load on first use.
"""
_LAZY = {
    "run": "session", "evaluate_run": "evaluate", "predict_run": "evaluate", "RunFolder": "folder",
    "RunLock": "lock", "build_task": "build", "build_model": "build",
    "Trainer": "trainer", "TrainerState": "trainer", "NonFiniteLoss": "trainer", "TrainingInterrupted": "trainer",
    "evaluate_split": "trainer",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "load_weights": "checkpoint",
    "MetricsLog": "metrics", "read_metrics": "metrics", "predict_split": "trainer",
    "run_seeds": "seeds", "RunProgress": "progress", "baseline_metrics": "baseline",
    "atomic_open": "._atomic", "atomic_write_text": "._atomic", "atomic_write_json": "._atomic",
}

__all__ = list(_LAZY)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lstmkit.run' has no attribute {name!r}")
    import importlib

    # "._atomic" lives one level up (config/ and cli use it too); the rest are submodules.
    target = f"lstmkit{module}" if module.startswith(".") else f"{__name__}.{module}"
    value = getattr(importlib.import_module(target), name)
    globals()[name] = value
    return value
