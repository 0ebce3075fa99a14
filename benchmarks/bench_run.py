"""Time ``lstmkit run`` on every example config at each ``runtime.threads`` setting and at the default.

    PYTHONPATH=. python benchmarks/bench_run.py                     # quiet machine, 3 epochs, 3 rounds
    PYTHONPATH=. python benchmarks/bench_run.py --busy              # also with a process spinning on one CPU
    PYTHONPATH=. python benchmarks/bench_run.py --configs quickstart,char_lm --epochs 2 --rounds 5 --json out.json
    PYTHONPATH=. python benchmarks/bench_run.py --settings default --baseline /path/to/older/checkout

Each round runs every (config, setting) once, in an order that rotates from round to round, so
that machine noise hits the settings alike; the table gives the median wall time of each over the
rounds (the whole command: start-up, data, training, evaluation, files) and the ratio
``default / fastest setting`` (target: <= 1.10) and ``threads 2 / threads 1`` (target: <= 1.10,
i.e. never slower at 2 than at 1 beyond noise).  "other load" is how many CPUs' worth of other
processes ran meanwhile (``/proc/stat`` minus the run's own CPU time; the spinner counts).
Epochs are cut with ``--set training.epochs=N`` so that a round takes seconds, not minutes.
``--baseline DIR`` adds the default setting run from another checkout (its own ``lstmkit``, e.g.
one from before a change), interleaved with the others.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {"default": [], "threads=1": ["--set", "runtime.threads=1"], "threads=2": ["--set", "runtime.threads=2"]}
BASELINE = "baseline default"


def _busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (idle and iowait excluded)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def run_once(config: Path, extra: list[str], epochs: int, out: Path, root: Path = ROOT) -> tuple[float, float]:
    """Wall seconds of one ``lstmkit run`` (the ``lstmkit`` of checkout ``root``) and the CPUs' worth
    of other processes meanwhile."""
    cmd = [sys.executable, "-m", "lstmkit", "run", str(config), "-o", str(out), "--overwrite",
           "--set", f"training.epochs={epochs}", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    busy0, t0 = _busy_seconds(), time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=root, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr.read().decode()}")
    other = max(0.0, _busy_seconds() - busy0 - usage.ru_utime - usage.ru_stime) / wall
    return wall, other


def spinner() -> subprocess.Popen:
    """Another process spinning on one CPU (the 'busy machine')."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure(configs: list[Path], settings: dict, epochs: int, rounds: int, busy: bool, tmp: Path) -> dict:
    """``{"config|setting": {median, samples, other_load}}``; ``settings``: name -> (extra args, checkout)."""
    spin = spinner() if busy else None
    try:
        time.sleep(0.2 if busy else 0)
        samples = {(c.stem, s): [] for c in configs for s in settings}
        other = {k: [] for k in samples}
        jobs = list(samples)
        for r in range(rounds):
            shift = r % len(jobs)
            for key in jobs[shift:] + jobs[:shift]:
                config = next(c for c in configs if c.stem == key[0])
                extra, root = settings[key[1]]
                wall, load = run_once(config, extra, epochs, tmp / f"{key[0]}-{key[1].replace(' ', '_')}", root)
                samples[key].append(wall)
                other[key].append(load)
                print(f"  round {r + 1}/{rounds} {key[0]:<24} {key[1]:<10} {wall:7.2f} s  other load {load:4.2f}",
                      file=sys.stderr, flush=True)
    finally:
        if spin is not None:
            spin.kill()
            spin.wait()
    return {f"{c}|{s}": {"median": statistics.median(v), "samples": v, "other_load": statistics.median(other[(c, s)])}
            for (c, s), v in samples.items()}


def table(results: dict, configs: list[Path], settings: dict, title: str) -> str:
    """Median seconds per setting, the ratios the targets name, and the other load (the largest median)."""
    names = list(settings)
    ratios = []
    if "default" in settings and {"threads=1", "threads=2"} & set(settings):
        ratios.append("default / fastest")
    if {"threads=1", "threads=2"} <= set(settings):
        ratios.append("threads=2 / threads=1")
    if "default" in settings and BASELINE in settings:
        ratios.append("baseline / default")
    lines = [f"#### {title}", "", "| config | " + " | ".join([f"{n} s" for n in names] + ratios) + " | other load |",
             "|---|" + "---:|" * (len(names) + len(ratios) + 1)]
    for c in configs:
        m = {s: results[f"{c.stem}|{s}"]["median"] for s in names}
        load = max(results[f"{c.stem}|{s}"]["other_load"] for s in names)
        cells = [f"{m[s]:.2f}" for s in names]
        for r in ratios:
            if r == "default / fastest":
                cells.append(f"{m['default'] / min(m[s] for s in ('threads=1', 'threads=2') if s in m):.2f}")
            elif r == "threads=2 / threads=1":
                cells.append(f"{m['threads=2'] / m['threads=1']:.2f}")
            else:
                cells.append(f"{m[BASELINE] / m['default']:.1f}")
        lines.append(f"| {c.stem} | " + " | ".join(cells) + f" | {load:.2f} |")
    return "\n".join(lines)


def _is_sweep_spec(path: Path) -> bool:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return isinstance(data, dict) and "params" in data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", help="comma-separated names of examples/*.yaml (default: all)")
    ap.add_argument("--epochs", type=int, default=3, help="training.epochs for every run (default 3)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians over them (default 3)")
    ap.add_argument("--busy", action="store_true", help="also measure with a process spinning on one CPU")
    ap.add_argument("--busy-only", action="store_true", help="only the busy measurement")
    ap.add_argument("--settings", default=",".join(SETTINGS),
                    help=f"comma-separated subset of {', '.join(SETTINGS)} (default: all)")
    ap.add_argument("--baseline", type=Path, help="also time the default setting of the checkout in this folder")
    ap.add_argument("--json", help="write every sample here")
    args = ap.parse_args(argv)
    # Run configs only: a sweep spec (lstmkit sweep; it has "params") is not something `lstmkit run` takes.
    configs = [c for c in sorted((ROOT / "examples").glob("*.yaml")) if not _is_sweep_spec(c)]
    if args.configs:
        wanted = args.configs.split(",")
        unknown = sorted(set(wanted) - {c.stem for c in configs})
        if unknown:
            ap.error(f"unknown config(s) {', '.join(unknown)}; choose from {', '.join(c.stem for c in configs)}")
        configs = [c for c in configs if c.stem in wanted]
    unknown = sorted(set(args.settings.split(",")) - set(SETTINGS))
    if unknown:
        ap.error(f"unknown setting(s) {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")
    settings = {s: (SETTINGS[s], ROOT) for s in args.settings.split(",")}
    if args.baseline:
        settings[BASELINE] = ([], args.baseline.resolve())
    modes = ([] if args.busy_only else [False]) + ([True] if args.busy or args.busy_only else [])
    out = {"epochs": args.epochs, "rounds": args.rounds, "cpus": len(os.sched_getaffinity(0))}
    with tempfile.TemporaryDirectory(prefix="bench_run_") as tmp:
        for busy in modes:
            name = "busy" if busy else "quiet"
            print(f"{name}: {len(configs)} configs x {len(settings)} settings x {args.rounds} rounds",
                  file=sys.stderr, flush=True)
            out[name] = measure(configs, settings, args.epochs, args.rounds, busy, Path(tmp))
            title = ("with a process spinning on one CPU" if busy else "no load added")
            print(table(out[name], configs, settings, f"{title}, {args.epochs} epochs, median of {args.rounds} rounds"))
            print()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
