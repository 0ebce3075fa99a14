"""``lstmkit plugins``, ``cells``, ``backends``, ``tasks`` and the plugin part of ``--version``.

Every listing computes plugin statuses from every hook first
(:meth:`~lstmkit.registry.Registry.check`), so a plugin that failed anywhere
is never shown as ``ok``.
"""
from __future__ import annotations

import json

import click

from ..config.errors import ExitCode

_INDENT = "  "


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2))


def _registry():
    """The registry with every kind collected: a plugin that fails in one hook is skipped in all, so a
    listing must not show what it registered in another hook before that failure was known."""
    from ..registry import get_registry

    registry = get_registry()
    registry.collect_all()
    return registry


def plugin_summary() -> list[str]:
    """One ``"<distribution> <version> [<status>]"`` per installed distribution (not per entry point):
    ``error`` if any of its plugins failed anywhere, ``disabled`` if all are disabled."""
    by_dist: dict[str, list] = {}
    for p in _registry().check():
        if not p.builtin:
            by_dist.setdefault(p.label, []).append(p.status)
    summary = []
    for label, statuses in sorted(by_dist.items()):
        status = "error" if "error" in statuses else "disabled" if set(statuses) == {"disabled"} else "ok"
        summary.append(f"{label} [{status}]")
    return summary


def _block(label: str, text: str, indent: str) -> list[str]:
    """``label: first line`` with the following lines (pluggy's multi-line errors) indented under it."""
    lines = str(text).splitlines() or [""]
    pad = indent + " " * (len(label) + 2)
    return [f"{indent}{label}: {lines[0]}"] + [pad + line for line in lines[1:]]


def _table(rows: list[list[str]]) -> list[str]:
    """Rows as left-aligned columns sized to their longest cell (the last column is not padded)."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]).rstrip() for r in rows]


def _plugin_rows(show_all: bool):
    return [p for p in sorted(_registry().check(), key=lambda p: p.name) if show_all or not p.builtin]


def add_commands(cli: click.Group) -> None:
    """Add ``plugins``, ``cells``, ``backends`` and ``tasks`` to ``cli``."""

    @cli.command()
    @click.option("--all", "show_all", is_flag=True, help="Include lstmkit's built-in plugin.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.option("--check", is_flag=True, help="Exit with code 4 if any plugin failed or has a warning "
                                                "(for plugin authors' CI).")
    def plugins(show_all, as_json, check):
        """List installed plugins: distribution, version, hooks, what they provide, status.

        Every hook is run and every backend's availability check and factory,
        so the status says whether anything the plugin does fails.
        """
        rows = _plugin_rows(show_all)
        if as_json:
            _echo_json([
                {"name": p.name, "distribution": p.distribution, "version": p.version, "builtin": p.builtin,
                 "hooks": p.hooks, "provides": p.provides, "status": p.status, "error": p.error,
                 "problems": p.problems, "notes": p.notes}
                for p in rows
            ])
        else:
            if not rows:
                click.echo("No plugins installed (lstmkit plugins --all shows the built-ins).")
            for p in rows:
                click.echo(f"{p.name}  ({p.label}){'  [built-in]' if p.builtin else ''}  status: {p.status}")
                if p.hooks:
                    click.echo(f"{_INDENT}hooks: {', '.join(p.hooks)}")
                if p.provides:
                    click.echo(f"{_INDENT}provides: {', '.join(p.provides)}")
                for problem in p.problems:
                    click.echo("\n".join(_block("error", problem, _INDENT)))
                for note in p.notes:
                    click.echo("\n".join(_block("warning", note, _INDENT)))
        if check:
            failed = [p for p in _plugin_rows(True) if p.status == "error" or p.notes]
            if failed:
                click.echo(f"plugins --check: {len(failed)} plugin(s) with problems: "
                           + ", ".join(f"{p.name} ({p.label})" for p in failed), err=True)
                click.get_current_context().exit(int(ExitCode.UNAVAILABLE))
            click.echo("plugins --check: every plugin loads and registers cleanly", err=True)

    @cli.command()
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def cells(as_json):
        """List the registered recurrent cells."""
        registry = _registry()
        rows = [
            {"name": s.name, "gates": s.num_gates, "states": list(s.state_names),
             "provider": registry.providers[("cell", s.name)].label, "description": s.description}
            for s in sorted(registry.specs["cell"].values(), key=lambda s: s.name)
        ]
        if as_json:
            _echo_json(rows)
            return
        table = [["name", "gates", "states", "provider", "description"]] + [
            [r["name"], str(r["gates"]), ",".join(r["states"]), r["provider"], r["description"]] for r in rows]
        click.echo("\n".join(_table(table)))

    @cli.command()
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def backends(as_json):
        """List compute backends, their availability and, when unavailable, why.

        Available backends are built once to be sure they work; ``(auto)``
        marks the one ``backend: auto`` uses.
        """
        registry = _registry()
        registry.check()
        default = registry.available_backends()[0] if registry.available_backends() else None
        rows = []
        for s in registry.ranked_backends():
            ok, reason = registry.availability(s)
            rows.append({"name": s.name, "available": ok, "reason": reason, "priority": s.priority,
                         "default": s.name == default, "provider": registry.providers[("backend", s.name)].label,
                         "description": s.description})
        if as_json:
            _echo_json(rows)
            return
        table = [[r["name"] + (" (auto)" if r["default"] else ""), f"priority={r['priority']}", r["provider"],
                  "available" if r["available"] else f"unavailable: {r['reason']}"] for r in rows]
        click.echo("\n".join(_table(table)))

    @cli.command()
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def tasks(as_json):
        """List the tasks for `lstmkit run`: description, metrics and options (task.options)."""
        registry = _registry()
        rows = [{"name": s.name, "provider": registry.providers[("task", s.name)].label,
                 "description": s.description, "metrics": list(s.metrics), "options": task_options(s)}
                for s in sorted(registry.specs["task"].values(), key=lambda s: s.name)]
        if as_json:
            _echo_json(rows)
            return
        for r in rows:
            click.echo(f"{r['name']}  ({r['provider']})")
            if r["description"]:
                click.echo(f"{_INDENT}{r['description']}")
            if r["metrics"]:
                click.echo(f"{_INDENT}metrics: {', '.join(r['metrics'])}")
            options = [[f"{_INDENT * 2}{o['name']}", o["type"], "required" if o["required"] else
                        f"default {json.dumps(o['default'])}", o["description"]] for o in r["options"]]
            click.echo(f"{_INDENT}options:" + ("" if options else " none"))
            if options:
                click.echo("\n".join(_table(options)))


def task_options(spec) -> list[dict]:
    """The options of a task (``task.options``) from its pydantic model: name, type, default, description."""
    model = spec.options_model
    if model is None:
        return []
    options = []
    for name, f in model.model_fields.items():
        annotation = f.annotation
        type_name = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
        required = f.is_required()
        default = None if required else f.get_default(call_default_factory=True)
        try:
            json.dumps(default)
        except TypeError:
            default = repr(default)
        options.append({"name": name, "type": type_name or str(annotation).replace("typing.", ""),
                        "required": required, "default": default, "description": f.description or ""})
    return options
