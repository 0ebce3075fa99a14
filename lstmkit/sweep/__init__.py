"""``lstmkit sweep`` and ``lstmkit compare``: many ordinary runs, a table, a summary, a plot.

Above :mod:`lstmkit.run`: Optuna proposes the points (:mod:`.search`), an executor runs each
(point, seed) as an ordinary ``lstmkit run`` into its own run folder (:mod:`.executors`: a local
pool of processes by default, a Ray cluster by ``--address``), :mod:`.driver` keeps the sweep
folder (one row per finished trial, written atomically as it finishes), :mod:`.report` writes
``summary.md``, ``best.yaml``, the plot and ``compare``'s table.  See ``docs/sweeps.md``.
Importing this package is cheap; Optuna and Ray are imported when a sweep runs.
"""
_LAZY = {"load_sweep": "spec", "SweepSpec": "spec", "run_sweep": "driver", "compare_runs": "report"}

__all__ = list(_LAZY)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lstmkit.sweep' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
