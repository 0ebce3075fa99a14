"""``lstmkit sample``: text from a trained char_lm run; clear errors otherwise."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from lstmkit.cli import ExitCode, make_cli
from lstmkit.config.errors import LstmkitError
from lstmkit.learn.sample import sample_run

CHAR_LM = """\
name: tiny_lm
seed: 0
model: {cell: lstm, hidden_size: 16, embedding_size: 8}
task: {type: char_lm, train: text.txt, options: {seq_len: 16}}
training: {epochs: 2, batch_size: 8, optimizer: {name: adam, lr: 1e-2}}
"""
SINE = """\
name: tiny_sine
seed: 0
model: {cell: gru, hidden_size: 4}
task: {type: sine, options: {seq_len: 6, num_train: 8, num_valid: 4, num_test: 4}}
training: {epochs: 1, batch_size: 4}
"""


def invoke(*args):
    return CliRunner().invoke(make_cli(), [str(a) for a in args])


def train(tmp, config: str, name: str):
    (tmp / f"{name}.yaml").write_text(config)
    result = invoke("run", tmp / f"{name}.yaml", "-o", tmp / name, "--no-progress")
    assert result.exit_code == 0, result.output
    return tmp / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("learn_sample")
    (tmp / "text.txt").write_text("the cat sat on the mat. the hat is on the cat.\n" * 12)
    return {"char_lm": train(tmp, CHAR_LM, "lm"), "sine": train(tmp, SINE, "sine")}


def test_sample_starts_with_the_prime_and_stays_in_the_vocabulary(runs):
    text = sample_run(runs["char_lm"], "the ", 40, 0.8, seed=1)
    assert text.startswith("the ") and len(text) == 44
    assert set(text) <= set("the cat sat on the mat. hat is\n")
    assert sample_run(runs["char_lm"], "the ", 40, 0.8, seed=1) == text  # seeded: reproducible
    greedy = sample_run(runs["char_lm"], "the ", 20, greedy=True)
    assert greedy == sample_run(runs["char_lm"], "the ", 20, greedy=True, seed=5)  # no randomness


def test_cli(runs):
    result = invoke("sample", runs["char_lm"], "--prime", "cat", "--length", 10, "--temperature", 0.5, "--seed", 3)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("cat") and len(result.output.rstrip("\n")) >= 13


@pytest.mark.parametrize("args, code, message", [
    (["--temperature", 0], ExitCode.USAGE, "--temperature should be a number > 0, got 0.0; for the most likely"),
    (["--temperature", -1], ExitCode.USAGE, "--temperature should be a number > 0, got -1.0"),
    (["--prime", "DOG!"], ExitCode.USAGE, "--prime has characters the run never saw: '!DGO'; its vocabulary"),
    (["--length", -2], ExitCode.USAGE, "--length should be >= 0, got -2"),
])
def test_cli_errors(runs, args, code, message):
    result = invoke("sample", runs["char_lm"], *args)
    assert result.exit_code == code and message in result.output, result.output
    assert "Traceback" not in result.output


def test_a_run_that_is_not_a_language_model(runs, tmp_path):
    with pytest.raises(LstmkitError, match="trained task 'sine'; lstmkit sample needs a character language model"):
        sample_run(runs["sine"], "x", 5)
    result = invoke("sample", runs["sine"])
    assert result.exit_code == ExitCode.USAGE and "task type char_lm" in result.output
    result = invoke("sample", tmp_path)
    assert result.exit_code == ExitCode.USAGE and "is not a run folder" in result.output
