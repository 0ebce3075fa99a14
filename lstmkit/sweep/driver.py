"""``lstmkit sweep``: the sweep folder, the loop that asks Optuna for points and hands trials to an executor.

::

    sweep.yaml, sweep.json   the sweep file as given; the validated spec (``--resume`` reads it)
    base.yaml                the resolved base config every trial starts from
    plan.json                the points asked so far (number and parameters)
    trials.jsonl, trials.csv one row per finished trial, rewritten atomically as each one finishes
    summary.md, best.yaml    the ranking (mean ± std over seeds) and the best point as a runnable config
    sweep.png                the metric against each parameter (needs matplotlib)
    trials/<trial>/          each trial's ordinary run folder (``lstmkit run`` wrote it)
    logs/<trial>.log         what each trial printed
    .lstmkit.lock            while a sweep writes here

A trial is ``trial-NNNN-seed-S``: point NNNN run with seed S.  Rows whose status is
``completed``, ``pruned`` or ``failed`` are final; ``--resume`` runs the rest again (an
interrupted or killed trial continues from its run folder's last checkpoint when it has one).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from .._atomic import atomic_write_json, atomic_write_text
from ..config.errors import ExitCode, LstmkitError, RunInterrupted
from .spec import Param, SweepSpec, load_sweep

__all__ = ["run_sweep", "SweepFolder", "FINAL", "trial_name", "read_rows", "spec_from_folder"]

FINAL = ("completed", "pruned", "failed")
Echo = Callable[[str], None]


def trial_name(point: int, seed: int) -> str:
    return f"trial-{point:04d}-seed-{seed}"


@dataclasses.dataclass
class SweepFolder:
    """Paths inside a sweep folder, and the names the sweep owns (``--overwrite`` removes only these)."""

    path: Path
    FILES = ("sweep.yaml", "sweep.json", "base.yaml", "plan.json", "trials.jsonl", "trials.csv", "summary.md",
             "best.yaml", "sweep.png")
    DIRS = ("trials", "logs")

    def __getattr__(self, name):
        for f in self.FILES:
            if f.replace(".", "_") == name:
                return self.path / f
        raise AttributeError(name)

    def trial(self, name: str, storage: str | None = None) -> Path:
        return (Path(storage) / self.path.name if storage else self.path) / "trials" / name

    def log(self, name: str) -> Path:
        return self.path / "logs" / f"{name}.log"

    def is_sweep(self) -> bool:
        return (self.path / "sweep.json").is_file()

    def clear(self) -> None:
        for f in self.FILES:
            with contextlib.suppress(FileNotFoundError):
                (self.path / f).unlink()
        for d in self.DIRS:
            target = self.path / d
            if target.is_symlink():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target)


def read_rows(folder: SweepFolder) -> list[dict]:
    if not folder.trials_jsonl.is_file():
        return []
    rows = []
    for line in folder.trials_jsonl.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            if line.strip():
                rows.append(json.loads(line))
    return rows


def _spec_dict(spec: SweepSpec) -> dict:
    data = dataclasses.asdict(spec)
    data["params"] = [dataclasses.asdict(p) for p in spec.params]
    data.pop("text")
    return data


def spec_from_folder(folder: SweepFolder) -> SweepSpec:
    """The spec a sweep folder was started with (``sweep.json``)."""
    try:
        data = json.loads(folder.sweep_json.read_text(encoding="utf-8"))
        data["params"] = [Param(**{**p, "values": tuple(p["values"])}) for p in data["params"]]
        return SweepSpec(**data, text=folder.sweep_yaml.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise LstmkitError(f"--resume {folder.path}: not a sweep folder, or its sweep.json is unreadable ({exc})",
                           ExitCode.USAGE) from None


def _overrides(spec: SweepSpec, params: dict) -> list[str]:
    from ..config.yamlio import dump_yaml

    # the thread policy: each trial's core on resources.cpus threads, so trials side by side do not fight
    out = [f"runtime.threads={max(1, int(spec.resources['cpus']))}"] + spec.fixed
    return out + [f"{k}={dump_yaml(v, flow=True).splitlines()[0]}" for k, v in params.items()]


def _dry_run(spec: SweepSpec, echo: Echo, executor_text: str) -> int:
    from .search import Search

    echo(f"sweep {spec.name}: base config {spec.resolved['name']} ({spec.source})" +
         (f"; set {', '.join(spec.fixed)}" if spec.fixed else ""))
    for p in spec.params:
        echo(f"  {p.key}: {p.describe()}")
    pruner = spec.pruner["name"]
    echo(f"method {spec.method} (sampler_seed {spec.sampler_seed}), {spec.trials} point(s) x {len(spec.seeds)} "
         f"seed(s) {spec.seeds} = {spec.trials * len(spec.seeds)} trial(s); metric {spec.metric} ({spec.mode}); "
         f"pruner {pruner}")
    echo(f"runs on {executor_text}")
    if spec.method == "tpe":
        echo("tpe proposes each point from the results of those before it: the points are not known in advance")
        return ExitCode.OK
    search = Search(spec)
    for n in range(spec.trials):
        params = search.ask().params
        for seed in spec.seeds:
            echo(f"  {trial_name(n, seed)}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v!r}"
                                                           for k, v in params.items()))
    echo("dry run: nothing was written")
    return ExitCode.OK


def _choose_folder(spec: SweepSpec, output: str | None, overwrite: bool) -> SweepFolder:
    from ..run.folder import default_run_dir, make_dir

    out = output or spec.output
    if out is None:
        return SweepFolder(default_run_dir(spec.name, create=True))
    path = Path(out).resolve()
    if path.exists() and not path.is_dir():
        raise LstmkitError(f"output folder {path} is a file", ExitCode.USAGE)
    folder = SweepFolder(path)
    if path.is_dir() and any(p.name != ".lstmkit.lock" for p in path.iterdir()):
        if not overwrite:
            hint = (f"  - continue that sweep with: lstmkit sweep --resume {path}\n" if folder.is_sweep() else "")
            raise LstmkitError(f"output folder {path} is not empty. Either\n  - add --overwrite to replace the "
                               f"sweep in it (only the sweep's own files and folders are removed),\n{hint}"
                               f"  - or choose another folder with -o DIR", ExitCode.USAGE)
        clash = [n for n in SweepFolder.FILES + SweepFolder.DIRS if (path / n).exists()]
        if not folder.is_sweep() and clash:
            raise LstmkitError(f"--overwrite refused: {path} is not a sweep folder and holds {', '.join(clash)}; "
                               f"move them or choose another folder", ExitCode.USAGE)
    make_dir(path)
    return folder


def _executor(spec: SweepSpec, address: str | None, parallel: int | None, storage: str | None):
    from .executors import LocalPool, RayExecutor, default_parallel

    if address:
        return RayExecutor(address, spec.resources, parallel or spec.parallel, storage)
    return LocalPool(parallel or spec.parallel or default_parallel(spec.resources["cpus"]))


@contextlib.contextmanager
def _sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_sweep(path: str | None, *, output: str | None = None, overwrite: bool = False, resume: str | None = None,
              dry_run: bool = False, address: str | None = None, parallel: int | None = None,
              storage: str | None = None, echo: Echo = print, argv: Sequence[str] | None = None) -> int:
    """``lstmkit sweep``; returns the exit code (errors raise :class:`LstmkitError` subclasses)."""
    from .search import import_optuna

    if resume is not None and (path is not None or output is not None or overwrite):
        raise LstmkitError("--resume SWEEP_DIR continues the sweep in that folder with its own sweep file: give "
                           "no SWEEP_FILE, -o or --overwrite with it", ExitCode.USAGE)
    if resume is not None:
        folder = SweepFolder(Path(resume).resolve())
        if not folder.is_sweep():
            raise LstmkitError(f"--resume {resume}: not a sweep folder (no sweep.json)", ExitCode.USAGE)
        spec = spec_from_folder(folder)
    elif path is None:
        raise LstmkitError("give a sweep file (lstmkit sweep SWEEP.yaml) or --resume SWEEP_DIR", ExitCode.USAGE)
    else:
        spec = load_sweep(path)
    if parallel is not None and parallel < 1:
        raise LstmkitError(f"--parallel: expected a positive integer, got {parallel}", ExitCode.USAGE)
    import_optuna()
    storage = storage or spec.storage
    if dry_run:
        where = (f"the Ray cluster at {address}" if address else
                 f"this machine, {parallel or spec.parallel or _default(spec)} trial(s) at once")
        return _dry_run(spec, echo, where)
    if address is None and storage is not None:
        echo("note: storage is used with --address only; local trials write into the sweep folder")
        storage = None
    if resume is None:
        folder = _choose_folder(spec, output, overwrite)
    from ..run.folder import RunFolder
    from ..run.lock import RunLock

    with _sigterm_as_interrupt(), RunLock(RunFolder(folder.path), list(argv) if argv else None):
        if resume is None:
            if overwrite:
                folder.clear()
            atomic_write_text(folder.sweep_yaml, spec.text)
            atomic_write_json(folder.sweep_json, _spec_dict(spec))
            from ..config.loader import resolved_yaml

            atomic_write_text(folder.base_yaml, resolved_yaml(spec.base, "the base config of the sweep (file paths "
                                                                         "made absolute); trials add the sweep's set: and params"))
        executor = _executor(spec, address, parallel, storage)
        try:
            return _Loop(spec, folder, executor, storage, echo, resume is not None).run()
        finally:
            if hasattr(executor, "close"):
                executor.close()


def _default(spec: SweepSpec) -> int:
    from .executors import default_parallel

    return default_parallel(spec.resources["cpus"])


class _Loop:
    """Ask points, run their seeds, record each finished trial, tell Optuna when a point's seeds are all done."""

    def __init__(self, spec: SweepSpec, folder: SweepFolder, executor, storage, echo: Echo, resumed: bool):
        from .search import Search

        self.spec, self.folder, self.executor, self.storage, self.echo = spec, folder, executor, storage, echo
        self.rows = {(r["point"], r["seed"]): r for r in read_rows(folder) if r.get("status") in FINAL}
        plan = json.loads(folder.plan_json.read_text(encoding="utf-8")) if folder.plan_json.is_file() else []
        self.points: dict[int, dict] = {}
        self.queue: list[tuple[int, int]] = []
        self.search = Search(spec)
        for point in plan:
            n, params = point["number"], point["params"]
            left = [s for s in spec.seeds if (n, s) not in self.rows]
            if left:
                self.points[n] = {"params": params, "trial": self.search.ask(params)}
                self.queue += [(n, s) for s in left]
            else:
                self.points[n] = {"params": params, "trial": None}
                value, state = self._point_result(n)
                self.search.add(params, value, state)
        self.plan = plan
        if resumed:
            done = len(self.rows)
            echo(f"resuming {folder.path}: {done} trial(s) finished, {len(self.queue)} to run again")

    def _point_result(self, n: int):
        rows = [self.rows[(n, s)] for s in self.spec.seeds if (n, s) in self.rows]
        values = [r["value"] for r in rows if r["status"] == "completed" and r.get("value") is not None]
        if any(r["status"] == "pruned" for r in rows):
            return None, "pruned"
        if not values or len(values) < len(rows):
            return None, "fail"
        return statistics.fmean(values), "complete"

    def _history(self) -> list[dict]:
        out = []
        for n, point in self.points.items():
            value, state = self._point_result(n) if point["trial"] is None else (None, None)
            if state != "complete":
                continue
            curves = [self.rows[(n, s)].get("curve") or {} for s in self.spec.seeds]  # {"epoch": value}
            epochs = sorted({int(e) for c in curves for e in c})
            curve = {e: statistics.fmean([c[str(e)] for c in curves if str(e) in c]) for e in epochs}
            out.append({"value": value, "curve": curve})
        return out

    def _next_point(self) -> bool:
        if len(self.points) >= self.spec.trials:
            return False
        trial = self.search.ask()
        n = len(self.plan)
        self.points[n] = {"params": trial.params, "trial": trial}
        self.plan.append({"number": n, "params": trial.params})
        atomic_write_json(self.folder.plan_json, self.plan)
        self.queue += [(n, s) for s in self.spec.seeds]
        return True

    def _job(self, n: int, seed: int) -> dict:
        name = trial_name(n, seed)
        params = self.points[n]["params"]
        trial_dir = self.folder.trial(name, self.storage)
        return {"name": name, "point": n, "seed": seed, "params": params,
                "overrides": _overrides(self.spec, params), "base_path": str(self.folder.base_yaml),
                "base_text": self.folder.base_yaml.read_text(encoding="utf-8"), "trial_dir": str(trial_dir),
                "log_path": str(self.folder.log(name) if self.storage is None else trial_dir.parent.parent / "logs" /
                                f"{name}.log"),
                "metric": self.spec.metric, "mode": self.spec.mode, "pruner": self.spec.pruner,
                "epochs": self.spec.resolved["training"].get("epochs"), "history": self._history(),
                "resume": True}

    def run(self) -> int:
        spec, echo = self.spec, self.echo
        total = spec.trials * len(spec.seeds)
        echo(f"sweep folder: {self.folder.path}")
        echo(f"{spec.trials} point(s) x {len(spec.seeds)} seed(s) = {total} trial(s) on {self.executor.describe()}")
        interrupted = False
        try:
            while True:
                while self.executor.free() > 0 and (self.queue or self._next_point()):
                    n, seed = self.queue.pop(0)
                    self.executor.submit(self._job(n, seed))
                if not self.executor.busy():
                    break
                for job, outcome in self.executor.wait(1.0):
                    self._record(job, outcome)
        except KeyboardInterrupt:
            interrupted = True
            self.executor.stop()
        from .report import write_reports

        note = write_reports(self.folder, spec, list(self.rows.values()), self.points)
        if note:
            echo(note)
        done = sum(1 for r in self.rows.values() if r["status"] in FINAL)
        if interrupted:
            raise RunInterrupted(f"interrupted: {done} of {total} trial(s) finished and are recorded in "
                                 f"{self.folder.trials_jsonl}; continue with: lstmkit sweep --resume {self.folder.path}")
        lost = [r for r in self.rows.values() if r["status"] not in FINAL]
        echo(f"{done} of {total} trial(s) finished; summary: {self.folder.summary_md}")
        if lost:
            echo(f"{len(lost)} trial(s) did not finish (interrupted, or their worker was lost); run them with: "
                 f"lstmkit sweep --resume {self.folder.path}")
            return ExitCode.RUN_FAILED
        return ExitCode.OK

    def _record(self, job: dict, outcome: dict) -> None:
        from .report import write_table

        name = job["name"]
        files = outcome.pop("files", None)
        log = outcome.pop("log", None)
        if files is not None:  # shipped back from a Ray worker: the run folder lands in the sweep folder
            target = Path(job["trial_dir"])
            if target.is_dir():
                shutil.rmtree(target)
            for rel, data in files.items():
                from .._atomic import atomic_write_bytes

                atomic_write_bytes(target / rel, data)
        if log is not None:
            atomic_write_text(self.folder.log(name), log)
        row = {"trial": name, "point": job["point"], "seed": job["seed"], "params": job["params"],
               "status": outcome.get("status", "failed"), "reason": outcome.get("reason"),
               "metric": self.spec.metric, "value": outcome.get("value"), "final": outcome.get("final"),
               "test": outcome.get("test"), "epochs": outcome.get("epochs"),
               "duration_s": outcome.get("duration_s"), "node": outcome.get("node"),
               "run_dir": job["trial_dir"], "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "curve": {str(k): v for k, v in (outcome.get("curve") or {}).items()}}
        self.rows[(job["point"], job["seed"])] = row
        write_table(self.folder, list(self.rows.values()))  # atomically: a kill now loses nothing finished
        value = "" if row["value"] is None else f" {self.spec.metric} {row['value']:.6g}"
        reason = f": {row['reason'].splitlines()[0]}" if row["reason"] and row["status"] != "completed" else ""
        self.echo(f"{name} {row['status']}{value}{reason}")
        n = job["point"]
        point = self.points[n]
        if point["trial"] is not None and all((n, s) in self.rows and self.rows[(n, s)]["status"] in FINAL
                                              for s in self.spec.seeds):
            value, state = self._point_result(n)
            self.search.tell(point["trial"], value, state)
            point["trial"] = None
