"""The plugin registry: pluggy, safe entry-point loading, lookup by name.

Plugins are packages with an entry point in the group ``lstmkit`` pointing at
a module (or object) with ``@lstmkit.hookimpl`` functions.  Loading is lazy
(the first lookup) and safe: a plugin that fails to import, declares a hook
wrongly, implements an unknown hook, or registers a name that is taken gives
one warning naming it, its version and the error, and everything else keeps
working.  Environment:

``LSTMKIT_LOAD_PLUGINS``
    unset: load every installed plugin; ``""``: none; ``a,b``: only those.
``LSTMKIT_DISABLE_PLUGINS``
    ``a,b``: never import these.
``LSTMKIT_STRICT_PLUGINS=1``
    re-raise plugin errors (for plugin authors' CI).

Names are entry-point names or distribution names.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .specs import BackendSpec, CellSpec, TaskSpec

ENTRY_POINT_GROUP = "lstmkit"
BUILTIN = "lstmkit"
HOOKS = ("register_cells", "register_backends", "register_tasks", "register_commands")
_KINDS = {"register_cells": ("cell", CellSpec), "register_backends": ("backend", BackendSpec),
          "register_tasks": ("task", TaskSpec)}


class PluginError(RuntimeError):
    """A plugin could not be loaded or registered something invalid."""


class LookupFailed(ValueError):
    """A cell, backend or task name that is unknown or unavailable."""


@dataclass
class PluginInfo:
    """One plugin as ``lstmkit plugins`` lists it."""

    name: str
    distribution: str
    version: str
    builtin: bool = False
    hooks: list[str] = field(default_factory=list)
    provides: list[str] = field(default_factory=list)  # "cell:peephole", ...
    status: str = "ok"  # ok | error | disabled
    error: str = ""

    @property
    def label(self) -> str:
        return f"{self.distribution} {self.version}"


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
        entry_points = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
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
            info = PluginInfo(ep.name, dist, version)
            names = {ep.name, dist}
            if (wanted is not None and not names & wanted) or names & disabled:
                info.status = "disabled"
                self.plugins[ep.name] = info
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not break lstmkit
                self._fail(info, f"failed to import: {type(exc).__name__}: {exc}", exc)
                continue
            self._add(plugin, info)

    def _add(self, plugin, info: PluginInfo, raise_errors: bool = False) -> bool:
        """Register one plugin object; on error record it (or raise)."""
        try:
            self.pm.register(plugin, name=info.name)
        except Exception as exc:  # pluggy.PluginValidationError, or a name clash
            if raise_errors:
                raise
            self._fail(
                info,
                f"declares a hook wrongly: {exc} — hook functions take the spec's argument names: "
                "register_cells(register), register_backends(register), register_tasks(register), "
                "register_commands(cli)",
                exc,
            )
            return False
        unknown = [
            hc.name for hc in (self.pm.get_hookcallers(plugin) or [])
            if hc.spec is None and not all(impl.optionalhook for impl in hc.get_hookimpls())
        ]
        if unknown:
            self.pm.unregister(plugin)
            error = PluginError(f"unknown hook(s) {', '.join(unknown)}; valid hooks: {', '.join(HOOKS)}")
            if raise_errors:
                raise error
            self._fail(info, str(error), error)
            return False
        info.hooks = sorted(hc.name for hc in self.pm.get_hookcallers(plugin) or [])
        self.plugins[info.name] = info
        self._objects[info.name] = plugin
        return True

    def _fail(self, info: PluginInfo, message: str, exc: Exception) -> None:
        info.status, info.error = "error", message
        self.plugins[info.name] = info
        if _strict():
            raise PluginError(f"lstmkit plugin {info.name!r} ({info.label}) {message}") from exc
        warnings.warn(
            f"lstmkit plugin {info.name!r} ({info.label}) {message} — it is skipped; "
            f"disable it with LSTMKIT_DISABLE_PLUGINS={info.name}",
            RuntimeWarning,
            stacklevel=4,
        )

    # -- in-process registration (tests, notebooks) ---------------------------------
    def register(self, plugin, name: str | None = None) -> str:
        """Register a plugin object now (errors raise).  Returns its name."""
        name = name or getattr(plugin, "__name__", None) or f"plugin-{id(plugin)}"
        if name in self.plugins:
            raise PluginError(f"a plugin named {name!r} is already registered")
        loaded_as = self.pm.get_name(plugin)
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
        except Exception:
            self.unregister(name)
            raise
        return name

    def unregister(self, name: str) -> None:
        plugin = self._objects.pop(name, None)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.plugins.pop(name, None)
        self._collect()
        if self is _REGISTRY:  # forget instances of backends that went away with the plugin
            for backend in [b for b in _BACKENDS if b not in self.specs["backend"]]:
                del _BACKENDS[backend]

    # -- collection -------------------------------------------------------------------
    def _reset(self) -> None:
        """Forget collected specs; each kind is collected again on first use."""
        self.specs: dict[str, dict[str, Any]] = _Tables(self._collect_kind)
        self.providers: dict[tuple[str, str], PluginInfo] = {}
        for info in self.plugins.values():
            info.provides = []

    def _collect(self, raise_errors: bool = False, only: str | None = None) -> None:
        self._reset()
        if raise_errors:
            for kind in ("cell", "backend", "task"):
                self._collect_kind(kind, raise_for=only)

    def add_commands(self, cli) -> None:
        """Call every plugin's ``register_commands(cli)``, built-ins first.

        A plugin whose hook raises is skipped with the usual warning; the
        commands it adds are listed in its ``provides`` as ``command:<name>``.
        """
        order = [BUILTIN] + [n for n in self._objects if n != BUILTIN]
        for name in order:
            info = self.plugins.get(name)
            hook = getattr(self._objects.get(name), "register_commands", None)
            if info is None or info.status != "ok" or hook is None:
                continue
            before = set(cli.commands)
            try:
                hook(cli=cli)
            except Exception as exc:  # one plugin's broken command must not break the CLI
                for command in set(cli.commands) - before:
                    del cli.commands[command]
                self._fail(info, f"failed in register_commands: {type(exc).__name__}: {exc}", exc)
                continue
            info.provides += [f"command:{c}" for c in sorted(set(cli.commands) - before)]

    def collect_all(self) -> None:
        """Collect every kind now (for listings such as ``lstmkit plugins``)."""
        for kind in ("cell", "backend", "task"):
            self.specs[kind]

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
            if info is None or info.status != "ok" or function is None:
                continue
            try:
                function(register=self._registrar(kind, spec_type, info))
            except Exception as exc:
                if name == raise_for or name == BUILTIN:
                    raise
                self._drop(info)
                self._fail(info, f"failed while registering: {type(exc).__name__}: {exc}", exc)

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
        """Remove everything ``info`` registered (it failed half-way)."""
        for item in info.provides:
            kind, name = item.split(":", 1)
            self.specs[kind].pop(name, None)
            self.providers.pop((kind, name), None)
        info.provides = []

    # -- lookups ------------------------------------------------------------------------
    def _unknown(self, kind: str, name) -> LookupFailed:
        """The error for an unknown name: valid names, a suggestion, plugins that failed or are disabled."""
        valid = sorted(self.specs[kind])
        listed = (["auto"] if kind == "backend" else []) + valid
        message = f"unknown {kind} {name!r}{suggest(str(name), valid)}; valid {kind}s: {', '.join(listed)}"
        failed = [p for p in self.plugins.values() if p.status == "error"]
        if failed:
            message += " (plugins that failed to load: " + "; ".join(f"{p.name}: {p.error}" for p in failed) + ")"
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

    def backend_spec(self, name: str) -> BackendSpec:
        if name in (None, "auto"):
            ranked = sorted(self.specs["backend"].values(), key=lambda s: -s.priority)
            for spec in ranked:
                if spec.is_available()[0]:
                    return spec
            raise LookupFailed("no backend is available")
        try:
            spec = self.specs["backend"][name]
        except (KeyError, TypeError):
            raise self._unknown("backend", name) from None
        ok, reason = spec.is_available()
        if not ok:
            raise LookupFailed(f"backend {name!r} is unavailable: {reason}")
        return spec

    def available_backends(self) -> list[str]:
        """Names of the backends that can run here, by priority (highest first)."""
        ranked = sorted(self.specs["backend"].values(), key=lambda s: -s.priority)
        return [s.name for s in ranked if s.is_available()[0]]


def suggest(word, choices) -> str:
    """``"; did you mean 'x'?"`` for a close match among ``choices``, else ``""``."""
    import difflib

    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


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
_BACKENDS: dict[str, Any] = {}


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
    _BACKENDS.clear()
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
    """A backend by name; ``"auto"``/``None``: the available one with the highest priority."""
    from .backends import Backend

    if isinstance(name, Backend):
        return name
    spec = get_registry().backend_spec(name)
    backend = _BACKENDS.get(spec.name)
    if backend is None:
        backend = _BACKENDS[spec.name] = spec.factory()
    return backend


def available_backends() -> list[str]:
    return get_registry().available_backends()


def available_cells() -> list[str]:
    return sorted(get_registry().specs["cell"])
