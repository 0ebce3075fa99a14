"""The ``lstmkit`` command line.

Exit codes are published as :class:`ExitCode`.  Plugins add commands through
the ``register_commands(cli)`` hook; the group is built by :func:`make_cli`.
"""
from __future__ import annotations

import enum
import json
import sys

import click


class ExitCode(enum.IntEnum):
    """What ``lstmkit`` returns to the shell."""

    OK = 0
    RUN_FAILED = 1
    USAGE = 2
    INVALID_CONFIG = 3
    UNAVAILABLE = 4  # a plugin or backend is missing or unavailable
    INTERRUPTED = 130


def _version_text() -> str:
    import numpy
    import scipy

    from . import __version__
    from .registry import get_registry

    registry = get_registry()
    ok, reason = registry.specs["backend"]["cython"].is_available()
    core = "compiled core loaded" if ok else f"compiled core NOT loaded ({reason})"
    plugins = [p for p in registry.plugins.values() if not p.builtin]
    lines = [f"lstmkit {__version__} ({core})", f"numpy {numpy.__version__}, scipy {scipy.__version__}, Python {sys.version.split()[0]}"]
    if plugins:
        lines.append("plugins: " + ", ".join(f"{p.label} [{p.status}]" for p in plugins))
    return "\n".join(lines)


def _print_version(ctx, _param, value):
    if value and not ctx.resilient_parsing:
        click.echo(_version_text())
        ctx.exit()


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2))


def make_cli() -> click.Group:
    """Build the command group, with every plugin's commands added."""

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
                  help="Show versions (lstmkit, NumPy, SciPy, compiled core, plugins) and exit.")
    def cli():
        """lstmkit: PyTorch's LSTM, GRU and RNN on NumPy — train and evaluate them from YAML."""

    @cli.command()
    @click.option("--all", "show_all", is_flag=True, help="Include lstmkit's built-in plugin.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def plugins(show_all, as_json):
        """List installed plugins: distribution, version, hooks, what they provide, status."""
        from .registry import get_registry

        registry = get_registry()
        registry.collect_all()
        rows = [p for p in registry.plugins.values() if show_all or not p.builtin]
        if as_json:
            _echo_json([
                {"name": p.name, "distribution": p.distribution, "version": p.version, "builtin": p.builtin,
                 "hooks": p.hooks, "provides": p.provides, "status": p.status, "error": p.error}
                for p in rows
            ])
            return
        if not rows:
            click.echo("No plugins installed (lstmkit plugins --all shows the built-ins).")
        for p in rows:
            click.echo(f"{p.name}  ({p.label}){'  [built-in]' if p.builtin else ''}  status: {p.status}")
            if p.hooks:
                click.echo(f"  hooks: {', '.join(p.hooks)}")
            if p.provides:
                click.echo(f"  provides: {', '.join(p.provides)}")
            if p.error:
                click.echo(f"  error: {p.error}")

    @cli.command()
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def cells(as_json):
        """List the registered recurrent cells."""
        from .registry import get_registry

        registry = get_registry()
        rows = [
            {"name": s.name, "gates": s.num_gates, "states": list(s.state_names),
             "provider": registry.providers[("cell", s.name)].label, "description": s.description}
            for s in sorted(registry.specs["cell"].values(), key=lambda s: s.name)
        ]
        if as_json:
            _echo_json(rows)
            return
        for r in rows:
            click.echo(f"{r['name']:<12} gates={r['gates']} states={','.join(r['states']):<5} "
                       f"{r['provider']:<22} {r['description']}")

    @cli.command()
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def backends(as_json):
        """List compute backends, their availability and, when unavailable, why."""
        from .registry import get_registry

        registry = get_registry()
        default = registry.available_backends()[0] if registry.available_backends() else None
        rows = []
        for s in sorted(registry.specs["backend"].values(), key=lambda s: -s.priority):
            ok, reason = s.is_available()
            rows.append({"name": s.name, "available": ok, "reason": reason, "priority": s.priority,
                         "default": s.name == default, "provider": registry.providers[("backend", s.name)].label,
                         "description": s.description})
        if as_json:
            _echo_json(rows)
            return
        for r in rows:
            state = "available" if r["available"] else f"unavailable: {r['reason']}"
            mark = " (auto)" if r["default"] else ""
            click.echo(f"{r['name']:<8}{mark:<8} priority={r['priority']:<4} {r['provider']:<22} {state}")

    @cli.command()
    def info():
        """Versions, compiled core, BLAS and threads, backends, plugins — paste this into bug reports."""
        from .registry import get_registry

        click.echo(_version_text())
        try:
            from threadpoolctl import threadpool_info
        except ImportError:
            click.echo("BLAS: threadpoolctl not installed (pip install threadpoolctl to show BLAS threads)")
        else:
            for pool in threadpool_info():
                click.echo(f"{pool.get('internal_api')}: {pool.get('version')} {pool.get('architecture', '')} "
                           f"threads={pool.get('num_threads')} ({pool.get('filepath')})")
        registry = get_registry()
        for s in sorted(registry.specs["backend"].values(), key=lambda s: -s.priority):
            ok, reason = s.is_available()
            click.echo(f"backend {s.name}: {'available' if ok else 'unavailable: ' + reason}")
        click.echo("cells: " + ", ".join(sorted(registry.specs["cell"])))

    from .registry import get_registry

    registry = get_registry()
    for name, plugin in list(registry._objects.items()):
        hook = getattr(plugin, "register_commands", None)
        if hook is None:
            continue
        try:
            hook(cli=cli)
        except Exception as exc:  # one plugin's broken command must not break the CLI
            registry._fail(registry.plugins[name], f"failed in register_commands: {type(exc).__name__}: {exc}", exc)
    return cli


def main(argv=None) -> int:
    """Console entry point."""
    cli = make_cli()
    try:
        return cli.main(args=argv, prog_name="lstmkit", standalone_mode=True) or 0
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return ExitCode.INTERRUPTED


if __name__ == "__main__":  # python -m lstmkit.cli
    sys.exit(main())
