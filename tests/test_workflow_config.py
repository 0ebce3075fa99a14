"""``base: other.yaml``: config composition, merged key by key, with positions in the right file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lstmkit.cli import ExitCode, make_cli
from lstmkit.config.compose import merge
from lstmkit.config.errors import ConfigError
from lstmkit.config.loader import load_config

DATA = Path(__file__).resolve().parent.parent / "examples" / "data"
BASE = """\
name: shared
seed: 3
model: {cell: lstm, hidden_size: 8, num_layers: 2, cell_options: {}}
task: {type: sine, options: {seq_len: 12, num_train: 40, num_valid: 16, num_test: 16}}
training:
  epochs: 3
  batch_size: 8
  optimizer: {name: adam, lr: 1e-2, betas: [0.8, 0.9]}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_config_is_merged_key_by_key_over_its_base(tmp_path):
    write(tmp_path, "configs/base.yaml", BASE)
    child = write(tmp_path, "child.yaml", "base: configs/base.yaml\nmodel: {hidden_size: 4}\n"
                                          "training:\n  optimizer: {lr: 0.005}\n  epochs: 1\n")
    loaded = load_config(child)
    d = loaded.data
    assert d["model"]["hidden_size"] == 4 and d["model"]["num_layers"] == 2  # merged, not replaced
    assert d["training"]["optimizer"] == {**d["training"]["optimizer"], "name": "adam", "lr": 0.005,
                                          "betas": [0.8, 0.9]}
    assert d["training"]["epochs"] == 1 and d["training"]["batch_size"] == 8 and d["seed"] == 3
    assert "base" not in d
    assert loaded.where("model.hidden_size") == f"{child}:2:9"
    assert loaded.where("model.num_layers").startswith(str(tmp_path / "configs" / "base.yaml") + ":3:")


def test_bases_chain_and_lists_are_replaced(tmp_path):
    write(tmp_path, "a.yaml", BASE)
    write(tmp_path, "b.yaml", "base: a.yaml\ntraining: {optimizer: {betas: [0.5, 0.6]}}\n")
    c = write(tmp_path, "c.yaml", "base: b.yaml\nseed: 7\n")
    d = load_config(c).data
    assert d["training"]["optimizer"]["betas"] == [0.5, 0.6] and d["seed"] == 7 and d["model"]["hidden_size"] == 8


def test_a_mapping_of_another_kind_replaces_the_base(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "sgd.yaml", "base: base.yaml\ntraining: {optimizer: {name: sgd, lr: 0.1}}\n"
                                        "model: {cell: gru}\n")
    d = load_config(child).data  # adam's betas would not fit sgd
    assert d["training"]["optimizer"]["name"] == "sgd" and "betas" not in d["training"]["optimizer"]
    assert d["model"]["cell"] == "gru" and d["model"]["hidden_size"] == 8


def test_merge_by_hand():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2, "t": {"type": "one", "k": 1}}
    pos = {("a",): "base:1", ("a", "x"): "base:2", ("a", "y"): "base:3", ("a", "y", 0): "base:3",
           ("a", "y", 1): "base:3", ("b",): "base:4"}
    data, where = merge(base, pos, {"a": {"y": [9]}, "t": {"type": "two"}}, {("a",): "own:1", ("a", "y"): "own:2",
                                                                            ("a", "y", 0): "own:2"})
    assert data == {"a": {"x": 1, "y": [9]}, "b": 2, "t": {"type": "two"}}
    assert where[("a",)] == "own:1" and where[("a", "x")] == "base:2" and where[("a", "y", 0)] == "own:2"
    assert ("a", "y", 1) not in where and where[("b",)] == "base:4"
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 2, "t": {"type": "one", "k": 1}}  # not mutated


def test_paths_in_a_base_are_relative_to_the_base(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "text.txt").write_text((DATA / "lighthouse.txt").read_text())
    write(tmp_path, "shared/lm.yaml", "model: {cell: lstm, hidden_size: 8}\n"
                                     "task: {type: char_lm, train: text.txt, options: {seq_len: 20}}\n")
    child = write(tmp_path, "runs/mine.yaml", "base: ../shared/lm.yaml\ntraining: {epochs: 1}\n")
    assert load_config(child).data["task"]["train"] == str((tmp_path / "shared" / "text.txt").resolve())


def test_errors_point_at_the_file_and_line_they_are_in(tmp_path):
    write(tmp_path, "sub/bad.yaml", "model: {cell: lstm, hidden_size: -1}\ntask: {type: sine}\n")
    child = write(tmp_path, "child.yaml", "base: sub/bad.yaml\ntraining: {epochs: 0}\n")
    with pytest.raises(ConfigError) as info:
        load_config(child)
    where = {i.key: i.where for i in info.value.issues}
    assert where["model.hidden_size"] == f"{tmp_path / 'sub' / 'bad.yaml'}:1:21"
    assert where["training.epochs"] == f"{child}:2:12"
    write(tmp_path, "broken.yaml", "model: [unclosed\n")
    child = write(tmp_path, "c2.yaml", "base: broken.yaml\n")
    with pytest.raises(ConfigError, match=str(tmp_path / "broken.yaml") + ":"):
        load_config(child)


@pytest.mark.parametrize("text, message", [
    ("base: missing.yaml\n", "base: no such config file: "),
    ("base: 3\n", "base: should be the path of another config file"),
    ("base: list.yaml\n", "list.yaml is not a config"),
])
def test_a_bad_base_is_refused_at_its_line(tmp_path, text, message):
    write(tmp_path, "list.yaml", "- 1\n- 2\n")
    child = write(tmp_path, "child.yaml", text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(child)
    assert info.value.issues[0].where == f"{child}:1:1"


def test_a_cycle_of_bases_is_refused(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    write(tmp_path, "self.yaml", "base: ./self.yaml\n")
    with pytest.raises(ConfigError, match=r"a.yaml is already in this config's chain of bases.*a.yaml -> .*b.yaml"
                                          r" -> .*a.yaml") as info:
        load_config(tmp_path / "a.yaml")
    assert info.value.issues[0].where == f"{tmp_path / 'b.yaml'}:1:1"
    with pytest.raises(ConfigError, match="chain of bases"):
        load_config(tmp_path / "self.yaml")


def test_run_with_a_base_writes_the_merged_config(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", "base: base.yaml\ntraining: {epochs: 1}\n")
    result = CliRunner().invoke(make_cli(), ["run", str(child), "-o", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "run" / "config.yaml").read_text()
    assert "\nbase:" not in text and "  epochs: 1\n" in text and "  hidden_size: 8\n" in text
    cycle = write(tmp_path, "loop.yaml", "base: loop.yaml\n")
    bad = CliRunner().invoke(make_cli(), ["run", str(cycle), "-o", str(tmp_path / "x")])
    assert bad.exit_code == ExitCode.INVALID_CONFIG and "Traceback" not in bad.output
