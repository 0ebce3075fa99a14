"""Sphinx configuration: the lstmkit site (MyST Markdown pages, furo theme).

Build: ``python -m pip install ".[docs]" && python -m sphinx -W -b html docs docs/_build/html``.
Every ```python block of every page runs during the build (``_ext/lstmkit_exec.py``)
and its output and figures appear under it.
"""
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

# Document and run the *installed* lstmkit (``pip install ".[docs]"``, or ``-e``), which has its
# compiled core. ``python -m sphinx`` run from the repository root puts the source tree first on
# sys.path; after a non-editable install that copy has no compiled core, so look past it, and
# fall back to it only when lstmkit is not installed at all.
_ROOT = str(HERE.parent)
_source_entries = [p for p in sys.path if p in ("", ".", _ROOT)]
sys.path[:] = [p for p in sys.path if p not in _source_entries]
if importlib.util.find_spec("lstmkit") is None:
    sys.path.insert(0, _ROOT)
import lstmkit  # noqa: E402

project = "lstmkit"
author = "the lstmkit authors"
copyright = "the lstmkit authors"
release = version = lstmkit.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "lstmkit_exec",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]
html_static_path = ["_static"]
html_css_files = ["lstmkit.css"]

myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links resolve

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = True
default_role = "code"  # docstrings write `x` for code, as Markdown does

html_theme = "furo"  # the whole learning path stays visible in the left sidebar
html_title = f"lstmkit {release}"
html_theme_options = {"navigation_with_keys": True}
html_show_sourcelink = False


def _indent_literal_blocks(app, what, name, obj, options, lines):
    """Indent a ``::`` block that lost its indentation.

    A docstring whose first line ends in ``::`` and whose block follows on
    the next lines is dedented (by ``inspect.cleandoc``) down to column 0,
    the same column as the ``::`` paragraph, which reST then rejects.
    """
    i = 0
    while i < len(lines):
        if lines[i].rstrip().endswith("::"):
            level = len(lines[i]) - len(lines[i].lstrip())
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and len(lines[j]) - len(lines[j].lstrip()) <= level:
                while j < len(lines) and lines[j].strip():
                    lines[j] = "    " + lines[j]
                    j += 1
            i = j
        else:
            i += 1


def _link_chinese_twins(app, docname, source):
    """Link the Chinese pages (docs/zh/) when they exist; a build without them still passes.

    The home page gets a toctree of ``zh/index``; an English page with a twin
    ``zh/<page>.md`` gets a "中文" link under its title.
    """
    if docname.startswith("zh/") or not (HERE / "zh" / "index.md").exists():
        return
    text = source[0]
    if docname == "index":
        first_line, rest = text.split("\n", 1)
        source[0] = (f"{first_line}\n\n[中文](zh/index.md)\n{rest}\n\n"
                     "```{toctree}\n:caption: 中文\n:maxdepth: 1\n:hidden:\n\nzh/index\n```\n")
    elif (HERE / "zh" / f"{docname}.md").exists():
        first_line, rest = text.split("\n", 1)
        depth = "../" * docname.count("/")
        source[0] = f"{first_line}\n\n[中文]({depth}zh/{docname}.md)\n{rest}"


def _reread_pages_with_twins(app, env, added, changed, removed):
    """An incremental build re-reads the pages whose "中文" link or toctree depends on docs/zh/."""
    if not (HERE / "zh" / "index.md").exists():
        return []
    twins = [p.stem for p in (HERE / "zh").glob("*.md") if (HERE / p.name).exists()]
    return sorted(set(twins) | {"index"})


def setup(app):
    app.connect("autodoc-process-docstring", _indent_literal_blocks)
    app.connect("source-read", _link_chinese_twins, priority=400)  # before the examples run (500)
    app.connect("env-get-outdated", _reread_pages_with_twins)
