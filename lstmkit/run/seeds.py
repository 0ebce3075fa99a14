"""``lstmkit run CONFIG --seeds 0,1,2``: one config trained once per seed, with a mean ± std summary.

Each seed is an ordinary run (everything :func:`~lstmkit.run.session.run` writes) in its own folder
``<group>/seed-<N>``; the group folder is ``-o DIR``, else ``outputs.dir``, else ``runs/<name>/<timestamp>``.  Beside them,
``seeds.json`` records every seed's status, best monitored value and test metrics, and their mean and
standard deviation (sample standard deviation, ``n - 1``, over the seeds that finished; 0 for one seed).
A seed that fails (e.g. a non-finite loss) is recorded and the others still run; Ctrl-C stops them all.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Callable, Sequence

from .._atomic import atomic_write_json
from ..config.errors import ExitCode, LstmkitError, RunFailed
from .folder import default_run_dir, make_dir, writing

__all__ = ["parse_seeds", "run_seeds", "seed_summary", "SUMMARY"]

SUMMARY = "seeds.json"
Echo = Callable[[str], None]


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` → ``[0, 1, 2]``: distinct whole numbers ≥ 0, comma-separated."""
    seeds = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise LstmkitError(f"--seeds {text!r}: expected distinct whole numbers >= 0 separated by commas "
                               f"(e.g. 0,1,2), got {part!r}", ExitCode.USAGE)
        if int(part) in seeds:
            raise LstmkitError(f"--seeds {text!r}: seed {int(part)} is given twice", ExitCode.USAGE)
        seeds.append(int(part))
    return seeds


def run_seeds(config_path: str, seeds: Sequence[int], overrides: Sequence[str] = (), *, output: str | None = None,
              echo: Echo = print, **options) -> int:
    """Run ``config_path`` once per seed (``options``: as :func:`~lstmkit.run.session.run` takes them, but
    ``seed``, ``output`` and ``resume``); returns 0 when every seed finished, else 1 (``RUN_FAILED``)."""
    from ..config.loader import load_config
    from .session import run

    loaded = load_config(config_path, overrides, backend=options.get("backend"), output_dir=output)
    if options.get("dry_run") or options.get("print_config"):
        code = run(config_path, overrides, seed=seeds[0], output=output and str(Path(output) / f"seed-{seeds[0]}"),
                   echo=echo, **options)
        if options.get("dry_run"):
            echo(f"seeds: {', '.join(map(str, seeds))}, each in {output or 'runs/<name>/<timestamp>'}/seed-<N>")
        return code
    output = output or loaded.config.outputs.dir  # -o, else the file's outputs.dir (absolute by now)
    if output is None:
        group = default_run_dir(loaded.config.name, create=True)
    else:
        group = Path(output)
        if group.exists() and not group.is_dir():
            raise LstmkitError(f"output folder {group} is a file", ExitCode.USAGE)
        if (group / SUMMARY).exists() and not options.get("overwrite"):
            raise LstmkitError(f"output folder {group} already holds a seeds run ({SUMMARY}); add --overwrite to "
                               f"replace it, or choose another folder with -o DIR", ExitCode.USAGE)
        make_dir(group)
    rows = []
    for n, seed in enumerate(seeds, 1):
        folder = group / f"seed-{seed}"
        echo(f"== seed {seed} ({n} of {len(seeds)}): {folder}")
        try:
            run(config_path, overrides, seed=seed, output=str(folder), echo=echo, **options)
        except RunFailed as exc:  # recorded; the other seeds still run
            echo(f"seed {seed} failed: {exc}")
        rows.append(_row(seed, folder))
        _write(group, loaded.config.name, rows)
    summary = _write(group, loaded.config.name, rows)
    for line in summary_lines(summary):
        echo(line)
    echo(f"summary: {group / SUMMARY}")
    return ExitCode.OK if all(r["status"] in ("completed", "stopped_early") for r in rows) else ExitCode.RUN_FAILED


def _row(seed: int, folder: Path) -> dict:
    try:
        done = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"seed": seed, "dir": str(folder), "status": "failed", "best": None, "test": None}
    best = done.get("best") or {}
    return {"seed": seed, "dir": str(folder), "status": done.get("status"), "best": best,
            "test": {k: v for k, v in (done.get("test") or {}).items() if _number(v)} or None,
            "baseline": (done.get("baseline") or {}).get("test")}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def seed_summary(rows: list[dict]) -> dict:
    """Mean and standard deviation over the finished seeds: ``{"best": {metric: {...}}, "test": {...},
    "baseline": {...}}`` (baseline: the naive predictor's test metrics), each ``{"mean", "std", "n"}``."""
    done = [r for r in rows if r["status"] in ("completed", "stopped_early")]
    out: dict = {"best": {}, "test": {}, "baseline": {}}
    metric = next((r["best"].get("metric") for r in done if r.get("best")), None)
    values = [r["best"]["value"] for r in done if r.get("best") and _number(r["best"].get("value"))]
    if metric and values:
        out["best"][metric] = _stats(values)
    keys = list(dict.fromkeys(k for r in done for k in (r.get("test") or {})))
    for key in keys:
        values = [r["test"][key] for r in done if r.get("test") and _number(r["test"].get(key))]
        if values:
            out["test"][key] = _stats(values)
        naive = [r["baseline"][key] for r in done if r.get("baseline") and _number(r["baseline"].get(key))]
        if naive:  # synthetic tasks draw their data from the seed: the baseline differs from seed to seed
            out["baseline"][key] = _stats(naive)
    return out


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def _write(group: Path, name: str, rows: list[dict]) -> dict:
    summary = {"name": name, "seeds": [r["seed"] for r in rows], "runs": rows, **seed_summary(rows)}
    path = group / SUMMARY
    with writing(path):
        atomic_write_json(path, summary)
    return summary


def summary_lines(summary: dict) -> list[str]:
    """``seeds 0, 1, 2: best valid.loss 0.0123 ± 0.0011 (n=3)`` and one line per test metric."""
    runs = summary["runs"]
    failed = [str(r["seed"]) for r in runs if r["status"] not in ("completed", "stopped_early")]
    lines = [f"seeds {', '.join(str(r['seed']) for r in runs)}: "
             f"{len(runs) - len(failed)} finished" + (f", not finished: {', '.join(failed)}" if failed else "")]
    naive = summary.get("baseline") or {}
    for kind in ("best", "test"):
        for key, s in summary[kind].items():
            base = naive.get(key) if kind == "test" else None
            lines.append(f"  {kind} {key:<18} {s['mean']:.6g} ± {s['std']:.2g} (n={s['n']})"
                         + (f"   baseline {base['mean']:.6g} ± {base['std']:.2g}" if base else ""))
    return lines
