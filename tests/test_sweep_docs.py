"""docs/sweeps.md is true: its sweep file is examples/sweep.yaml and validates, its command lines run,
and the example sweep itself runs to a ranked summary and a runnable best.yaml."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

pytest.importorskip("optuna")

from click.testing import CliRunner  # noqa: E402

from lstmkit.cli import make_cli  # noqa: E402
from lstmkit.sweep.spec import load_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "sweeps.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE, re.S)


def test_the_page_shows_the_example_file():
    (block,) = [b for b in _blocks("yaml") if "params:" in b]
    example = (ROOT / "examples" / "sweep.yaml").read_text(encoding="utf-8")
    assert load_sweep(ROOT / "examples" / "x.yaml", text=block).params == \
        load_sweep(ROOT / "examples" / "sweep.yaml").params
    body = [line.split("#")[0].rstrip() for line in block.splitlines() if line.strip()]
    assert body == [line.split("#")[0].rstrip() for line in example.splitlines()
                    if line.strip() and not line.startswith("#")]


def test_every_key_in_the_table_is_a_sweep_key():
    from lstmkit.sweep.spec import _KEYS

    rows = re.findall(r"^\| `([a-z_]+)`(?:, `([a-z_]+)`)? \|", PAGE, re.M)
    documented = {k for row in rows for k in row if k}
    assert documented == set(_KEYS) - {"name"}


def test_the_dry_run_command_of_the_page(monkeypatch):
    monkeypatch.chdir(ROOT)
    lines = [line.split("#")[0].strip() for b in _blocks("bash") for line in b.splitlines()]
    (dry,) = [line for line in lines if line.startswith("lstmkit sweep") and "--dry-run" in line]
    result = CliRunner().invoke(make_cli(), shlex.split(dry)[1:])
    assert result.exit_code == 0, result.output
    assert result.output.count("trial-") == 8 and "nothing was written" in result.output


def test_the_example_sweep_runs(tmp_path):
    result = CliRunner().invoke(make_cli(), ["sweep", str(ROOT / "examples" / "sweep.yaml"), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "8 of 8 trial(s) finished" in result.output
    from lstmkit.config.loader import load_config

    best = load_config(tmp_path / "best.yaml")
    assert best.config.model.hidden_size in (16, 32) and best.config.training.epochs == 4
    summary = (tmp_path / "summary.md").read_text()
    assert summary.count("| completed |") == 4
