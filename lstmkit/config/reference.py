"""The config reference, generated from the schema and the plugins' options models.

``lstmkit config init`` writes a starter config annotated from these
descriptions, and ``docs/config.md`` embeds :func:`markdown_reference`'s
tables (a test checks they are up to date), so the documentation cannot drift
from the code.
"""
from __future__ import annotations

import json
import textwrap
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from . import schema
from .yamlio import dump_yaml

__all__ = ["starter_config", "markdown_reference", "type_name", "options_table"]

# Sections of the core schema, in file order, with the union alternatives shown in docs.
_UNIONS = {
    ("training", "optimizer"): (schema.SGDConfig, schema.AdamConfig, schema.AdamWConfig),
    ("training", "scheduler"): (schema.NoSchedulerConfig, schema.StepSchedulerConfig,
                                schema.CosineSchedulerConfig, schema.PlateauSchedulerConfig),
}


def type_name(annotation) -> str:
    """A reader's name for a field's type: ``int``, ``float or null``, ``"min" or "max"``, ``list of string``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        if type(None) in args:
            names.append("null")
        return " or ".join(dict.fromkeys(names))
    if origin is typing.Literal:
        return " or ".join(json.dumps(a) for a in args)
    if origin in (list, typing.List):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is tuple:
        return f"[{', '.join(type_name(a) for a in args)}]"
    if origin is dict or annotation is dict:
        return "mapping"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "mapping"
        return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(annotation, annotation.__name__)
    return str(annotation)


def _default(info) -> Any:
    if info.default_factory is not None:
        value = info.default_factory()
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    if info.default is PydanticUndefined:
        return PydanticUndefined
    return info.default.model_dump(mode="json") if isinstance(info.default, BaseModel) else info.default


def _yaml_value(value) -> str:
    """``value`` as it would be written after ``key: `` (flow style for lists and mappings)."""
    if isinstance(value, tuple):
        value = list(value)
    return dump_yaml(value, flow=True).strip().removesuffix("\n...").removesuffix("...").strip()


def _nested_model(annotation) -> type[BaseModel] | None:
    for a in typing.get_args(annotation) + (annotation,):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _constraints(info) -> str:
    parts = []
    for item in info.metadata:
        for attr, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{symbol} {value}")
    return ", ".join(parts)


def options_table(model: type[BaseModel] | None, prefix: str = "") -> str:
    """A markdown table of a pydantic model's fields: key, type, default, description."""
    if model is None:
        return "_No options._\n"
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        default = _default(info)
        shown = "**required**" if default is PydanticUndefined else f"`{_yaml_value(default)}`"
        kind = type_name(info.annotation)
        limits = _constraints(info)
        if limits:
            kind += f" ({limits})"
        description = (info.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{prefix}{name}` | {kind} | {shown} | {description} |")
    return "\n".join(rows) + "\n"


def _section_rows(model: type[BaseModel], path: tuple) -> list[str]:
    rows = []
    for name, info in model.model_fields.items():
        key = path + (name,)
        if key in _UNIONS:
            rows.append(f"| `{'.'.join(key)}` | mapping | see below | {info.description} |")
            continue
        nested = _nested_model(info.annotation)
        if nested is not None:
            rows.append(f"| `{'.'.join(key)}` | {type_name(info.annotation)} | | {info.description} |")
            rows.extend(_section_rows(nested, key))
            continue
        default = _default(info)
        shown = "**required**" if default is PydanticUndefined else f"`{_yaml_value(default)}`"
        kind = type_name(info.annotation)
        limits = _constraints(info)
        if limits:
            kind += f" ({limits})"
        description = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{'.'.join(key)}` | {kind} | {shown} | {description} |")
    return rows


def markdown_reference(section: str) -> str:
    """Generated markdown for one part of ``docs/config.md``.

    ``section``: a top-level key of the schema (``model``, ``training``, ...),
    ``top`` (version, name, seed), ``optimizer``, ``scheduler``,
    ``task:<name>`` (a task's options) or ``tasks`` (the list of tasks).
    """
    from ..registry import get_registry

    header = ["| key | type | default | description |", "|---|---|---|---|"]
    if section == "top":
        rows = []
        for name in ("version", "name", "seed"):
            info = schema.Config.model_fields[name]
            kind = type_name(info.annotation)
            limits = _constraints(info)
            rows.append(f"| `{name}` | {kind}{f' ({limits})' if limits else ''} | `{_yaml_value(_default(info))}` | "
                        f"{info.description} |")
        return "\n".join(header + rows) + "\n"
    if section in ("optimizer", "scheduler"):
        out = []
        for model in _UNIONS[("training", section)]:
            name = model.model_fields["name"].default
            out.append(f"`{section}: {{name: {name}}}` — {model.__doc__.strip().splitlines()[0]}\n")
            out.append(options_table(model, f"training.{section}."))
        return "\n".join(out)
    if section == "tasks":
        registry = get_registry()
        rows = ["| task | description | metrics |", "|---|---|---|"]
        for spec in sorted(registry.specs["task"].values(), key=lambda s: s.name):
            metrics = ", ".join(f"`valid.{m}`" for m in spec.metrics) or "—"
            rows.append(f"| `{spec.name}` | {spec.description} | {metrics} |")
        return "\n".join(rows) + "\n"
    if section.startswith("task:"):
        spec = get_registry().task_spec(section.split(":", 1)[1])
        return options_table(spec.options_model, "task.options.")
    model = schema.Config.model_fields[section].annotation
    return "\n".join(header + _section_rows(model, (section,))) + "\n"


# -- lstmkit config init -----------------------------------------------------------------
def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(text, width=96 - len(indent))]


def _render(model: type[BaseModel], values: dict, indent: str, path: tuple) -> list[str]:
    lines = []
    for name, info in model.model_fields.items():
        key = path + (name,)
        value = values.get(name)
        if info.description:
            lines.extend(_comment(info.description, indent))
        if key in _UNIONS:
            chosen = next(m for m in _UNIONS[key] if m.model_fields["name"].default == value.get("name"))
            lines.append(f"{indent}{name}:")
            lines.extend(_render(chosen, value, indent + "  ", key))
            continue
        nested = _nested_model(info.annotation)
        if nested is not None and isinstance(value, dict):
            lines.append(f"{indent}{name}:")
            lines.extend(_render(nested, value, indent + "  ", key))
            continue
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{name}:")
            for k, v in value.items():
                lines.append(f"{indent}  {k}: {_yaml_value(v)}")
            continue
        lines.append(f"{indent}{name}: {_yaml_value(value)}")
    return lines


def starter_config(cell: str = "lstm", task: str = "sine") -> str:
    """An annotated config for ``task`` with ``cell``: every key, its default and what it means."""
    from ..registry import get_registry

    registry = get_registry()
    cell_spec = registry.cell_spec(cell)
    task_spec = registry.task_spec(task)
    values = schema.Config.model_validate({"task": {"type": task}, "model": {"cell": cell}}).model_dump(mode="json")
    values["name"] = f"{task}-{cell}".replace("_", "-")
    task_options = {}
    if task_spec.options_model is not None:
        for name, info in task_spec.options_model.model_fields.items():
            default = _default(info)
            task_options[name] = None if default is PydanticUndefined else default
    values["task"]["options"] = task_options
    if cell_spec.options_model is not None:
        values["model"]["cell_options"] = {
            n: (None if _default(i) is PydanticUndefined else _default(i))
            for n, i in cell_spec.options_model.model_fields.items()}
    out = [f"# lstmkit run config (schema version {schema.SCHEMA_VERSION}): task {task!r}, cell {cell!r}.",
           "# Written by `lstmkit config init`. Every value below is the default except name, model.cell and",
           "# task.type; delete what you do not change. Reference: docs/config.md; check a config with",
           "# `lstmkit config validate FILE`; train with `lstmkit run FILE`.", ""]
    for section, info in schema.Config.model_fields.items():
        value = values[section]
        if section == "task":
            out.extend(_comment(f"{info.description} {task_spec.description}", ""))
            out.append("task:")
            out.append(f"  type: {task}")
            if task_options:
                out.append("  # Options of this task (see `lstmkit config schema` / docs/config.md):")
                out.append("  options:")
                for name, field in task_spec.options_model.model_fields.items():
                    if field.description:
                        out.extend(_comment(field.description, "    "))
                    out.append(f"    {name}: {_yaml_value(task_options[name])}")
            else:
                out.append("  options: {}")
            for split in ("train", "valid", "test"):
                out.extend(_comment(schema.TaskConfig.model_fields[split].description, "  "))
                out.append(f"  {split}: null")
            out.append("")
            continue
        if isinstance(value, dict):
            out.extend(_comment(info.description, ""))
            out.append(f"{section}:")
            out.extend(_render(info.annotation, value, "  ", (section,)))
            out.append("")
        else:
            out.extend(_comment(info.description, ""))
            out.append(f"{section}: {_yaml_value(value)}")
    return "\n".join(out).rstrip("\n") + "\n"


# -- regenerating docs/config.md ------------------------------------------------------------
_BLOCK = r"(<!-- generated: (?P<name>[\w:]+) -->\n)(?P<body>.*?)(<!-- end generated -->)"


def regenerate(path) -> bool:
    """Rewrite the generated blocks of a markdown file; ``True`` if anything changed."""
    import re
    from pathlib import Path

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    new = re.sub(_BLOCK, lambda m: m.group(1) + markdown_reference(m.group("name")) + m.group(4), text, flags=re.S)
    if new != text:
        from .._atomic import atomic_write_text

        atomic_write_text(path, new)
    return new != text


if __name__ == "__main__":  # python -m lstmkit.config.reference docs/config.md
    import sys

    for name in sys.argv[1:]:
        print(f"{name}: {'updated' if regenerate(name) else 'up to date'}")
