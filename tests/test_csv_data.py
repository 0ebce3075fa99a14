"""The csv task on imperfect files: missing cells, non-numbers, encodings, trends (differencing, warnings)."""
from __future__ import annotations

import numpy as np
import pydantic
import pytest
from click.testing import CliRunner

from lstmkit.cli import ExitCode, make_cli
from lstmkit.config import ConfigError, load_config
from lstmkit.config.loader import task_issue
from lstmkit.registry import get_registry
from lstmkit.tasks import TaskError

SMALL = {"window": 3, "valid_fraction": 0.2, "test_fraction": 0.2}


def make(tmp_path, text: str, options=None, name="s.csv", **files):
    (tmp_path / name).write_text(text)
    spec = get_registry().task_spec("csv")
    validated = spec.options_model(**{**SMALL, **(options or {})}).model_dump()
    return spec.factory(validated, base_dir=tmp_path, splits={"train": name, **files})


def series(values, header="t,x") -> str:
    return header + "\n" + "".join(f"t{i},{v}\n" for i, v in enumerate(values))


@pytest.mark.parametrize("cell, shown", [("", "blank"), ("n/a", "'n/a'"), ("NaN", "'NaN'"), ("NA", "'NA'")])
def test_missing_cells_are_an_error_with_line_and_column_by_default(tmp_path, cell, shown):
    values = [str(i) for i in range(20)]
    values[6] = cell  # the 7th data row: line 8 of the file
    with pytest.raises(TaskError) as info:
        make(tmp_path, series(values))
    message = str(info.value)
    assert f"s.csv:8: column 'x' has a missing value ({shown}; 1 missing cell(s) in all)" in message
    assert "task.options.missing" in message and info.value.keys[0] == "task.train"


def test_a_column_with_blanks_is_still_numeric(tmp_path):
    text = "t,x,label\n" + "".join(f"t{i},{'' if i == 4 else i},{'a' if i % 2 else 'b'}\n" for i in range(20))
    task = make(tmp_path, text, {"missing": "interpolate"})
    assert task.columns == ["x"]  # the blank no longer drops the column; the label column is skipped
    np.testing.assert_allclose(task.tables["train"][:6, 0], [0, 1, 2, 3, 4, 5])


def test_missing_value_options(tmp_path):
    values = ["", "1", "", "", "4"] + [str(i) for i in range(5, 20)]
    with pytest.raises(TaskError, match=r"s\.csv:2: column 'x': the first value is missing, so there is nothing "
                                        r"to fill forward"):
        make(tmp_path, series(values), {"missing": "ffill"})
    values[0] = "0"
    ffill = make(tmp_path, series(values), {"missing": "ffill"}).tables["train"][:5, 0]
    interpolated = make(tmp_path, series(values), {"missing": "interpolate"}).tables["train"][:5, 0]
    dropped = make(tmp_path, series(values), {"missing": "drop_rows"})
    np.testing.assert_array_equal(ffill, [0, 1, 1, 1, 4])
    np.testing.assert_allclose(interpolated, [0, 1, 2, 3, 4])
    assert sum(len(t) for t in dropped.tables.values()) == 18
    assert dropped.describe().endswith("; 2 missing cell(s): rows dropped")
    assert make(tmp_path, series(values), {"missing": "ffill"}).describe().endswith("; 2 missing cell(s): filled forward")
    np.testing.assert_array_equal(dropped.tables["train"][:3, 0], [0, 1, 4])
    with pytest.raises(TaskError, match=r"column 'x' has no values"):
        make(tmp_path, series([""] * 20), {"columns": ["x"], "missing": "interpolate"})


def test_non_numbers_and_no_numeric_columns_name_the_line(tmp_path):
    values = [str(i) for i in range(20)]
    values[3] = "12,5"
    with pytest.raises(TaskError, match=r"s\.csv:5: column 'x': '12,5' is not a number"):
        make(tmp_path, series(values, "t,x").replace('12,5', '"12,5"'), {"columns": ["x"]})
    with pytest.raises(TaskError, match=r"s\.csv:3: column 'x': 'inf' is not a finite number"):
        make(tmp_path, series(["1", "inf"] + ["2"] * 18))
    text = "d,x\n" + "".join(f"2020-01-{i + 1:02d},{'?' if i == 2 else i}\n" for i in range(20))
    with pytest.raises(TaskError, match=r"no numeric columns .*'d' has '2020-01-01' at line 2; 'x' has '\?' at "
                                        r"line 4"):
        make(tmp_path, text)


def test_encoding_errors_suggest_the_option(tmp_path):
    text = "t,température\n" + "".join(f"t{i},{i}\n" for i in range(20))
    (tmp_path / "l.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(TaskError, match=r"l\.csv: cannot read as utf-8 .*set task\.options\.encoding"):
        make(tmp_path, "x\n1\n", name="other.csv", train="l.csv")
    spec = get_registry().task_spec("csv")
    task = spec.factory(spec.options_model(**SMALL, encoding="latin-1").model_dump(), base_dir=tmp_path,
                        splits={"train": "l.csv"})
    assert task.columns == ["température"]
    with pytest.raises(pydantic.ValidationError, match="unknown text encoding 'utf-9'"):
        spec.options_model(encoding="utf-9")


def test_difference_forecasts_the_change_in_file_units(tmp_path):
    levels = [100 + 3 * i + (i % 2) for i in range(40)]  # a trend the training range never covers
    task = make(tmp_path, series(levels), {"difference": True, "horizon": 2})
    train = task.data()["train"]
    x = task.tables["train"][:, 0]
    # window 0 reads the changes x[1]-x[0] .. x[3]-x[2]; its last row is x[3]; target x[5] - x[3]
    np.testing.assert_allclose(train.inputs[0, :, 0] * task.std[0] + task.mean[0], np.diff(x[:4]), atol=1e-4)
    np.testing.assert_allclose(task.denormalize(train.targets[0]), [x[5] - x[3]], atol=1e-4)
    test = task.data()["test"]
    off = test.targets + np.float32(1 / task.target_std[0])  # a change off by +1 = a forecast off by +1
    assert task.metrics(off, test.targets)["mae"] == pytest.approx(1.0, rel=1e-5)
    assert task.warnings() == []
    (tmp_path / "p.csv").write_text(series([10, 11, 13, 16]))
    inputs, _ = task.read_inputs(tmp_path / "p.csv")
    np.testing.assert_allclose(inputs[0, :, 0] * task.std[0] + task.mean[0], [1, 2, 3], atol=1e-5)
    [prediction] = task.format_predictions(np.zeros((1, 1)))
    change = float(task.target_mean[0])
    assert prediction == {"horizon": 2, "forecast": {"x": pytest.approx(16 + change)},
                          "change": {"x": pytest.approx(change)}}


def test_test_values_outside_the_training_range_are_warned_about(tmp_path):
    task = make(tmp_path, series([100 + 3 * i for i in range(40)]))
    [valid, test] = task.warnings()
    assert "of the test values of 'x' (" in test and "outside the training range 100..169" in test
    assert "task.options.difference: true" in test and "valid values" in valid
    assert make(tmp_path, series([i % 7 for i in range(40)])).warnings() == []


def test_set_is_blamed_not_the_file_line(tmp_path):
    (tmp_path / "s.csv").write_text(series(range(40)))
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\ntask:\n  type: csv\n  train: s.csv\n  options:\n    window: 30\n")
    for overrides, where, key in ((["task.options.horizon=400"], "--set task.options.horizon=400",
                                   "task.options.horizon"),
                                  ([], f"{path}:6:5", "task.options.window"),
                                  (["task.options.window=300"], "--set task.options.window=300",
                                   "task.options.window")):
        loaded = load_config(path, overrides)
        spec = get_registry().task_spec("csv")
        with pytest.raises(TaskError) as info:
            spec.factory(loaded.data["task"]["options"], base_dir=tmp_path,
                         splits={"train": loaded.data["task"]["train"]})
        issue = task_issue(loaded, info.value)
        assert (issue.where, issue.key) == (where, key)


def test_csv_problems_found_by_config_validate(tmp_path):
    values = [str(i) for i in range(40)]
    values[10] = "NaN"
    (tmp_path / "s.csv").write_text(series(values))
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\ntask:\n  type: csv\n  train: s.csv\n  options: {window: 4}\n")
    result = CliRunner().invoke(make_cli(), ["config", "validate", str(path)])
    assert result.exit_code == ExitCode.INVALID_CONFIG, result.output
    assert "s.csv:12: column 'x' has a missing value ('NaN'" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(make_cli(), ["config", "validate", str(path), "--set",
                                             "task.options.missing=interpolate"])
    assert result.exit_code == 0, result.output
    with pytest.raises(ConfigError, match="task.options.missing: should be 'error', 'drop_rows', 'ffill' or "
                                          "'interpolate'"):
        load_config(path, ["task.options.missing=fill"])


def test_cli_blames_the_set_and_refuses_what_memory_cannot_hold(tmp_path):
    (tmp_path / "s.csv").write_text(series(range(40)))
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\ntask:\n  type: csv\n  train: s.csv\n  options:\n    window: 4\n")
    cli = make_cli()
    for command in (["config", "validate"], ["run", "--dry-run"]):
        result = CliRunner().invoke(cli, [*command, str(path), "--set", "task.options.horizon=400"])
        assert result.exit_code == ExitCode.INVALID_CONFIG, result.output
        assert ("--set task.options.horizon=400: task.options.horizon: task csv: the train split has 28 rows"
                in result.output), result.output
        result = CliRunner().invoke(cli, [*command, str(path), "--set", "model.hidden_size=100000"])
        assert result.exit_code == ExitCode.INVALID_CONFIG, result.output
        assert ("--set model.hidden_size=100000: model.hidden_size: the run needs about" in result.output
                and "Traceback" not in result.output), result.output


def test_a_run_prints_and_records_its_warnings(tmp_path):
    import json

    (tmp_path / "s.csv").write_text(series([100 + 3 * i for i in range(40)]))
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\nmodel: {hidden_size: 4}\ntask: {type: csv, train: s.csv, options: {window: 3}}\n"
                    "training: {epochs: 1, batch_size: 8}\n")
    result = CliRunner().invoke(make_cli(), ["run", str(path), "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "warning: task csv: 100% of the test values of 'x'" in result.output
    recorded = json.loads((tmp_path / "run" / "results.json").read_text())["warnings"]
    assert len(recorded) == 2 and recorded[1].startswith("task csv: 100% of the test values of 'x'")
    result = CliRunner().invoke(make_cli(), ["run", str(path), "-o", str(tmp_path / "run2"), "--set",
                                             "task.options.difference=true"])
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    assert json.loads((tmp_path / "run2" / "results.json").read_text())["warnings"] == []


def test_data_problems_join_the_second_round(tmp_path):
    """A config that fails on a registry name or metric also hears about its data file in the same report."""
    values = [str(i) for i in range(40)]
    values[10] = "n/a"
    (tmp_path / "s.csv").write_text(series(values))
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\ntask: {type: csv, train: s.csv, options: {window: 4}}\n"
                    "training: {early_stopping: {metric: valid.accuracy}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [i.key for i in info.value.issues] == ["task.train", "training.early_stopping.metric"], str(info.value)
    assert "s.csv:12: column 'x' has a missing value ('n/a'" in str(info.value)


def test_a_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path):
    (tmp_path / "b.csv").write_bytes(("\ufeffx,t\n" + "".join(f"{i},t{i}\n" for i in range(20))).encode("utf-8"))
    spec = get_registry().task_spec("csv")
    task = spec.factory(spec.options_model(**SMALL, columns=["x"]).model_dump(), base_dir=tmp_path,
                        splits={"train": "b.csv"})
    assert task.columns == ["x"]
