"""``lstmkit run``, ``config``, ``evaluate``, ``predict`` through Click's CliRunner.

Tiny models and a few steps keep the whole file fast.  Runs always write into
``tmp_path`` (``-o``), never into the working directory.
"""
from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lstmkit.cli import ExitCode, make_cli
from lstmkit.config import dump_yaml, load_yaml
from lstmkit.run import trainer as trainer_module
from lstmkit.run.checkpoint import load_checkpoint, load_weights

ROOT = Path(__file__).resolve().parent.parent

TINY = """\
name: tiny
seed: 3
model: {cell: lstm, hidden_size: 8, num_layers: 2, dropout: 0.2}
task: {type: sine, options: {seq_len: 12, num_train: 40, num_valid: 16, num_test: 16}}
training: {epochs: 3, batch_size: 8, optimizer: {name: adam, lr: 1e-2}, tbptt: 5}
outputs: {log_every: 2}
"""


@pytest.fixture(scope="module")
def cli():
    return make_cli()


def invoke(cli, *args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def write(tmp_path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_weights(a), load_weights(b)
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cli):
    """One finished tiny run, shared by the read-only tests."""
    base = tmp_path_factory.mktemp("trained")
    config = write(base, TINY, "tiny.yaml")
    result = invoke(cli, "run", config, "-o", base / "run")
    assert result.exit_code == 0, result.output
    return base / "run"


# -- a run and its folder ---------------------------------------------------------------
def test_run_writes_the_run_folder(trained):
    files = {p.relative_to(trained).as_posix() for p in trained.rglob("*") if p.is_file()}
    assert {"config.yaml", "meta.json", "metrics.jsonl", "results.json", "checkpoints/last.npz",
            "checkpoints/best.npz"} <= files
    assert not [f for f in files if ".tmp" in f]  # no temporary files left behind
    results = json.loads((trained / "results.json").read_text())
    assert results["status"] == "completed" and results["step"] == 15 and results["epoch"] == 3
    assert set(results["test"]) >= {"loss", "mse", "mae"}
    meta = json.loads((trained / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["backend"]["used"] in ("cython", "numpy")
    assert {"lstmkit", "numpy", "python"} <= set(meta["versions"]) and meta["sessions"][0]["end"]
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["event"] == "eval"] == [1, 2, 3]
    assert [r["step"] for r in records if r["event"] == "train"] == [2, 4, 6, 8, 10, 12, 14]
    assert records[-1]["event"] == "test"


def test_resolved_config_is_complete_and_reproduces_the_run(trained, cli, tmp_path):
    data, _ = load_yaml((trained / "config.yaml").read_text())
    assert data["seed"] == 3 and data["training"]["optimizer"]["betas"] == [0.9, 0.999]
    assert data["task"]["options"]["noise"] == 0.05  # the task's defaults are filled in
    assert data["outputs"]["dir"] is None
    result = invoke(cli, "run", trained / "config.yaml", "-o", tmp_path / "again")
    assert result.exit_code == 0, result.output
    assert same_weights(trained / "checkpoints/last.npz", tmp_path / "again/checkpoints/last.npz")
    assert filecmp.cmp(trained / "metrics.jsonl", tmp_path / "again/metrics.jsonl", shallow=False)


def test_checkpoint_is_plain_npz_with_torch_keys(trained):
    with np.load(trained / "checkpoints/last.npz", allow_pickle=False) as z:
        params = [k for k in z.files if "/" not in k]
        assert params[:2] == ["rnn.weight_ih_l0", "rnn.weight_hh_l0"] and "head.weight" in params
        assert "optimizer/exp_avg.head.weight" in z.files and "rng/model" in z.files
    ckpt = load_checkpoint(trained / "checkpoints/last.npz")
    assert ckpt["trainer"]["step"] == 15 and ckpt["config"].startswith("# Resolved config")


def test_determinism_and_seed_flag(cli, tiny, tmp_path):
    a = invoke(cli, "run", tiny, "-o", tmp_path / "a", "--set", "training.epochs=1")
    b = invoke(cli, "run", tiny, "-o", tmp_path / "b", "--set", "training.epochs=1")
    c = invoke(cli, "run", tiny, "-o", tmp_path / "c", "--set", "training.epochs=1", "--seed", "4")
    assert a.exit_code == b.exit_code == c.exit_code == 0
    assert same_weights(tmp_path / "a/checkpoints/last.npz", tmp_path / "b/checkpoints/last.npz")
    assert filecmp.cmp(tmp_path / "a/metrics.jsonl", tmp_path / "b/metrics.jsonl", shallow=False)
    assert not same_weights(tmp_path / "a/checkpoints/last.npz", tmp_path / "c/checkpoints/last.npz")
    assert "seed: 4" in (tmp_path / "c/config.yaml").read_text()


def test_random_seed_is_recorded(cli, tiny, tmp_path):
    result = invoke(cli, "run", tiny, "-o", tmp_path / "r", "--set", "seed=null", "--set", "training.max_steps=1")
    assert result.exit_code == 0, result.output
    data, _ = load_yaml((tmp_path / "r/config.yaml").read_text())
    assert isinstance(data["seed"], int)
    assert json.loads((tmp_path / "r/meta.json").read_text())["seed_was_random"] is True


# -- interrupt, resume ----------------------------------------------------------------------
def interrupt_at(monkeypatch, step):
    def after_step(self, current):
        if current == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Trainer, "after_step", after_step)


def test_interrupt_saves_and_exits_130(cli, tiny, tmp_path, monkeypatch):
    interrupt_at(monkeypatch, 7)
    result = invoke(cli, "run", tiny, "-o", tmp_path / "run")
    assert result.exit_code == ExitCode.INTERRUPTED == 130, result.output
    assert "--resume" in result.output
    results = json.loads((tmp_path / "run/results.json").read_text())
    assert results["status"] == "interrupted" and results["step"] == 7
    assert load_checkpoint(tmp_path / "run/checkpoints/last.npz")["trainer"]["step"] == 7
    assert json.loads((tmp_path / "run/meta.json").read_text())["status"] == "interrupted"


@pytest.mark.skipif(not hasattr(os, "kill") or sys.platform == "win32", reason="POSIX signals")
def test_sigint_stops_after_the_current_step(cli, tiny, tmp_path, monkeypatch):
    import signal

    def after_step(self, step):
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the handler asks the loop to stop

    monkeypatch.setattr(trainer_module.Trainer, "after_step", after_step)
    result = invoke(cli, "run", tiny, "-o", tmp_path / "run")
    assert result.exit_code == 130, result.output
    assert "stopping after this step" in result.output
    assert load_checkpoint(tmp_path / "run/checkpoints/last.npz")["trainer"]["step"] == 4
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


@pytest.mark.parametrize("step", [7, 10])  # mid-epoch, and at an epoch's last batch
def test_resume_equals_uninterrupted(cli, tiny, tmp_path, monkeypatch, step):
    full = invoke(cli, "run", tiny, "-o", tmp_path / "full")
    assert full.exit_code == 0, full.output
    with monkeypatch.context() as m:
        interrupt_at(m, step)
        assert invoke(cli, "run", tiny, "-o", tmp_path / "part").exit_code == 130
    assert not same_weights(tmp_path / "full/checkpoints/last.npz", tmp_path / "part/checkpoints/last.npz")
    resumed = invoke(cli, "run", "--resume", tmp_path / "part")
    assert resumed.exit_code == 0, resumed.output
    assert f"from step {step}" in resumed.output
    assert same_weights(tmp_path / "full/checkpoints/last.npz", tmp_path / "part/checkpoints/last.npz")
    assert same_weights(tmp_path / "full/checkpoints/best.npz", tmp_path / "part/checkpoints/best.npz")
    assert filecmp.cmp(tmp_path / "full/metrics.jsonl", tmp_path / "part/metrics.jsonl", shallow=False)
    meta = json.loads((tmp_path / "part/meta.json").read_text())
    assert [s["status"] for s in meta["sessions"]] == ["interrupted", "completed"]


def test_resume_may_extend_epochs_only(cli, tiny, tmp_path):
    assert invoke(cli, "run", tiny, "-o", tmp_path / "long").exit_code == 0
    assert invoke(cli, "run", tiny, "-o", tmp_path / "short", "--set", "training.epochs=2").exit_code == 0
    refused = invoke(cli, "run", "--resume", tmp_path / "short", "--set", "model.hidden_size=9",
                     "--set", "training.optimizer.lr=0.1")
    assert refused.exit_code == ExitCode.INVALID_CONFIG, refused.output
    assert "model.hidden_size: 8 in the run, 9 now" in refused.output
    assert "training.optimizer.lr" in refused.output and "only training.epochs" in refused.output
    shorter = invoke(cli, "run", "--resume", tmp_path / "short", "--set", "training.epochs=1")
    assert shorter.exit_code == 3
    done = invoke(cli, "run", "--resume", tmp_path / "short")
    assert done.exit_code == 0 and "already finished" in done.output
    longer = invoke(cli, "run", "--resume", tmp_path / "short", "--set", "training.epochs=3")
    assert longer.exit_code == 0, longer.output
    assert same_weights(tmp_path / "long/checkpoints/last.npz", tmp_path / "short/checkpoints/last.npz")
    assert "epochs: 3" in (tmp_path / "short/config.yaml").read_text()


def test_resume_with_the_same_config_file(cli, tiny, tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        interrupt_at(m, 3)
        assert invoke(cli, "run", tiny, "-o", tmp_path / "run").exit_code == 130
    result = invoke(cli, "run", tiny, "--resume", tmp_path / "run")
    assert result.exit_code == 0, result.output


def test_resume_usage_errors(cli, tiny, tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke(cli, "run", "--resume", tmp_path / "empty")
    assert result.exit_code == ExitCode.USAGE and "not a run folder" in result.output
    result = invoke(cli, "run", "--resume", tmp_path / "empty", "-o", tmp_path / "x")
    assert result.exit_code == ExitCode.USAGE
    assert invoke(cli, "run").exit_code == ExitCode.USAGE


# -- failures ---------------------------------------------------------------------------------
def test_non_finite_loss_stops_naming_the_step(cli, tiny, tmp_path, monkeypatch):
    real = trainer_module.LOSSES["mse"]
    calls = {"n": 0}

    def exploding(pred, target, mask=None):
        calls["n"] += 1
        loss, grad = real(pred, target, mask)
        return (float("nan"), grad) if calls["n"] > 20 else (loss, grad)  # 3 chunks per step: step 7

    monkeypatch.setitem(trainer_module.LOSSES, "mse", exploding)
    result = invoke(cli, "run", tiny, "-o", tmp_path / "run")
    assert result.exit_code == ExitCode.RUN_FAILED == 1, result.output
    assert "non-finite loss (nan) at step 7 (epoch 2, batch 2)" in result.output
    assert "last good checkpoint" in result.output
    results = json.loads((tmp_path / "run/results.json").read_text())
    assert results["status"] == "failed" and "step 7" in results["message"]
    # one definition of a step: "step" is the last completed one, "failed_at" the one that failed
    assert results["step"] == 6 and results["failed_at"] == {"step": 7, "epoch": 2, "batch": 2}
    assert "stopped after step 6 (the last completed step)" in result.output
    assert "Lower training.optimizer.lr (now 0.01) or lower training.grad_clip (now 1)" in result.output
    assert load_checkpoint(tmp_path / "run/checkpoints/last.npz")["trainer"]["step"] == 5  # epoch 1's


def test_summary_and_results_count_steps_and_epochs_alike(cli, tiny, tmp_path):
    result = invoke(cli, "run", tiny, "-o", tmp_path / "one", "--set", "training.epochs=1")
    assert result.exit_code == 0 and "completed after 5 steps (1 epoch);" in result.output
    result = invoke(cli, "run", tiny, "-o", tmp_path / "mid", "--set", "training.max_steps=7")
    assert result.exit_code == 0, result.output
    assert "completed after 7 steps (1 epoch and 2 of 5 batches of epoch 2)" in result.output
    results = json.loads((tmp_path / "mid/results.json").read_text())
    assert results["step"] == results["last_eval"]["step"] == 7
    assert results["epoch"] == results["last_eval"]["epoch"] == 2 and results["epochs_completed"] == 1


def test_non_empty_output_dir_is_refused(cli, tiny, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = invoke(cli, "run", tiny, "-o", out)
    assert result.exit_code == ExitCode.USAGE
    assert "--overwrite" in result.output and "-o DIR" in result.output
    assert "--resume" not in result.output  # not a run folder: there is nothing to continue
    result = invoke(cli, "run", tiny, "-o", out, "--overwrite", "--set", "training.max_steps=1")
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "mine"  # only lstmkit's own files are replaced


def test_dry_run_writes_nothing(cli, tiny, tmp_path):
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke(cli, "run", tiny, "--dry-run", "-o", tmp_path / "never")
    assert result.exit_code == 0, result.output
    assert "parameters" in result.output and "rnn.weight_ih_l0" in result.output and "plan: 3 epoch" in result.output
    assert "train: inputs (40, 12, 1)" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_print_config(cli, tiny, tmp_path):
    result = invoke(cli, "run", tiny, "--print-config", "--set", "training.optimizer.lr=3e-4", "--seed", "9")
    assert result.exit_code == 0
    data, _ = load_yaml(result.output)
    assert data["training"]["optimizer"]["lr"] == 3e-4 and data["seed"] == 9
    assert not any(p.is_dir() for p in tmp_path.iterdir())


# -- config errors through the CLI ------------------------------------------------------------
@pytest.mark.parametrize("text, code, expected", [
    ("task: {type: sine\n", 3, ["config.yaml:2:1:", "expected ',' or '}'"]),
    ("task: {type: sine}\ntask: {type: copy}\n", 3, ["config.yaml:2:1:", "duplicate key 'task'"]),
    ("task: {type: sine}\nmodel: {hiden_size: 8}\n", 3,
     ["config.yaml:2:9: model.hiden_size: unknown key 'hiden_size'; did you mean 'hidden_size'?"]),
    ("task: {type: sine}\ntraining:\n  epochs: three\n  batch_size: 0\n", 3,
     ["2 problems", "config.yaml:3:3: training.epochs: should be a valid integer, got a string 'three'",
      "config.yaml:4:3: training.batch_size: should be greater than or equal to 1"]),
    ("task: {type: sine}\nmodel: {cell: lsmt}\n", 4, ["model.cell: unknown cell 'lsmt'", "did you mean 'lstm'",
                                                      "gru, lstm, rnn_relu, rnn_tanh"]),
    ("task: {type: sine}\nruntime: {backend: cuda}\n", 4, ["unknown backend 'cuda'", "auto, cython, numpy"]),
    ("task: {type: sinus}\n", 4, ["unknown task 'sinus'", "did you mean 'sine'"]),
    ("task: {type: sine}\nplugins: {require: [lstmkit-nonexistent>=1.0]}\n", 4,
     ["plugins.require.0: required plugin 'lstmkit-nonexistent' is not installed"]),
    ("task: {type: sine, options: {seq_len: 10, nosie: 1}}\n", 3,
     ["config.yaml:1:43: task.options.nosie: unknown key 'nosie'; did you mean 'noise'?"]),
    ("task: {type: sine, train: config.yaml}\n", 3, ["task.train should be null"]),
])
def test_config_errors(cli, tmp_path, text, code, expected):
    config = write(tmp_path, text)
    result = invoke(cli, "run", config, "-o", tmp_path / "out")
    assert result.exit_code == code, result.output
    for part in expected:
        assert part in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_missing_config_file_and_bad_set(cli, tmp_path, tiny):
    result = invoke(cli, "run", tmp_path / "nope.yaml")
    assert result.exit_code == ExitCode.USAGE and "does not exist" in result.stderr
    result = invoke(cli, "run", tiny, "--set", "training.epochs")
    assert result.exit_code == ExitCode.USAGE and "KEY=VALUE" in result.stderr


def test_set_errors_point_at_the_flag(cli, tiny):
    result = invoke(cli, "run", tiny, "--set", "training.epocs=2", "--set", "model.dropout=2")
    assert result.exit_code == 3
    assert "--set training.epocs=2: training.epocs: unknown key 'epocs'; did you mean 'epochs'?" in result.stderr
    assert "--set model.dropout=2: model.dropout: should be less than or equal to 1" in result.stderr


# -- config init / show / validate / schema -----------------------------------------------------
@pytest.mark.parametrize("task", ["sine", "adding", "copy"])
def test_config_init_writes_a_valid_config(cli, tmp_path, task):
    out = tmp_path / f"{task}.yaml"
    result = invoke(cli, "config", "init", "--task", task, "--cell", "gru", "-o", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert f"type: {task}" in text and "cell: gru" in text and "# Learning rate." in text
    result = invoke(cli, "config", "validate", out, "--set", "task.options.num_train=8")
    assert result.exit_code == 0, result.output
    assert invoke(cli, "config", "init", "--task", task, "-o", out).exit_code == ExitCode.USAGE  # exists


def test_config_init_unknown_names(cli):
    result = invoke(cli, "config", "init", "--task", "nope")
    assert result.exit_code == ExitCode.UNAVAILABLE and "valid tasks" in result.stderr
    result = invoke(cli, "config", "init", "--cell", "nope")
    assert result.exit_code == ExitCode.UNAVAILABLE and "valid cells" in result.stderr


def test_config_show_and_validate(cli, tiny, tmp_path):
    result = invoke(cli, "config", "show", tiny, "--set", "model.cell=gru", "--backend", "numpy")
    assert result.exit_code == 0
    data, _ = load_yaml(result.output)
    assert data["model"]["cell"] == "gru" and data["runtime"]["backend"] == "numpy"
    result = invoke(cli, "config", "validate", tiny)
    assert result.exit_code == 0 and "ok" in result.output and "40/16/16" in result.output
    bad = write(tmp_path, "task: {type: sine}\nmodel: {proj_size: 4, cell: gru}\n", "bad.yaml")
    result = invoke(cli, "config", "validate", bad)
    assert result.exit_code == 3 and "model.proj_size: proj_size is only supported for LSTM" in result.stderr


def test_config_schema_is_json_schema(cli):
    result = invoke(cli, "config", "schema")
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["$schema"].endswith("2020-12/schema") and schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"base", "version", "name", "seed", "model", "task", "training",
                                         "runtime", "outputs", "plugins"}
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    data, _ = load_yaml(TINY)
    assert not list(validator.iter_errors(data))
    data["model"]["hiden_size"] = 3
    assert list(validator.iter_errors(data))
    assert list(validator.iter_errors({"model": {"hidden_size": 4}}))  # task is required ...
    assert not list(validator.iter_errors({"base": "other.yaml", "model": {"hidden_size": 4}}))  # ... but by a base


# -- evaluate / predict ---------------------------------------------------------------------------
def test_evaluate(cli, trained):
    result = invoke(cli, "evaluate", trained, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    results = json.loads((trained / "results.json").read_text())
    assert report["split"] == "test" and report["metrics"]["loss"] == results["test"]["loss"]
    result = invoke(cli, "evaluate", trained, "--split", "valid", "--checkpoint", "last")
    assert result.exit_code == 0 and "mae" in result.output


def test_predict(cli, trained, tmp_path):
    inputs = tmp_path / "series.txt"
    inputs.write_text("0.0 0.3 0.6 0.8 0.9\n0.1, 0.2, 0.1\n")
    result = invoke(cli, "predict", trained, inputs)
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.output)
    assert len(predictions) == 2 and len(predictions[1]["per_step"]) == 3
    out = tmp_path / "pred.json"
    assert invoke(cli, "predict", trained, inputs, "-o", out).exit_code == 0
    assert json.loads(out.read_text()) == predictions
    bad = tmp_path / "bad.txt"
    bad.write_text("a b c\n")
    result = invoke(cli, "predict", trained, bad)
    assert result.exit_code == 1 and "cannot read" in result.stderr


def test_non_empty_run_folder_suggests_resume_and_dry_run_warns(cli, tiny, tmp_path, trained):
    result = invoke(cli, "run", tiny, "-o", trained)
    assert result.exit_code == ExitCode.USAGE and f"lstmkit run --resume {trained}" in result.output
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = invoke(cli, "run", tiny, "-o", out, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "warning: the real run will be refused" in result.output and "not empty" in result.output
    assert "--resume" not in result.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    result = invoke(cli, "run", tiny, "-o", tmp_path / "new", "--dry-run")
    assert "warning" not in result.output


# -- damaged or edited run folders ------------------------------------------------------------------
def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_run(trained: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(trained, to)
    return to


@pytest.mark.parametrize("damage", [b"garbage\n", b"PK\x03\x04 truncated"])
def test_resume_from_a_damaged_checkpoint_is_a_clean_error(cli, trained, tmp_path, damage):
    run = copy_run(trained, tmp_path / "run")
    (run / "checkpoints/last.npz").write_bytes(damage)
    before = snapshot(run)
    result = invoke(cli, "run", "--resume", run, "--set", "training.epochs=5")
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and "allow_pickle" not in result.output
    assert f"{run}/checkpoints/last.npz is damaged or not an lstmkit checkpoint" in result.output
    assert "--overwrite" in result.output  # what to do
    assert snapshot(run) == before  # nothing written
    result = invoke(cli, "evaluate", run, "--checkpoint", "last")
    assert result.exit_code == ExitCode.RUN_FAILED and "is damaged" in result.output


def test_resume_after_config_yaml_was_edited_is_refused(cli, trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("hidden_size: 8", "hidden_size: 40"))
    before = snapshot(run)
    result = invoke(cli, "run", "--resume", run, "--set", "training.epochs=5")
    assert result.exit_code == ExitCode.INVALID_CONFIG, result.output
    assert "model.hidden_size: 8 in last.npz, 40 in config.yaml" in result.output
    assert "RuntimeError" not in result.output and "size mismatch" not in result.output
    assert snapshot(run) == before
    for args in (["evaluate", run], ["predict", run, ROOT / "examples/data/sine_inputs.txt"]):
        result = invoke(cli, *args)
        assert result.exit_code == ExitCode.INVALID_CONFIG, result.output
        assert "no longer matches the checkpoint" in result.output and "model.hidden_size" in result.output


def test_resume_of_a_finished_run_changes_nothing(cli, trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    before = snapshot(run)
    result = invoke(cli, "run", "--resume", run)
    assert result.exit_code == 0, result.output
    assert "already finished" in result.output and "test (" not in result.output
    assert snapshot(run) == before  # no second test record, no new session in meta.json
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records].count("test") == 1


# -- predict input errors -----------------------------------------------------------------------------
CSV_RUN = """\
name: weather
seed: 1
model: {cell: lstm, hidden_size: 4}
task: {type: csv, train: DATA/weather.csv, options: {columns: [temperature, humidity], targets: [demand], window: 6}}
training: {max_steps: 2, batch_size: 16}
"""
CLS_RUN = """\
name: waves
seed: 1
model: {cell: lstm, hidden_size: 4}
task: {type: sequence_classification, train: DATA/waveforms.csv}
training: {max_steps: 2, batch_size: 16}
"""


@pytest.mark.parametrize("text, expected", [(CSV_RUN, "CSV text file"), (CLS_RUN, "unlabelled CSV")])
def test_predict_with_a_binary_file_names_the_expected_format(cli, tmp_path, text, expected):
    config = write(tmp_path, text.replace("DATA", str(ROOT / "examples/data")))
    assert invoke(cli, "run", config, "-o", tmp_path / "run").exit_code == 0
    binary = tmp_path / "x.npy"
    np.save(binary, np.random.default_rng(0).normal(size=(3, 7)))
    result = invoke(cli, "predict", tmp_path / "run", binary)
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert "codec can't decode" not in result.output
    assert "not a text file" in result.output and expected in result.output


def test_csv_predict_needs_a_full_window(cli, tmp_path):
    config = write(tmp_path, CSV_RUN.replace("DATA", str(ROOT / "examples/data")))
    assert invoke(cli, "run", config, "-o", tmp_path / "run").exit_code == 0
    lines = (ROOT / "examples/data/weather.csv").read_text().splitlines()
    short = tmp_path / "short.csv"
    short.write_text("\n".join(lines[:4]) + "\n")
    result = invoke(cli, "predict", tmp_path / "run", short)
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert "3 data row(s)" in result.output and "window of 6 rows" in result.output
    full = tmp_path / "full.csv"
    full.write_text("\n".join(lines[:7]) + "\n")
    result = invoke(cli, "predict", tmp_path / "run", full)
    assert result.exit_code == 0, result.output


def test_csv_unknown_column_is_reported_at_its_key_with_a_suggestion(cli, tmp_path):
    text = CSV_RUN.replace("DATA", str(ROOT / "examples/data")).replace("humidity]", "humidty]")
    config = write(tmp_path, text)
    result = invoke(cli, "config", "validate", config)
    assert result.exit_code == ExitCode.INVALID_CONFIG, result.output
    assert "task.options.columns: no column 'humidty'" in result.output
    assert "did you mean 'humidity'?" in result.output
    assert f"{config}:4:" in result.output and ":1:1:" not in result.output
    config = write(tmp_path, CSV_RUN.replace("DATA", str(ROOT / "examples/data")).replace("[demand]", "[demnad]"))
    result = invoke(cli, "config", "validate", config)
    assert "task.options.targets: no column 'demnad'" in result.output and "did you mean 'demand'?" in result.output


def test_classification_csv_with_a_header_row_hints_header_true(cli, tmp_path):
    data = tmp_path / "waves.csv"
    data.write_text("label,temperature,pressure\n" + (ROOT / "examples/data/waveforms.csv").read_text())
    config = write(tmp_path, CLS_RUN.replace("DATA/waveforms.csv", str(data)))
    result = invoke(cli, "config", "validate", config)
    assert result.exit_code == ExitCode.INVALID_CONFIG, result.output
    assert "could not convert string to float: 'temperature'" in result.output
    assert "header: true" in result.output
    fixed = write(tmp_path, CLS_RUN.replace("DATA/waveforms.csv", str(data)).replace(
        "waveforms.csv}", "waveforms.csv}").replace("train: " + str(data) + "}",
                                                     "train: " + str(data) + ", options: {header: true}}"), "ok.yaml")
    assert invoke(cli, "config", "validate", fixed).exit_code == 0


def test_null_is_described_once(cli, tiny):
    result = invoke(cli, "config", "validate", tiny, "--set", "training.batch_size=null")
    assert result.exit_code == ExitCode.INVALID_CONFIG
    assert "got null" in result.output and "null None" not in result.output


# -- the command line as a whole -------------------------------------------------------------------
def test_exit_codes_are_published():
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 130]


def test_help_does_not_import_the_heavy_parts():
    code = ("import sys; from lstmkit.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('pydantic', 'lstmkit.run', 'lstmkit.config.schema', 'lstmkit.tasks') "
            "if m in sys.modules]\nprint('HEAVY', heavy)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_every_example_config_validates(cli):
    import yaml

    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert any(p.name == "quickstart.yaml" for p in examples)
    for path in examples:
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and "base" in data and "params" in data:
            continue  # a sweep spec (lstmkit sweep), not a run config: its base config is validated here

        result = invoke(cli, "config", "validate", path)
        assert result.exit_code == 0, f"{path.name}: {result.output}"


def test_yaml_roundtrip_of_dump(tmp_path):
    data = {"a": "1e-3", "b": "on", "c": 1e-3, "d": None, "e": [1, "2"]}
    assert load_yaml(dump_yaml(data))[0] == data


# -- policies: threads, keep_last, early stopping, max_steps, plots -------------------------------
def test_threads_keep_last_and_max_steps(cli, tiny, tmp_path):
    result = invoke(cli, "run", tiny, "-o", tmp_path / "run", "--set", "runtime.threads=1",
                    "--set", "outputs.checkpoint.keep_last=3", "--set", "training.epochs=4")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run/meta.json").read_text())["threads"]["limit"] == 1
    snapshots = sorted(p.name for p in (tmp_path / "run/checkpoints").glob("epoch-*.npz"))
    assert snapshots == ["epoch-0003.npz", "epoch-0004.npz"]
    assert same_weights(tmp_path / "run/checkpoints/epoch-0004.npz", tmp_path / "run/checkpoints/last.npz")
    # max_steps inside an epoch: evaluated and checkpointed there; extending it continues exactly
    steps = invoke(cli, "run", tiny, "-o", tmp_path / "steps", "--set", "training.max_steps=7")
    assert steps.exit_code == 0, steps.output
    assert json.loads((tmp_path / "steps/results.json").read_text())["step"] == 7
    more = invoke(cli, "run", "--resume", tmp_path / "steps", "--set", "training.max_steps=15")
    assert more.exit_code == 0, more.output
    full = invoke(cli, "run", tiny, "-o", tmp_path / "full")
    assert full.exit_code == 0
    assert same_weights(tmp_path / "full/checkpoints/last.npz", tmp_path / "steps/checkpoints/last.npz")


def test_early_stopping_and_plateau(cli, tiny, tmp_path):
    # mode max on an error metric: every evaluation after the first is "no improvement"
    result = invoke(cli, "run", tiny, "-o", tmp_path / "run", "--set", "training.epochs=10",
                    "--set", "training.early_stopping={metric: valid.mae, mode: max, patience: 1}",
                    "--set", "training.scheduler={name: plateau, patience: 0, factor: 0.5}")
    assert result.exit_code == 0, result.output
    assert "early stopping: valid.mae has not improved for 1 evaluation(s)" in result.output
    results = json.loads((tmp_path / "run/results.json").read_text())
    assert results["status"] == "stopped_early" and results["epoch"] == 2
    assert results["best"]["metric"] == "valid.mae" and results["best"]["epoch"] == 1
    evals = [r for r in map(json.loads, (tmp_path / "run/metrics.jsonl").read_text().splitlines())
             if r["event"] == "eval"]
    assert evals[1]["valid.mae"] < evals[0]["valid.mae"]
    # the plateau schedule halved the learning rate after the second evaluation
    assert load_checkpoint(tmp_path / "run/checkpoints/last.npz")["optimizer"]["lr"] == 0.005


def test_loss_plot_or_a_note(tmp_path, monkeypatch):
    from lstmkit.run.session import plot_losses

    records = [{"event": "train", "step": 2, "loss": 0.5}, {"event": "eval", "step": 5, "valid.loss": 0.4,
                                                           "train.loss": 0.45}]
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed, even if imported already
    note = plot_losses(records, tmp_path / "loss.png")
    assert "matplotlib is not installed" in note and not (tmp_path / "loss.png").exists()
    monkeypatch.undo()
    pytest.importorskip("matplotlib")
    assert plot_losses(records, tmp_path / "loss.png") is None
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_without_best_uses_last(cli, tiny, tmp_path):
    result = invoke(cli, "run", tiny, "-o", tmp_path / "run", "--set", "outputs.checkpoint.save_best=false",
                    "--set", "training.max_steps=2")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "run/checkpoints/best.npz").exists()
    report = json.loads(invoke(cli, "evaluate", tmp_path / "run", "--json").output)
    assert report["checkpoint"].endswith("last.npz")
    assert json.loads((tmp_path / "run/results.json").read_text())["test_checkpoint"] == "last"
    result = invoke(cli, "evaluate", tmp_path / "run", "--checkpoint", "best")
    assert result.exit_code == 1 and "no checkpoint" in result.stderr


def test_numpy_backend_float64(cli, tiny, tmp_path):
    result = invoke(cli, "run", tiny, "-o", tmp_path / "run", "--backend", "numpy",
                    "--set", "runtime.dtype=float64", "--set", "training.max_steps=2")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run/meta.json").read_text())["backend"] == {"requested": "numpy", "used": "numpy"}
    assert load_weights(tmp_path / "run/checkpoints/last.npz")["rnn.weight_ih_l0"].dtype == np.float64


def test_unexpected_errors_are_recorded(cli, tiny, tmp_path, monkeypatch):
    def broken(self, index):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(trainer_module.Trainer, "_train_step", broken)
    result = invoke(cli, "run", tiny, "-o", tmp_path / "run")
    assert result.exit_code == 1 and isinstance(result.exception, ZeroDivisionError)
    results = json.loads((tmp_path / "run/results.json").read_text())
    assert results["status"] == "failed" and results["message"] == "ZeroDivisionError: a bug"


def test_ctrl_c_outside_training_exits_130(cli, tiny, tmp_path, monkeypatch):
    from lstmkit.run import session

    def interrupted(loaded):
        raise KeyboardInterrupt

    monkeypatch.setattr(session, "build_task", interrupted)
    result = invoke(cli, "run", tiny, "-o", tmp_path / "run")
    assert result.exit_code == 130 and "Interrupted." in result.stderr
