"""``base: other.yaml``: a config that starts from another one, merged key by key.

The file named by ``base`` (relative to the file that names it) is read first, itself composed if it
has a ``base`` of its own; then the file's own keys are merged over it: mappings key by key, any
other value (a number, a string, a list, ``null``) replaces the base's.  A mapping whose kind changes
replaces the base's whole mapping instead of being merged into it (``task.type``,
``training.optimizer.name``, ``training.scheduler.name`` differ: the base's options of the other kind
would not fit), and a different ``model.cell`` drops the base's ``model.cell_options``.

Every key keeps the position of the file it comes from, so an error in a value of the base file
points at that file and line.  File paths in a base file (``task.train``/``valid``/``test``,
``outputs.dir``) are relative to the base file, as they are when it is run on its own.  A chain of
bases that comes back to a file already in it is refused, naming the chain.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError, ConfigIssue
from .yamlio import Position, YAMLError, load_yaml_file

__all__ = ["compose", "merge", "BASE_KEY"]

BASE_KEY = "base"
_KIND_KEYS = ("type", "name")  # a mapping of another kind replaces the base's, not merged into it
_PATH_KEYS = (("task", "train"), ("task", "valid"), ("task", "test"), ("outputs", "dir"))


def compose(file: Path, raw: dict, positions: dict, source: str, _chain: tuple[Path, ...] = ()) -> tuple[dict, dict]:
    """``raw`` (read from ``file``) merged over its ``base`` chain: ``(data, positions)``; no ``base`` key left.

    Raises :class:`ConfigError` naming the ``base`` line for a missing, unreadable or cyclic base, and the
    base file's ``file:line:col`` for its syntax errors.
    """
    if not isinstance(raw, dict) or BASE_KEY not in raw:
        return raw, positions
    chain = _chain + (file.resolve(),)
    where = str(positions.get((BASE_KEY,), Position(str(file))))
    value = raw[BASE_KEY]
    own = {k: v for k, v in raw.items() if k != BASE_KEY}
    own_positions = {k: p for k, p in positions.items() if k[:1] != (BASE_KEY,)}
    if not isinstance(value, str) or not value.strip():
        raise ConfigError([ConfigIssue(BASE_KEY, f"should be the path of another config file (relative to "
                                       f"{file.name}), got {_describe(value)}", where)], source)
    path = Path(os.path.normpath(file.parent / os.path.expanduser(value)))
    if path.resolve() in chain:
        names = " -> ".join(str(p) for p in chain + (path.resolve(),))
        raise ConfigError([ConfigIssue(BASE_KEY, f"{value} is already in this config's chain of bases, which "
                                       f"would never end: {names}", where)], source)
    if not path.is_file():
        what = "not a regular file" if path.exists() else "no such config file"
        raise ConfigError([ConfigIssue(BASE_KEY, f"{what}: {path}", where)], source)
    try:
        base_raw, base_positions = load_yaml_file(path)
    except YAMLError as exc:
        raise ConfigError([ConfigIssue("", exc.problem, str(Position(exc.source, exc.line, exc.column)))],
                          source) from None
    if base_raw is None:
        base_raw = {}
    if not isinstance(base_raw, dict):
        raise ConfigError([ConfigIssue(BASE_KEY, f"{path} is not a config: a config is a mapping of sections "
                                       f"(model:, task:, ...), got {_describe(base_raw)}", where)], source)
    base_raw, base_positions = compose(path, base_raw, base_positions, source, chain)
    base_raw = _absolute_paths(base_raw, path.resolve().parent)
    return merge(base_raw, base_positions, own, own_positions)


def merge(base: dict, base_positions: dict, own: dict, own_positions: dict) -> tuple[dict, dict]:
    """``own`` over ``base``, key by key (see the module docstring): ``(data, positions)``; each value keeps
    the position of the file it comes from."""
    data = _merged(base, own)
    if isinstance(own.get("model"), dict) and isinstance(base.get("model"), dict):
        cell = own["model"].get("cell")
        if cell is not None and cell != base["model"].get("cell") and "cell_options" not in own["model"]:
            data["model"] = {k: v for k, v in data["model"].items() if k != "cell_options"}
    positions: dict = {}
    _place(data, (), own_positions, base_positions, positions)
    return data, positions


def _merged(base: dict, own: dict) -> dict:
    out = dict(base)
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not _other_kind(out[key], value):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def _place(value, path: tuple, own: dict, base: dict, out: dict) -> None:
    """The position of every key of the merged ``value``: the own file's where it gave the key, else the base's."""
    where = own.get(path, base.get(path))
    if where is not None:
        out[path] = where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        _place(item, path + (key,), own, base, out)


def _other_kind(base: dict, own: dict) -> bool:
    return any(k in own and k in base and own[k] != base[k] for k in _KIND_KEYS)


def _absolute_paths(data: dict, folder: Path) -> dict:
    """The base file's relative file paths made absolute against its own folder."""
    from .loader import _absolute

    for section, key in _PATH_KEYS:
        part = data.get(section)
        if isinstance(part, dict) and isinstance(part.get(key), str) and part[key]:
            data = {**data, section: {**part, key: _absolute(part[key], folder)}}
    return data


def _describe(value) -> str:
    from .loader import _describe as describe

    return describe(value)
