"""The documentation's examples run: every ```python block of docs/*.md and README.md.

Each file's blocks run in order in one namespace (like the cells of a notebook),
from a temporary working directory.  A failure names the file, the block number
and the line where the block starts.

Printed output is checked too: in a block, comment lines that directly follow a
line calling ``print(`` are that print's expected output (``# (5, 3, 20)``), and
they must appear, in order, in what the block prints.  Output that may vary
belongs in a ```text block instead.
"""
from __future__ import annotations

import contextlib
import io
import re
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FILES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]

# A fenced block at the start of a line: ```python ... ```
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
# Pages other engineers own that the docs may link to before they exist.
OWNED_ELSEWHERE = {"performance.md"}


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(line number of the block's first code line, code)`` for each ```python block."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in FENCE.finditer(text)]


def expected_outputs(code: str) -> list[list[str]]:
    """Groups of expected output lines: the comment lines right after a ``print(`` line."""
    groups, current, after_print = [], None, False
    for line in code.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if after_print:
                body = stripped[1:]
                current.append(body[1:] if body.startswith(" ") else body)
            continue
        if current:
            groups.append(current)
        current = []
        after_print = "print(" in stripped
    if current:
        groups.append(current)
    return groups


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
    for required in ("index.md", "lstm.md", "equations.md", "packing.md", "training.md",
                     "backends.md", "deviations.md"):
        assert required in names, f"docs/{required} is missing"
        assert python_blocks(DOCS / required), f"docs/{required} has no ```python block"


def test_expected_output_parser():
    code = "x = 1\nprint(x)\n# 1\n# 2\ny = 2  # not output\n# not output either\nprint(y)  # inline\n# 3\n"
    assert expected_outputs(code) == [["1", "2"], ["3"]]
    assert find_in_order([["1", "2"], ["3"]], "1\n2\nnoise\n3\n") is None
    assert find_in_order([["3"], ["1"]], "1\n3\n") is not None


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_markdown_python_blocks_run(path, tmp_path, monkeypatch):
    blocks = python_blocks(path)
    if not blocks:
        pytest.skip(f"{path.name} has no ```python blocks")
    monkeypatch.chdir(tmp_path)
    name = str(path.relative_to(ROOT))
    namespace = {"__name__": "__docs__", "__file__": str(path)}
    for number, (line, code) in enumerate(blocks, start=1):
        where = f"{name}, python block {number} (line {line})"
        printed = io.StringIO()
        try:
            compiled = compile(code, f"{name}:block{number}", "exec")
            with contextlib.redirect_stdout(printed):
                exec(compiled, namespace)
        except Exception:
            pytest.fail(
                f"{where} raised:\n{traceback.format_exc()}\nprinted so far:\n{printed.getvalue()}",
                pytrace=False,
            )
        problem = find_in_order(expected_outputs(code), printed.getvalue())
        if problem:
            pytest.fail(f"{where}: {problem}\n--- it printed:\n{printed.getvalue()}", pytrace=False)


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
