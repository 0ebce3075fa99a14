"""A corpus of broken configs and data files: every one is a message with its exit code, never a traceback.

Each case runs through ``config validate``, ``config show`` and ``run --dry-run``; the message must name
where the problem is (the file, a line, or the ``--set``).
"""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from lstmkit.cli import ExitCode, make_cli

SINE = "task: {type: sine, options: {num_train: 8, num_valid: 4, num_test: 4}}\n"
CSV = "task: {type: csv, train: data.csv, options: {window: 3}}\n"
GOOD_CSV = "t,x,y\n" + "".join(f"t{i},{i},{i % 5}\n" for i in range(30))

# (id, config text, data.csv text or None, --set overrides, expected exit code, expected text)
CASES = [
    ("empty mapping task", "task: {}\n", None, [], 3, "task.type: required key is missing"),
    ("a list at the top", "- a\n- b\n", None, [], 3, "a config is a mapping of sections"),
    ("a scalar at the top", "42\n", None, [], 3, "a config is a mapping"),
    ("tabs", "task:\n\ttype: sine\n", None, [], 3, "indent with spaces"),
    ("unclosed flow", "task: {type: sine\n", None, [], 3, "c.yaml:3:1: expected ',' or '}'"),
    ("duplicate key", SINE + "seed: 1\nseed: 2\n", None, [], 3, "duplicate key 'seed'"),
    ("python tag", SINE + "seed: !!python/object/apply:os.system [ls]\n", None, [], 3, "only plain YAML"),
    ("set tag", SINE + "seed: !!set {a}\n", None, [], 3, "only plain YAML"),
    ("timestamp tag", SINE + "name: !!timestamp 2001-12-14\n", None, [], 3, "only plain YAML"),
    ("binary tag", SINE + "name: !!binary aGVsbG8=\n", None, [], 3, "only plain YAML"),
    ("merge key tag", SINE + "model: {!!merge x: 1}\n", None, [], 3, "only plain YAML"),
    ("unknown section", SINE + "modle: {}\n", None, [], 3, "did you mean 'model'"),
    ("string number", SINE + "model: {hidden_size: '64'}\n", None, [], 3, "model.hidden_size"),
    ("yes for a boolean", SINE + "model: {bidirectional: yes}\n", None, [], 3, "YAML booleans are true and false"),
    ("huge integer", SINE + "seed: " + "9" * 99 + "\n", None, [], 3, "seed: should be less than"),
    ("float for int", SINE + "training: {epochs: 2.5}\n", None, [], 3, "training.epochs"),
    ("nan lr", SINE + "training: {optimizer: {lr: .nan}}\n", None, [], 3, "should be a finite number, got .nan"),
    ("inf clip", SINE + "training: {grad_clip: .inf}\n", None, [], 3, "should be a finite number, got .inf"),
    ("negative lr", SINE + "training: {optimizer: {lr: -1}}\n", None, [], 3, "training.optimizer.lr"),
    ("three range problems", SINE + "model: {hidden_size: 4, proj_size: 9, dropout: 2, bidirectional: true}\n"
                                    "training: {tbptt: 3}\n", None, [], 3, "3 problems"),
    ("unknown optimizer", SINE + "training: {optimizer: {name: adm}}\n", None, [], 3, "did you mean 'adam'"),
    ("optimizer as a string", SINE + "training: {optimizer: adam}\n", None, [], 3, "write optimizer: {name: adam}"),
    ("unknown cell", SINE + "model: {cell: lsmt}\n", None, [], 4, "lsmt"),
    ("unknown task", "task: {type: sinus}\n", None, [], 4, "sinus"),
    ("unknown backend", SINE + "runtime: {backend: cuda}\n", None, [], 4, "cuda"),
    ("missing plugin", SINE + "plugins: {require: [lstmkit-nonexistent>=1]}\n", None, [], 4, "not installed"),
    ("bad task option", "task: {type: sine, options: {seq_len: 0}}\n", None, [], 3, "task.options.seq_len"),
    ("unknown task option", "task: {type: sine, options: {seqlen: 5}}\n", None, [], 3, "task.options.seqlen"),
    ("files for a synthetic task", "task: {type: sine, train: x.csv}\n", None, [], 3, "task.train"),
    ("missing data file", "task: {type: csv, train: nowhere.csv}\n", None, [], 3, "no such file"),
    ("bad --set value", SINE, None, ["training.epochs=abc"], 3, "--set training.epochs=abc"),
    ("--set into a scalar", SINE + "seed: 3\n", None, ["seed.x=1"], 3, "--set seed.x=1: seed: is not a mapping"),
    ("--set unknown key", SINE, None, ["trainng.epochs=1"], 3, "did you mean 'training'"),
    ("--set inf", SINE, None, ["training.optimizer.lr=.inf"], 3, "--set training.optimizer.lr=.inf"),
    ("memory", SINE + "model: {hidden_size: 200000}\n", None, [], 3, "the run needs about"),
    ("csv blank cell", CSV, GOOD_CSV.replace("t4,4,", "t4,,"), [], 3, "data.csv:6: column 'x' has a missing value"),
    ("csv NaN cell", CSV, GOOD_CSV.replace("t4,4,", "t4,NaN,"), [], 3, "data.csv:6: column 'x'"),
    ("csv text cell", CSV + "", GOOD_CSV.replace("t4,4,4", "t4,4,four"), ["task.options.columns=[x, y]"], 3,
     "data.csv:6: column 'y': 'four' is not a number"),
    ("csv no numbers", CSV, "a,b\n" + "x,y\n" * 20, [], 3, "no numeric columns"),
    ("csv header only", CSV, "a,b\n", [], 3, "at least one data row"),
    ("csv latin-1", CSV, None, [], 3, "set task.options.encoding"),
    ("csv unknown encoding", CSV, GOOD_CSV, ["task.options.encoding=klingon"], 3, "unknown text encoding"),
    ("csv too short for the window", CSV, GOOD_CSV, ["task.options.horizon=40"], 3,
     "--set task.options.horizon=40: task.options.horizon"),
    ("csv unknown column", CSV, GOOD_CSV, ["task.options.targets=[z]"], 3, "no column 'z'"),
    ("csv binary", CSV, None, [], 3, "data.csv"),
]


@pytest.mark.parametrize("text, csv, overrides, code, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_configs_and_data_are_messages(tmp_path, text, csv, overrides, code, expected):
    config = tmp_path / "c.yaml"
    config.write_text("version: 1\n" + text if text.startswith("task") else text)
    if "latin-1" in expected or "encoding" in expected and csv is None:
        (tmp_path / "data.csv").write_bytes(("t,température\n" + "".join(f"t{i},{i}\n" for i in range(30)))
                                            .encode("latin-1"))
    elif csv is None and "data.csv" in text:
        (tmp_path / "data.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    elif csv is not None:
        (tmp_path / "data.csv").write_text(csv)
    cli = make_cli()
    sets = [a for o in overrides for a in ("--set", o)]
    for command in (["config", "validate"], ["run", "--dry-run"], ["config", "show"]):
        result = CliRunner().invoke(cli, [*command, str(config), *sets])
        assert result.exception is None or isinstance(result.exception, SystemExit), (command, result.output)
        assert "Traceback" not in result.output
        if command == ["config", "show"] and result.exit_code == 0:
            continue  # show checks the config, not the data
        assert result.exit_code == code, (command, result.output)
        assert expected in result.output, (command, result.output)
        assert str(config) in result.output or "--set" in result.output, (command, result.output)


def test_the_corpus_exit_codes_are_the_documented_ones():
    assert {c[4] for c in CASES} <= {ExitCode.INVALID_CONFIG, ExitCode.UNAVAILABLE}
