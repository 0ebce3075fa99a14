"""The config loader: YAML 1.2 scalars, duplicate keys, positions, overrides, validation, resolution."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

import lstmkit
from lstmkit.cells.lstm import LSTMCellType
from lstmkit.config import ConfigError, UnavailableError, load_config
from lstmkit.config.loader import diff_configs, parse_override
from lstmkit.config.reference import markdown_reference, starter_config
from lstmkit.config.yamlio import YAMLError, dump_yaml, load_yaml
from lstmkit.registry import get_registry
from lstmkit.specs import CellSpec

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "config.md"


def write(tmp_path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- YAML ---------------------------------------------------------------------------------
def test_yaml_12_scalars():
    data, _ = load_yaml("a: 1e-3\nb: on\nc: 010\nd: 0x1F\ne: .inf\nf: ~\ng: 2001-12-14\nh: 1:20\ni: True\nj: -.5\n")
    assert data == {"a": 0.001, "b": "on", "c": 10, "d": 31, "e": float("inf"), "f": None,
                    "g": "2001-12-14", "h": "1:20", "i": True, "j": -0.5}


def test_yaml_positions():
    _, positions = load_yaml("a:\n  b: 1\n  c: [x, y]\n", "f.yaml")
    assert str(positions[("a", "b")]) == "f.yaml:2:3"
    assert str(positions[("a", "c", 1)]) == "f.yaml:3:10"


@pytest.mark.parametrize("text, expected", [
    ("a: 1\na: 2\n", "f.yaml:2:1: duplicate key 'a' (first defined at line 1)"),
    ("a: [1, 2\n", "f.yaml:2:1: expected ',' or ']'"),
    ("a:\n  b: 1\n c: 2\n", "f.yaml:3:2:"),
    ("\tx: 1\n", "indent with spaces, not tabs"),
    ("a: !!python/object/apply:os.system [ls]\n", "only plain YAML values are allowed"),
    ("a: 1\n---\nb: 2\n", "expected a single document"),
])
def test_yaml_errors(text, expected):
    with pytest.raises(YAMLError) as info:
        load_yaml(text, "f.yaml")
    assert expected in str(info.value)


def test_dump_quotes_what_would_not_read_back():
    data = {"a": "1e-3", "b": "true", "c": "null", "d": "0o17", "e": 1e-8, "f": [1, "x"], "g": None}
    assert load_yaml(dump_yaml(data))[0] == data


# -- overrides and precedence ------------------------------------------------------------------
def test_parse_override():
    assert parse_override("training.optimizer.lr=1e-3") == (("training", "optimizer", "lr"), 0.001)
    assert parse_override("task.options.columns=[a, b]") == (("task", "options", "columns"), ["a", "b"])
    assert parse_override("seed=") == (("seed",), None)
    for bad in ("training.epochs", "=3", "a..b=1", "x=[1"):
        with pytest.raises(ValueError):
            parse_override(bad)


def test_precedence_defaults_file_set_flags(tmp_path):
    path = write(tmp_path, "seed: 1\ntask: {type: sine}\nruntime: {backend: numpy}\ntraining: {epochs: 4}\n")
    loaded = load_config(path)
    assert (loaded.config.seed, loaded.config.training.epochs, loaded.config.training.batch_size) == (1, 4, 32)
    loaded = load_config(path, ["seed=2", "training.epochs=5"])
    assert (loaded.config.seed, loaded.config.training.epochs) == (2, 5)
    loaded = load_config(path, ["seed=2", "runtime.backend=numpy"], seed=3, backend="auto")
    assert (loaded.config.seed, loaded.config.runtime.backend) == (3, "auto")
    assert loaded.sources == {"seed": "cli", "runtime.backend": "cli"}


def test_set_can_create_and_replace_sections(tmp_path):
    path = write(tmp_path, "task: {type: sine}\n")
    loaded = load_config(path, ["training.scheduler={name: step, step_size: 2}", "training.optimizer.name=sgd"])
    assert loaded.config.training.scheduler.name == "step" and loaded.config.training.optimizer.lr == 0.01
    with pytest.raises(ConfigError, match="task.type: is not a mapping"):
        load_config(path, ["task.type.x=1"])


# -- validation ------------------------------------------------------------------------------------
def test_all_errors_at_once_with_lines(tmp_path):
    path = write(tmp_path, """\
model:
  hiden_size: 32
  dropout: 2
  bidirectional: yes
task: {type: sine}
training:
  optimizer: {name: sgd, lr: 1e-3, betas: [0.9, 0.99]}
  scheduler: {name: cosin}
runtime:
  dtype: float16
""")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["training.epochs=abc"])
    err = info.value
    assert err.exit_code == 3 and len(err.issues) == 7
    text = str(err.format_message())
    for expected in [
        "c.yaml:2:3: model.hiden_size: unknown key 'hiden_size'; did you mean 'hidden_size'?",
        "c.yaml:3:3: model.dropout: should be less than or equal to 1, got an integer 2",
        "c.yaml:4:3: model.bidirectional: should be a valid boolean, got a string 'yes' (YAML booleans are true and false)",
        "c.yaml:7:36: training.optimizer.betas: unknown key 'betas'",  # the sgd branch: no union tag in the key
        "c.yaml:8:15: training.scheduler.name: unknown scheduler 'cosin'; did you mean 'cosine'?",
        "c.yaml:10:3: runtime.dtype: should be 'float32' or 'float64', got a string 'float16'",
        "--set training.epochs=abc: training.epochs: should be a valid integer, got a string 'abc'",
    ]:
        assert expected in text, text
    # sorted by line, command-line problems last
    lines = [i.where for i in err.issues]
    assert lines[-1].startswith("--set")


def test_model_level_checks_point_at_the_field(tmp_path):
    path = write(tmp_path, "task: {type: sine}\nmodel: {hidden_size: 8, proj_size: 8}\n"
                           "training: {optimizer: {name: sgd, nesterov: true}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert {str(i) for i in info.value.issues} == {
        f"{path}:2:25: model.proj_size: proj_size (8) has to be smaller than hidden_size (8)",
        f"{path}:3:35: training.optimizer.nesterov: Nesterov momentum requires a momentum > 0"}
    with pytest.raises(ConfigError, match="training.epochs: set training.epochs or training.max_steps"):
        load_config(path, ["training.epochs=null", "model.proj_size=0", "training.optimizer.nesterov=false"])


def test_missing_required_and_wrong_shapes(tmp_path):
    with pytest.raises(ConfigError, match="task: required key is missing"):
        load_config(write(tmp_path, "model: {cell: lstm}\n"))
    with pytest.raises(ConfigError, match="a config is a mapping of sections"):
        load_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_unknown_names_are_unavailable_exit_4(tmp_path):
    path = write(tmp_path, "task: {type: sine}\nmodel: {cell: lsmt}\nruntime: {backend: cuda}\n")
    with pytest.raises(UnavailableError) as info:
        load_config(path)
    assert info.value.exit_code == 4
    text = info.value.format_message()
    assert "unknown cell 'lsmt'; did you mean 'lstm'?; valid cells: gru, lstm, rnn_relu, rnn_tanh" in text
    assert "unknown backend 'cuda'" in text


def test_config_errors_win_over_unavailable_names(tmp_path):
    path = write(tmp_path, "task: {type: sine, options: {seq_len: 0}}\nmodel: {cell: lsmt}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert {i.key for i in info.value.issues} == {"task.options.seq_len", "model.cell"}


def test_early_stopping_metric_checked_against_the_task(tmp_path):
    path = write(tmp_path, "task: {type: sine}\ntraining: {early_stopping: {metric: valid.accuracy}}\n")
    with pytest.raises(ConfigError, match=r"unknown metric 'valid.accuracy' for task 'sine'.*valid.mae"):
        load_config(path)
    ok = write(tmp_path, "task: {type: sine}\ntraining: {early_stopping: {metric: valid.mae}}\n", "ok.yaml")
    assert load_config(ok).config.training.early_stopping.metric == "valid.mae"


def test_tbptt_refused_with_bidirectional(tmp_path):
    path = write(tmp_path, "task: {type: sine}\nmodel: {bidirectional: true}\ntraining: {tbptt: 10}\n")
    with pytest.raises(ConfigError, match="training.tbptt: truncated BPTT"):
        load_config(path)


class PeepholeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    forget_bias: float = Field(1.0, description="Initial forget-gate bias.")


class FakeCellType(LSTMCellType):
    name = "fakecell"

    def __init__(self, forget_bias=1.0):
        self.forget_bias = forget_bias


class FakeCellPlugin:
    @staticmethod
    @lstmkit.hookimpl
    def register_cells(register):
        register(CellSpec("fakecell", FakeCellType, PeepholeOptions, "a test cell with options"))


@pytest.fixture
def fake_cell_plugin():
    registry = get_registry()
    name = registry.register(FakeCellPlugin, "fake-cell-plugin")
    yield name
    registry.unregister(name)


def test_cell_options_validated_by_the_cells_model(tmp_path, fake_cell_plugin):
    path = write(tmp_path, "task: {type: sine}\nmodel:\n  cell: fakecell\n  cell_options: {forget_bias: x, peep: 1}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = info.value.format_message()
    assert "c.yaml:4:18: model.cell_options.forget_bias: should be a valid number" in text
    assert "model.cell_options.peep: unknown key 'peep'" in text
    ok = write(tmp_path, "task: {type: sine}\nmodel: {cell: fakecell, cell_options: {forget_bias: 2}}\n", "ok.yaml")
    assert load_config(ok).data["model"]["cell_options"] == {"forget_bias": 2.0}
    builtin = write(tmp_path, "task: {type: sine}\nmodel: {cell: gru, cell_options: {x: 1}}\n", "b.yaml")
    with pytest.raises(ConfigError, match="model.cell_options.x: cell 'gru' takes no options"):
        load_config(builtin)


def test_required_plugins(tmp_path, fake_cell_plugin):
    ok = write(tmp_path, "task: {type: sine}\nplugins: {require: [fake-cell-plugin]}\n")
    load_config(ok)
    bad = write(tmp_path, "task: {type: sine}\nplugins: {require: ['fake-cell-plugin>=2', nope-plugin]}\n", "b.yaml")
    with pytest.raises(UnavailableError) as info:
        load_config(bad)
    text = info.value.format_message()
    assert "required plugin 'fake-cell-plugin>=2' is not satisfied" in text
    assert "required plugin 'nope-plugin' is not installed" in text


# -- resolution --------------------------------------------------------------------------------------
def test_paths_resolve_against_the_config_dir(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "data.txt").write_text("hello world\n" * 20)
    (tmp_path / "other.txt").write_text("hello\n" * 20)
    path = write(tmp_path / "conf", "task: {type: char_lm, train: data.txt}\noutputs: {dir: out}\n")
    monkeypatch.chdir(tmp_path)
    loaded = load_config(path)
    assert loaded.data["task"]["train"] == str(tmp_path / "conf" / "data.txt")
    assert loaded.data["outputs"]["dir"] == str(tmp_path / "conf" / "out")
    # values given on the command line are relative to the working directory
    loaded = load_config(path, ["task.train=other.txt"], output_dir="runs/x")
    assert loaded.data["task"]["train"] == str(tmp_path / "other.txt")
    assert loaded.data["outputs"]["dir"] == str(tmp_path / "runs" / "x")
    with pytest.raises(ConfigError, match=r"c.yaml:1:23: task.train: no such file: .*missing.txt"):
        load_config(write(tmp_path / "conf", "task: {type: char_lm, train: missing.txt}\n"))


def test_seed_null_name_default_and_roundtrip(tmp_path):
    path = write(tmp_path, "seed: null\ntask: {type: sine}\n", "My Experiment.yaml")
    loaded = load_config(path)
    assert loaded.seed_was_random and isinstance(loaded.config.seed, int)
    assert loaded.config.name == "My-Experiment"
    again = load_config(write(tmp_path, loaded.yaml, "resolved.yaml"))
    assert again.data == loaded.data and not again.seed_was_random


def test_diff_configs():
    a = {"x": 1, "s": {"y": 2, "z": [1]}}
    b = {"x": 1, "s": {"y": 3, "z": [1], "w": 0}}
    assert diff_configs(a, b) == [("s.y", 2, 3), ("s.w", "<absent>", 0)]


# -- generated reference and starter configs --------------------------------------------------------------
def test_starter_configs_are_valid(tmp_path):
    for task in ("sine", "adding", "copy"):
        for cell in ("lstm", "gru", "rnn_tanh"):
            text = starter_config(cell, task)
            loaded = load_config(write(tmp_path, text))
            assert loaded.config.model.cell == cell and loaded.config.task.type == task
    text = starter_config("lstm", "csv")
    assert "window: 32" in text and "train: null" in text


GENERATED = re.compile(r"<!-- generated: (?P<name>[\w:]+) -->\n(?P<body>.*?)<!-- end generated -->", re.S)


def test_docs_reference_tables_are_up_to_date():
    text = DOCS.read_text(encoding="utf-8")
    blocks = list(GENERATED.finditer(text))
    names = {m["name"] for m in blocks}
    tasks = set(get_registry().specs["task"])
    assert {"top", "model", "task", "training", "optimizer", "scheduler", "runtime", "outputs", "plugins",
            "tasks"} | {f"task:{t}" for t in tasks} <= names
    for m in blocks:
        assert m["body"] == markdown_reference(m["name"]), (
            f"docs/config.md: the generated block {m['name']!r} is out of date; regenerate it with "
            f"python -m lstmkit.config.reference docs/config.md")


YAML_BLOCK = re.compile(r"^```yaml[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def test_docs_yaml_blocks(tmp_path):
    """Every ```yaml block in docs/config.md that starts with '# config' is a full config: it must load
    (or, '# config: invalid', fail with the messages listed in its comments '# error: ...')."""
    text = DOCS.read_text(encoding="utf-8")
    checked = 0
    for number, block in enumerate(YAML_BLOCK.findall(text), 1):
        first = block.splitlines()[0] if block.strip() else ""
        if not first.startswith("# config"):
            continue
        checked += 1
        path = write(tmp_path, block, f"block{number}.yaml")
        (tmp_path / "data").mkdir(exist_ok=True)
        for name in re.findall(r"data/([\w.-]+)", block):
            source = ROOT / "examples" / "data" / name
            target = tmp_path / "data" / name
            if source.is_file() and not target.exists():
                target.write_bytes(source.read_bytes())
        if "invalid" in first:
            with pytest.raises((ConfigError, UnavailableError)) as info:
                load_config(path)
            for expected in re.findall(r"^# error: (.*)$", block, re.M):
                assert expected in info.value.format_message(), f"block {number}: {info.value.format_message()}"
        else:
            try:
                load_config(path)
            except (ConfigError, UnavailableError) as exc:
                pytest.fail(f"docs/config.md yaml block {number}: {exc.format_message()}")
    assert checked >= 5


def test_every_lazily_exported_name_resolves():
    import importlib

    for package in ("lstmkit.config", "lstmkit.run"):
        module = importlib.import_module(package)
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{package}.{name}"


def test_task_and_cell_options_are_not_coerced(tmp_path):
    """Plugin-owned options are as strict as the core keys: no "yes" -> true, no 3.0 -> 3."""
    from lstmkit.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("version: 1\ntask:\n  type: copy\n  options: {copy_len: 3.0, delay: \"5\"}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "task.options.copy_len" in text and "task.options.delay" in text


def test_set_errors_name_the_override(tmp_path):
    from lstmkit.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("version: 1\nseed: 7\ntask: {type: sine}\n")
    with pytest.raises(ConfigError, match=r"--set trainng\.epochs=1: trainng: unknown key 'trainng'; did you mean 'training'\?"):
        load_config(path, ["trainng.epochs=1"])


def test_library_errors_are_plain_exceptions_the_cli_translates(tmp_path):
    """config/, tasks/ never import Click; the CLI turns an LstmkitError into its message and exit code."""
    import subprocess
    import sys

    from click.testing import CliRunner

    from lstmkit.cli import make_cli
    from lstmkit.config import ExitCode, LstmkitError

    code = ("import sys, lstmkit.config.loader, lstmkit.config.errors, lstmkit.tasks; "
            "sys.exit(int('click' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    assert not issubclass(LstmkitError, __import__("click").ClickException)
    error = LstmkitError("first", ExitCode.USAGE)
    error.message += "; second"
    assert str(error) == "first; second" and error.exit_code == 2
    path = write(tmp_path, "version: 1\ntask: {type: sine}\nmodel: {hidden_size: 0}\n")
    result = CliRunner().invoke(make_cli(), ["config", "validate", str(path)])
    assert result.exit_code == ExitCode.INVALID_CONFIG
    assert "Error: invalid config:" in result.output and "model.hidden_size" in result.output
    assert "Traceback" not in result.output


def test_every_range_problem_in_the_first_round(tmp_path):
    """Field ranges and the rules across fields are reported together (they used to take three rounds)."""
    path = write(tmp_path, "version: 1\nmodel: {hidden_size: 8, proj_size: 8, dropout: 1.5, bidirectional: true}\n"
                           "task: {type: sine}\ntraining: {tbptt: 5, epochs: 0,\n"
                           "  optimizer: {name: sgd, momentum: 0, nesterov: true}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    keys = [issue.key for issue in info.value.issues]
    assert keys == ["model.proj_size", "model.dropout", "training.tbptt", "training.epochs",
                    "training.optimizer.nesterov"], str(info.value)
    assert f"{path}:2:25: model.proj_size: proj_size (8) has to be smaller than hidden_size (8)" in str(info.value)
    # each rule once, also when it is the only problem (pydantic's validator and the raw-data check agree)
    path = write(tmp_path, "version: 1\nmodel: {bidirectional: true}\ntask: {type: sine}\ntraining: {tbptt: 5}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [i.key for i in info.value.issues] == ["training.tbptt"]


@pytest.mark.parametrize("text, key, shown", [
    ("training: {optimizer: {lr: .inf}}", "training.optimizer.lr", ".inf"),
    ("training: {optimizer: {lr: .nan}}", "training.optimizer.lr", ".nan"),
    ("training: {grad_clip: .inf}", "training.grad_clip", ".inf"),
    ("training: {early_stopping: {min_delta: .nan}}", "training.early_stopping.min_delta", ".nan"),
    ("training: {optimizer: {name: adam, betas: [0.9, -.inf]}}", "training.optimizer.betas.1", "-.inf"),
    ("task: {type: sine, options: {noise: .inf}}", "task.options.noise", ".inf"),
])
def test_non_finite_numbers_are_refused_everywhere(tmp_path, text, key, shown):
    body = text if text.startswith("task") else f"task: {{type: sine}}\n{text}"
    path = write(tmp_path, f"version: 1\n{body}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [i.key for i in info.value.issues] == [key]
    assert f"should be a finite number, got {shown}" in str(info.value) and f"{path}:" in str(info.value)
    with pytest.raises(ConfigError, match=r"--set training\.optimizer\.lr=\.inf: training\.optimizer\.lr: should "
                                          r"be a finite number"):
        load_config(write(tmp_path, "version: 1\ntask: {type: sine}\n"), ["training.optimizer.lr=.inf"])


@pytest.mark.parametrize("model, task", [
    ("{cell: lstm, hidden_size: 12, num_layers: 2, proj_size: 5, bidirectional: true}", "{type: sine}"),
    ("{cell: gru, hidden_size: 7}", "{type: adding}"),
    ("{cell: rnn_relu, hidden_size: 6, embedding_size: 3, num_layers: 3}", "{type: copy}"),
])
def test_memory_estimate_counts_the_parameters_the_model_has(tmp_path, model, task):
    from lstmkit.config import check_memory
    from lstmkit.run.session import build_model, build_task

    loaded = load_config(write(tmp_path, f"version: 1\nmodel: {model}\ntask: {task}\n"))
    task, data = build_task(loaded)
    need = check_memory(loaded, task, data, available=2**40)
    assert need.parameters == build_model(loaded, task).num_parameters()
    assert need.total == need.parameters * 4 * (2 + 2) + need.activation_bytes  # float32, Adam's two moments
    assert need.activation_bytes > 0 and need.batch == 32


def test_memory_estimate_refuses_what_cannot_fit_with_the_numbers(tmp_path):
    from lstmkit.config import check_memory
    from lstmkit.config.memory import available_memory
    from lstmkit.run.session import build_task

    assert available_memory() is None or available_memory() > 0
    path = write(tmp_path, "version: 1\nmodel:\n  hidden_size: 100000\ntask: {type: sine}\n")
    loaded = load_config(path)
    task, data = build_task(loaded)
    with pytest.raises(ConfigError) as info:
        check_memory(loaded, task, data, available=8 * 2**30)
    text = str(info.value)
    assert f"{path}:3:3: model.hidden_size: the run needs about 624.7 GiB: parameters 149.0 GiB " in text
    assert "(40,001,300,001 values)" in text and "but 8.0 GiB of memory is available" in text
    # activations dominate: the batch is blamed, at the --set that raised it
    loaded = load_config(write(tmp_path, "version: 1\ntask: {type: sine, options: {seq_len: 400}}\n"),
                         ["training.batch_size=5000", "task.options.num_train=5000"])
    task, data = build_task(loaded)
    with pytest.raises(ConfigError, match=r"--set training\.batch_size=5000: training\.batch_size: the run needs "
                                          r"about .* lower training\.batch_size"):
        check_memory(loaded, task, data, available=2**20)


def test_config_validate_reports_memory_and_warnings(tmp_path):
    from click.testing import CliRunner

    from lstmkit.cli import make_cli

    cli = make_cli()
    path = write(tmp_path, "version: 1\nmodel: {hidden_size: 100000}\ntask: {type: sine}\n")
    result = CliRunner().invoke(cli, ["config", "validate", str(path)])
    assert result.exit_code == 3 and "model.hidden_size: the run needs about" in result.output, result.output
    assert "Traceback" not in result.output
    path = write(tmp_path, "version: 1\nmodel: {hidden_size: 4, bidirectional: true}\n"
                           "task: {type: sine, options: {num_train: 4, num_valid: 2, num_test: 2}}\n")
    result = CliRunner().invoke(cli, ["config", "validate", str(path)])
    assert result.exit_code == 0 and "of memory)" in result.output, result.output
    assert "warning: model.bidirectional: task 'sine' predicts inputs of later steps" in result.output


def test_run_warnings(tmp_path):
    from lstmkit.config import run_warnings
    from lstmkit.run.session import build_task

    (tmp_path / "t.txt").write_text("abcdefghij" * 3)
    loaded = load_config(write(tmp_path, "version: 1\nmodel: {bidirectional: true}\ntask: {type: char_lm, "
                                         "train: t.txt, options: {seq_len: 30}}\n"))
    task, _ = build_task(loaded)
    warnings = run_warnings(loaded, task)
    assert warnings[0].startswith("task char_lm: the train text has 24 characters, not more than "
                                  "task.options.seq_len (30): it is a single window of 23 steps")
    assert len(warnings) == 4 and warnings[-1].startswith("model.bidirectional: task 'char_lm'")
    loaded = load_config(write(tmp_path, "version: 1\nmodel: {bidirectional: true}\ntask: {type: adding}\n"))
    assert run_warnings(loaded, build_task(loaded)[0]) == []  # a whole-sequence task: nothing to say


def test_dry_run_prints_the_memory_estimate_and_the_warnings(tmp_path):
    from click.testing import CliRunner

    from lstmkit.cli import make_cli

    path = write(tmp_path, "version: 1\nmodel: {hidden_size: 4, bidirectional: true}\n"
                           "task: {type: sine, options: {num_train: 4, num_valid: 2, num_test: 2}}\n")
    result = CliRunner().invoke(make_cli(), ["run", "--dry-run", str(path)])
    assert result.exit_code == 0, result.output
    assert "memory: about " in result.output and "(the larger of backpropagation through 50 steps of 4 " \
                                                 "sequences" in result.output
    assert "warning: model.bidirectional: task 'sine' predicts inputs of later steps" in result.output


def test_rules_across_keys_blame_the_override_that_broke_them(tmp_path):
    path = write(tmp_path, "version: 1\nmodel: {hidden_size: 16, proj_size: 8}\ntask: {type: sine}\n")
    for overrides, expected in (
            (["model.hidden_size=4"], "--set model.hidden_size=4: model.proj_size: proj_size (8) has to be smaller"),
            (["model.hidden_size=4", "model.dropout=3"], "--set model.hidden_size=4: model.proj_size:"),
            (["training.optimizer={name: sgd, nesterov: true}"], "--set training.optimizer={name: sgd, "
                                                                 "nesterov: true}: training.optimizer.nesterov:")):
        with pytest.raises(ConfigError) as info:
            load_config(path, overrides)
        assert expected in str(info.value)
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}:2:26: model.proj_size"):
        load_config(write(tmp_path, "version: 1\nmodel: {hidden_size: 16, proj_size: 16}\ntask: {type: sine}\n"))


def test_memory_estimate_of_absurd_sizes_is_immediate(tmp_path):
    from lstmkit.config import check_memory
    from lstmkit.config.memory import format_bytes
    from lstmkit.run.session import build_task

    loaded = load_config(write(tmp_path, "version: 1\nmodel: {hidden_size: 8, num_layers: " + "9" * 40 + "}\n"
                                         "task: {type: sine, options: {num_train: 8, num_valid: 4, num_test: 4}}\n"))
    task, data = build_task(loaded)
    with pytest.raises(ConfigError, match=r"c\.yaml:2:25: model\.num_layers: the run needs about [0-9.e+]+ EiB"):
        check_memory(loaded, task, data, available=2**34)  # a loop over the layers would never end
    assert [format_bytes(n) for n in (1023, 1536, 3 * 2**30, 7 * 2**60)] == ["1023 bytes", "1.5 KiB", "3.0 GiB",
                                                                         "7.0 EiB"]


@pytest.mark.parametrize("files, expected", [
    ({"/proc/meminfo": "MemTotal: 100 kB\nMemAvailable: 8 kB\n"}, 8 * 1024),
    ({"/proc/meminfo": "MemAvailable: 8000 kB\n", "/sys/fs/cgroup/memory.max": "5000\n",
      "/sys/fs/cgroup/memory.current": "1000\n"}, 4000),
    ({"/proc/meminfo": "MemAvailable: 8000 kB\n", "/sys/fs/cgroup/memory.max": "max\n"}, 8000 * 1024),
    ({"/proc/meminfo": "MemAvailable: 8000 kB\n", "/sys/fs/cgroup/memory/memory.limit_in_bytes": "3000\n",
      "/sys/fs/cgroup/memory/memory.usage_in_bytes": "1000\n"}, 2000),
    ({"/proc/meminfo": "MemAvailable: 8 kB\n", "/sys/fs/cgroup/memory/memory.limit_in_bytes": str(2**63) + "\n"},
     8 * 1024),
])
def test_available_memory_reads_the_system_and_the_cgroup(monkeypatch, files, expected):
    import io

    from lstmkit.config import memory

    def fake_open(path, *args, **kwargs):
        if path not in files:
            raise FileNotFoundError(path)
        return io.StringIO(files[path])

    monkeypatch.setattr(memory, "open", fake_open, raising=False)
    assert memory.available_memory() == expected
