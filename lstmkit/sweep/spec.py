"""The sweep file: its schema, validation (``file:line:col``, exit code 3) and the resolved base config.

::

    base: quickstart.yaml            # a config file (relative to this file) or an inline config mapping
    set: {training.epochs: 5}        # dotted keys fixed for every trial (as --set would)
    params:                          # dotted config key -> a list (grid) or a distribution
      training.optimizer.lr: {loguniform: [1.0e-3, 3.0e-2]}
      model.hidden_size: [16, 32, 48]
    method: random                   # grid | random | tpe
    trials: 6                        # points to try (grid: default and at most the grid's size)
    seeds: [0, 1]                    # each point runs once per seed; reported as mean ± std
    metric: valid.loss               # default: the base config's training.early_stopping.metric (and mode)
    pruner: none                     # median | hyperband | none, or {name: median, startup_trials: 3, warmup_epochs: 1}

Distributions: ``{uniform: [low, high]}``, ``{loguniform: [low, high]}``, ``{int: [low, high]}``
(both ends included), ``{choice: [a, b, ...]}``; a plain list is a grid axis (``choice`` for
random and tpe).  Every value is checked against the config schema once on its own; a
combination the schema refuses is a failed trial, recorded with its reason.
"""
from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..config.errors import ConfigError, ConfigIssue

__all__ = ["SweepSpec", "Param", "load_sweep", "DISTRIBUTIONS", "METHODS", "PRUNERS"]

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
METHODS = ("grid", "random", "tpe")
PRUNERS = ("median", "hyperband", "none")
_KEYS = ("name", "base", "set", "params", "method", "trials", "seeds", "metric", "mode", "pruner", "sampler_seed",
         "parallel", "resources", "storage", "output")
_PRUNER_KEYS = ("name", "startup_trials", "warmup_epochs")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_][A-Za-z0-9_-]*)+$")


@dataclass(frozen=True)
class Param:
    """One searched config key: ``kind`` is ``grid`` (``values``) or a distribution (``low``/``high`` or ``values``)."""

    key: str
    kind: str
    values: tuple = ()
    low: float | None = None
    high: float | None = None

    def probes(self) -> list:
        """Values checked against the config schema at validation: every listed value, or both ends."""
        return list(self.values) if self.kind in ("grid", "choice") else [self.low, self.high]

    def describe(self) -> str:
        if self.kind in ("grid", "choice"):
            return f"{self.kind} {list(self.values)}"
        return f"{self.kind} [{self.low:g}, {self.high:g}]"


@dataclass
class SweepSpec:
    """A validated sweep file.  ``base``: the base config as written (file paths made absolute);
    ``fixed``: the ``set:`` overrides (``KEY=VALUE``); ``resolved``: both, validated and resolved."""

    name: str
    base: dict
    fixed: list[str]
    resolved: dict
    params: list[Param]
    method: str
    trials: int
    seeds: list[int]
    metric: str
    mode: str
    pruner: dict
    sampler_seed: int
    parallel: int | None
    resources: dict
    storage: str | None
    output: str | None
    source: str = "<sweep>"
    text: str = field(default="", repr=False)  # the sweep file as written (saved in the sweep folder)

    def grid_size(self) -> int:
        return math.prod(len(p.values) for p in self.params)


def _where(positions: dict, path: tuple) -> str | None:
    while path:
        if path in positions:
            return str(positions[path])
        path = path[:-1]
    return str(positions[()]) if () in positions else None


def _type(value) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _param(key: str, value, method: str, issue) -> Param | None:
    here = ("params", key)
    if not _DOTTED.match(key):
        issue(here, f"expected a dotted config key such as training.optimizer.lr, got {key!r}")
        return None
    if isinstance(value, list):
        if not value:
            issue(here, "an empty list: give at least one value")
            return None
        return Param(key, "grid" if method == "grid" else "choice", tuple(value))
    if not (isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS):
        issue(here, f"expected a list of values (grid) or one of {{{', '.join(d + ': ...' for d in DISTRIBUTIONS)}}}, "
                    f"got {_type(value)}")
        return None
    kind, args = next(iter(value.items()))
    at = here + (kind,)
    if kind == "choice":
        if not isinstance(args, list) or not args:
            issue(at, f"expected a non-empty list of choices, got {_type(args)}")
            return None
        if method == "grid":
            return Param(key, "grid", tuple(args))
        return Param(key, "choice", tuple(args))
    if method == "grid":
        issue(here, f"method grid takes lists of values; {kind} is a distribution (use method random or tpe, "
                    f"or list the values)")
        return None
    if not (isinstance(args, list) and len(args) == 2 and all(_number(a) for a in args)):
        issue(at, f"expected [low, high] (two finite numbers), got {_type(args)}")
        return None
    low, high = args
    if kind == "int" and not all(isinstance(a, int) for a in args):
        issue(at, f"expected two integers [low, high], got {args!r}")
        return None
    if low >= high:
        issue(at, f"expected low < high, got [{low!r}, {high!r}]")
        return None
    if kind == "loguniform" and low <= 0:
        issue(at, f"loguniform needs low > 0, got {low!r}")
        return None
    return Param(key, kind, (), low, high)


def _positive_int(value, issue, path: tuple, name: str, allow_null: bool = False) -> bool:
    if value is None and allow_null:
        return True
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        issue(path, f"expected a positive integer{' or null' if allow_null else ''} for {name}, got {_type(value)}")
        return False
    return True


def load_sweep(path: str | Path | None = None, *, text: str | None = None, source: str | None = None) -> SweepSpec:
    """Read and validate a sweep file (or ``text``); every problem at once as :class:`ConfigError` (exit 3)."""
    from ..config.yamlio import Position, YAMLError, load_yaml

    source = source or (str(path) if path is not None else "<sweep>")
    base_dir = Path(path).resolve().parent if path is not None else Path.cwd()
    try:
        if text is None:
            file = Path(path)
            if not file.is_file():
                what = "not a regular file" if file.exists() else "no such sweep file"
                raise ConfigError([ConfigIssue("", f"{what}: {file}")])
            text = file.read_text(encoding="utf-8")
        raw, positions = load_yaml(text, source)
    except YAMLError as exc:
        raise ConfigError([ConfigIssue("", exc.problem, str(Position(exc.source, exc.line, exc.column)))],
                          source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue("", f"cannot read the sweep file: {exc}")], source) from None
    issues: list[ConfigIssue] = []
    unavailable: list[ConfigIssue] = []  # an unknown cell, backend, task: exit 4, as for configs

    def issue(p: tuple, message: str, missing: bool = False) -> None:
        (unavailable if missing else issues).append(
            ConfigIssue(".".join(str(x) for x in p), message, _where(positions, p)))

    if not isinstance(raw, dict):
        raise ConfigError([ConfigIssue("", f"a sweep file is a mapping (base:, params:, method:, ...), got "
                                       f"{_type(raw)}", _where(positions, ()))], source)
    from .._suggest import suggest

    for key in raw:
        if key not in _KEYS:
            hint = suggest(str(key), _KEYS)
            issue((key,), f"unknown key{hint or ''} (valid: {', '.join(_KEYS)})")
    method = raw.get("method", "random")
    if method not in METHODS:
        issue(("method",), f"expected one of {', '.join(METHODS)}, got {_type(method)}")
        method = "random"
    params_raw = raw.get("params")
    params: list[Param] = []
    if not isinstance(params_raw, dict) or not params_raw:
        issue(("params",), f"expected a mapping of dotted config keys to a list or a distribution, "
                           f"got {_type(params_raw)}")
    else:
        params = [p for k, v in params_raw.items() if (p := _param(str(k), v, method, issue)) is not None]
    seeds = raw.get("seeds")
    if seeds is not None and not (isinstance(seeds, list) and seeds and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds) and len(set(seeds)) == len(seeds)):
        issue(("seeds",), f"expected a list of distinct non-negative integers such as [0, 1, 2], got {_type(seeds)}")
        seeds = None
    trials = raw.get("trials")
    _positive_int(trials, issue, ("trials",), "trials", allow_null=True) or (trials := None)
    parallel = raw.get("parallel")
    _positive_int(parallel, issue, ("parallel",), "parallel", allow_null=True) or (parallel := None)
    sampler_seed = raw.get("sampler_seed", 0)
    if isinstance(sampler_seed, bool) or not isinstance(sampler_seed, int) or sampler_seed < 0:
        issue(("sampler_seed",), f"expected a non-negative integer, got {_type(sampler_seed)}")
        sampler_seed = 0
    pruner = _pruner(raw.get("pruner", "none"), issue)
    resources = raw.get("resources") or {}
    if not isinstance(resources, dict) or any(k not in ("cpus", "gpus") for k in resources):
        issue(("resources",), f"expected {{cpus: N, gpus: N}}, got {_type(resources)}")
        resources = {}
    res = {"cpus": resources.get("cpus", 1), "gpus": resources.get("gpus", 0)}
    if not _number(res["cpus"]) or res["cpus"] <= 0:
        issue(("resources", "cpus"), f"expected a positive number, got {_type(res['cpus'])}")
    if not _number(res["gpus"]) or res["gpus"] < 0:
        issue(("resources", "gpus"), f"expected a number >= 0, got {_type(res['gpus'])}")
    for key in ("storage", "output", "name", "metric"):
        if raw.get(key) is not None and not (isinstance(raw[key], str) and raw[key]):
            issue((key,), f"expected a non-empty string, got {_type(raw[key])}")
    mode = raw.get("mode")
    if mode is not None and mode not in ("min", "max"):
        issue(("mode",), f"expected min or max, got {_type(mode)}")
    base = _base(raw.get("base"), positions, base_dir, source, issue)
    fixed: list[str] = []
    if base is not None and not issues:
        fixed = _fixed(base, raw.get("set"), issue)
    if base is not None and not issues:
        _probe(base, fixed, params, raw.get("metric"), issue)
    if issues:
        raise ConfigError(issues, source)
    if unavailable:
        from ..config.errors import UnavailableError

        raise UnavailableError([str(i) for i in unavailable], source)

    resolved = resolve(base, fixed)
    es = resolved["training"].get("early_stopping") or {}
    metric = raw.get("metric") or es.get("metric", "valid.loss")
    if mode is None and metric != es.get("metric", "valid.loss") and not metric.endswith(".loss"):
        raise ConfigError([ConfigIssue("mode", f"give mode: min or max for metric {metric} (the default is the "
                                       f"base config's, which monitors {es.get('metric', 'valid.loss')})",
                                       _where(positions, ("metric",)))], source)
    mode = mode or (es.get("mode", "min") if metric == es.get("metric", "valid.loss") else "min")
    if trials is None:
        trials = math.prod(len(p.values) for p in params) if method == "grid" else 10
    if method == "grid":
        trials = min(trials, math.prod(len(p.values) for p in params))
    storage = raw.get("storage")
    if storage is not None:
        storage = str((base_dir / Path(storage).expanduser()).resolve())
    output = raw.get("output")
    if output is not None:
        output = str((base_dir / Path(output).expanduser()).resolve())
    name = raw.get("name") or f"{resolved['name']}-sweep"
    return SweepSpec(name=re.sub(r"[^A-Za-z0-9._-]+", "-", name)[:100], base=base, fixed=fixed, resolved=resolved,
                     params=params, method=method, trials=trials,
                     seeds=list(seeds) if seeds else [int(resolved["seed"])], metric=metric, mode=mode,
                     pruner=pruner, sampler_seed=sampler_seed, parallel=parallel, resources=res, storage=storage,
                     output=output, source=source, text=text)


def _pruner(value, issue) -> dict:
    out = {"name": "none", "startup_trials": 3, "warmup_epochs": 1}
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        issue(("pruner",), f"expected one of {', '.join(PRUNERS)} or {{name: ..., startup_trials: N, "
                           f"warmup_epochs: N}}, got {_type(value)}")
        return out
    for key, v in value.items():
        if key not in _PRUNER_KEYS:
            issue(("pruner", key), f"unknown key (valid: {', '.join(_PRUNER_KEYS)})")
        elif key == "name" and v not in PRUNERS:
            issue(("pruner", key) if len(value) > 1 else ("pruner",), f"expected one of {', '.join(PRUNERS)}, "
                                                                      f"got {_type(v)}")
        elif key != "name" and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            issue(("pruner", key), f"expected a non-negative integer, got {_type(v)}")
        else:
            out[key] = v
    return out


def _base(value, positions: dict, base_dir: Path, source: str, issue) -> dict | None:
    """The base config as written, validated (its own errors propagate, at their lines), paths made absolute."""
    from ..config.loader import _PATH_KEYS, _absolute, load_config, load_config_data
    from ..config.yamlio import load_yaml_file

    if isinstance(value, str) and value:
        path = (base_dir / Path(value).expanduser())
        if not path.is_file():
            issue(("base",), f"no such config file: {path}")
            return None
        load_config(path)
        data, where = load_yaml_file(path)[0] or {}, path.resolve().parent
    elif isinstance(value, dict):
        inner = {k[1:]: v for k, v in positions.items() if k[:1] == ("base",)}
        load_config_data(value, inner, base_dir, source=source)
        data, where = copy.deepcopy(value), base_dir
    else:
        issue(("base",), f"expected a config file path or an inline config mapping, got {_type(value)}")
        return None
    for section, key in _PATH_KEYS:  # trials run from a copy in the sweep folder: no relative paths
        node = data.get(section)
        if isinstance(node, dict) and node.get(key) and section != "outputs":
            node[key] = _absolute(node[key], where)
    data.setdefault("outputs", {})
    if isinstance(data["outputs"], dict):
        data["outputs"]["dir"] = None
    return data


def resolve(base: dict, overrides: list[str], check_files: bool = True) -> dict:
    """``base`` with ``overrides`` applied, validated and resolved (as ``lstmkit run base --set ...``)."""
    from ..config.loader import load_config_data

    return load_config_data(copy.deepcopy(base), {}, Path.cwd(), overrides=overrides, check_files=check_files).data


def _override(key: str, value) -> str:
    from ..config.yamlio import dump_yaml

    return f"{key}={dump_yaml(value, flow=True).splitlines()[0]}"


def _fixed(base: dict, fixed, issue) -> list[str]:
    """``set:`` as overrides (each checked with the base, at its line)."""
    if fixed is None:
        return []
    if not isinstance(fixed, dict):
        issue(("set",), f"expected a mapping of dotted config keys to values, got {_type(fixed)}")
        return []
    overrides = []
    for key, value in fixed.items():
        if not _DOTTED.match(str(key)):
            issue(("set", key), f"expected a dotted config key such as training.epochs, got {key!r}")
            continue
        overrides.append(_override(key, value))
        _check(base, [], overrides[-1], ("set", key), issue)
    return overrides


def _check(base: dict, fixed: list[str], override: str, path: tuple, issue) -> None:
    """``override`` applied to ``base`` (after ``fixed``); the schema's complaints at ``path`` of the sweep file."""
    from ..config.errors import UnavailableError

    try:
        resolve(base, fixed + [override], check_files=False)
    except ConfigError as exc:
        for i in exc.issues:
            issue(path, f"{override}: {i.message}" if i.key else i.message)
    except UnavailableError as exc:
        for problem in exc.problems:
            issue(path, problem.removeprefix(f"--set {override}: "), missing=True)


def _probe(base: dict, fixed: list[str], params: list[Param], metric, issue) -> None:
    """Each value on its own, and the metric, against the config schema: problems at the sweep file's keys."""
    for p in params:
        for value in p.probes():
            _check(base, fixed, _override(p.key, int(value) if p.kind == "int" else value), ("params", p.key), issue)
    if metric is not None:
        _check(base, fixed, f"training.early_stopping.metric={metric}", ("metric",), issue)


def grid_points(spec: SweepSpec) -> list[dict]:
    """Every point of a grid sweep, in the file's order (``--dry-run`` lists them)."""
    keys = [p.key for p in spec.params]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(p.values for p in spec.params))]
