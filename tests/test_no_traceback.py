"""Every command, over a corpus of broken configs, data files, inputs and run folders: a message and an
exit code from the ExitCode table, never a traceback.

The commands are not listed by hand: every command of ``make_cli()`` (plugins' and other areas'
included) is invoked with no arguments, with ``--help``, and with each of its required arguments
taken in turn from the corpus that fits its type (files for file arguments, run folders for folder
arguments) while the others hold a good value.  ``run`` is also tried with ``--dry-run`` and
``--resume``, ``config validate`` with ``--no-data``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from lstmkit.cli import ExitCode, make_cli

ROOT = Path(__file__).resolve().parent.parent
CODES = {int(c) for c in ExitCode}
UNWRITABLE = "/proc/lstmkit-cannot-be-created/out"

TINY = """\
name: tiny
seed: 3
model: {cell: lstm, hidden_size: 8, num_layers: 1}
task: {type: sine, options: {seq_len: 12, num_train: 24, num_valid: 8, num_test: 8}}
training: {epochs: 1, batch_size: 8}
"""

# -- the corpus ------------------------------------------------------------------------------------
CONFIGS = {
    "empty": "",
    "a list": "- 1\n- 2\n",
    "a scalar": "42\n",
    "bad yaml": "model: {cell: lstm\n",
    "tabs": "model:\n\tcell: lstm\n",
    "nul byte": "name: a\x00b\n",
    "huge integer": f"seed: {'9' * 5000}\n",
    "deep nesting": "a: " + "[" * 2000 + "]" * 2000 + "\n",
    "recursive alias": "a: &a [*a]\n",
    "small alias bomb": "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(3)),
    "duplicate key": "seed: 1\nseed: 2\n",
    "unknown key": TINY + "surprise: 1\n",
    "wrong types": TINY.replace("hidden_size: 8", "hidden_size: eight").replace("epochs: 1", "epochs: [1]"),
    "negative sizes": TINY.replace("hidden_size: 8", "hidden_size: -8").replace("batch_size: 8", "batch_size: 0"),
    "infinite lr": TINY + "training: {optimizer: {lr: .inf}}\n",
    "nan lr": TINY.replace("training: {epochs: 1, batch_size: 8}", "training: {epochs: 1, optimizer: {lr: .nan}}"),
    "unknown cell": TINY.replace("cell: lstm", "cell: lstn"),
    "unknown task": TINY.replace("type: sine", "type: sinus"),
    "unknown backend": TINY + "runtime: {backend: cuda9}\n",
    "unknown optimizer": TINY.replace("batch_size: 8}", "batch_size: 8, optimizer: {name: adamw9}}"),
    "dropout out of range": TINY.replace("num_layers: 1", "num_layers: 2, dropout: 1.5"),
    "proj too large": TINY.replace("num_layers: 1", "num_layers: 1, proj_size: 9"),
    "huge hidden size": TINY.replace("hidden_size: 8", "hidden_size: 100000"),
    "embedding on features": TINY.replace("num_layers: 1", "num_layers: 1, embedding_size: 4"),
    "seq_len zero": TINY.replace("seq_len: 12", "seq_len: 0"),
    "missing data file": "task: {type: csv, train: nowhere.csv, options: {columns: [a], targets: [a], window: 3}}\n",
    "data file is a folder": "task: {type: csv, train: ., options: {columns: [a], targets: [a], window: 3}}\n",
    "binary csv": "task: {type: csv, train: binary.csv, options: {columns: [a], targets: [a], window: 3}}\n",
    "latin-1 csv": "task: {type: csv, train: latin1.csv, options: {columns: [a], targets: [a], window: 3}}\n",
    "csv with holes": "task: {type: csv, train: holes.csv, options: {columns: [a, b], targets: [b], window: 3}}\n",
    "csv with NaN": "task: {type: csv, train: nan.csv, options: {columns: [a, b], targets: [b], window: 3}}\n",
    "csv too short": "task: {type: csv, train: short.csv, options: {columns: [a], targets: [a], window: 30}}\n",
    "csv unknown column": "task: {type: csv, train: nan.csv, options: {columns: [zz], targets: [zz], window: 3}}\n",
    "empty text": "task: {type: char_lm, train: empty.txt}\nmodel: {embedding_size: 4, hidden_size: 4}\n",
    "binary text": "task: {type: char_lm, train: binary.csv}\nmodel: {embedding_size: 4, hidden_size: 4}\n",
    "bad npz": "task: {type: sequence_classification, train: bad.npz}\n",
    "npz without labels": "task: {type: sequence_classification, train: nolabels.npz}\n",
    "one class": "task: {type: sequence_classification, train: oneclass.npz}\n",
    "required plugin missing": TINY + "plugins: {require: [lstmkit-not-installed>=1]}\n",
    "output folder is a file": TINY + "outputs: {dir: binary.csv}\n",
    "output folder cannot be made": TINY + "outputs: {dir: /proc/lstmkit-cannot/run}\n",
}

INPUTS = {
    "empty input": b"",
    "binary input": bytes(range(256)) * 4,
    "text input": b"one two three\n",
    "ragged input": b"1,2,3\n4,5\n",
    "nan input": b"nan,nan,nan\n",
    "huge numbers": b"1e400,2,3\n",
    "npz garbage": b"PK\x03\x04garbage",
}


def _data_files(base: Path) -> None:
    (base / "binary.csv").write_bytes(bytes(range(256)) * 8)
    (base / "latin1.csv").write_bytes("a\n" .encode() + "caf\xe9\n".encode("latin-1") * 5)
    (base / "holes.csv").write_text("a,b\n1,2\n,3\nn/a,4\n4,\n5,6\n6,7\n7,8\n")
    (base / "nan.csv").write_text("a,b\n" + "".join(f"{i},{'NaN' if i == 3 else i}\n" for i in range(12)))
    (base / "short.csv").write_text("a\n1\n2\n")
    (base / "empty.txt").write_text("")
    (base / "bad.npz").write_bytes(b"not a zip")
    np.savez(base / "nolabels.npz", inputs=np.zeros((4, 3)))
    np.savez(base / "oneclass.npz", inputs=np.zeros((4, 3)), labels=np.zeros(4, dtype=np.int64))


def _broken_runs(good: Path, base: Path) -> dict[str, Path]:
    """Run folders damaged in the ways a disk, a user or an editor damages them."""
    runs = {}

    def copy(name: str) -> Path:
        path = base / name.replace(" ", "_")
        shutil.copytree(good, path, symlinks=True)
        runs[name] = path
        return path

    empty = base / "empty_folder"
    empty.mkdir(parents=True)
    runs["empty folder"] = empty
    copy("garbage config").joinpath("config.yaml").write_text("model: [\n")
    copy("config of another run").joinpath("config.yaml").write_text(
        (good / "config.yaml").read_text().replace("hidden_size: 8", "hidden_size: 9"))
    (copy("no checkpoints") / "checkpoints").joinpath("last.npz").unlink()
    (runs["no checkpoints"] / "checkpoints/best.npz").unlink()
    copy("garbage last").joinpath("checkpoints/last.npz").write_bytes(b"garbage")
    copy("truncated best").joinpath("checkpoints/best.npz").write_bytes(
        (good / "checkpoints/best.npz").read_bytes()[:500])
    copy("garbage meta").joinpath("meta.json").write_text("{")
    copy("meta is a list").joinpath("meta.json").write_text("[1, 2]")
    copy("garbage metrics").joinpath("metrics.jsonl").write_text('[1]\n"x"\n{"step": "two"}\n{broken\n')
    copy("garbage results").joinpath("results.json").write_text("nope")
    path = copy("checkpoints is a file")
    shutil.rmtree(path / "checkpoints")
    (path / "checkpoints").write_text("x")
    path = copy("checkpoints links out")
    shutil.rmtree(path / "checkpoints")
    try:
        (path / "checkpoints").symlink_to(base)
    except OSError:  # pragma: no cover - no symbolic links here (Windows without the privilege)
        del runs["checkpoints links out"]
    path = copy("stale lock")
    (path / ".lstmkit.lock").write_text("{not json")

    def tamper(name: str, change) -> None:
        path = copy(name) / "checkpoints/last.npz"
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        change(arrays)
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    def state(**changes):
        def change(arrays):
            value = json.loads(str(arrays["trainer/state"]))
            value.update(changes)
            arrays["trainer/state"] = np.array(json.dumps(value))
        return change

    tamper("batch past the epoch", state(batch=99))
    tamper("epoch as text", state(epoch="2"))
    tamper("trainer state garbage", lambda a: a.__setitem__("trainer/state", np.array("{")))
    tamper("no trainer state", lambda a: a.pop("trainer/state"))
    tamper("string weight", lambda a: a.__setitem__("rnn.weight_ih_l0", np.array("w")))
    tamper("rng garbage", lambda a: a.__setitem__("rng/model", np.array('{"bit_generator": 3}')))
    tamper("embedded config garbage", lambda a: a.__setitem__("lstmkit/config", np.array("a: &a [*a]\n")))
    return runs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    cli = make_cli()
    base = tmp_path_factory.mktemp("corpus")
    (base / "tiny.yaml").write_text(TINY)
    result = CliRunner().invoke(cli, ["run", str(base / "tiny.yaml"), "-o", str(base / "good")])
    assert result.exit_code == 0, result.output
    _data_files(base)
    configs = {}
    for name, text in CONFIGS.items():
        path = base / f"config-{name.replace(' ', '_')}.yaml"
        path.write_text(text, encoding="utf-8")
        configs[name] = path
    inputs = {}
    for name, data in INPUTS.items():
        path = base / f"input-{name.replace(' ', '_')}.txt"
        path.write_bytes(data)
        inputs[name] = path
    runs = _broken_runs(base / "good", base / "runs")
    return {"cli": cli, "base": base, "configs": configs, "inputs": inputs, "runs": runs,
            "good_config": base / "tiny.yaml", "good_run": base / "good",
            "good_input": ROOT / "examples/data/sine_inputs.txt"}


def _assert_clean(result, args) -> None:
    shown = " ".join(map(str, args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        trace = "".join(traceback.format_exception(*result.exc_info))
        pytest.fail(f"lstmkit {shown}: a traceback instead of a message:\n{trace}")
    assert "Traceback" not in result.output, f"lstmkit {shown}:\n{result.output}"
    assert result.exit_code in CODES, f"lstmkit {shown}: exit code {result.exit_code} is not in ExitCode"


def _leaf_commands(group: click.Group, prefix=()):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _leaf_commands(command, prefix + (name,))
        else:
            yield prefix + (name,), command


def _kind(param: click.Parameter) -> str | None:
    kind = param.type
    if isinstance(kind, click.Path):
        if kind.file_okay and not kind.dir_okay:
            return "file"
        if kind.dir_okay and not kind.file_okay:
            return "folder"
        return "either"
    return None


def _invocations(corpus) -> list[list]:
    """Every command: no arguments, --help, and each required argument drawn from the corpus in turn."""
    files = list(corpus["configs"].values()) + list(corpus["inputs"].values())
    folders = list(corpus["runs"].values())
    out = []
    for path, command in _leaf_commands(corpus["cli"]):
        out += [list(path), list(path) + ["--help"]]
        required = [p for p in command.params if isinstance(p, click.Argument) and p.required]

        def good(param):
            kind = _kind(param)
            if kind == "folder":
                return corpus["good_run"]
            if "input" in (param.name or ""):
                return corpus["good_input"]
            return corpus["good_config"]

        for i, param in enumerate(required):
            kind = _kind(param)
            choices = {"file": files, "folder": folders, "either": files + folders}.get(kind, ["x", "-1", ""])
            for value in choices:
                out.append(list(path) + [value if j == i else good(p) for j, p in enumerate(required)])
        # every option naming a file or folder to write: somewhere it cannot be written
        for option in command.params:
            if isinstance(option, click.Option) and _kind(option) and not option.type.exists:
                for where in (UNWRITABLE, corpus["base"] / "binary.csv" / "x"):
                    out.append(list(path) + [good(p) for p in required] + [option.opts[0], where])
    config_cmds = [["run", "--dry-run"], ["config", "validate", "--no-data"]]
    out += [cmd + [c] for cmd in config_cmds for c in corpus["configs"].values()]
    out += [["run", "--resume", r] for r in folders]
    out += [["evaluate", r, "--checkpoint", "last"] for r in folders]
    out += [["predict", corpus["good_run"], i, "--checkpoint", "last"] for i in corpus["inputs"].values()]
    return out


def test_every_command_over_the_corpus_ends_in_a_message(corpus, monkeypatch):
    monkeypatch.chdir(corpus["base"])  # any run folder a corpus config manages to create stays in here
    runner = CliRunner()
    calls = _invocations(corpus)
    assert len(calls) > 300
    for args in calls:
        result = runner.invoke(corpus["cli"], [str(a) for a in args])
        _assert_clean(result, args)


def test_the_good_run_survived_the_corpus(corpus):
    """No corpus call wrote into the good run, or into the folders a checkpoints link points at."""
    result = CliRunner().invoke(corpus["cli"], ["evaluate", str(corpus["good_run"])])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name,expected", [
    ("huge hidden size", ExitCode.INVALID_CONFIG),
    ("output folder cannot be made", ExitCode.USAGE),
    ("output folder is a file", ExitCode.USAGE),
    ("missing data file", ExitCode.INVALID_CONFIG),
])
def test_run_corpus_exit_codes(corpus, monkeypatch, name, expected):
    monkeypatch.chdir(corpus["base"])
    result = CliRunner().invoke(corpus["cli"], ["run", str(corpus["configs"][name])])
    _assert_clean(result, ["run", name])
    assert result.exit_code == expected, result.output
