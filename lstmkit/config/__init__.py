"""Run configs: the YAML schema v1, its loader and its error report.

``load_config(path, overrides, ...)`` returns a validated, resolved
:class:`LoadedConfig`; problems raise :class:`ConfigError` (exit code 3) or
:class:`UnavailableError` (exit code 4).  See ``docs/config.md``.

Importing this package is cheap; pydantic is imported on first use.
"""
from .errors import ConfigError, ConfigIssue, ExitCode, LstmkitError, RunFailed, RunInterrupted, UnavailableError

_LAZY = {
    "load_config": "loader", "LoadedConfig": "loader", "parse_override": "loader", "diff_configs": "loader",
    "resolved_yaml": "loader", "Config": "schema", "json_schema": "schema", "SCHEMA_VERSION": "schema",
    "load_yaml": "yamlio", "dump_yaml": "yamlio", "YAMLError": "yamlio", "starter_config": "reference",
    "task_issue": "loader", "check_memory": "memory", "MemoryEstimate": "memory", "run_warnings": "checks",
}

__all__ = ["ConfigError", "ConfigIssue", "ExitCode", "LstmkitError", "RunFailed", "RunInterrupted",
           "UnavailableError", *_LAZY]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lstmkit.config' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
