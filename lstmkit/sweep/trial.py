"""One trial, in the process that runs it: an ordinary ``lstmkit run`` into its own run folder.

:func:`run_trial` takes a job (plain data, so a local process or a Ray worker can receive it)
and returns the outcome as plain data: status, reason, the metric's value (its best over the
run's evaluations, by ``mode``), its per-epoch curve, the final evaluation, time and node.
With ``ship``, the run happens in a temporary folder and its files come back in the outcome
(a Ray worker on another machine); otherwise it writes straight into ``job["trial_dir"]``.
"""
from __future__ import annotations

import json
import math
import shutil
import socket
import tempfile
import time
import traceback
from pathlib import Path

__all__ = ["run_trial", "outcome_from_folder", "pack_folder"]

_RUN_FILES_MAX = 256 * 2**20  # a shipped run folder larger than this is refused (Ray's object store)
_BUSY_WAIT_S = 120.0  # how long a trial waits for an earlier worker (of a killed sweep) to let go of its folder


def _pruning_trainer(metric: str, should_prune, flag: dict):
    from ..run.trainer import Trainer

    class PruningTrainer(Trainer):
        """The trainer, asking the sweep's pruner after each evaluation (stopping early when told)."""

        def _evaluate_and_track(self):
            super()._evaluate_and_track()
            s = self.state
            value = (s.last_eval or {}).get(metric)
            if s.stopped_early or value is None or not math.isfinite(value):
                return
            epoch = s.last_eval.get("epoch", s.epoch)
            if should_prune(epoch, value):
                s.stopped_early = True
                flag["epoch"] = epoch
                self.echo(f"pruned by the sweep after epoch {epoch}: {metric} {value:.6g} is worse than the "
                          f"finished trials' at this epoch")

    return PruningTrainer


def run_trial(job: dict) -> dict:
    """Run one (point, seed); never raises for a failure of the run (it is the outcome's ``reason``)."""
    from ..config.errors import LstmkitError, RunInterrupted
    from ..run.folder import RunFolder
    from ..run.lock import FolderBusy, wait_until_free
    from .search import should_prune_factory

    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="lstmkit-trial-")) if job.get("ship") else None
    if tmp is not None:
        base = tmp / "base.yaml"
        base.write_text(job["base_text"], encoding="utf-8")
        trial_dir, log = tmp / job["name"], tmp / "trial.log"
    else:
        base, trial_dir, log = Path(job["base_path"]), Path(job["trial_dir"]), Path(job["log_path"])
    log.parent.mkdir(parents=True, exist_ok=True)
    out = {"status": "failed", "reason": None, "node": job.get("node") or socket.gethostname()}
    flag: dict = {}
    try:
        with open(log, "a", encoding="utf-8") as f:
            def echo(line: str) -> None:
                f.write(line + "\n")
                f.flush()

            try:
                should_prune = should_prune_factory(job["pruner"], job["mode"], job.get("epochs"), job["history"])
                cls = _pruning_trainer(job["metric"], should_prune, flag) if should_prune else None
                deadline = time.monotonic() + _BUSY_WAIT_S
                while True:
                    try:
                        _run_in(trial_dir, base, job, echo, cls)
                        break
                    except FolderBusy:  # a worker of a killed sweep, told to stop, still saving there
                        left = deadline - time.monotonic()
                        if left <= 0 or wait_until_free(RunFolder(trial_dir), left, echo) is not None:
                            raise
            except (KeyboardInterrupt, RunInterrupted) as exc:  # not final: --resume continues it
                out["status"], out["reason"] = "interrupted", str(exc) or "interrupted"
                echo(out["reason"])
            except FolderBusy as exc:  # not the trial's failure: --resume runs it again
                out["status"], out["reason"] = "interrupted", f"{exc}; --resume runs it again"
                flag["busy"] = True  # the folder is another process's: its state says nothing of this trial
                echo(out["reason"])
            except LstmkitError as exc:
                out["reason"] = str(exc)
                echo(f"Error: {exc}")
            except Exception as exc:  # a crash of the run: recorded, the sweep goes on
                out["reason"] = f"{type(exc).__name__}: {exc}"
                echo(traceback.format_exc())
        return _finish(out, trial_dir, job, flag, started, tmp)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _run_in(trial_dir: Path, base: Path, job: dict, echo, trainer_class) -> None:
    """The trial's run: continued from its checkpoint if an earlier session left one, else from the start."""
    from ..run import run

    if job.get("resume") and (trial_dir / "checkpoints" / "last.npz").is_file():
        echo(f"resuming {trial_dir}")
        run(None, resume=str(trial_dir), echo=echo, trainer_class=trainer_class)
    else:
        run(str(base), job["overrides"], seed=job["seed"], output=str(trial_dir), overwrite=True, echo=echo,
            trainer_class=trainer_class, argv=["lstmkit", "sweep", f"(trial {job['name']})"])


def _finish(out: dict, trial_dir: Path, job: dict, flag: dict, started: float, tmp: Path | None) -> dict:
    if not flag.get("busy") and (out["reason"] is None or out["status"] == "interrupted"):
        out.update(outcome_from_folder(trial_dir, job["metric"], job["mode"], out["status"] == "interrupted"))
    if flag.get("epoch") is not None and out["status"] == "completed":
        out["status"], out["reason"] = "pruned", f"pruned after epoch {flag['epoch']}"
    out["duration_s"] = round(time.time() - started, 3)
    if tmp is not None:
        out["files"] = pack_folder(trial_dir) if trial_dir.is_dir() else {}
        out["log"] = (tmp / "trial.log").read_text(encoding="utf-8", errors="replace")
    return out


def outcome_from_folder(folder: Path, metric: str, mode: str, interrupted: bool = False) -> dict:
    """Status, value, curve and final metrics of a run folder (its ``results.json`` and ``metrics.jsonl``)."""
    from ..run import read_metrics

    out: dict = {"value": None, "curve": {}, "final": None, "test": None, "epochs": None}
    try:
        results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        results = None
    try:
        records = read_metrics(folder / "metrics.jsonl")
    except Exception:  # noqa: BLE001 - no metrics: reported below
        records = []
    curve = {int(r["epoch"]): r[metric] for r in records if r.get("event") == "eval" and
             isinstance(r.get(metric), (int, float)) and r.get("epoch") is not None}
    out["curve"] = curve
    finite = [v for v in curve.values() if math.isfinite(v)]
    if finite:
        out["value"] = min(finite) if mode == "min" else max(finite)
    if not isinstance(results, dict):
        out["status"] = "interrupted" if interrupted else "failed"
        out["reason"] = "interrupted" if interrupted else "the run wrote no results.json"
        return out
    out["final"], out["test"], out["epochs"] = results.get("last_eval"), results.get("test"), results.get("epoch")
    status = results.get("status")
    if status in ("completed", "stopped_early"):
        out["status"] = "completed"
        if out["value"] is None:
            names = sorted({k for r in records if r.get("event") == "eval" for k in r if "." in k})
            out["status"] = "failed"
            out["reason"] = (f"the metric {metric} was never evaluated to a finite value"
                             + (f" (recorded: {', '.join(names)})" if names else ""))
    else:
        out["status"] = "interrupted" if status == "interrupted" else "failed"
        out["reason"] = results.get("message") or status
    return out


def pack_folder(folder: Path) -> dict[str, bytes]:
    """``{relative path: bytes}`` of every file under ``folder`` (links are not followed)."""
    files, total = {}, 0
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and not path.name.endswith(".lock"):
            data = path.read_bytes()
            total += len(data)
            if total > _RUN_FILES_MAX:
                raise RuntimeError(f"the run folder {folder} is over {_RUN_FILES_MAX >> 20} MiB: name a shared "
                                   f"storage path (storage: in the sweep file, or --storage) instead of shipping it")
            files[path.relative_to(folder).as_posix()] = data
    return files
