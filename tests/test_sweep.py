"""lstmkit sweep / compare on the embedded local pool: the sweep file's validation, the sweep folder,
failures, pruning, kills and resume, compare.  (The Ray cluster: tests/test_ray_cluster.py.)"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("optuna")

from click.testing import CliRunner  # noqa: E402

from lstmkit.cli import make_cli  # noqa: E402
from lstmkit.config.errors import ConfigError  # noqa: E402
from lstmkit.run.folder import RunFolder  # noqa: E402
from lstmkit.run.lock import RunLock  # noqa: E402
from lstmkit.sweep import trial as trial_module  # noqa: E402
from lstmkit.sweep.spec import load_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# A task small enough that a trial is mostly process start-up.
TINY = """\
name: tiny
seed: 0
model: {cell: lstm, hidden_size: 8}
task:
  type: sine
  options: {seq_len: 12, num_train: 64, num_valid: 32, num_test: 16}
training:
  epochs: 3
  batch_size: 32
  optimizer: {name: adam, lr: 1.0e-2}
"""


def _sweep(tmp_path: Path, body: str, name: str = "sweep.yaml") -> Path:
    (tmp_path / "tiny.yaml").write_text(TINY)
    path = tmp_path / name
    path.write_text("base: tiny.yaml\n" + body)
    return path


def _cli(*args):
    return CliRunner().invoke(make_cli(), [str(a) for a in args])


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "trials.jsonl").read_text().splitlines()]


# -- the sweep file ---------------------------------------------------------------------------------------
def test_sweep_file_errors_name_file_line_and_key(tmp_path):
    path = _sweep(tmp_path, "params:\n  training.optimizer.lr: {lognormal: [1, 2]}\n  model.hiden_size: [8]\n"
                            "method: grid\ntrails: 3\n")
    result = _cli("sweep", path, "--dry-run")
    assert result.exit_code == 3, result.output
    out = result.output
    assert f"{path}:3:" in out and "training.optimizer.lr" in out and "uniform" in out  # the distributions named
    assert f"{path}:6:" in out and "did you mean 'trials'" in out
    # second round (as for configs): each value against the config schema, at its line in the sweep file
    path.write_text("base: tiny.yaml\nparams:\n  model.hidden_size: [4]\n  model.hiden_size: [8]\n")
    result = _cli("sweep", path, "--dry-run")
    assert result.exit_code == 3, result.output
    assert f"{path}:4:" in result.output and "hiden_size" in result.output and "hidden_size" in result.output


@pytest.mark.parametrize("body, words", [
    ("params: {training.optimizer.lr: {loguniform: [0, 1]}}\n", "low > 0"),
    ("params: {training.optimizer.lr: {uniform: [2, 1]}}\n", "low < high"),
    ("params: {training.optimizer.lr: {uniform: [1.0e-3, 1.0e-2]}}\nmethod: grid\n", "method grid takes lists"),
    ("params: {model.hidden_size: [8]}\nseeds: [0, 0]\n", "distinct"),
    ("params: {model.hidden_size: [8]}\nmetric: valid.accuracy\n", "unknown metric 'valid.accuracy'"),
    ("params: {model.hidden_size: [8]}\npruner: sometimes\n", "median, hyperband, none"),
    ("params: {model.hidden_size: [8]}\nset: {training.epochs: -1}\n", "training.epochs"),
    ("params: {model.hidden_size: [8]}\nmetric: valid.mae\n", "give mode: min or max for metric valid.mae"),
])
def test_sweep_file_values_are_checked(tmp_path, body, words):
    with pytest.raises(ConfigError) as info:
        load_sweep(_sweep(tmp_path, body))
    assert words in str(info.value)
    assert info.value.exit_code == 3


def test_unknown_cell_in_params_is_unavailable_at_its_line(tmp_path):
    from lstmkit.config.errors import UnavailableError

    path = _sweep(tmp_path, "params: {model.cell: {choice: [lstm, lsmt]}}\n")
    with pytest.raises(UnavailableError) as info:
        load_sweep(path)
    assert f"{path}:2:" in str(info.value) and "did you mean 'lstm'" in str(info.value)
    assert info.value.exit_code == 4


def test_inline_base_errors_point_into_the_sweep_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("base:\n  task: {type: sine}\n  model: {hidden_size: -3}\nparams: {training.epochs: [1]}\n")
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    assert f"{path}:3:" in str(info.value) and "model.hidden_size" in str(info.value)


def test_defaults_come_from_the_base_config(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY + "  early_stopping: {metric: valid.mae, mode: min}\n")
    path = tmp_path / "s.yaml"
    path.write_text("base: tiny.yaml\nparams: {model.hidden_size: [4, 8], training.epochs: [1, 2, 3]}\nmethod: grid\n")
    spec = load_sweep(path)
    assert (spec.metric, spec.mode, spec.trials, spec.seeds) == ("valid.mae", "min", 6, [0])


def test_dry_run_lists_the_trials_and_writes_nothing(tmp_path):
    path = _sweep(tmp_path, "params: {model.hidden_size: [4, 8], training.optimizer.lr: [0.01, 0.02]}\n"
                            "method: grid\nseeds: [0, 1]\n")
    result = _cli("sweep", path, "--dry-run", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip().startswith("trial-")]
    assert len(lines) == 8 and len(set(lines)) == 8
    assert "4 point(s) x 2 seed(s)" in result.output
    assert not (tmp_path / "out").exists()


# -- a sweep -------------------------------------------------------------------------------------------------
def test_sweep_writes_run_folders_table_summary_best_and_plot(tmp_path):
    path = _sweep(tmp_path, "params:\n  model.hidden_size: [4, 8]\n  training.optimizer.lr: [1.0e-1, 1.0e+30]\n"
                            "method: grid\nseeds: [0, 1]\nparallel: 2\nset: {training.optimizer.name: sgd}\n")
    out = tmp_path / "sw"
    result = _cli("sweep", path, "-o", out)
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert len(rows) == 8
    from lstmkit.run.folder import is_run_folder

    for r in rows:
        assert is_run_folder(Path(r["run_dir"])) and Path(r["run_dir"]).parent == out / "trials"
        assert (out / "logs" / f"{r['trial']}.log").is_file()
        if r["params"]["training.optimizer.lr"] > 1:  # a bad combination: recorded with its reason
            assert r["status"] == "failed" and "non-finite" in r["reason"], r
        else:
            assert r["status"] == "completed" and r["value"] > 0
            results = json.loads((Path(r["run_dir"]) / "results.json").read_text())
            assert r["value"] == results["best"]["value"]  # the monitored metric: the run's own best
    csv_lines = (out / "trials.csv").read_text().splitlines()
    assert len(csv_lines) == 9 and csv_lines[0].startswith("trial,point,seed,")
    summary = (out / "summary.md").read_text()
    table = [line for line in summary.splitlines() if line.startswith("| ") and "rank" not in line]
    ranked = [float(line.split("|")[5].split("±")[0]) for line in table if "completed" in line]
    assert len(ranked) == 2 and ranked == sorted(ranked)
    assert "non-finite" in summary and "failed" in summary
    assert (out / "sweep.png").stat().st_size > 1000
    # best.yaml is a config lstmkit run takes as it is, with the best point's values
    from lstmkit.config.loader import load_config

    best = load_config(out / "best.yaml")
    good = [r for r in rows if r["status"] == "completed"]
    by_point = {}
    for r in good:
        by_point.setdefault(r["point"], []).append(r["value"])
    winner = min(by_point, key=lambda p: sum(by_point[p]) / len(by_point[p]))
    params = next(r["params"] for r in good if r["point"] == winner)
    assert best.config.model.hidden_size == params["model.hidden_size"]
    # a non-empty folder is refused without --overwrite (exit 2), replaced with it
    again = _cli("sweep", path, "-o", out)
    assert again.exit_code == 2 and "--resume" in again.output


def test_pruner_stops_a_trial_worse_than_the_finished_ones(tmp_path):
    path = _sweep(tmp_path, "params: {training.optimizer.lr: [3.0e-2, 1.0e-6]}\nmethod: grid\nparallel: 1\n"
                            "set: {training.epochs: 4}\npruner: {name: median, startup_trials: 1, warmup_epochs: 0}\n"
                            "sampler_seed: 1\n")
    out = tmp_path / "sw"
    result = _cli("sweep", path, "-o", out)
    assert result.exit_code == 0, result.output
    rows = {r["params"]["training.optimizer.lr"]: r for r in _rows(out)}
    slow, fast = rows[1e-6], rows[3e-2]
    # sampler_seed 1 puts the fast learner first (Optuna's grid order); it completes all 4 epochs
    assert (fast["point"], slow["point"]) == (0, 1)
    assert fast["status"] == "completed" and fast["epochs"] == 4
    # the slow one runs after it, one at a time: worse at its first evaluation, it is pruned
    assert slow["status"] == "pruned" and slow["epochs"] < 4 and slow["reason"].startswith("pruned after epoch"), slow
    assert "pruned by the sweep after epoch" in (out / "logs" / f"{slow['trial']}.log").read_text()
    results = json.loads((Path(slow["run_dir"]) / "results.json").read_text())
    assert results["status"] == "stopped_early"  # an ordinary, complete run folder
    assert "| pruned |" in (out / "summary.md").read_text()


def _start(args, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lstmkit", *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _holder_pid(lock: Path):
    """The pid in a run folder's lock file, or None (absent, or its holder is still writing it)."""
    try:
        return json.loads(lock.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def _wait_for(predicate, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_kill_9_loses_no_finished_trial_and_resume_runs_the_rest(tmp_path):
    path = _sweep(tmp_path, "params: {model.hidden_size: [2, 3, 4, 5, 6, 7]}\nmethod: grid\nparallel: 1\n")
    out = tmp_path / "sw"
    proc = _start(["sweep", path, "-o", out], tmp_path)
    try:
        assert _wait_for(lambda: (out / "trials.jsonl").is_file() and len(_rows(out)) >= 2)
        # kill a running trial's worker: recorded as lost, the sweep goes on
        lock = pid = None

        def running():
            nonlocal lock, pid
            locks = list((out / "trials").glob("*/.lstmkit.lock"))
            lock = locks[0] if locks else None
            pid = _holder_pid(lock) if lock is not None else None  # written just after the file is created
            return pid is not None and lock.parent.name not in {r["trial"] for r in _rows(out)}

        assert _wait_for(running)
        victim = lock.parent.name
        os.kill(pid, signal.SIGKILL)
        assert _wait_for(lambda: victim in {r["trial"] for r in _rows(out)})
        before = {r["trial"]: r for r in _rows(out)}
        assert before[victim]["status"] == "lost" and "signal 9" in before[victim]["reason"]
        proc.send_signal(signal.SIGKILL)  # now the sweep itself
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    before = {r["trial"]: r for r in _rows(out)}
    finished = {k: r for k, r in before.items() if r["status"] == "completed"}
    assert len(finished) >= 2
    result = _cli("sweep", "--resume", out)
    assert result.exit_code == 0, result.output
    after = {r["trial"]: r for r in _rows(out)}
    assert len(after) == 6, after
    assert all(r["status"] == "completed" for r in after.values()), {k: (r["status"], r["reason"])
                                                                     for k, r in after.items()}
    for name, row in finished.items():  # not run again
        assert after[name] == row
    assert f"{len(finished)} trial(s) finished" in result.output


def test_compare_runs_and_a_sweep_folder(tmp_path):
    path = _sweep(tmp_path, "params: {model.hidden_size: [4, 8]}\nmethod: grid\n")
    out = tmp_path / "sw"
    assert _cli("sweep", path, "-o", out).exit_code == 0
    result = _cli("compare", out, "--plot", tmp_path / "curves.png")
    assert result.exit_code == 0, result.output
    header, *lines = result.output.splitlines()[:3]
    assert "model.hidden_size" in header and "valid.loss" in header and "outputs.dir" not in header
    assert len(lines) == 2 and {line.split()[1] for line in lines} == {"4", "8"}
    assert (tmp_path / "curves.png").stat().st_size > 1000
    runs = sorted((out / "trials").iterdir())
    same = _cli("compare", runs[0], runs[0])
    assert same.exit_code == 0 and "the configs are the same" in same.output
    bad = _cli("compare", tmp_path)
    assert bad.exit_code == 2 and "neither a run folder" in bad.output


def test_example_sweep_dry_run():
    result = _cli("sweep", ROOT / "examples" / "sweep.yaml", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "training.optimizer.lr: loguniform" in result.output and "model.hidden_size" in result.output


def test_tpe_and_hyperband_run_and_overwrite_keeps_other_files(tmp_path):
    path = _sweep(tmp_path, "params:\n  training.optimizer.lr: {loguniform: [1.0e-3, 1.0e-1]}\n"
                            "  model.hidden_size: {int: [2, 6]}\nmethod: tpe\ntrials: 3\nparallel: 1\n"
                            "pruner: hyperband\n")
    out = tmp_path / "sw"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused = _cli("sweep", path, "-o", out)
    assert refused.exit_code == 2 and "not empty" in refused.output
    result = _cli("sweep", path, "-o", out, "--overwrite")
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert len(rows) == 3 and len({r["point"] for r in rows}) == 3
    for r in rows:
        assert 1e-3 <= r["params"]["training.optimizer.lr"] <= 1e-1 and r["params"]["model.hidden_size"] in range(2, 7)
        assert r["status"] in ("completed", "pruned")
    again = _cli("sweep", path, "-o", out, "--overwrite")
    assert again.exit_code == 0 and len(_rows(out)) == 3
    assert (out / "notes.txt").read_text() == "mine"


def test_ctrl_c_exits_130_and_resume_continues(tmp_path):
    path = _sweep(tmp_path, "params: {model.hidden_size: [2, 3, 4, 5]}\nmethod: grid\nparallel: 1\n"
                            "set: {training.epochs: 6}\n")
    out = tmp_path / "sw"
    proc = _start(["sweep", path, "-o", out], tmp_path)
    try:
        assert _wait_for(lambda: (out / "trials.jsonl").is_file() and len(_rows(out)) >= 1)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, output
    assert f"lstmkit sweep --resume {out}" in output
    before = {r["trial"]: r for r in _rows(out)}
    assert 1 <= len(before) < 4 and all(r["status"] == "completed" for r in before.values())
    result = _cli("sweep", "--resume", out)
    assert result.exit_code == 0, result.output
    after = {r["trial"]: r for r in _rows(out)}
    assert len(after) == 4 and all(after[k] == r for k, r in before.items())


def test_address_without_ray_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    path = _sweep(tmp_path, "params: {model.hidden_size: [2]}\n")
    result = _cli("sweep", path, "--address", "127.0.0.1:1", "-o", tmp_path / "sw")
    assert result.exit_code == 4 and 'pip install "lstmkit[ray]"' in result.output


def test_resume_of_a_folder_that_is_not_a_sweep(tmp_path):
    result = _cli("sweep", "--resume", tmp_path)
    assert result.exit_code == 2 and "not a sweep folder" in result.output
    assert _cli("sweep").exit_code == 2
    path = _sweep(tmp_path, "params: {model.hidden_size: [2]}\n")
    both = _cli("sweep", path, "--resume", tmp_path)
    assert both.exit_code == 2 and "give no SWEEP_FILE" in both.output


def test_a_combination_the_config_refuses_is_a_failed_trial(tmp_path):
    # each value passes on its own (checked when the file is read); together proj_size >= hidden_size
    path = _sweep(tmp_path, "params: {model.hidden_size: [4, 8], model.proj_size: [6]}\nmethod: grid\n")
    out = tmp_path / "sw"
    result = _cli("sweep", path, "-o", out)
    assert result.exit_code == 0, result.output
    rows = {r["params"]["model.hidden_size"]: r for r in _rows(out)}
    assert rows[8]["status"] == "completed"
    assert rows[4]["status"] == "failed" and "proj_size" in rows[4]["reason"], rows[4]
    assert "proj_size" in (out / "summary.md").read_text()


def test_a_trial_terminated_alone_is_interrupted_and_resume_continues_it(tmp_path):
    path = _sweep(tmp_path, "params: {model.hidden_size: [2, 3]}\nmethod: grid\nparallel: 1\n"
                            "set: {training.epochs: 40}\n")
    out = tmp_path / "sw"
    proc = _start(["sweep", path, "-o", out], tmp_path)
    try:
        first = out / "trials" / "trial-0000-seed-0"
        assert _wait_for(lambda: (first / "checkpoints" / "last.npz").is_file()
                         and _holder_pid(first / ".lstmkit.lock") is not None)
        os.kill(_holder_pid(first / ".lstmkit.lock"), signal.SIGTERM)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, output
    rows = {r["trial"]: r for r in _rows(out)}
    assert rows["trial-0000-seed-0"]["status"] == "interrupted" and rows["trial-0001-seed-0"]["status"] == "completed"
    assert "--resume" in output
    result = _cli("sweep", "--resume", out)
    assert result.exit_code == 0, result.output
    rows = {r["trial"]: r for r in _rows(out)}
    assert rows["trial-0000-seed-0"]["status"] == "completed" and rows["trial-0000-seed-0"]["epochs"] == 40
    assert "resuming" in (out / "logs" / "trial-0000-seed-0.log").read_text()  # from its last checkpoint


def _kill_between_trials(out: Path) -> str:
    """Leave a finished two-trial sweep folder as a kill -9 of the sweep during its second trial does: no row
    for that trial yet.  Returns the trial's name."""
    rows = sorted(_rows(out), key=lambda r: r["trial"])
    (out / "trials.jsonl").write_text(json.dumps(rows[0]) + "\n")
    return rows[1]["trial"]


def test_resume_waits_for_a_killed_sweeps_worker_to_let_go_of_its_trial(tmp_path):
    # Killed with the sweep, a trial's worker is told to stop (SIGTERM) and saves its checkpoint, which takes a
    # moment: a --resume started at once met the folder locked and recorded the trial as failed (found in CI).
    path = _sweep(tmp_path, "params: {model.hidden_size: [4, 8]}\nmethod: grid\nparallel: 1\n")
    out = tmp_path / "sw"
    assert _cli("sweep", path, "-o", out).exit_code == 0
    victim = _kill_between_trials(out)
    worker = RunLock(RunFolder(out / "trials" / victim), ["the killed sweep's worker"]).acquire()
    threading.Timer(1.5, worker.release).start()
    result = _cli("sweep", "--resume", out)
    assert result.exit_code == 0, result.output
    rows = {r["trial"]: r for r in _rows(out)}
    assert len(rows) == 2 and rows[victim]["status"] == "completed", rows[victim]
    assert f"waiting up to 120 s for process {os.getpid()}" in (out / "logs" / f"{victim}.log").read_text()


def test_a_trial_whose_folder_stays_busy_is_not_final(tmp_path, monkeypatch):
    # if the earlier worker never lets go, the trial is "interrupted" (run again by --resume), never "failed"
    path = _sweep(tmp_path, "params: {model.hidden_size: [4, 8]}\nmethod: grid\nparallel: 1\n")
    out = tmp_path / "sw"
    assert _cli("sweep", path, "-o", out).exit_code == 0
    victim = _kill_between_trials(out)
    trial_dir = out / "trials" / victim
    monkeypatch.setattr(trial_module, "_BUSY_WAIT_S", 0.3)
    job = {"name": victim, "point": 1, "seed": 0, "params": {"model.hidden_size": 8},
           "overrides": ["model.hidden_size=8"], "base_path": str(out / "base.yaml"), "trial_dir": str(trial_dir),
           "log_path": str(tmp_path / "trial.log"), "metric": "valid.loss", "mode": "min", "pruner": {"name": "none"},
           "epochs": 3, "history": [], "resume": True}
    with RunLock(RunFolder(trial_dir), ["a worker that never ends"]):
        outcome = trial_module.run_trial(job)
    assert outcome["status"] == "interrupted", outcome
    assert "is in use by another lstmkit run" in outcome["reason"] and "--resume runs it again" in outcome["reason"]
