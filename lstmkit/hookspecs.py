"""The plugin hooks.  A plugin implements any of them with ``@lstmkit.hookimpl``.

Each hook receives a ``register`` callback (or the Click group) and calls it
once per thing it provides.  The built-in cells, backends and tasks are
registered through these same hooks (``lstmkit._builtins``).
"""
from __future__ import annotations

import pluggy

PROJECT = "lstmkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_cells(register):
    """Call ``register(CellSpec(...))`` for each recurrent cell the plugin provides."""


@hookspec
def register_backends(register):
    """Call ``register(BackendSpec(...))`` for each compute backend the plugin provides."""


@hookspec
def register_tasks(register):
    """Call ``register(TaskSpec(...))`` for each task (data, loss, metrics) for ``lstmkit run``."""


@hookspec
def register_commands(cli):
    """Add Click commands to the ``lstmkit`` command group ``cli``."""
