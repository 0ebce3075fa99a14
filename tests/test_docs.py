"""The documentation's examples run: every ```python block of docs/*.md, docs/zh/*.md and README.md.

Each file's blocks run in order in one namespace (like the cells of a notebook),
from a temporary working directory, by the same code that runs them when the
site is built (``docs/_ext/lstmkit_exec.py``), so a page cannot drift from the
code without this test failing.  A failure names the file, the block number
and the line where the block starts.

Printed output is checked too: in a block, comment lines that directly follow a
line calling ``print(`` are that print's expected output (``# (5, 3, 20)``), and
they must appear, in order, in what the block prints.  Output that may vary
belongs in a ```text block instead.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# docs/*.md, the Chinese twins in docs/zh/ (when they exist) and the README
FILES = sorted(DOCS.glob("*.md")) + sorted(DOCS.glob("zh/*.md")) + [ROOT / "README.md"]
# Pages other engineers own that the docs may link to before they exist.
OWNED_ELSEWHERE = {"performance.md"}

# The docs build runs the blocks with the same code (docs/_ext/lstmkit_exec.py): one definition of a block.
sys.path.insert(0, str(DOCS / "_ext"))
from lstmkit_exec import BlockError, expected_outputs, run_blocks, without_expected_outputs  # noqa: E402
from lstmkit_exec import python_blocks as _blocks  # noqa: E402


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(line number of the block's first code line, code)`` for each ```python block."""
    return [(block.line, block.code) for block in _blocks(path.read_text(encoding="utf-8"))]


def find_in_order(expected: list[list[str]], printed: str) -> str | None:
    """``None`` if every group appears as consecutive lines of ``printed``, in order; else a message."""
    lines = [line.rstrip() for line in printed.splitlines()]
    position = 0
    for group in expected:
        group = [line.rstrip() for line in group]
        for start in range(position, len(lines) - len(group) + 1):
            if lines[start : start + len(group)] == group:
                position = start + len(group)
                break
        else:
            return "expected output not printed (in this order):\n" + "\n".join(group)
    return None


def test_docs_exist():
    names = {p.name for p in DOCS.glob("*.md")}
    for required in ("index.md", "why-lstm.md", "worked-step.md", "lstm.md", "inputs-outputs.md", "lstmcell.md",
                     "packing.md", "training.md", "gru-rnn.md", "bridge.md", "equations.md", "backends.md",
                     "deviations.md"):
        assert required in names, f"docs/{required} is missing"
        assert python_blocks(DOCS / required), f"docs/{required} has no ```python block"


def test_expected_output_parser():
    code = "x = 1\nprint(x)\n# 1\n# 2\ny = 2  # not output\n# not output either\nprint(y)  # inline\n# 3\n"
    assert expected_outputs(code) == [["1", "2"], ["3"]]
    assert find_in_order([["1", "2"], ["3"]], "1\n2\nnoise\n3\n") is None
    assert find_in_order([["3"], ["1"]], "1\n3\n") is not None
    # the site shows the real output instead of these comments; other comments stay
    assert without_expected_outputs(code) == "x = 1\nprint(x)\ny = 2  # not output\n# not output either\nprint(y)  # inline\n"


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_markdown_python_blocks_run(path, tmp_path, monkeypatch):
    if not python_blocks(path):
        pytest.skip(f"{path.name} has no ```python blocks")
    pytest.importorskip("matplotlib").use("Agg")  # pages draw figures; run_blocks closes them
    monkeypatch.chdir(tmp_path)
    name = str(path.relative_to(ROOT))
    blocks = run_blocks(path.read_text(encoding="utf-8"), name, str(path))
    number = 0
    try:
        for number, (block, printed) in enumerate(blocks, start=1):
            problem = find_in_order(expected_outputs(block.code), printed)
            if problem:
                pytest.fail(f"{name}, python block {number} (line {block.line}): {problem}\n--- it printed:\n{printed}",
                            pytrace=False)
    except BlockError as error:
        pytest.fail(str(error), pytrace=False)


LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_relative_links_resolve(path):
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if "://" in target:
            continue
        resolved = (path.parent / target).resolve()
        if not resolved.exists() and resolved.name in OWNED_ELSEWHERE:
            continue
        assert resolved.exists(), f"{path.relative_to(ROOT)} links to missing {target}"


def test_block_runner_reports_the_failing_block_and_collects_figures():
    text = "intro\n\n```python\nx = 1\nprint(x)\n```\n\ntext\n\n```python\nraise ValueError('boom')\n```\n"
    runs = run_blocks(text, "page.md", "page.md")
    block, printed = next(runs)
    assert (block.line, block.code, printed) == (4, "x = 1\nprint(x)\n", "1\n")
    with pytest.raises(BlockError, match=r"page.md, python block 2 \(line 11\) raised:(.|\n)*ValueError: boom"):
        next(runs)

    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    drawn = []
    text = "```python\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\n```\n"
    list(run_blocks(text, "p.md", "p.md", on_figure=lambda fig, number: drawn.append(number)))
    assert drawn == [1]
    assert not matplotlib.pyplot.get_fignums()  # closed after it was handed over


def test_outputs_are_inserted_as_markdown_under_their_block():
    from lstmkit_exec import _output_markdown

    extra = _output_markdown("(5, 3, 20)\n", ["page-1-1.png"])
    assert "```{code-block} text\n:class: lstmkit-output\n(5, 3, 20)\n```" in extra
    assert "```{image} /_generated/page-1-1.png" in extra
    assert _output_markdown("   \n", []) == ""  # nothing printed, nothing drawn: nothing added
    assert extra.count("````") == 0 and "````{code-block}" in _output_markdown("```\n", [])
