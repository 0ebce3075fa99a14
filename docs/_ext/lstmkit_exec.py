"""Run each page's ```python blocks while Sphinx reads it, and show what they printed and drew.

Why our own extension rather than myst-nb: the pages stay plain Markdown with
plain ```python fences, which ``tests/test_docs.py`` already executes and whose
``# expected output`` comments it checks; myst-nb would need ``{code-cell}``
directives (a second syntax for the same thing) and a Jupyter kernel. This
module is the one place that finds, runs and reads a page's blocks: the test
suite imports :func:`python_blocks`, :func:`run_blocks` and
:func:`expected_outputs` from here.

A page's blocks run in order in one namespace (like a notebook), from a
temporary working directory. After each block, what it printed is inserted as
a ``text`` block marked "Output" (the block's ``# expected output`` comments,
which the tests check, are then left out of the code shown above it), and
every matplotlib figure it left open is saved to ``docs/_generated/`` and
inserted as an image. A block that raises
makes the build fail (a warning, which ``-W`` turns into an error).
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import traceback
from pathlib import Path
from typing import NamedTuple

# A fenced block at the start of a line: ```python ... ```
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
GENERATED = "_generated"  # beside conf.py; git-ignored


class Block(NamedTuple):
    """One ```python block: its first code line's number, the code's span in the page, the fence's end."""

    line: int
    start: int
    stop: int
    end: int
    code: str


def python_blocks(text: str) -> list[Block]:
    """Every ```python block of a page, in order."""
    return [Block(text.count("\n", 0, m.start()) + 2, m.start(1), m.end(1), m.end(), m.group(1))
            for m in FENCE.finditer(text)]


def _expected_lines(code: str):
    """``(index of the line, its expected text)`` for comment lines directly after a ``print(`` line."""
    after_print, found = False, []
    for index, line in enumerate(code.splitlines()):
        stripped = line.strip()
        if stripped.startswith("#"):
            if after_print:
                body = stripped[1:]
                found.append((index, body[1:] if body.startswith(" ") else body))
            continue
        after_print = "print(" in stripped
    return found


def expected_outputs(code: str) -> list[list[str]]:
    """Groups of expected output: the comment lines right after a ``print(`` line (``# (5, 3, 20)``)."""
    groups, previous = [], None
    for index, text in _expected_lines(code):
        if previous is None or index != previous + 1:
            groups.append([])
        groups[-1].append(text)
        previous = index
    return groups


def without_expected_outputs(code: str) -> str:
    """The code without its expected-output comments (the site shows the real output under it)."""
    drop = {index for index, _ in _expected_lines(code)}
    return "".join(line for index, line in enumerate(code.splitlines(keepends=True)) if index not in drop)


class BlockError(Exception):
    """A block raised; the message names the block and carries the traceback."""


def run_blocks(text: str, name: str, file: str, on_figure=None):
    """Run the page's blocks in one namespace; yield ``(block, printed)`` for each.

    ``block`` is a :func:`python_blocks` tuple. ``on_figure(figure, block_number)``
    is called for each matplotlib figure a block leaves open (then it is closed);
    without it, open figures are simply closed. The caller chooses the working
    directory. Raises :class:`BlockError` when a block raises.
    """
    namespace = {"__name__": "__docs__", "__file__": file}
    for number, block in enumerate(python_blocks(text), start=1):
        line, code = block.line, block.code
        printed = io.StringIO()
        try:
            compiled = compile(code, f"{name}:block{number}", "exec")
            with contextlib.redirect_stdout(printed):
                exec(compiled, namespace)
        except Exception:
            raise BlockError(
                f"{name}, python block {number} (line {line}) raised:\n{traceback.format_exc()}"
                f"\nprinted so far:\n{printed.getvalue()}"
            ) from None
        _collect_figures(number, on_figure)
        yield block, printed.getvalue()


def _collect_figures(number, on_figure):
    import sys

    if "matplotlib.pyplot" not in sys.modules:  # the block drew nothing
        return
    import matplotlib.pyplot as plt

    for fignum in plt.get_fignums():
        figure = plt.figure(fignum)
        if on_figure is not None:
            on_figure(figure, number)
        plt.close(figure)


def _render(app, docname: str, source: list[str]) -> None:
    text = source[0]
    if "```python" not in text:
        return
    import matplotlib

    matplotlib.use("Agg")
    srcdir = Path(app.srcdir)
    outdir = srcdir / GENERATED
    outdir.mkdir(exist_ok=True)
    slug = docname.replace("/", "-")
    figures: dict[int, list[str]] = {}

    def save(figure, number):
        names = figures.setdefault(number, [])
        path = outdir / f"{slug}-{number}-{len(names) + 1}.png"
        tmp = path.with_suffix(".tmp.png")
        figure.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)  # never leave a half-written image behind
        names.append(path.name)

    inserts = []
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            for number, (block, printed) in enumerate(
                run_blocks(text, docname, str(app.env.doc2path(docname)), save), start=1
            ):
                inserts.append((block, printed, _output_markdown(printed, figures.get(number, []))))
        except BlockError as error:
            from sphinx.util import logging

            logging.getLogger(__name__).warning(str(error), location=docname)
            return
        finally:
            os.chdir(cwd)
    for block, printed, extra in reversed(inserts):
        code = without_expected_outputs(block.code) if printed.strip() else block.code
        text = text[:block.start] + code + text[block.stop:block.end] + extra + text[block.end:]
    source[0] = text


def _output_markdown(printed: str, images: list[str]) -> str:
    parts = []
    if printed.strip():
        fence = "````" if "```" in printed else "```"
        parts.append(f"\n\n{fence}{{code-block}} text\n:class: lstmkit-output\n{printed.rstrip()}\n{fence}")
    for image in images:
        parts.append(f"\n\n```{{image}} /{GENERATED}/{image}\n:class: lstmkit-figure\n:alt: figure drawn by the code above\n```")
    return "".join(parts)


def setup(app):
    app.connect("source-read", _render)
    return {"version": "1.0", "parallel_read_safe": False, "parallel_write_safe": True}
