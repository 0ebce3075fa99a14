"""The plugin registry: pluggy, safe entry-point loading, lookup by name.

Plugins are packages with an entry point in the group ``lstmkit`` pointing at
a module (or object) with ``@lstmkit.hookimpl`` functions.  Loading is lazy
(the first lookup) and contained: a plugin that fails to import (``sys.exit``
and ``KeyboardInterrupt`` included), declares a hook wrongly, implements an
unknown hook, registers a name that is taken, raises in a hook, or whose
backend fails its availability check or factory gives one warning naming it,
its distribution and version, the error, and how to disable it; everything
else keeps working.  Environment:

``LSTMKIT_LOAD_PLUGINS``
    unset: load every installed plugin; ``""``: none; ``a,b``: only those.
``LSTMKIT_DISABLE_PLUGINS``
    ``a,b``: never import these.
``LSTMKIT_STRICT_PLUGINS=1``
    raise :class:`PluginError` instead of warning (for plugin authors' CI).

Names are entry-point names or distribution names.  The registry imports
``cells/``, ``backends/`` and ``specs``; they never import it.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from ._contain import call_plugin, describe
from ._suggest import suggest  # noqa: F401  (re-exported: lstmkit.registry.suggest)
from .specs import BackendSpec, CellSpec, TaskSpec

ENTRY_POINT_GROUP = "lstmkit"
BUILTIN = "lstmkit"
HOOKS = ("register_cells", "register_backends", "register_tasks", "register_commands")
_KINDS = {"register_cells": ("cell", CellSpec), "register_backends": ("backend", BackendSpec),
          "register_tasks": ("task", TaskSpec)}
_SIGNATURES = ("register_cells(register), register_backends(register), register_tasks(register), "
               "register_commands(cli)")


class PluginError(RuntimeError):
    """A plugin could not be loaded or registered something invalid."""


class LookupFailed(ValueError):
    """A cell, backend or task name that is unknown or unavailable."""


@dataclass
class PluginInfo:
    """One plugin as ``lstmkit plugins`` lists it.

    ``status``: ``ok``, ``error`` (anything it did failed; ``problems`` says
    what) or ``disabled``.  ``notes``: warnings that are not failures (a
    function named like a hook without ``@lstmkit.hookimpl``).
    """

    name: str
    distribution: str
    version: str
    builtin: bool = False
    hooks: list[str] = field(default_factory=list)
    provides: list[str] = field(default_factory=list)  # "cell:peephole", ...
    status: str = "ok"  # ok | error | disabled
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    disable_as: str = ""  # the name that disables this plugin alone

    @property
    def label(self) -> str:
        return f"{self.distribution} {self.version}"

    @property
    def error(self) -> str:
        """Every problem, one per line (``""`` when there is none)."""
        return "\n".join(self.problems)


def _env_names(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {n.strip() for n in value.split(",") if n.strip()}


def _strict() -> bool:
    return os.environ.get("LSTMKIT_STRICT_PLUGINS", "") not in ("", "0")


class Registry:
    """Cells, backends and tasks by name, collected from every registered plugin."""

    def __init__(self, *, entry_points: bool = True):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._objects: dict[str, Any] = {}
        self._instances: dict[str, Any] = {}  # backend name -> instance (built once)
        self._broken: dict[str, str] = {}  # backend name -> why its factory or check failed
        self._warned_auto: set[str] = set()
        if entry_points:
            self._load_entry_points()
        from . import _builtins

        version = metadata.version("lstmkit") if _installed("lstmkit") else "dev"
        self._add(_builtins, PluginInfo(BUILTIN, BUILTIN, version, builtin=True), raise_errors=True)
        self._collect()

    # -- loading ----------------------------------------------------------------
    def _load_entry_points(self) -> None:
        wanted = _env_names("LSTMKIT_LOAD_PLUGINS")
        disabled = _env_names("LSTMKIT_DISABLE_PLUGINS") or set()
        # Sorted: which of two clashing plugins keeps a name must not depend on the file system.
        found = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP),
                       key=lambda ep: ((ep.dist.name if ep.dist else ""), ep.name))
        entry_points, seen = [], set()
        for ep in found:  # a distribution found twice on sys.path is one plugin
            key = (ep.dist.name if ep.dist else "", ep.name, ep.value)
            if key not in seen:
                seen.add(key)
                entry_points.append(ep)
        known = {ep.name for ep in entry_points} | {ep.dist.name for ep in entry_points if ep.dist}
        for variable, names in (("LSTMKIT_LOAD_PLUGINS", wanted or set()), ("LSTMKIT_DISABLE_PLUGINS", disabled)):
            for name in sorted(names - known):
                warnings.warn(
                    f"{variable} names {name!r}, which is not an installed lstmkit plugin"
                    f"{suggest(name, known)}; installed: {', '.join(sorted(known)) or 'none'}",
                    RuntimeWarning, stacklevel=4,
                )
        for ep in entry_points:
            dist = ep.dist.name if ep.dist else ep.name
            version = ep.dist.version if ep.dist else "?"
            name = ep.name if ep.name not in self.plugins else f"{dist}:{ep.name}"
            info = PluginInfo(name, dist, version, disable_as=_disable_name(ep, entry_points))
            names = {ep.name, dist}
            if (wanted is not None and not names & wanted) or names & disabled:
                info.status = "disabled"
                self.plugins[name] = info
                continue
            plugin, exc = call_plugin(ep.load)
            if exc is not None:  # a broken plugin must not break lstmkit, whatever it raises
                self._fail(info, f"failed to import: {describe(exc)}", exc)
                continue
            self._add(plugin, info)

    def _add(self, plugin, info: PluginInfo, raise_errors: bool = False) -> bool:
        """Register one plugin object; on error record it (or raise)."""
        _, exc = call_plugin(self.pm.register, plugin, name=info.name)
        error = None
        if isinstance(exc, pluggy.PluginValidationError):
            error = PluginError(f"declares a hook wrongly: {describe(exc)} — hook functions take the spec's "
                                f"argument names: {_SIGNATURES}")
        elif exc is not None:
            error = PluginError(f"could not be registered: {describe(exc)}")
        else:
            error = self._check_hooks(plugin)
            if error is not None:
                self.pm.unregister(plugin)
        if error is not None:
            if raise_errors:
                raise error from exc
            self._fail(info, str(error), exc or error)
            return False
        info.hooks = sorted(hc.name for hc in self.pm.get_hookcallers(plugin) or [])
        self.plugins[info.name] = info
        self._objects[info.name] = plugin
        for hook in HOOKS:  # pluggy silently ignores a hook function without the marker
            function = getattr(plugin, hook, None)
            if callable(function) and hook not in info.hooks:
                self._note(info, f"{hook}() is not marked with @lstmkit.hookimpl, so it is ignored; "
                                 f"decorate it to use it")
        return True

    def _check_hooks(self, plugin) -> PluginError | None:
        """Unknown hook names, and hooks that do not take the spec's argument (pluggy allows fewer)."""
        callers = self.pm.get_hookcallers(plugin) or []
        unknown = [hc.name for hc in callers
                   if hc.spec is None and not all(impl.optionalhook for impl in hc.get_hookimpls())]
        if unknown:
            return PluginError(f"unknown hook(s) {', '.join(unknown)}; valid hooks: {', '.join(HOOKS)}")
        for hc in callers:
            for impl in hc.get_hookimpls():
                if impl.plugin is plugin and hc.spec is not None and impl.argnames != hc.spec.argnames:
                    given = ", ".join(impl.argnames)
                    return PluginError(
                        f"declares a hook wrongly: {hc.name}({given}) must take the spec's arguments: "
                        f"{hc.name}({', '.join(hc.spec.argnames)}) — hook functions take the spec's argument "
                        f"names: {_SIGNATURES}"
                    )
        return None

    def _fail(self, info: PluginInfo, message: str, exc: BaseException | None = None) -> None:
        """Record a failure of ``info``: a warning (or :class:`PluginError` when strict)."""
        info.status = "error"
        info.problems.append(message)
        self.plugins.setdefault(info.name, info)
        text = f"lstmkit plugin {info.name!r} ({info.label}) {message}"
        if _strict():
            raise PluginError(text) from exc
        advice = f"disable it with LSTMKIT_DISABLE_PLUGINS={info.disable_as or info.name}"
        if info.version == "local":
            advice = "fix it or unregister it"
        warnings.warn(f"{_one_line(text)} — it is skipped; {advice}", RuntimeWarning, stacklevel=4)

    def _note(self, info: PluginInfo, message: str) -> None:
        info.notes.append(message)
        warnings.warn(f"lstmkit plugin {info.name!r} ({info.label}): {message}", RuntimeWarning, stacklevel=5)

    # -- in-process registration (tests, notebooks) ---------------------------------
    def register(self, plugin, name: str | None = None) -> str:
        """Register a plugin object now (errors raise).  Returns its name."""
        name = name or getattr(plugin, "__name__", None) or f"plugin-{id(plugin)}"
        if name in self.plugins:
            raise PluginError(f"a plugin named {name!r} is already registered")
        loaded_as = self.pm.get_name(plugin)
        if loaded_as is not None and self.plugins[loaded_as].version == "local":
            raise PluginError(f"this plugin object is already registered in-process as {loaded_as!r}; unregister "
                              f"it first (leave its registered_plugin block)")
        if loaded_as is not None:
            raise PluginError(
                f"this plugin object is already registered as {loaded_as!r} (an installed plugin is "
                f"loaded automatically); to register a copy in-process, start with "
                f"LSTMKIT_DISABLE_PLUGINS={loaded_as}"
            )
        info = PluginInfo(name, name, "local")
        self._add(plugin, info, raise_errors=True)
        try:
            self._collect(raise_errors=True, only=name)
        except BaseException:
            self.unregister(name)
            raise
        return name

    def unregister(self, name: str) -> None:
        plugin = self._objects.pop(name, None)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.plugins.pop(name, None)
        self._collect()
        for backend in [b for b in {*self._instances, *self._broken} if b not in self.specs["backend"]]:
            self._instances.pop(backend, None)  # instances went away with the plugin
            self._broken.pop(backend, None)

    # -- collection -------------------------------------------------------------------
    def _reset(self) -> None:
        """Forget collected specs; each kind is collected again on first use."""
        self.specs: dict[str, dict[str, Any]] = _Tables(self._collect_kind)
        self.providers: dict[tuple[str, str], PluginInfo] = {}
        for info in self.plugins.values():
            info.provides = [p for p in info.provides if p.startswith("command:")]
            self.providers.update({("command", p.split(":", 1)[1]): info for p in info.provides})

    def _collect(self, raise_errors: bool = False, only: str | None = None) -> None:
        self._reset()
        if raise_errors:
            for kind in ("cell", "backend", "task"):
                self._collect_kind(kind, raise_for=only)

    def collect_all(self) -> None:
        """Collect every kind now, so every plugin's registration failures are known."""
        for kind in ("cell", "backend", "task"):
            self.specs[kind]

    def check(self) -> list[PluginInfo]:
        """Run everything plugins provide that can fail without being asked for: every
        ``register_*`` hook, every backend's availability check and, where available,
        its factory.  Returns the plugins (built-in first), each with its final status."""
        self.collect_all()
        for spec in list(self.specs["backend"].values()):
            if self.availability(spec)[0]:
                try:
                    self.backend_instance(spec)
                except LookupFailed:
                    pass  # recorded on its plugin
        return sorted(self.plugins.values(), key=lambda p: (not p.builtin, p.name))

    def problems_for(self, name: str) -> list[str]:
        """What failed in the plugin ``name`` (entry-point or distribution name), every hook collected.

        ``[]`` when it is fine; raises :class:`LookupFailed` when no plugin has that name.
        """
        self.collect_all()
        wanted = _normalise(name)
        found = [p for p in self.plugins.values() if wanted in (_normalise(p.name), _normalise(p.distribution))]
        if not found:
            raise LookupFailed(f"no lstmkit plugin named {name!r}{suggest(name, self.plugins)}")
        return [problem for p in found for problem in p.problems]

    def add_commands(self, cli) -> None:
        """Call every plugin's ``register_commands(cli)`` (built-ins are already in ``cli``).

        The commands already there are protected: a plugin that replaces or
        removes one (in ``cli`` or a subgroup) fails like a name clash, and
        the commands are put back.  A plugin whose hook raises is skipped
        with the usual warning.  What a plugin adds is listed in its
        ``provides`` as ``command:<name>``.
        """
        builtin = self.plugins[BUILTIN]
        for path in _commands(cli):
            if ("command", path) not in self.providers:
                self.providers[("command", path)] = builtin
        commanders = [n for n, info in self.plugins.items()
                      if n in self._objects and n != BUILTIN and "register_commands" in info.hooks]
        if commanders:  # a plugin that fails in another hook is skipped: know that before adding its commands
            self.collect_all()
        for name in commanders:
            info = self.plugins.get(name)
            hook = getattr(self._objects.get(name), "register_commands", None)
            if info is None or info.status != "ok":
                continue
            saved = _snapshot(cli)
            before = _commands(cli)
            _, exc = call_plugin(hook, cli=cli)
            after = _commands(cli)
            taken = [p for p in before if after.get(p) is not before[p]]
            if exc is None and not taken:
                added = sorted(set(after) - set(before))
                info.provides += [f"command:{p}" for p in added if f"command:{p}" not in info.provides]
                self.providers.update({("command", p): info for p in added})
                continue
            _restore(saved)
            if exc is not None:
                message = f"failed in register_commands: {describe(exc)}"
            else:
                other = self.providers.get(("command", taken[0]), builtin)
                message = (f"command {taken[0]!r} is registered twice: by {other.label} and by {info.label} "
                           f"(the one registered first keeps the name; built-ins always come first)")
            self._drop(info)
            self._fail(info, message, exc)

    def _collect_kind(self, kind: str, raise_for: str | None = None) -> None:
        """Call every plugin's ``register_<kind>s`` hook, built-ins first (a clash blames the newcomer).

        Kinds are collected lazily, so building an LSTM never imports task code.
        """
        hook = f"register_{kind}s"
        spec_type = _KINDS[hook][1]
        dict.__setitem__(self.specs, kind, {})
        order = [BUILTIN] + [n for n in self._objects if n != BUILTIN]
        for name in order:
            info = self.plugins.get(name)
            function = getattr(self._objects.get(name), hook, None)
            if info is None or info.status != "ok" or hook not in info.hooks:
                continue
            _, exc = call_plugin(function, register=self._registrar(kind, spec_type, info))
            if exc is None:
                continue
            if name == raise_for or name == BUILTIN:
                if not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt from the hook
                    raise PluginError(f"plugin {name!r} failed while registering: {describe(exc)}") from exc
                raise exc
            self._drop(info)
            clash = isinstance(exc, PluginError)
            self._fail(info, str(exc) if clash else f"failed while registering: {describe(exc)}", exc)

    def _registrar(self, kind: str, spec_type: type, info: PluginInfo):
        def register(spec):
            if not isinstance(spec, spec_type):
                raise TypeError(f"register_{kind}s expects {spec_type.__name__} objects, got {type(spec).__name__}")
            table = self.specs[kind]
            if spec.name in table:
                other = self.providers[(kind, spec.name)]
                raise PluginError(
                    f"{kind} {spec.name!r} is registered twice: by {other.label} and by {info.label} "
                    f"(the one registered first keeps the name; built-ins always come first)"
                )
            table[spec.name] = spec
            self.providers[(kind, spec.name)] = info
            info.provides.append(f"{kind}:{spec.name}")

        return register

    def _drop(self, info: PluginInfo) -> None:
        """Remove the specs ``info`` registered (it failed half-way)."""
        for item in info.provides:
            kind, name = item.split(":", 1)
            if kind != "command":
                self.specs[kind].pop(name, None)
                self.providers.pop((kind, name), None)
        info.provides = [p for p in info.provides if p.startswith("command:")]

    # -- lookups ------------------------------------------------------------------------
    def _unknown(self, kind: str, name) -> LookupFailed:
        """The error for an unknown name: valid names, a suggestion, plugins that failed or are disabled."""
        valid = sorted(self.specs[kind])
        listed = (["auto"] if kind == "backend" else []) + valid
        message = f"unknown {kind} {name!r}{suggest(str(name), valid)}; valid {kind}s: {', '.join(listed)}"
        failed = [p for p in self.plugins.values() if p.status == "error"]
        if failed:
            message += " (plugins that failed to load: " + "; ".join(
                f"{p.name}: {_one_line(p.error)}" for p in failed) + ")"
        disabled = [p.name for p in self.plugins.values() if p.status == "disabled"]
        if disabled:
            message += (f" (disabled by LSTMKIT_LOAD_PLUGINS/LSTMKIT_DISABLE_PLUGINS: {', '.join(disabled)})")
        return LookupFailed(message)

    def cell_spec(self, name: str) -> CellSpec:
        try:
            return self.specs["cell"][name]
        except (KeyError, TypeError):
            raise self._unknown("cell", name) from None

    def task_spec(self, name: str) -> TaskSpec:
        try:
            return self.specs["task"][name]
        except (KeyError, TypeError):
            raise self._unknown("task", name) from None

    def availability(self, spec: BackendSpec) -> tuple[bool, str]:
        """``spec.is_available()``, contained: a check that raises or answers wrongly, or a
        factory that failed before, makes the backend unavailable (and its plugin failed)."""
        if spec.name in self._broken:
            return False, self._broken[spec.name]
        result, exc = call_plugin(spec.is_available)
        if exc is None and isinstance(result, tuple) and len(result) == 2:
            return bool(result[0]), str(result[1])
        why = (f"is_available() raised {describe(exc)}" if exc is not None
               else f"is_available() returned {result!r}, not (bool, reason)")
        self._backend_failed(spec, why, exc)
        return False, self._broken[spec.name]

    def _backend_failed(self, spec: BackendSpec, why: str, exc: BaseException | None, auto: bool = False) -> None:
        info = self.providers[("backend", spec.name)]
        self._broken[spec.name] = f"{why} (plugin {info.name!r}, {info.label})"
        fallback = "; backend='auto' falls back to the next available backend" if auto else ""
        if info.builtin:  # e.g. the compiled core: a reason, not a plugin failure
            if auto:
                warnings.warn(f"backend {spec.name!r}: {why}{fallback}", RuntimeWarning, stacklevel=5)
            return
        self._fail(info, f"backend {spec.name!r}: {why}{fallback}", exc)

    def backend_spec(self, name: str) -> BackendSpec:
        """The spec of the backend that ``get_backend(name)`` runs on, its instance built (once).

        ``"auto"``/``None``: the available backend with the highest priority
        whose factory works (one that fails is skipped with a warning naming
        its plugin).  A name that is unknown, unavailable or whose factory
        fails raises :class:`LookupFailed` with the reason.
        """
        if name in (None, "auto"):
            for spec in self.ranked_backends():
                if self.availability(spec)[0]:
                    try:
                        self.backend_instance(spec, auto=True)
                    except LookupFailed:  # warned, naming the plugin; unavailable from now on
                        continue
                    return spec
            raise LookupFailed("no backend is available")
        try:
            spec = self.specs["backend"][name]
        except (KeyError, TypeError):
            raise self._unknown("backend", name) from None
        ok, reason = self.availability(spec)
        if not ok:
            raise LookupFailed(f"backend {name!r} is unavailable: {reason}")
        self.backend_instance(spec)
        return spec

    def backend_instance(self, spec: BackendSpec, auto: bool = False):
        """The backend ``spec.factory()`` built (once); its failure raises :class:`LookupFailed`
        naming the plugin, and the backend counts as unavailable from then on (``auto``: the
        warning says that ``backend='auto'`` falls back)."""
        backend = self._instances.get(spec.name)
        if backend is not None:
            return backend
        if spec.name in self._broken:
            raise LookupFailed(f"backend {spec.name!r} is unavailable: {self._broken[spec.name]}")
        backend, exc = call_plugin(spec.factory)
        lacks = [m for m in ("layer_forward", "layer_backward", "xp") if not hasattr(backend, m)]
        if exc is not None or lacks:
            why = (f"its factory raised {describe(exc)}" if exc is not None else
                   f"its factory returned {backend!r}, not a backend (it lacks {', '.join(lacks)})")
            self._backend_failed(spec, why, exc, auto)
            raise LookupFailed(f"backend {spec.name!r} is unavailable: {self._broken[spec.name]}") from exc
        self._instances[spec.name] = backend
        return backend

    def get_backend(self, name="auto"):
        """A backend instance by name.  ``"auto"``/``None``: the available backend with the highest
        priority whose factory works; one that fails is skipped with a warning naming its plugin."""
        spec = self.backend_spec(name)
        if name in (None, "auto"):
            self._warn_takeover(spec)
        return self.backend_instance(spec)

    def _warn_takeover(self, spec: BackendSpec) -> None:
        """Warn once when ``auto`` picks a plugin's backend over an available built-in one."""
        info = self.providers[("backend", spec.name)]
        if info.builtin or spec.name in self._warned_auto:
            return
        builtin = next((s for s in self.ranked_backends() if self.providers[("backend", s.name)].builtin
                        and self.availability(s)[0]), None)
        if builtin is None:
            return
        self._warned_auto.add(spec.name)
        warnings.warn(
            f"backend='auto' runs on {spec.name!r} from plugin {info.name!r} ({info.label}, priority "
            f"{spec.priority}), not the built-in {builtin.name!r} (priority {builtin.priority}); pass "
            f"backend={builtin.name!r} to keep the built-in, or backend={spec.name!r} to silence this",
            RuntimeWarning, stacklevel=4,
        )

    def ranked_backends(self) -> list[BackendSpec]:
        """Every registered backend spec, highest priority first (available or not)."""
        return sorted(self.specs["backend"].values(), key=lambda s: -s.priority)

    def available_backends(self) -> list[str]:
        """Names of the backends that can run here, by priority (highest first)."""
        return [s.name for s in self.ranked_backends() if self.availability(s)[0]]


def _disable_name(ep, entry_points) -> str:
    """The name that disables this entry point and no other plugin: its own name, else its distribution's."""
    dist = ep.dist.name if ep.dist else ep.name
    for candidate in (ep.name, dist):
        others = [e for e in entry_points if e is not ep and candidate in (e.name, e.dist.name if e.dist else e.name)]
        if not others:
            return candidate
    return dist


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _normalise(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def _groups(cli, prefix: str = ""):
    """``(path, group)`` for ``cli`` and every subgroup (click's ``Group`` has ``commands``)."""
    yield prefix, cli
    for name, command in list(getattr(cli, "commands", {}).items()):
        if hasattr(command, "commands"):
            yield from _groups(command, f"{prefix}{name} ")


def _commands(cli) -> dict[str, Any]:
    """Every command by its full path (``"run"``, ``"config validate"``)."""
    return {f"{prefix}{name}": command for prefix, group in _groups(cli) for name, command in group.commands.items()}


def _snapshot(cli) -> list[tuple[Any, dict]]:
    return [(group, dict(group.commands)) for _, group in _groups(cli)]


def _restore(saved) -> None:
    for group, commands in saved:
        group.commands.clear()
        group.commands.update(commands)


class _Tables(dict):
    """``specs[kind]``, collected from the plugins the first time a kind is asked for."""

    def __init__(self, collect):
        super().__init__()
        self._collect = collect

    def __missing__(self, kind):
        self._collect(kind)
        return dict.__getitem__(self, kind)


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY


def reset_registry(*, entry_points: bool = True) -> Registry:
    """Reload every plugin (e.g. after installing one in this process)."""
    global _REGISTRY
    _REGISTRY = Registry(entry_points=entry_points)
    return _REGISTRY


def get_cell(name, options: dict | None = None):
    """A cell instance by registered name (a ``CellType`` instance passes through)."""
    from .cells import CellType

    if isinstance(name, CellType):
        if options:
            raise ValueError("cell options are given to the cell's constructor when passing a CellType instance")
        return name
    return get_registry().cell_spec(name).create(options)


def get_backend(name="auto"):
    """A backend by name; ``"auto"``/``None``: the available one with the highest priority.

    A backend whose availability check or factory fails is unavailable: an
    explicit name raises :class:`LookupFailed` naming the plugin and the
    reason; ``"auto"`` warns and falls back to the next one (``cython``,
    then ``numpy``).  ``"auto"`` warns once when a plugin's backend outranks
    the built-in ones.
    """
    from .backends import Backend

    if isinstance(name, Backend):
        return name
    return get_registry().get_backend(name)


def available_backends() -> list[str]:
    """Names of the backends that can run here, by priority (highest first)."""
    return get_registry().available_backends()


def available_cells() -> list[str]:
    """Names of the registered cells, sorted."""
    return sorted(get_registry().specs["cell"])
