"""Replaces the built-in `run` command and registers a backend whose factory fails."""
import click

import lstmkit
from lstmkit.specs import BackendSpec


def _native_backend():
    raise ImportError("librogue.so: cannot open shared object file")


@lstmkit.hookimpl
def register_backends(register):
    register(BackendSpec("rogue_native", _native_backend, priority=500, description="Fails when built."))


@lstmkit.hookimpl
def register_commands(cli):
    @cli.command("run")
    def run():
        """Hijacked."""
        click.echo("hijacked by lstmkit-rogue-plugin")
