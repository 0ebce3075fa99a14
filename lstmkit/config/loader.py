"""Load, override, validate and resolve a run config.

``load_config(path, overrides, seed=..., backend=..., output_dir=...)`` does,
in order:

1. read the YAML file (:mod:`lstmkit.config.yamlio`: YAML 1.2 scalars,
   duplicate keys refused, ``file:line:col`` on syntax errors);
2. apply ``--set key=value`` overrides (values read as YAML), then the
   dedicated flags — precedence: defaults < file < ``--set`` < flags;
3. validate against the schema (:mod:`lstmkit.config.schema`), then validate
   the plugin-owned parts by their own options models (``model.cell_options``
   by the cell's, ``task.options`` by the task's) and check every registry
   name (cell, task, backend, ``plugins.require``);
4. report **every** problem at once, each with ``file:line:col`` (or the
   ``--set`` it came from) and the dotted key: :class:`ConfigError` (exit 3),
   or :class:`UnavailableError` (exit 4) when the only problems are unknown or
   unavailable cells, backends, tasks or plugins;
5. resolve: relative paths against the config file's directory (values given
   on the command line: against the working directory), stored absolute; a
   ``seed: null`` replaced by a random seed; ``name: null`` by the file name.

The working directory is never changed.
"""
from __future__ import annotations

import math
import os
import pathlib
import re
import secrets
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel, ValidationError

from . import schema
from .errors import ConfigError, ConfigIssue, UnavailableError
from .compose import BASE_KEY, compose
from .._suggest import suggest
from .yamlio import Position, YAMLError, dump_yaml, load_yaml_file, parse_value

__all__ = ["LoadedConfig", "load_config", "load_config_data", "parse_override", "diff_configs",
           "resolved_yaml", "task_issue"]

_CLI = "<command line>"
# Keys holding file paths in the core schema (plugin options: fields annotated as a Path).
_PATH_KEYS = (("task", "train"), ("task", "valid"), ("task", "test"), ("outputs", "dir"))


@dataclass
class LoadedConfig:
    """A validated, resolved config.

    ``data``: the resolved config as plain data (what the run folder's
    ``config.yaml`` holds); ``config``: the same as a :class:`~lstmkit.config.schema.Config`;
    ``path``: the file it came from (or ``None``); ``base_dir``: that file's
    directory; ``seed_was_random``: ``seed: null`` was replaced by a random seed.
    """

    data: dict
    config: schema.Config
    path: Path | None
    base_dir: Path
    seed_was_random: bool = False
    sources: dict = field(default_factory=dict)  # dotted key -> "file" | "--set" | "flag"
    positions: dict = field(default_factory=dict, repr=False)  # key path -> Position (file or --set/flag)

    def where(self, key: str | tuple) -> str | None:
        """Where ``key`` (dotted or a path) was set: ``file:line:col``, ``--set ...``, a flag, or its nearest
        parent's place; ``None`` for a default."""
        path = tuple(key.split(".")) if isinstance(key, str) else tuple(key)
        return _where(self.positions, path)

    @property
    def yaml(self) -> str:
        return resolved_yaml(self.data)


# -- overrides ----------------------------------------------------------------------
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_][A-Za-z0-9_-]*)*$")


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """``"training.optimizer.lr=1e-3"`` -> ``(("training", "optimizer", "lr"), 0.001)``.

    The value is read as YAML (``1e-3``, ``true``, ``null``, ``[a, b]``,
    ``{name: step}``); an empty value is ``null``.  Raises ``ValueError``.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"expected KEY=VALUE (e.g. training.epochs=5), got {text!r}")
    if not _KEY.match(key):
        raise ValueError(f"{key!r} is not a dotted key such as training.optimizer.lr")
    try:
        parsed = parse_value(value, source=f"--set {text}")
    except YAMLError as exc:
        raise ValueError(f"--set {text}: the value is not valid YAML: {exc.problem}") from None
    return tuple(key.split(".")), parsed


def _apply(data: dict, path: tuple, value, where: str, positions: dict, sources: dict, issues: list) -> None:
    node = data
    position = Position(where)
    for depth, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
            positions[path[: depth + 1]] = position  # a key the override created: blame the override
        elif not isinstance(child, dict):
            issues.append(ConfigIssue(".".join(path[: depth + 1]), f"is not a mapping ({_describe(child)}), "
                                      f"so {'.'.join(path)} cannot be set", where))
            return
        node = child
    node[path[-1]] = value
    for known in [p for p in positions if p[: len(path)] == path]:
        del positions[known]
    _mark(value, path, position, positions)
    sources[path] = "cli"


def _mark(value, path: tuple, position: Position, positions: dict) -> None:
    positions[path] = position
    if isinstance(value, dict):
        for k, v in value.items():
            _mark(v, path + (k,), position, positions)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _mark(v, path + (i,), position, positions)


# -- error messages -------------------------------------------------------------------
def _describe(value) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    kind = names.get(type(value), type(value).__name__)
    if isinstance(value, (dict, list)) or value is None:
        return kind
    text = repr(value)
    return f"{kind} {text if len(text) < 60 else text[:57] + '...'}"


def _unwrap(annotation):
    """Strip Optional/Annotated: the BaseModel or dict/list type underneath (or the union members)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
        return tuple(_unwrap(m) for m in members)
    return annotation


def _walk(model: type[BaseModel] | None, loc: tuple, data) -> tuple[tuple, type[BaseModel] | None]:
    """Clean a pydantic error location (drop union tags) -> (dotted path, model class at its parent)."""
    clean: list = []
    current: Any = model
    parent: type[BaseModel] | None = model
    value = data
    items = list(loc)
    while items:
        part = items.pop(0)
        if isinstance(current, tuple):  # a discriminated union: the next part is the member's tag
            members = {getattr(m.model_fields.get("name"), "default", None): m for m in current
                       if isinstance(m, type) and issubclass(m, BaseModel)}
            if part in members:
                current = members[part]
                continue
            current = None
        clean.append(part)
        if isinstance(current, type) and issubclass(current, BaseModel):
            parent = current
            info = current.model_fields.get(part) if isinstance(part, str) else None
            current = _unwrap(info.annotation) if info else None
        else:
            parent = None
            current = None
        value = value.get(part) if isinstance(value, dict) else None
    return tuple(clean), parent


def _blame(positions: dict, path: tuple) -> str | None:
    """For a rule across keys reported at ``path``: the ``--set``/flag that gave one of the keys it reads,
    when ``path`` itself comes from the file or a default (so an override is never blamed on a file line)."""
    own = positions.get(path)
    if own is not None and own[1] is None:
        return str(own)
    for other in schema.RULE_INPUTS.get(path, ()):
        given = positions.get(other)
        if given is not None and given[1] is None:
            return str(given)
    return None


def _where(positions: dict, path: tuple, exact: bool = False) -> str | None:
    for n in range(len(path), -1, -1):
        position = positions.get(path[:n])
        if position is not None:
            return str(position)
        if exact:
            break
    return None


def _issues_from(error: ValidationError, model: type[BaseModel], data, positions: dict,
                 prefix: tuple = ()) -> list[ConfigIssue]:
    issues = []
    for err in error.errors(include_url=False):
        loc, parent = _walk(model, tuple(err["loc"]), data)
        kind, message, value = err["type"], err["msg"], err.get("input")
        ctx = err.get("ctx") or {}
        if kind == "value_error":
            message = message.removeprefix("Value error, ")
            while m := re.match(r"^\[(\w+)\] (.*)$", message, re.S):  # "[section] [field] ..." from a validator
                loc, message = loc + (m.group(1),), m.group(2)
        elif kind == "extra_forbidden":
            valid = sorted(parent.model_fields) if parent is not None else []
            message = f"unknown key {loc[-1]!r}{suggest(loc[-1], valid)}"
            if valid:
                message += f" (valid keys here: {', '.join(valid)})"
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "invalid_choice":
            name = value.get("name") if isinstance(value, dict) else value
            choices = [c.strip() for c in ctx.get("choices", "").split(",")]
            loc = loc + ("name",)
            message = f"{message} {name!r}{suggest(name, choices)} (valid: {', '.join(choices)})"
        elif kind == "literal_error":
            choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
            message = f"should be {ctx.get('expected')}, got {_describe(value)}{suggest(value, choices)}"
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            message = f"should be a mapping (indented `key: value` lines), got {_describe(value)}"
            if isinstance(value, str) and loc and loc[-1] in ("optimizer", "scheduler"):
                message += f"; write {loc[-1]}: {{name: {value}}}"
            elif isinstance(value, str) and loc == ("task",):
                message += f"; write task: {{type: {value}}}"
        elif kind == "string_pattern_mismatch" and loc == ("name",):
            message = (f"should start with a letter or digit and contain only letters, digits, '.', '_' and "
                       f"'-' (it names a folder), got {_describe(value)}")
        else:
            message = message.replace("Input should be", "should be")
            message = f"{message}, got {_describe(value)}"
            if kind == "bool_type" and isinstance(value, str) and value.lower() in (
                    "yes", "no", "on", "off", "y", "n"):
                message += " (YAML booleans are true and false)"
        full = prefix + loc
        where = _where(positions, full, exact=(kind == "extra_forbidden")) or _where(positions, full)
        if kind == "value_error":
            where = _blame(positions, full) or where
        issues.append(ConfigIssue(".".join(str(p) for p in full), message, where))
    return issues


# -- plugin requirements ---------------------------------------------------------------
def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_problem(text: str, registry) -> str | None:
    """Why the requirement ``text`` ("dist>=1.2" or a plugin name) is not met, or ``None``."""
    from importlib import metadata

    m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*?)\s*$", text)
    if not m:
        return f"{text!r} is not a requirement such as 'lstmkit-peephole>=0.2'"
    name, spec = m.group(1), m.group(2)
    plugin = next((p for p in registry.plugins.values()
                   if _normalise(name) in (_normalise(p.name), _normalise(p.distribution))), None)
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        version = plugin.version if plugin is not None else None
    if plugin is None:
        if version is None:
            return f"required plugin {name!r} is not installed (pip install {name})"
        return (f"{name} {version} is installed but registers no lstmkit plugin "
                f"(no entry point in the 'lstmkit' group)")
    if plugin.status == "disabled":
        return (f"required plugin {name!r} is disabled (LSTMKIT_LOAD_PLUGINS / LSTMKIT_DISABLE_PLUGINS "
                f"in the environment)")
    problems = registry.problems_for(name)  # every hook run first: a clash or a raising hook counts too
    if problems:
        return f"required plugin {name!r} ({plugin.label}) failed to load: {'; '.join(problems)}"
    if spec:
        ok = _version_satisfies(version, spec)
        if ok is None:
            return f"{text!r}: cannot read the version specifier {spec!r}"
        if not ok:
            return f"required plugin {text!r} is not satisfied: {name} {version} is installed"
    return None


def _version_satisfies(version: str | None, spec: str) -> bool | None:
    try:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
        from packaging.version import InvalidVersion, Version
    except ImportError:  # packaging is not a dependency; compare dotted numbers ourselves
        return _simple_satisfies(version, spec)
    try:
        specifiers = SpecifierSet(spec)
    except InvalidSpecifier:
        return None
    try:
        return version is not None and Version(version) in specifiers
    except InvalidVersion:
        return False


def _simple_satisfies(version: str | None, spec: str) -> bool | None:
    def key(v):
        return tuple(int(x) for x in re.findall(r"\d+", v)[:4])

    checks = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, ">=": lambda a, b: a >= b,
              "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}
    if version is None:
        return False
    for part in spec.split(","):
        m = re.match(r"^\s*(==|!=|>=|<=|>|<)\s*([0-9][0-9.]*)\s*$", part)
        if not m:
            return None
        if not checks[m.group(1)](key(version), key(m.group(2))):
            return False
    return True


# -- paths ---------------------------------------------------------------------------
def _is_path_type(annotation) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, pathlib.PurePath):
        return True
    return any(_is_path_type(a) for a in typing.get_args(annotation))


def _path_fields(options_model) -> list[str]:
    if options_model is None or not hasattr(options_model, "model_fields"):
        return []
    return [name for name, info in options_model.model_fields.items() if _is_path_type(info.annotation)]


def _absolute(value, base: Path):
    if isinstance(value, str) and value:
        path = Path(os.path.expanduser(value))
        return str(path if path.is_absolute() else (base / path).resolve())
    if isinstance(value, list):
        return [_absolute(v, base) for v in value]
    return value


# -- loading ---------------------------------------------------------------------------
def load_config(
    path: str | os.PathLike | None,
    overrides: Sequence[str] = (),
    *,
    seed: int | None = None,
    backend: str | None = None,
    output_dir: str | os.PathLike | None = None,
    data: dict | None = None,
    check_files: bool = True,
) -> LoadedConfig:
    """Read ``path`` (or use ``data``), apply overrides and flags, validate, resolve.

    Raises :class:`ConfigError` (exit 3) or :class:`UnavailableError` (exit 4).
    """
    source = str(path) if path is not None else _CLI
    if path is not None:
        file = Path(path)
        if not file.is_file():
            what = "not a regular file" if file.exists() else "no such config file"
            raise ConfigError([ConfigIssue("", f"{what}: {file}")])
        try:
            raw, positions = load_yaml_file(file)
        except YAMLError as exc:
            raise ConfigError([ConfigIssue("", exc.problem, str(Position(exc.source, exc.line, exc.column)))],
                              source) from None
        base_dir = file.resolve().parent
        if isinstance(raw, dict) and BASE_KEY in raw:  # `base: other.yaml` (config/compose.py)
            raw, positions = compose(file, raw, positions, source)
    else:
        raw, positions = (data if data is not None else {}), {}
        base_dir = Path.cwd()
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([ConfigIssue("", f"a config is a mapping of sections (model:, task:, training:, ...), "
                                       f"got {_describe(raw)}", _where(positions, ()))], source)
    return load_config_data(raw, positions, base_dir, source=source, path=Path(path) if path else None,
                            overrides=overrides, seed=seed, backend=backend, output_dir=output_dir,
                            check_files=check_files)


def load_config_data(raw: dict, positions: dict, base_dir: Path, *, source: str = _CLI, path: Path | None = None,
                     overrides: Sequence[str] = (), seed=None, backend=None, output_dir=None,
                     check_files: bool = True) -> LoadedConfig:
    """:func:`load_config` on already-parsed data (``positions`` from :func:`~lstmkit.config.yamlio.load_yaml`)."""
    import copy

    data = copy.deepcopy(raw)
    positions = dict(positions)
    sources: dict[tuple, str] = {}
    issues: list[ConfigIssue] = []
    for text in overrides:
        try:
            key, value = parse_override(text)
        except ValueError as exc:
            issues.append(ConfigIssue("", str(exc), f"--set {text}"))
            continue
        _apply(data, key, value, f"--set {text}", positions, sources, issues)
    for flag, key, value in (("--seed", ("seed",), seed), ("--backend", ("runtime", "backend"), backend),
                             ("-o", ("outputs", "dir"), None if output_dir is None else str(output_dir))):
        if value is not None:
            _apply(data, key, value, f"{flag} {value}", positions, sources, issues)
    if issues:
        raise ConfigError(issues, source)

    # Round 1: everything the schema alone can tell (docs/config.md: at most two rounds).
    issues = _non_finite(data, (), positions)
    try:
        config = schema.Config.model_validate(data)
    except ValidationError as exc:
        issues += _issues_from(exc, schema.Config, data, positions)
        issues += [ConfigIssue(".".join(key), message, _blame(positions, key) or _where(positions, key))
                   for key, message in schema.cross_field_problems(data)]
    if issues:
        raise ConfigError(_sorted(_first_per_key(issues)), source) from None

    unavailable: list[ConfigIssue] = []
    resolved = config.model_dump(mode="json")
    _check_plugins(config, data, positions, issues, unavailable, resolved, base_dir, sources)

    # Paths: file values against the config's directory, command-line values against the cwd.
    for key in _PATH_KEYS:
        value = resolved[key[0]][key[1]]
        base = Path.cwd() if sources.get(key) == "cli" else base_dir
        resolved[key[0]][key[1]] = _absolute(value, base)
        if check_files and key[0] == "task" and value and not Path(resolved["task"][key[1]]).is_file():
            issues.append(ConfigIssue(f"task.{key[1]}", f"no such file: {resolved['task'][key[1]]}",
                                      _where(positions, key)))

    if issues and check_files and not any(i.key.startswith("task") for i in issues + unavailable):
        issues += _probe_task(resolved, positions, path)  # its data problems join this report (two rounds)
    if issues:
        raise ConfigError(_sorted(issues + unavailable), source)
    if unavailable:
        raise UnavailableError([str(i) for i in _sorted(unavailable)], source if source != _CLI else None)

    seed_was_random = resolved["seed"] is None
    if seed_was_random:
        resolved["seed"] = secrets.randbelow(2**31)
    if resolved["name"] is None:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem if path else "run").strip("-._") or "run"
        resolved["name"] = stem[:100]
    config = schema.Config.model_validate(resolved)
    return LoadedConfig(resolved, config, path, base_dir, seed_was_random,
                        {".".join(k): v for k, v in sources.items()}, positions)


def task_issue(loaded: LoadedConfig, exc: Exception) -> ConfigIssue:
    """A task's data or options error as a :class:`ConfigIssue` at the key it concerns.

    The keys are the error's ``keys`` (a :class:`~lstmkit.tasks.TaskError` may name several, e.g.
    ``task.options.window`` and ``horizon``) or the first ``task.*`` key its message names; the one
    set on the command line is blamed first (so a ``--set`` is never reported at a line of the
    file), then the first set in the file.
    """
    message = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
    keys = [tuple(k.split(".")) for k in getattr(exc, "keys", ()) or ()]
    m = re.search(r"\btask\.(train|valid|test|options\.\w+)\b", message)
    if not keys:
        keys = [("task",) + tuple(m.group(1).split("."))] if m else [("task",)]
    if m and message.startswith(m.group(0) + ": ") and ("task",) + tuple(m.group(1).split(".")) == keys[0]:
        message = message[len(m.group(0)) + 2:]  # the report shows the key already

    positions = loaded.positions
    if not positions and loaded.path is not None and loaded.path.is_file():  # e.g. a resumed run's config.yaml
        try:
            positions = load_yaml_file(loaded.path)[1]
        except YAMLError:
            positions = {}
    given = [k for k in keys if k in positions]
    on_cli = [k for k in given if positions[k][1] is None]  # --set and flags have no line
    key = (on_cli or given or keys)[0]
    return ConfigIssue(".".join(key), message, _where(positions, key))


def _probe_task(resolved: dict, positions: dict, path: Path | None) -> list[ConfigIssue]:
    """Build the task of a config that fails round 2 anyway (its task section valid), so the problems of
    its data files are reported with the others rather than in a third round."""
    from ..registry import LookupFailed, get_registry

    task = resolved["task"]
    try:
        spec = get_registry().task_spec(task["type"])
    except LookupFailed:
        return []
    splits = {k: task[k] for k in ("train", "valid", "test")}
    try:
        spec.factory(dict(task["options"]), base_dir=path.resolve().parent if path else Path.cwd(),
                     seed=resolved["seed"] or 0, splits=splits if any(splits.values()) else None).data()
    except (ValueError, OSError, KeyError) as exc:
        return [task_issue(types.SimpleNamespace(positions=positions, path=path), exc)]
    except Exception:  # a plugin task's own failure: the run reports it once the rest is fixed
        return []
    return []


def _non_finite(value, path: tuple, positions: dict) -> list[ConfigIssue]:
    """Every ``.inf``/``.nan`` in the config (core keys and plugin options alike): no setting takes one."""
    if isinstance(value, float) and not math.isfinite(value):
        text = ".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf")
        return [ConfigIssue(".".join(map(str, path)), f"should be a finite number, got {text}",
                            _where(positions, path))]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [issue for k, v in items for issue in _non_finite(v, path + (k,), positions)]


def _first_per_key(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """One problem per key (or key and its parts: ``betas`` and ``betas.1``): the first found, in the order
    a non-finite value, the schema's, a cross-field rule."""
    seen, out = [], []
    for issue in issues:
        k = issue.key
        if k and any(k == s or k.startswith(s + ".") or s.startswith(k + ".") for s in seen):
            continue
        seen.append(k)
        out.append(issue)
    return out


def _sorted(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    def key(issue: ConfigIssue):
        m = re.match(r"^(.*):(\d+):(\d+)$", issue.where or "")
        if m:
            return (0, m.group(1), int(m.group(2)), int(m.group(3)))
        return (1, issue.where or "", 0, 0)

    return sorted(issues, key=key)


def _check_plugins(config: schema.Config, data: dict, positions: dict, issues: list, unavailable: list,
                   resolved: dict, base_dir: Path, sources: dict) -> None:
    """Pass 2: registry names, plugin requirements, and the plugin-owned options."""
    from ..registry import LookupFailed, get_registry

    registry = get_registry()
    for index, requirement in enumerate(config.plugins.require):
        problem = _requirement_problem(requirement, registry)
        if problem:
            unavailable.append(ConfigIssue(f"plugins.require.{index}", problem,
                                           _where(positions, ("plugins", "require", index))))

    def lookup(kind: str, name: str, key: tuple):
        finder = getattr(registry, f"{kind}_spec")
        try:
            return finder(name)
        except LookupFailed as exc:  # its message lists the valid names and suggests one
            unavailable.append(ConfigIssue(".".join(key), str(exc), _where(positions, key)))
            return None

    cell = lookup("cell", config.model.cell, ("model", "cell"))
    if cell is not None:
        options = _validate_options(cell.options_model, config.model.cell_options, ("model", "cell_options"),
                                    f"cell {cell.name!r}", data, positions, issues)
        if options is not None:
            resolved["model"]["cell_options"] = options
        if config.model.proj_size and not cell.cell_type.supports_proj:
            issues.append(ConfigIssue("model.proj_size", f"proj_size is only supported for LSTM, not "
                                      f"{cell.name!r}", _where(positions, ("model", "proj_size"))))
    task = lookup("task", config.task.type, ("task", "type"))
    if task is not None:
        options = _validate_options(task.options_model, config.task.options, ("task", "options"),
                                    f"task {task.name!r}", data, positions, issues)
        if options is not None:
            for name in _path_fields(task.options_model):
                key = ("task", "options", name)
                base = Path.cwd() if any(k[:3] == key and v == "cli" for k, v in sources.items()) else base_dir
                options[name] = _absolute(options.get(name), base)
            resolved["task"]["options"] = options
        metric = (config.training.early_stopping or schema.EarlyStoppingConfig()).metric
        valid = ["valid.loss", "train.loss"] + [f"valid.{m}" for m in task.metrics]
        if metric not in valid:
            key = ("training", "early_stopping", "metric")
            issues.append(ConfigIssue(".".join(key), f"unknown metric {metric!r} for task {task.name!r}"
                                      f"{suggest(metric, valid)} (valid: {', '.join(valid)})",
                                      _where(positions, key)))
    lookup("backend", config.runtime.backend, ("runtime", "backend"))


def _validate_options(options_model, options: dict, prefix: tuple, owner: str, data, positions: dict,
                      issues: list) -> dict | None:
    if options_model is None:
        if options:
            for key in options:
                issues.append(ConfigIssue(".".join(prefix + (key,)), f"{owner} takes no options",
                                          _where(positions, prefix + (key,))))
            return None
        return {}
    try:
        # Strict, like the core keys: "yes", "5" or 3.0 are not silently turned into true, 5 or 3.
        # YAML has no path type, so a string is what a Path field takes.
        paths = _path_fields(options_model)
        options = {k: Path(v) if k in paths and isinstance(v, str) else v for k, v in options.items()}
        validated = options_model.model_validate(options, strict=True)
    except ValidationError as exc:
        raw = data
        for part in prefix:
            raw = raw.get(part, {}) if isinstance(raw, dict) else {}
        issues.extend(_issues_from(exc, options_model, raw, positions, prefix))
        return None
    return validated.model_dump(mode="json")


# -- output ---------------------------------------------------------------------------
def resolved_yaml(data: dict, header: str | None = None) -> str:
    """The resolved config as YAML text (optionally after a comment header)."""
    text = dump_yaml(data)
    if header:
        text = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + text
    return text


def diff_configs(old: dict, new: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``[(dotted key, old value, new value), ...]`` for every leaf that differs."""
    out = []
    for key in list(old) + [k for k in new if k not in old]:
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        dotted = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(diff_configs(a, b, dotted + "."))
        elif a != b:
            out.append((dotted, a, b))
    return out
