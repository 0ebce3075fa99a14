"""Hostile or broken YAML: every case is a clear ``file:line:col`` message in milliseconds, never a traceback."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from lstmkit.cli import ExitCode, make_cli
from lstmkit.config import yamlio
from lstmkit.config.yamlio import YAMLError, load_yaml


def alias_bomb(levels: int) -> str:
    """Each level is a list of 9 aliases of the one before: 9**levels strings once expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


CASES = [
    ("alias bomb, 7 levels", alias_bomb(7), "f.yaml:5:", "more than 50,000 values"),
    ("alias bomb, 9 levels", alias_bomb(9), "f.yaml:5:", "more than 50,000 values"),
    ("many aliases", "a: &a 1\nb: [" + ", ".join(["*a"] * 101) + "]\n", "f.yaml:2:", "more than 100 aliases"),
    ("NUL byte", "a: 1\nb: x\0y\n", "f.yaml:2:5:", "a NUL byte"),
    ("5,000-digit integer", "seed: " + "9" * 5000 + "\n", "f.yaml:1:7:", "5,000 characters"),
    ("recursive alias in a list", "a: &a [1, *a]\n", "f.yaml:1:11:", "recursive alias"),
    ("recursive alias in a mapping", "a: &a {b: {c: *a}}\n", "f.yaml:1:15:", "recursive alias"),
    ("undefined alias", "a: *nope\n", "f.yaml:1:4:", "undefined alias *nope"),
    ("deep flow nesting", "a: " + "[" * 10_000 + "]" * 10_000 + "\n", "f.yaml:1:", "nested more than 50 levels"),
    ("deep block nesting", "".join(" " * i + f"k{i}:\n" for i in range(200)), "f.yaml:51:", "nested more than 50"),
    ("a list as a key", "? [1]\n: 2\n", "f.yaml:1:3:", "a mapping key must be a plain scalar"),
    ("a tagged mapping", "a: !!python/object:os.system {}\n", "f.yaml:1:4:", "is not allowed"),
    ("two documents", "a: 1\n---\nb: 2\n", "f.yaml:2:1:", "expected a single document"),
    ("2M keys", "".join(f"k{i}: {i}\n" for i in range(2_000_000)), "f.yaml:", "a config is at most"),
]


@pytest.mark.parametrize("text, where, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_yaml_is_refused_quickly_with_its_position(text, where, expected):
    # Each case used to take seconds to minutes, gigabytes, or end in a traceback; now one clear message.
    with pytest.raises(YAMLError) as info:
        load_yaml(text, "f.yaml")
    assert str(info.value).startswith(where) and expected in str(info.value), str(info.value)


def test_alias_bomb_costs_milliseconds_not_gigabytes():
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(YAMLError):
        load_yaml(alias_bomb(7))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20  # the old loader needed 1.8 GB for this 7-level file


def test_aliases_within_limits_are_independent_copies_with_positions():
    data, positions = load_yaml("base: &b {lr: 0.1, betas: [0.9, 0.99]}\nother: *b\n", "f.yaml")
    assert data == {"base": {"lr": 0.1, "betas": [0.9, 0.99]}, "other": {"lr": 0.1, "betas": [0.9, 0.99]}}
    data["other"]["betas"].append(1)
    assert data["base"]["betas"] == [0.9, 0.99]  # a --set on one place never changes the other
    assert str(positions[("other",)]) == "f.yaml:2:1" and ("other", "lr") not in positions
    assert str(positions[("base", "betas", 1)]) == "f.yaml:1:33"


def test_limits_are_exact():
    at_limit = "a: " + "[" * (yamlio.MAX_DEPTH - 1) + "1" + "]" * (yamlio.MAX_DEPTH - 1) + "\n"
    assert load_yaml(at_limit)[0] is not None
    aliases = "a: &a 1\nb: [" + ", ".join(["*a"] * yamlio.MAX_ALIASES) + "]\n"
    assert load_yaml(aliases)[0]["b"] == [1] * yamlio.MAX_ALIASES
    assert load_yaml("a: " + "9" * yamlio.MAX_NUMBER_CHARS + "\n")[0]["a"] == int("9" * yamlio.MAX_NUMBER_CHARS)


def test_big_or_binary_config_files_are_refused_before_reading(tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(yamlio.MAX_BYTES + 1)  # sparse: never read
    with pytest.raises(YAMLError, match=r"big\.yaml: 262,145 bytes; a config file is at most 262,144"):
        yamlio.load_yaml_file(big)


@pytest.mark.parametrize("text", [alias_bomb(9), "a: &a [*a]\n", "task: {type: sine}\nseed: " + "7" * 5000 + "\n",
                                  "a: x\0\n", "a: " + "[" * 5000 + "]" * 5000 + "\n"])
def test_cli_reports_hostile_configs_without_a_traceback(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    cli = make_cli()
    for args in (["config", "validate", str(path)], ["run", str(path), "--dry-run"], ["config", "show", str(path)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == ExitCode.INVALID_CONFIG, result.output
        assert "Traceback" not in result.output and f"{path}:" in result.output


@pytest.mark.skipif(not __import__("os").path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_device_is_not_a_config():
    # a device (or a /proc file) reports no size: the read itself is bounded
    with pytest.raises(YAMLError, match="262,145 characters; a config is at most 262,144"):
        yamlio.load_yaml_file("/dev/zero")
    result = CliRunner().invoke(make_cli(), ["config", "validate", "/dev/zero"])
    assert result.exit_code == ExitCode.INVALID_CONFIG and "not a regular file: /dev/zero" in result.output
