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

import copy
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


# -- loading ---------------------------------------------------------------------
#: A config is a few kilobytes; these bounds keep hostile or broken files (alias bombs, megabytes of
#: keys, thousand-level nesting, 5,000-digit integers) to milliseconds and a clear message.
MAX_BYTES = 256 * 1024
MAX_VALUES = 50_000  # scalars and containers, counting every alias use as the size of what it names
MAX_ALIASES = 100
MAX_DEPTH = 50
MAX_NUMBER_CHARS = 100


class _Open:
    """A mapping or sequence being built: its value, path, anchor, and the key waiting for a value."""

    __slots__ = ("value", "path", "anchor", "start", "key")

    def __init__(self, value, path, anchor, start: int):
        self.value, self.path, self.anchor, self.start = value, path, anchor, start  # start: values counted
        self.key = None


def _mark(mark) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


class _Builder:
    """Plain data and positions straight from the parser's events (no node graph, no recursion).

    An alias is a copy of what its anchor names, counted at that size against
    :data:`MAX_VALUES`; positions are recorded where the text is (an alias's
    position stands for everything inside it), so nothing is expanded twice.
    """

    def __init__(self, loader, source: str):
        self.loader, self.source = loader, source
        self.positions: dict[tuple, Position] = {}
        self.anchors: dict[str, tuple[Any, int]] = {}  # anchor -> (value, expanded size)
        self.open_anchors: set[str] = set()
        self.values = self.aliases = 0

    def error(self, message: str, mark) -> YAMLError:
        return YAMLError(message, self.source, *_mark(mark))

    def count(self, n: int, mark) -> None:
        self.values += n
        if self.values > MAX_VALUES:
            raise self.error(f"the config holds more than {MAX_VALUES:,} values (aliases count as what they "
                             f"repeat); a run config is far smaller", mark)

    def build(self):
        loader, stack = self.loader, []
        loader.get_event()  # StreamStart
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # DocumentStart
        result, done = None, False
        while not done:
            event = loader.get_event()
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                frame = stack.pop()
                if frame.anchor is not None:
                    self.open_anchors.discard(frame.anchor)
                    self.anchors[frame.anchor] = (frame.value, self.values - frame.start + 1)
                value = frame.value
            else:
                parent = stack[-1] if stack else None
                if parent is not None and isinstance(parent.value, dict) and parent.key is None:
                    self.key(parent, event)
                    continue
                path = self.child_path(parent, event)
                value = self.node(event, path, stack)
                if value is _OPENED:
                    continue
            parent = stack[-1] if stack else None
            if parent is None:
                result, done = value, True
            elif isinstance(parent.value, dict):
                parent.value[parent.key] = value
                parent.key = None
            else:
                parent.value.append(value)
        loader.get_event()  # DocumentEnd
        if not loader.check_event(yaml.StreamEndEvent):
            raise self.error("expected a single document in the stream, but found another document "
                             "(remove the '---' line)", loader.peek_event().start_mark)
        return result

    def child_path(self, parent: _Open | None, event) -> tuple:
        if parent is None:
            self.positions[()] = Position(self.source, *_mark(event.start_mark))
            return ()
        if isinstance(parent.value, dict):
            return parent.path + (parent.key,)
        path = parent.path + (len(parent.value),)
        self.positions[path] = Position(self.source, *_mark(event.start_mark))
        return path

    def key(self, parent: _Open, event) -> None:
        if isinstance(event, yaml.AliasEvent):
            key = self.alias(event)
        elif isinstance(event, yaml.ScalarEvent):
            key = self.scalar(event)
            if event.anchor is not None:
                self.anchors[event.anchor] = (key, 1)
        else:
            raise self.error("a mapping key must be a plain scalar, got a "
                             f"{'mapping' if isinstance(event, yaml.MappingStartEvent) else 'list'}",
                             event.start_mark)
        if not isinstance(key, (str, int, float, bool)) or key is None:
            raise self.error(f"a mapping key must be a plain scalar, got {type(key).__name__}", event.start_mark)
        if isinstance(key, (int, float, bool)):
            key = str(key).lower() if isinstance(key, bool) else str(key)
        path = parent.path + (key,)
        if key in parent.value:
            first = self.positions.get(path)
            seen = f" (first defined at line {first[1]})" if first else ""
            raise self.error(f"duplicate key {key!r}{seen}", event.start_mark)
        self.positions[path] = Position(self.source, *_mark(event.start_mark))
        parent.value[key] = None  # keeps the order and catches a duplicate of a key still being built
        parent.key = key

    def node(self, event, path: tuple, stack: list):
        if isinstance(event, yaml.AliasEvent):
            return self.alias(event)
        if isinstance(event, yaml.ScalarEvent):
            self.count(1, event.start_mark)
            value = self.scalar(event)
            if event.anchor is not None:
                self.anchors[event.anchor] = (value, 1)
            return value
        is_map = isinstance(event, yaml.MappingStartEvent)
        if not isinstance(event, yaml.SequenceStartEvent) and not is_map:  # pragma: no cover - parser guarantees
            raise self.error(f"unexpected {type(event).__name__}", event.start_mark)
        default = "tag:yaml.org,2002:map" if is_map else "tag:yaml.org,2002:seq"
        if event.tag not in (None, "!", default):
            raise self.error(f"the tag {event.tag!r} is not allowed (only plain YAML values are allowed in a "
                             f"config)", event.start_mark)
        if len(stack) >= MAX_DEPTH:
            raise self.error(f"nested more than {MAX_DEPTH} levels deep; a config is a few levels of "
                             f"mappings and lists", event.start_mark)
        self.count(1, event.start_mark)
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        stack.append(_Open({} if is_map else [], path, event.anchor, self.values))
        return _OPENED

    def alias(self, event):
        self.aliases += 1
        if self.aliases > MAX_ALIASES:
            raise self.error(f"more than {MAX_ALIASES} aliases (*name); a config needs few, if any",
                             event.start_mark)
        if event.anchor in self.open_anchors:
            raise self.error(f"the alias *{event.anchor} refers to the value that contains it (a recursive "
                             f"alias)", event.start_mark)
        if event.anchor not in self.anchors:
            raise self.error(f"found undefined alias *{event.anchor}", event.start_mark)
        value, size = self.anchors[event.anchor]
        self.count(size, event.start_mark)
        return copy.deepcopy(value)  # independent copies: a --set on one place never changes another

    def scalar(self, event):
        loader = self.loader
        tag = event.tag
        if tag is None or tag == "!":
            tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float") and len(event.value) > MAX_NUMBER_CHARS:
            raise self.error(f"a number written with {len(event.value):,} characters; a config number has at "
                             f"most {MAX_NUMBER_CHARS}", event.start_mark)
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            return loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            mark = exc.problem_mark or event.start_mark
            raise YAMLError(f"{exc.problem} (only plain YAML values are allowed in a config)", self.source,
                            *_mark(mark)) from None
        except ValueError as exc:  # e.g. an int() limit
            raise self.error(f"cannot read {event.value[:40]!r}: {exc}", event.start_mark) from None


_OPENED = object()


def _syntax_error(exc: yaml.MarkedYAMLError, source: str) -> YAMLError:
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
        return YAMLError(problem, source)
    return YAMLError(problem, source, mark.line + 1, mark.column + 1)


def load_yaml(text: str, source: str = "<string>") -> tuple[Any, dict[tuple, Position]]:
    """Parse ``text`` -> ``(data, positions)``; ``positions`` maps key paths to :class:`Position`.

    Raises :class:`YAMLError` (with ``source:line:col``) for syntax errors,
    duplicate keys, tags that build objects, more than one document, and
    text beyond the limits (:data:`MAX_BYTES` characters, :data:`MAX_VALUES`
    values with aliases expanded, :data:`MAX_ALIASES` aliases,
    :data:`MAX_DEPTH` levels, numbers of :data:`MAX_NUMBER_CHARS` characters).
    """
    if len(text) > MAX_BYTES:
        raise YAMLError(f"{len(text):,} characters; a config is at most {MAX_BYTES:,} (is this the right file?)",
                        source)
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        return _unreadable_character(text, exc, source)
    try:
        builder = _Builder(loader, source)
        try:
            data = builder.build()
        except yaml.reader.ReaderError as exc:
            _unreadable_character(text, exc, source)
        except yaml.MarkedYAMLError as exc:
            raise _syntax_error(exc, source) from None
        except yaml.YAMLError as exc:
            raise YAMLError(str(exc), source) from None
        return data, (builder.positions if data is not None else {})
    finally:
        loader.dispose()


def _unreadable_character(text: str, exc, source: str):
    line = text.count("\n", 0, exc.position) + 1
    column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
    what = "a NUL byte" if exc.character in (0, "\0") else f"the character {exc.character!r}"
    raise YAMLError(f"{what} cannot appear in a YAML file (is this a text file?)", source, line, column) from None


def load_yaml_file(path: Path | str) -> tuple[Any, dict[tuple, Position]]:
    """Read and parse a config file (see :func:`load_yaml`); a file over :data:`MAX_BYTES` is not read."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise YAMLError(f"{size:,} bytes; a config file is at most {MAX_BYTES:,} (is this the right file?)",
                            str(path))
        with open(path, encoding="utf-8", newline=None) as f:
            text = f.read(MAX_BYTES + 1)  # bounded: a /proc file or a device reports no size
    except UnicodeDecodeError as exc:
        raise YAMLError(f"not a UTF-8 text file ({exc.reason} at byte {exc.start})", str(path)) from None
    except OSError as exc:
        raise YAMLError(f"cannot read the file: {exc.strerror or exc}", str(path)) from None
    return load_yaml(text, str(path))


def parse_value(text: str, source: str = "--set") -> Any:
    """A command-line value read as YAML: ``1e-3`` -> 0.001, ``[a, b]`` -> list, ``''`` -> None."""
    data, _ = load_yaml(text, source)
    return data


def dump_yaml(data: Any, flow: bool = False) -> str:
    """YAML text that :func:`load_yaml` reads back to ``data`` (block style, keys in order; or flow style)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=flow, allow_unicode=True,
                     width=10_000 if flow else 100)
