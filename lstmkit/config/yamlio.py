"""A safe YAML loader for configs: YAML 1.2 scalars, no duplicate keys, positions.

PyYAML implements YAML 1.1, where ``1e-3`` is a *string*, ``on``/``no`` are
booleans, ``010`` is octal and ``1:20`` is sexagesimal.  Configs use the YAML
1.2 core schema instead: ``1e-3`` is a float, only ``true``/``false`` are
booleans, ``null``/``~``/empty is null.  The loader builds plain Python data
(no object construction, ``SafeLoader`` underneath), refuses duplicate keys,
and records the position of every key so validation errors can point at
``file:line:col``.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["YAMLError", "Position", "load_yaml", "parse_value", "dump_yaml"]


class YAMLError(ValueError):
    """A syntax error or duplicate key, with ``file:line:col`` in the message."""

    def __init__(self, message: str, source: str, line: int | None = None, column: int | None = None):
        self.source, self.line, self.column, self.problem = source, line, column, message
        where = source if line is None else f"{source}:{line}:{column}"
        super().__init__(f"{where}: {message}")


class Position(tuple):
    """``(source, line, column)`` of a key or value; 1-based line and column."""

    __slots__ = ()

    def __new__(cls, source: str, line: int | None = None, column: int | None = None):
        return super().__new__(cls, (source, line, column))

    @property
    def source(self) -> str:
        return self[0]

    def __str__(self) -> str:
        source, line, column = self
        return source if line is None else f"{source}:{line}:{column}"


# -- YAML 1.2 core schema resolvers -------------------------------------------
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_RESOLVERS = [
    ("tag:yaml.org,2002:bool", _BOOL, list("tTfF")),
    ("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:int", _INT, list("-+0123456789")),
    ("tag:yaml.org,2002:float", _FLOAT, list("-+.0123456789")),
]


def _core_resolvers(cls):
    cls.yaml_implicit_resolvers = {}
    for tag, regexp, first in _RESOLVERS:
        cls.add_implicit_resolver(tag, regexp, first)
    return cls


@_core_resolvers
class _Loader(yaml.SafeLoader):
    """SafeLoader with the YAML 1.2 core schema."""


def _construct_bool(loader, node):
    return loader.construct_scalar(node).lower() == "true"


def _construct_int(loader, node):
    value = loader.construct_scalar(node)
    if value.startswith("0o"):
        return int(value[2:], 8)
    if value.startswith("0x"):
        return int(value[2:], 16)
    return int(value, 10)


def _construct_float(loader, node):
    value = loader.construct_scalar(node).lower()
    if value.endswith("inf"):
        return -math.inf if value.startswith("-") else math.inf
    if value.endswith("nan"):
        return math.nan
    return float(value)


_Loader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)
# Timestamps, sets, omaps, !!python/... : not part of a config.
for _tag in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:set", "tag:yaml.org,2002:omap",
             "tag:yaml.org,2002:pairs", "tag:yaml.org,2002:binary"):
    _Loader.yaml_constructors.pop(_tag, None)


@_core_resolvers
class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes exactly the strings the loader would not read back as strings."""


def _represent_none(dumper, _data):
    return dumper.represent_scalar("tag:yaml.org,2002:null", "null")


_Dumper.add_representer(type(None), _represent_none)


# -- loading ------------------------------------------------------------------
def _build(node, source: str, path: tuple, positions: dict, loader) -> Any:
    """Plain data from a composed node; ``positions[path]`` = where each key/value starts."""
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in (
            "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"):
        raise YAMLError(f"the tag {node.tag!r} is not allowed (only plain YAML values are allowed in a config)",
                        *_position(node, source))
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # merge keys (<<) are not resolved by the core schema; harmless
        result: dict = {}
        for key_node, value_node in node.value:
            key = _build(key_node, source, path + ("<key>",), {}, loader)
            here = _position(key_node, source)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise YAMLError(f"a mapping key must be a plain scalar, got {type(key).__name__}", *here)
            if isinstance(key, (int, float, bool)):
                key = str(key).lower() if isinstance(key, bool) else str(key)
            if key in result:
                first = positions.get(path + (key,))
                seen = f" (first defined at line {first[1]})" if first else ""
                raise YAMLError(f"duplicate key {key!r}{seen}", *here)
            positions[path + (key,)] = Position(*here)
            result[key] = _build(value_node, source, path + (key,), positions, loader)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            positions[path + (index,)] = Position(*_position(item, source))
            items.append(_build(item, source, path + (index,), positions, loader))
        return items
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark or node.start_mark
        raise YAMLError(f"{exc.problem} (only plain YAML values are allowed in a config)", source,
                        mark.line + 1, mark.column + 1) from None


def _position(node, source: str) -> tuple:
    return source, node.start_mark.line + 1, node.start_mark.column + 1


def load_yaml(text: str, source: str = "<string>") -> tuple[Any, dict[tuple, Position]]:
    """Parse ``text`` -> ``(data, positions)``; ``positions`` maps key paths to :class:`Position`.

    Raises :class:`YAMLError` (with ``source:line:col``) for syntax errors,
    duplicate keys, tags that build objects, and more than one document.
    """
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or "invalid YAML"
            if exc.context:
                problem = f"{problem} ({exc.context}" + (
                    f" at line {exc.context_mark.line + 1})" if exc.context_mark and mark
                    and exc.context_mark.line != mark.line else ")")
            if "'\\t'" in problem:
                problem += "; indent with spaces, not tabs"
            elif "expected <block end>" in problem:
                problem += "; check the indentation of this line"
            if mark is None:
                raise YAMLError(problem, source) from None
            raise YAMLError(problem, source, mark.line + 1, mark.column + 1) from None
        except yaml.YAMLError as exc:
            raise YAMLError(str(exc), source) from None
        if node is None:
            return None, {}
        positions: dict[tuple, Position] = {(): Position(*_position(node, source))}
        return _build(node, source, (), positions, loader), positions
    finally:
        loader.dispose()


def load_yaml_file(path: Path | str) -> tuple[Any, dict[tuple, Position]]:
    """Read and parse a config file (see :func:`load_yaml`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise YAMLError(f"not a UTF-8 text file ({exc.reason} at byte {exc.start})", str(path)) from None
    return load_yaml(text, str(path))


def parse_value(text: str, source: str = "--set") -> Any:
    """A command-line value read as YAML: ``1e-3`` -> 0.001, ``[a, b]`` -> list, ``''`` -> None."""
    data, _ = load_yaml(text, source)
    return data


def dump_yaml(data: Any, flow: bool = False) -> str:
    """YAML text that :func:`load_yaml` reads back to ``data`` (block style, keys in order; or flow style)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=flow, allow_unicode=True,
                     width=10_000 if flow else 100)
