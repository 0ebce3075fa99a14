"""The single-run workflow around ``lstmkit run``: baselines, progress, metrics.csv, loss.png,
``evaluate --save-predictions`` with per-class/per-column metrics, and ``--seeds``."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from lstmkit.cli import ExitCode, make_cli
from lstmkit.registry import get_registry
from lstmkit.run.metrics import csv_text, read_metrics
from lstmkit.run.outputs import column_metrics, confusion_report, prediction_rows
from lstmkit.run.progress import RunProgress

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data"
TINY = """\
name: tiny
seed: 3
model: {cell: lstm, hidden_size: 8}
task: {type: sine, options: {seq_len: 12, num_train: 40, num_valid: 16, num_test: 16}}
training: {epochs: 3, batch_size: 8, optimizer: {name: adam, lr: 1e-2}}
outputs: {log_every: 2}
"""
CLASSIFY = f"""\
name: waves
seed: 0
model: {{cell: gru, hidden_size: 6}}
task: {{type: sequence_classification, train: {DATA / 'waveforms.csv'}}}
training: {{epochs: 1, batch_size: 16}}
"""
CSV = f"""\
name: weather
seed: 0
model: {{cell: lstm, hidden_size: 6}}
task:
  type: csv
  train: {DATA / 'weather.csv'}
  options: {{window: 8, columns: [temperature, demand], targets: [temperature, demand]}}
training: {{epochs: 1, batch_size: 32}}
"""


@pytest.fixture(scope="module")
def cli():
    return make_cli()


def invoke(cli, *args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cli):
    base = tmp_path_factory.mktemp("workflow")
    (base / "tiny.yaml").write_text(TINY)
    result = invoke(cli, "run", base / "tiny.yaml", "-o", base / "run")
    assert result.exit_code == 0, result.output
    return base / "run", result.output


def make(name, options=None, *, seed=0, splits=None):
    spec = get_registry().task_spec(name)
    return spec.factory(spec.options_model(**(options or {})).model_dump(), base_dir=DATA, seed=seed, splits=splits)


# -- baselines --------------------------------------------------------------------------------
def test_a_run_records_and_prints_its_baseline(trained):
    run, output = trained
    results = json.loads((run / "results.json").read_text())
    base = results["baseline"]
    assert base["method"] == "repeat-last" and set(base) == {"method", "valid", "test"}
    test = make("sine", {"seq_len": 12, "num_train": 40, "num_valid": 16, "num_test": 16}, seed=3).data()["test"]
    expected = float(np.mean((test.inputs.astype(np.float64) - test.targets.astype(np.float64)) ** 2))
    assert base["test"]["mse"] == pytest.approx(expected) and base["test"]["loss"] == pytest.approx(expected)
    assert f"baseline (repeat-last) on valid: loss {base['valid']['loss']:.5g}" in output
    assert f"(baseline {base['test']['mse']:.5g})" in output  # beside the final test metrics


def test_each_builtin_task_has_its_naive_baseline():
    small = {"num_train": 30, "num_valid": 10, "num_test": 10}
    adding = make("adding", {**small, "seq_len": 10})
    name, out = adding.baseline("valid")
    assert name == "train mean" and np.allclose(out, adding.data()["train"].targets.mean())

    copy = make("copy", {**small, "copy_len": 3})
    name, out = copy.baseline("test")
    train = copy.data()["train"].targets
    assert name == "majority class per position" and out.shape[:2] == copy.data()["test"].targets.shape
    assert np.array_equal(out.argmax(-1)[0], [np.bincount(col, minlength=copy.output_size).argmax() for col in train.T])

    lm = make("char_lm", {"seq_len": 20}, splits={"train": "lighthouse.txt"})
    name, out = lm.baseline("valid")
    train, valid = lm.data()["train"], lm.data()["valid"]
    valid_mask = valid.mask() if valid.lengths is not None else np.ones(valid.targets.shape, bool)
    train_ids = train.targets[train.mask()] if train.lengths is not None else train.targets.ravel()
    counts = np.bincount(train_ids, minlength=lm.output_size)
    cross_entropy = -np.mean(np.log(counts[valid.targets[valid_mask]] / counts.sum()))
    assert name == "unigram"
    assert lm.metrics(out, valid.targets, valid.lengths)["perplexity"] == pytest.approx(math.exp(cross_entropy))

    waves = make("sequence_classification", splits={"train": "waveforms.csv"})
    name, out = waves.baseline("test")
    labels = waves.data()["train"].targets
    majority = np.bincount(labels).argmax()
    assert name == "majority class" and set(out.argmax(-1)) == {majority}
    assert waves.metrics(out, waves.data()["test"].targets)["accuracy"] == pytest.approx(
        np.mean(waves.data()["test"].targets == majority))


@pytest.mark.parametrize("difference", [False, True])
def test_csv_baseline_is_repeat_last_or_zero_change(difference):
    task = make("csv", {"window": 6, "columns": ["temperature"], "targets": ["temperature"],
                        "difference": difference}, splits={"train": "weather.csv"})
    name, out = task.baseline("valid")
    forecast = task.denormalize(out)[:, 0]
    table, window = task.tables["valid"][:, task._out[0]], 6
    if difference:
        assert name == "zero change" and np.allclose(forecast, 0)
    else:  # the value in the window's last row, in the file's units
        assert name == "repeat-last" and np.allclose(forecast, table[window - 1:window - 1 + len(forecast)])


# -- metrics.csv and loss.png -----------------------------------------------------------------
def test_metrics_csv_holds_the_records_of_metrics_jsonl(trained):
    run, _ = trained
    records = read_metrics(run / "metrics.jsonl")
    rows = list(csv.DictReader(io.StringIO((run / "metrics.csv").read_text())))
    assert len(rows) == len(records)
    for record, row in zip(records, rows):
        for key, value in record.items():
            if isinstance(value, bool):
                assert row[key] == str(value).lower()
            elif isinstance(value, float):
                assert float(row[key]) == value  # repr round-trips exactly
            else:
                assert row[key] == str(value)
        assert all(row[k] == "" for k in row if k not in record)


def test_csv_text_columns_in_order_of_first_appearance():
    text = csv_text([{"event": "train", "step": 1, "loss": 0.5}, {"event": "eval", "step": 2, "valid.mse": None,
                                                                    "best": True}])
    assert text.splitlines() == ["event,step,loss,valid.mse,best", "train,1,0.5,,", "eval,2,,,true"]


def test_loss_png_has_the_title_the_monitored_metric_and_the_best_epoch(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from lstmkit.run.report import plot_losses

    seen = {}
    real = Figure.savefig

    def savefig(self, *args, **kwargs):
        ax = self.axes[0]
        seen["title"] = ax.get_title()
        seen["labels"] = [t.get_text() for t in ax.get_legend().get_texts()]
        seen["right"] = [a.get_ylabel() for a in self.axes[1:]]
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    records = [{"event": "train", "step": s, "loss": 1.0 / s} for s in (1, 2, 3, 4)]
    records += [{"event": "eval", "step": 2, "epoch": 1, "valid.loss": 0.6, "valid.accuracy": 0.5},
                {"event": "eval", "step": 4, "epoch": 2, "valid.loss": 0.7, "valid.accuracy": 0.75}]
    best = {"metric": "valid.accuracy", "mode": "max", "value": 0.75, "step": 4, "epoch": 2}
    baseline = {"method": "majority class", "valid": {"loss": 1.1, "accuracy": 0.33}}
    assert plot_losses(records, tmp_path / "loss.png", title="waves: sequence_classification",
                       monitor="valid.accuracy", best=best, baseline=baseline) is None
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert seen["title"] == "waves: sequence_classification (monitor: valid.accuracy)"
    assert "best valid.accuracy 0.75 (epoch 2)" in seen["labels"]
    assert "baseline (majority class) valid loss 1.1" in seen["labels"]
    assert "valid.accuracy (monitored)" in seen["labels"] and seen["right"] == ["valid.accuracy"]


# -- progress ---------------------------------------------------------------------------------
class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _fake_trainer(total=100, epochs=10):
    state = SimpleNamespace(step=0, epoch=0, batch=0, train_sum=0.0, train_count=0)
    return SimpleNamespace(state=state, training=SimpleNamespace(epochs=epochs), planned_steps=lambda: total)


def _steps(progress, trainer, clock, n, per_epoch=10):
    for _ in range(n):
        s = trainer.state
        s.step += 1
        s.batch = s.step % per_epoch
        s.epoch = s.step // per_epoch
        s.train_sum += 0.5
        s.train_count += 1
        clock.now += 0.02
        with progress(per_epoch, "epoch") as bar:
            bar.update(1)


def test_the_terminal_bar_is_one_line_for_the_whole_run_and_is_erased_at_the_end():
    out, clock = [], _Clock()
    progress = RunProgress(out.append, True, clock=clock, width=120)
    trainer = _fake_trainer()
    progress.begin(trainer)
    _steps(progress, trainer, clock, 30)
    progress.echo("epoch 3/10  valid.loss 0.1")  # a log line: the bar is erased, printed below it again
    _steps(progress, trainer, clock, 70)
    progress.end()
    text = "".join(out)
    assert "\n" not in text.replace("epoch 3/10  valid.loss 0.1\n", "")  # the bar is redrawn in place
    assert "\r\x1b[Kepoch 3/10  valid.loss 0.1\n\r" in text
    last = text.rsplit("\r", 2)[-2]
    assert last.startswith("epoch 10/10  step 100/100  100% |####################|")
    assert "50.0 steps/s" in last and "ETA 0s" in last and "loss 0.5" in last
    assert text.endswith("\r\x1b[K")  # no stale bar line left behind
    assert "ETA 1s" in text  # 50 steps left at 50 steps/s


def test_without_a_terminal_progress_is_a_plain_line_every_tenth():
    lines, clock = [], _Clock()
    progress = RunProgress(lambda text: pytest.fail("nothing is drawn in place"), False, echo=lines.append, clock=clock)
    trainer = _fake_trainer(total=50, epochs=None)
    progress.begin(trainer)
    _steps(progress, trainer, clock, 50, per_epoch=5)
    progress.end()
    assert len(lines) == 9 and lines[0].startswith("progress: epoch 1  step 5/50  10%  50.0 steps/s  ETA 1s")
    assert all("\r" not in line for line in lines)


def test_the_cli_prints_plain_progress_lines_off_a_terminal(cli, tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = invoke(cli, "run", tmp_path / "tiny.yaml", "-o", tmp_path / "run")
    assert result.exit_code == 0 and "progress: epoch 1/3  step 2/15  13%" in result.output
    quiet = invoke(cli, "run", tmp_path / "tiny.yaml", "-o", tmp_path / "quiet", "--no-progress")
    assert quiet.exit_code == 0 and "progress:" not in quiet.output and "\r" not in quiet.output


# -- evaluate --save-predictions, per-class and per-column metrics ----------------------------
def test_evaluate_saves_every_prediction_with_its_target(cli, trained, tmp_path):
    run, _ = trained
    result = invoke(cli, "evaluate", run, "--save-predictions", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 16 * 12 and set(rows[0]) == {"index", "step", "prediction", "target"}
    assert "predictions: 192 rows written to" in result.output and "baseline" in result.output
    as_json = json.loads(invoke(cli, "evaluate", run, "--json", "--save-predictions", tmp_path / "p.jsonl").output)
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == 192 and as_json["predictions"]["rows"] == 192
    mse = np.mean([(r["prediction"] - r["target"]) ** 2 for r in lines])
    assert mse == pytest.approx(as_json["metrics"]["mse"], rel=1e-5)
    bad = invoke(cli, "evaluate", run, "--save-predictions", tmp_path / "p.txt")
    assert bad.exit_code == ExitCode.USAGE and "p.txt: expected a file name ending in .csv" in bad.output
    assert "Traceback" not in bad.output and not (tmp_path / "p.txt").exists()


def test_classification_gets_per_class_metrics_and_a_confusion_matrix(cli, tmp_path):
    (tmp_path / "waves.yaml").write_text(CLASSIFY)
    assert invoke(cli, "run", tmp_path / "waves.yaml", "-o", tmp_path / "run", "--no-progress").exit_code == 0
    result = json.loads(invoke(cli, "evaluate", tmp_path / "run", "--json", "--save-predictions",
                               tmp_path / "p.json").output)
    matrix = np.array(result["confusion"])
    assert result["labels"] == ["sawtooth", "sine", "square"] and matrix.sum() == result["size"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(result["metrics"]["accuracy"])
    for i, label in enumerate(result["labels"]):
        assert result["per_class"][label]["support"] == matrix[i].sum()
    rows = json.loads((tmp_path / "p.json").read_text())
    assert len(rows) == result["size"] and {r["target"] for r in rows} <= set(result["labels"])
    assert sum(r["correct"] for r in rows) == np.trace(matrix)
    text = invoke(cli, "evaluate", tmp_path / "run").output
    assert "per class:" in text and "confusion matrix (rows: target, columns: predicted):" in text


def test_confusion_report_by_hand():
    task = SimpleNamespace(loss="cross_entropy", target="last", output_size=3, classes=["a", "b", "c"])
    logits = np.eye(3)[[0, 0, 1, 2, 2, 2]]
    report = confusion_report(task, logits, np.array([0, 1, 1, 2, 2, 0]))
    assert report["confusion"] == [[1, 0, 1], [1, 1, 0], [0, 0, 2]]
    assert report["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert report["per_class"]["c"]["precision"] == pytest.approx(2 / 3)
    assert report["per_class"]["b"]["recall"] == 0.5 and report["per_class"]["b"]["precision"] == 1.0
    none = confusion_report(task, np.eye(3)[[0, 0]], np.array([0, 0]))
    assert none["per_class"]["b"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert confusion_report(SimpleNamespace(loss="mse", target="last"), logits, None) is None


def test_csv_gets_per_column_metrics_in_the_files_units(cli, tmp_path):
    (tmp_path / "weather.yaml").write_text(CSV)
    assert invoke(cli, "run", tmp_path / "weather.yaml", "-o", tmp_path / "run", "--no-progress").exit_code == 0
    result = json.loads(invoke(cli, "evaluate", tmp_path / "run", "--json", "--save-predictions",
                               tmp_path / "p.csv").output)
    columns = result["per_column"]
    assert list(columns) == ["temperature", "demand"]
    assert np.mean([c["mse"] for c in columns.values()]) == pytest.approx(result["metrics"]["mse"])
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert set(rows[0]) == {"index", "prediction.temperature", "target.temperature", "prediction.demand",
                            "target.demand"}
    err = [(float(r["prediction.demand"]) - float(r["target.demand"])) ** 2 for r in rows]
    assert np.mean(err) == pytest.approx(columns["demand"]["mse"], rel=1e-6)


def test_prediction_rows_leave_out_steps_past_each_length():
    task = SimpleNamespace(loss="mse", target="sequence")
    split = SimpleNamespace(targets=np.zeros((2, 3, 1)), lengths=np.array([3, 1]))
    rows = prediction_rows(task, split, np.ones((2, 3, 1)))
    assert [(r["index"], r["step"]) for r in rows] == [(0, 1), (0, 2), (0, 3), (1, 1)]
    assert rows[0] == {"index": 0, "step": 1, "prediction": 1.0, "target": 0.0}
    assert column_metrics(task, np.ones((2, 1)), np.zeros((2, 1))) is None


# -- --seeds ----------------------------------------------------------------------------------
def test_seeds_run_one_config_per_seed_with_mean_and_std(cli, tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = invoke(cli, "run", tmp_path / "tiny.yaml", "--seeds", "0,1,2", "-o", tmp_path / "seeds",
                    "--set", "training.epochs=1", "--no-progress")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "seeds/seeds.json").read_text())
    assert summary["seeds"] == [0, 1, 2]
    values = []
    for seed in (0, 1, 2):
        results = json.loads((tmp_path / f"seeds/seed-{seed}/results.json").read_text())
        config = (tmp_path / f"seeds/seed-{seed}/config.yaml").read_text()
        assert results["status"] == "completed" and f"\nseed: {seed}\n" in config
        values.append(results["test"]["mse"])
    stats = summary["test"]["mse"]
    assert stats["mean"] == pytest.approx(np.mean(values)) and stats["std"] == pytest.approx(np.std(values, ddof=1))
    assert f"test mse" in result.output and f"{stats['mean']:.6g} ± {stats['std']:.2g} (n=3)" in result.output
    again = invoke(cli, "run", tmp_path / "tiny.yaml", "--seeds", "0,1", "-o", tmp_path / "seeds")
    assert again.exit_code == ExitCode.USAGE and "already holds a seeds run" in again.output


@pytest.mark.parametrize("args, message", [(["--seeds", "0,x"], "got 'x'"), (["--seeds", "1,1"], "seed 1 is given twice"),
                                           (["--seeds", "0,1", "--seed", "3"], "cannot be combined with --seed")])
def test_seeds_usage_errors(cli, tmp_path, args, message):
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = invoke(cli, "run", tmp_path / "tiny.yaml", *args, "-o", tmp_path / "out")
    assert result.exit_code == ExitCode.USAGE and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


# -- TensorBoard --------------------------------------------------------------------------------
def _events(folder: Path) -> list:
    """Every event of the TFRecord files in ``folder`` (length, crc, payload, crc), oldest file first."""
    import struct

    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    out = []
    for path in sorted(folder.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + n])
            out.append(event)
            i += 12 + n + 4
    return out


def test_tensorboard_event_files_hold_the_metrics(cli, tmp_path):
    pytest.importorskip("tensorboardX")
    (tmp_path / "tiny.yaml").write_text(TINY)
    run = tmp_path / "run"
    result = invoke(cli, "run", tmp_path / "tiny.yaml", "-o", run, "--set", "outputs.tensorboard=true",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    scalars = {}
    for event in _events(run / "tensorboard"):
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    records = read_metrics(run / "metrics.jsonl")
    evals = [r for r in records if r["event"] == "eval"]
    assert [s for s, _ in scalars["valid/loss"]] == [r["step"] for r in evals]
    assert [v for _, v in scalars["valid/mae"]] == pytest.approx([r["valid.mae"] for r in evals], rel=1e-6)
    assert len(scalars["train/loss"]) == sum(r["event"] == "train" for r in records)
    assert set(scalars) >= {"train/lr", "train/grad_norm", "train/epoch_loss", "test/mse"}
    # --overwrite replaces the event files of the earlier run
    again = invoke(cli, "run", tmp_path / "tiny.yaml", "-o", run, "--overwrite", "--no-progress")
    assert again.exit_code == 0 and not (run / "tensorboard").exists()


def test_a_resumed_run_purges_the_events_after_its_checkpoint(cli, tmp_path):
    pytest.importorskip("tensorboardX")
    (tmp_path / "tiny.yaml").write_text(TINY)
    run = tmp_path / "run"
    first = invoke(cli, "run", tmp_path / "tiny.yaml", "-o", run, "--set", "outputs.tensorboard=true",
                   "--set", "training.epochs=1", "--no-progress")
    assert first.exit_code == 0, first.output
    result = invoke(cli, "run", "--resume", run, "--set", "training.epochs=2", "--no-progress")
    assert result.exit_code == 0, result.output
    starts = [e.step for e in _events(run / "tensorboard") if e.session_log.status == 1]  # SessionLog.START
    assert starts == [6]  # events after step 5 (the checkpoint) are dropped by TensorBoard


def test_tensorboard_without_tensorboardx_names_the_extra(cli, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails as if not installed
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = invoke(cli, "run", tmp_path / "tiny.yaml", "-o", tmp_path / "run", "--set", "outputs.tensorboard=true")
    assert result.exit_code == ExitCode.UNAVAILABLE and 'pip install "lstmkit[tensorboard]"' in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_a_baseline_that_does_not_fit_never_fails_the_run(cli, tmp_path, monkeypatch):
    from lstmkit.tasks.sine import SineTask

    def broken(self, split):
        raise ValueError("shapes a plugin's task did not expect")

    monkeypatch.setattr(SineTask, "baseline", broken)
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = invoke(cli, "run", tmp_path / "tiny.yaml", "-o", tmp_path / "run", "--set", "training.epochs=1",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    assert "baseline (" not in result.output
    assert json.loads((tmp_path / "run" / "results.json").read_text())["baseline"] is None


@pytest.mark.parametrize("task", ["sine", "adding", "copy", "char_lm", "csv", "sequence_classification"])
def test_the_workflow_on_every_builtin_task(cli, tmp_path, task):
    """Each example config: a short run records its baseline, metrics.csv, and evaluate saves predictions."""
    run = tmp_path / "run"
    result = invoke(cli, "run", ROOT / "examples" / f"{task}.yaml", "-o", run, "--set", "training.max_steps=3",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    results = json.loads((run / "results.json").read_text())
    assert results["baseline"]["method"] and set(results["baseline"]["test"]) == set(results["test"])
    assert (run / "metrics.csv").read_text().startswith("event,step,")
    report = json.loads(invoke(cli, "evaluate", run, "--json", "--save-predictions", tmp_path / "p.jsonl").output)
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert rows and len(rows) == report["predictions"]["rows"] and "index" in rows[0]
    assert any(k.startswith("prediction") for k in rows[0]) and any(k.startswith("target") for k in rows[0])
    assert (report["confusion"] is not None) == (task == "sequence_classification")
    assert (report["per_column"] is not None) == (task == "csv")


def test_seeds_go_under_the_configs_outputs_dir(cli, tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY.replace("outputs: {log_every: 2}", "outputs: {log_every: 2, dir: group}"))
    result = invoke(cli, "run", tmp_path / "tiny.yaml", "--seeds", "4", "--set", "training.epochs=1", "--no-progress")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "group" / "seed-4" / "results.json").is_file() and (tmp_path / "group" / "seeds.json").is_file()
