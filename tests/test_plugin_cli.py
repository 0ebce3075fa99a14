"""``lstmkit tasks``, and the tables of ``lstmkit backends`` (the other listings: test_registry.py)."""
from __future__ import annotations

import json

import pydantic
import pytest
from click.testing import CliRunner

import lstmkit
from lstmkit.cli import make_cli
from lstmkit.registry import available_backends
from lstmkit.specs import TaskSpec
from lstmkit.testing import registered_plugin

from test_registry import fresh  # noqa: F401  (fixture)


def cli(*args):
    result = CliRunner().invoke(make_cli(), list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


class ToyOptions(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    path: str = pydantic.Field(description="The file to read.")
    window: int = pydantic.Field(8, ge=1, description="Steps per example.")
    columns: list[str] | None = pydantic.Field(None, description="Columns to use; null: all.")


class ToyTasks:
    @lstmkit.hookimpl
    def register_tasks(self, register):
        register(TaskSpec("toy_task", lambda options, **kw: None, ToyOptions, description="A toy task.",
                          metrics=("mse", "mae")))
        register(TaskSpec("bare_task", lambda options, **kw: None, description="No options."))


def test_tasks_lists_builtin_tasks_with_their_options(fresh):
    fresh()
    rows = {r["name"]: r for r in json.loads(cli("tasks", "--json"))}
    assert {"sine", "adding", "copy", "char_lm", "csv", "sequence_classification"} <= set(rows)
    sine = rows["sine"]
    assert sine["provider"].startswith("lstmkit ") and sine["description"] and sine["metrics"]
    options = {o["name"]: o for o in sine["options"]}
    assert options and all(o["description"] for o in options.values())
    assert all(set(o) == {"name", "type", "required", "default", "description"} for o in options.values())


def test_tasks_shows_a_plugin_task_its_metrics_and_options(fresh):
    fresh()
    with registered_plugin(ToyTasks(), "toy-tasks"):
        rows = {r["name"]: r for r in json.loads(cli("tasks", "--json"))}
        text = cli("tasks")
    toy = rows["toy_task"]
    assert (toy["provider"], toy["description"], toy["metrics"]) == ("toy-tasks local", "A toy task.", ["mse", "mae"])
    assert toy["options"] == [
        {"name": "path", "type": "str", "required": True, "default": None, "description": "The file to read."},
        {"name": "window", "type": "int", "required": False, "default": 8, "description": "Steps per example."},
        {"name": "columns", "type": "list[str] | None", "required": False, "default": None,
         "description": "Columns to use; null: all."},
    ]
    assert rows["bare_task"]["options"] == []
    block = text.split("toy_task  (toy-tasks local)\n")[1].split("\n\n")[0].splitlines()
    assert block[:3] == ["  A toy task.", "  metrics: mse, mae", "  options:"]
    assert [line.split()[:2] for line in block[3:6]] == [["path", "str"], ["window", "int"], ["columns", "list[str]"]]
    assert "required" in block[3] and "default 8" in block[4] and "default null" in block[5]
    assert len({line.index(" str ") if " str " in line else line.index(" int ") if " int " in line
                else line.index(" list[str]") for line in block[3:6]}) == 1  # the type column lines up
    assert "bare_task  (toy-tasks local)\n  No options.\n  options: none" in text


def test_backends_table_marks_auto_and_lines_up(fresh):
    fresh()
    lines = cli("backends").splitlines()
    assert lines[0].startswith(f"{available_backends()[0]} (auto)")
    assert len({line.index("priority=") for line in lines}) == 1


@pytest.mark.parametrize("command", ["plugins", "cells", "backends", "tasks"])
def test_listing_commands_have_help(command):
    result = CliRunner().invoke(make_cli(), [command, "--help"])
    assert result.exit_code == 0 and "--json" in result.output
