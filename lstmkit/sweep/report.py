"""What a sweep writes besides its run folders (``trials.*``, ``summary.md``, ``best.yaml``, ``sweep.png``),
and ``lstmkit compare`` (runs side by side: the config keys that differ, the final metrics, their curves)."""
from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path
from typing import Callable

from .._atomic import atomic_open, atomic_write_text
from ..config.errors import ExitCode, LstmkitError

__all__ = ["write_table", "write_reports", "rank_points", "best_config", "compare_runs"]

Echo = Callable[[str], None]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def write_table(folder, rows: list[dict]) -> None:
    """``trials.jsonl`` (everything, one JSON object a line) and ``trials.csv`` (flat columns), atomically."""
    rows = sorted(rows, key=lambda r: (r["point"], r["seed"]))
    atomic_write_text(folder.trials_jsonl, "".join(json.dumps(r, allow_nan=True) + "\n" for r in rows))
    params = list(dict.fromkeys(k for r in rows for k in r["params"]))
    finals = sorted({k for r in rows for k in (r.get("final") or {}) if k not in ("step", "epoch")})
    head = (["trial", "point", "seed"] + params + ["status", f"best {rows[0]['metric']}" if rows else "best"]
            + [f"final {k}" for k in finals]
            + ["epochs", "duration_s", "node", "run_dir", "reason"])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(head)
    for r in rows:
        final = r.get("final") or {}
        writer.writerow([r["trial"], r["point"], r["seed"]] + [r["params"].get(k) for k in params]
                        + [r["status"], _fmt(r.get("value"))] + [_fmt(final.get(k)) for k in finals]
                        + [r.get("epochs"), r.get("duration_s"), r.get("node"), r.get("run_dir"),
                           (r.get("reason") or "").splitlines()[0] if r.get("reason") else ""])
    atomic_write_text(folder.trials_csv, out.getvalue())


def rank_points(spec, rows: list[dict]) -> list[dict]:
    """One entry per point: params, mean and std of the metric over its completed seeds, status; best first."""
    points: dict[int, dict] = {}
    for r in sorted(rows, key=lambda r: (r["point"], r["seed"])):
        p = points.setdefault(r["point"], {"point": r["point"], "params": r["params"], "values": [], "statuses": [],
                                           "reasons": []})
        p["statuses"].append(r["status"])
        if r["status"] == "completed" and r.get("value") is not None:
            p["values"].append(r["value"])
        elif r.get("reason"):
            p["reasons"].append(f"{r['trial']}: {r['reason'].splitlines()[0]}")
    for p in points.values():
        v = p["values"]
        p["mean"] = statistics.fmean(v) if v else None
        p["std"] = statistics.stdev(v) if len(v) > 1 else 0.0 if v else None
        p["status"] = ("completed" if v and len(v) == len(p["statuses"]) and len(v) == len(spec.seeds) else
                       "pruned" if "pruned" in p["statuses"] else "failed" if "failed" in p["statuses"] and not v
                       else "partial")
    sign = 1 if spec.mode == "min" else -1
    order = {"completed": 0, "partial": 1, "pruned": 2, "failed": 3}
    return sorted(points.values(), key=lambda p: (order[p["status"]], sign * p["mean"] if p["mean"] is not None
                                                  else math.inf, p["point"]))


def best_config(spec, params: dict) -> dict:
    """The base config with the sweep's ``set:``, ``params`` and first seed: a config ``lstmkit run`` takes."""
    from ..config.yamlio import dump_yaml
    from .spec import resolve

    overrides = [f"{k}={dump_yaml(v, flow=True).splitlines()[0]}" for k, v in params.items()]
    data = resolve(spec.base, spec.fixed + overrides + [f"seed={spec.seeds[0]}", f"name={spec.resolved['name']}-best"],
                   check_files=False)
    data["outputs"]["dir"] = None
    return data


def write_reports(folder, spec, rows: list[dict], points=None) -> str | None:
    """``summary.md``, ``best.yaml`` and ``sweep.png``; returns a note when the plot cannot be drawn."""
    from ..config.loader import resolved_yaml

    ranked = rank_points(spec, rows)
    keys = [p.key for p in spec.params]
    lines = [f"# Sweep {spec.name}", "",
             f"{spec.method} search, {len(ranked)} point(s) x seeds {spec.seeds}; metric `{spec.metric}` "
             f"({'lower' if spec.mode == 'min' else 'higher'} is better), the best over each run's evaluations, "
             f"mean ± std over seeds.", "",
             "| rank | point | " + " | ".join(keys) + f" | {spec.metric} | seeds | status |",
             "|" + "---|" * (len(keys) + 5)]
    for i, p in enumerate(ranked, 1):
        score = "" if p["mean"] is None else f"{p['mean']:.6g} ± {p['std']:.2g}"
        lines.append(f"| {i if p['status'] in ('completed', 'partial') else ''} | {p['point']} | "
                     + " | ".join(_fmt(p["params"].get(k)) for k in keys)
                     + f" | {score} | {len(p['values'])}/{len(spec.seeds)} | {p['status']} |")
    problems = [r for p in ranked for r in p["reasons"]]
    if problems:
        lines += ["", "## Trials that did not complete", ""] + [f"- {r}" for r in problems]
    best = next((p for p in ranked if p["status"] == "completed"), None)
    if best is not None:
        lines += ["", f"Best: point {best['point']} — `lstmkit run {folder.best_yaml}`"]
        text = resolved_yaml(best_config(spec, best["params"]),
                             f"The best point of sweep {spec.name}: {spec.metric} {best['mean']:.6g} ± "
                             f"{best['std']:.2g} over seeds {spec.seeds}\n"
                             + "".join(f"{k}: {best['params'][k]!r}\n" for k in keys)
                             + f"Run it: lstmkit run {folder.best_yaml.name}")
        atomic_write_text(folder.best_yaml, text)
    atomic_write_text(folder.summary_md, "\n".join(lines) + "\n")
    return _plot(folder.sweep_png, spec, rows)


def _plot(path: Path, spec, rows: list[dict]) -> str | None:
    """The metric against each parameter: one panel per parameter, one dot per trial."""
    done = [r for r in rows if r["status"] == "completed" and r.get("value") is not None]
    if not done:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return 'note: sweep.png not drawn: matplotlib is not installed (pip install "lstmkit[plot]")'
    fig, axes = plt.subplots(1, len(spec.params), figsize=(4 * len(spec.params), 3.4), squeeze=False)
    for ax, p in zip(axes[0], spec.params):
        xs = [r["params"][p.key] for r in done]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        if not numeric:
            labels = list(dict.fromkeys(str(x) for x in xs))
            xs = [labels.index(str(x)) for x in xs]
            ax.set_xticks(range(len(labels)), labels)
        ax.scatter(xs, [r["value"] for r in done], s=18, alpha=0.8)
        if p.kind == "loguniform" or (numeric and p.kind in ("grid", "choice") and min(xs) > 0
                                      and max(xs) / min(xs) >= 100):
            ax.set_xscale("log")
        ax.set_xlabel(p.key)
        ax.set_ylabel(spec.metric)
        ax.grid(alpha=0.3)
    fig.suptitle(f"sweep {spec.name}: {spec.metric} ({spec.mode}) per trial")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)
    return None


# -- compare ------------------------------------------------------------------------------------------------
def _flatten(data, prefix: str = "") -> dict:
    out = {}
    for k, v in (data or {}).items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _run_dirs(paths: list[str]) -> list[Path]:
    from ..run.folder import is_run_folder

    out = []
    for p in map(Path, paths):
        if (p / "sweep.json").is_file():  # its trials, wherever they were written (storage:)
            from .driver import SweepFolder, read_rows

            rows = sorted(read_rows(SweepFolder(p)), key=lambda r: (r["point"], r["seed"]))
            out += [Path(r["run_dir"]) for r in rows if r.get("run_dir") and is_run_folder(Path(r["run_dir"]))]
        elif is_run_folder(p):
            out.append(p)
        else:
            raise LstmkitError(f"{p} is neither a run folder (no meta.json or checkpoints/last.npz) nor a sweep "
                               f"folder (no sweep.json)", ExitCode.USAGE)
    if not out:
        raise LstmkitError("no run folders to compare", ExitCode.USAGE)
    return out


def compare_runs(paths: list[str], plot: str | None = None, metric: str | None = None, echo: Echo = print) -> int:
    """``lstmkit compare``: a table of the config keys that differ and the final metrics; ``plot``: their curves."""
    from ..config.yamlio import YAMLError, load_yaml_file
    from ..run import read_metrics

    runs = []
    for d in _run_dirs(paths):
        try:
            config = load_yaml_file(d / "config.yaml")[0] if (d / "config.yaml").is_file() else {}
        except YAMLError:
            config = {}
        try:
            results = json.loads((d / "results.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            results = {}
        runs.append({"dir": d, "config": _flatten(config), "results": results if isinstance(results, dict) else {}})
    keys = list(dict.fromkeys(k for r in runs for k in r["config"]))
    differ = [k for k in keys if k != "outputs.dir" and len({json.dumps(r["config"].get(k), sort_keys=True)
                                                               for r in runs}) > 1]
    finals = list(dict.fromkeys(k for r in runs for k in (r["results"].get("last_eval") or {})
                                if k not in ("step", "epoch")))
    head = ["run"] + differ + ["status", "best"] + finals
    table = [head]
    for r in runs:
        res = r["results"]
        best = res.get("best") or {}
        table.append([_label(r["dir"], len(runs))] + [_fmt(r["config"].get(k)) for k in differ]
                     + [str(res.get("status", "?")),
                        f"{best.get('metric')}={_fmt(best.get('value'))}" if best.get("value") is not None else ""]
                     + [_fmt((res.get("last_eval") or {}).get(k)) for k in finals])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    if not differ:
        echo("(the configs are the same apart from outputs.dir)")
    if plot:
        monitored = metric or next((r["results"].get("best", {}).get("metric") for r in runs
                                    if r["results"].get("best")), "valid.loss")
        _plot_curves(Path(plot), runs, monitored, read_metrics)
        echo(f"curves of {monitored}: {plot}")
    return ExitCode.OK


def _label(path: Path, n: int) -> str:
    return path.name if path.name not in ("", ".") else str(path)


def _plot_curves(path: Path, runs: list[dict], metric: str, read_metrics) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise LstmkitError('--plot needs matplotlib: pip install "lstmkit[plot]"', ExitCode.UNAVAILABLE) from None
    fig, ax = plt.subplots(figsize=(6.4, 4))
    drawn = 0
    for r in runs:
        try:
            records = read_metrics(r["dir"] / "metrics.jsonl")
        except Exception:  # noqa: BLE001 - a run without metrics draws nothing
            continue
        pts = [(rec["epoch"], rec[metric]) for rec in records if rec.get("event") == "eval"
               and isinstance(rec.get(metric), (int, float))]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, label=r["dir"].name)
            drawn += 1
    if not drawn:
        plt.close(fig)
        raise LstmkitError(f"--plot: no run recorded {metric} (choose one with --metric)", ExitCode.USAGE)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} of {drawn} run(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    suffix = path.suffix.lstrip(".").lower() or "png"
    from ..run.folder import writing

    try:
        with writing(path), atomic_open(path, "wb") as f:
            fig.savefig(f, format=suffix)
    except ValueError as exc:  # matplotlib: an unknown format
        raise LstmkitError(f"--plot {path}: {exc}", ExitCode.USAGE) from None
    finally:
        plt.close(fig)
