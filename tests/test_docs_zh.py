"""The Chinese learning path (docs/zh/): each page is a twin of an English page.

``tests/test_docs.py`` runs every ```python block of docs/zh/*.md and checks
what it prints. This file checks what makes a page a *twin*: it links to its
English page (same file name one folder up), its examples are the English
page's code token for token (only comments may differ: they are translated),
the Chinese home lists every page of the path, and one term is used per
concept (docs/zh follows the glossary in shared/reference/zh-glossary.md).
"""
from __future__ import annotations

import io
import re
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
ZH = DOCS / "zh"
# The first five chapters of the learning path (chapter 1 has two pages).
CHAPTERS = ("why-lstm.md", "worked-step.md", "lstm.md", "inputs-outputs.md", "lstmcell.md", "packing.md")
PAGES = sorted(ZH.glob("*.md"))

sys.path.insert(0, str(DOCS / "_ext"))
from lstmkit_exec import python_blocks  # noqa: E402  (the one definition of a block)

LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")
CJK = re.compile(r"[\u4e00-\u9fff]")


def code_tokens(code: str) -> list[tuple[int, str]]:
    """The block's tokens without comments and blank lines: what runs, whatever the comments say."""
    skip = {tokenize.COMMENT, tokenize.NL}
    return [(t.type, t.string) for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type not in skip]


def blocks(path: Path) -> list[str]:
    return [block[-1] for block in python_blocks(path.read_text(encoding="utf-8"))]  # a block ends with its code


def prose(path: Path) -> str:
    """The page without its fenced blocks."""
    return re.sub(r"^(`{3,}).*?^\1[ \t]*$", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_the_path_exists():
    names = {p.name for p in PAGES}
    missing = [name for name in ("index.md",) + CHAPTERS if name not in names]
    assert not missing, f"docs/zh/ lacks {missing}"


@pytest.mark.parametrize("path", PAGES, ids=[p.name for p in PAGES])
def test_page_links_its_english_twin_at_the_top(path):
    twin = DOCS / path.name
    assert twin.exists(), f"docs/zh/{path.name} has no English twin docs/{path.name}"
    head = path.read_text(encoding="utf-8").split("\n## ", 1)[0]  # before the first section
    assert f"](../{path.name})" in head, f"docs/zh/{path.name} does not link ../{path.name} before its first section"


@pytest.mark.parametrize("name", CHAPTERS)
def test_examples_are_the_english_code(name):
    zh, en = blocks(ZH / name), blocks(DOCS / name)
    assert len(zh) == len(en), f"docs/zh/{name} has {len(zh)} python blocks, docs/{name} has {len(en)}"
    for number, (z, e) in enumerate(zip(zh, en), start=1):
        assert code_tokens(z) == code_tokens(e), f"docs/zh/{name}, python block {number} differs from docs/{name}"


def test_code_comparison_ignores_comments_only():
    assert code_tokens("x = 1  # one\n# note\nprint(x)\n") == code_tokens("x = 1  # 一\nprint(x)\n")
    assert code_tokens("x = 1\n") != code_tokens("x = 2\n")
    assert code_tokens('print("a")\n') != code_tokens('print("甲")\n')


def test_chinese_home_links_every_page_and_the_english_home():
    index = ZH / "index.md"
    text = index.read_text(encoding="utf-8")
    linked = {(ZH / target).resolve() for target in LINK.findall(text)}
    for name in CHAPTERS:
        assert (ZH / name).resolve() in linked, f"docs/zh/index.md does not link {name}"
    assert (DOCS / "index.md").resolve() in linked, "docs/zh/index.md does not link the English home"
    toctree = re.search(r"```\{toctree\}\n(.*?)```", text, re.S)
    assert toctree, "docs/zh/index.md has no toctree"
    entries = [line.strip() for line in toctree.group(1).splitlines() if line.strip() and not line.startswith(":")]
    assert entries == [name[:-3] for name in CHAPTERS], f"toctree of docs/zh/index.md: {entries}"


# One term per concept (the glossary allows two for some; docs/zh uses the first).
VARIANTS = {"隐藏状态": "隐状态", "单元状态": "细胞状态", "批次大小": "批量大小", "序列长短": "序列长度"}


@pytest.mark.parametrize("path", PAGES, ids=[p.name for p in PAGES])
def test_written_in_chinese_with_one_term_per_concept(path):
    text = prose(path)
    assert len(CJK.findall(text)) > 200, f"docs/zh/{path.name}: its prose is hardly Chinese"
    for variant, term in VARIANTS.items():
        assert variant not in text, f"docs/zh/{path.name} writes {variant}; the path uses {term}"


# A line break inside a paragraph is rendered as a space, which splits Chinese text visibly.
SOFT_BREAK = re.compile(r"[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef“”]\n[ \t]*[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef“”]")


@pytest.mark.parametrize("path", PAGES, ids=[p.name for p in PAGES])
def test_no_line_break_between_chinese_characters(path):
    found = SOFT_BREAK.search(prose(path))
    assert not found, f"docs/zh/{path.name}: a line break inside Chinese text (shown as a space): {found.group()!r}"


def test_soft_break_check_can_fail():
    assert SOFT_BREAK.search("这是\n一个句子") and SOFT_BREAK.search("结束。\n  下一行")
    assert not SOFT_BREAK.search("段落。\n\n下一段") and not SOFT_BREAK.search("调用\n`lstm`")
