"""Sphinx configuration: the API reference is generated from the package at build time.

Every public module of ``aura_sync`` (no leading underscore in any part of its
name) gets a page under ``api/`` with ``automodule``; the pages are written on
each build, so a module that is added, split or removed needs no edit here.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import aura_sync  # noqa: E402

project = "aura-sync"
author = "The aura-sync authors"
copyright = "2026, The aura-sync authors"
release = version = aura_sync.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_class_signature = "separated"
autodoc_preserve_defaults = True
# Module docstrings document the package; a re-export is documented where it is defined.
autodoc_inherit_docstrings = False
intersphinx_mapping: dict[str, tuple[str, None]] = {}
suppress_warnings = [
    # A name re-exported by a package and documented in its own module too.
    "ref.python",
]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as :ivar: fields, not duplicate attribute entries
html_theme = "alabaster"
html_static_path: list[str] = []

# The docstrings write some sections as a bare heading over an indented block
# ("Parameters" / "Fields" then "    name: text"); napoleon reads them once the
# heading has its Google-style colon.
_SECTIONS = {
    "Parameters": "Args:",
    "Fields": "Attributes:",
    "Attributes": "Attributes:",
    "Raises": "Raises:",
    "Returns": "Returns:",
    "Counters": "Counters:",
    "Gauges": "Gauges:",
}
napoleon_custom_sections = [("Counters", "params_style"), ("Gauges", "params_style")]


def _google_headings(  # noqa: PLR0917 (the signature Sphinx calls)
    app: object,
    what: str,
    name: str,
    obj: object,
    options: object,
    lines: list[str],
) -> None:
    for i, line in enumerate(lines[:-1]):
        heading = _SECTIONS.get(line.strip())
        if heading and line == line.lstrip() and lines[i + 1].startswith("    "):
            lines[i] = heading


def setup(app: object) -> None:
    """Run the heading fix before napoleon (which listens at the default priority)."""
    app.connect("autodoc-process-docstring", _google_headings, priority=100)  # type: ignore[attr-defined]


DEPRECATED = {"aura_sync.peer_discovery", "aura_sync.cache"}


def public_modules() -> list[str]:
    """Every importable public module of the package, sorted."""
    names = ["aura_sync"]
    for info in pkgutil.walk_packages(aura_sync.__path__, "aura_sync."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        names.append(info.name)
    return sorted(names)


def write_api_pages() -> None:
    """(Re)write ``api/*.rst`` and ``api/index.rst`` from :func:`public_modules`."""
    out = HERE / "api"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.rst"):
        old.unlink()
    modules = public_modules()
    for name in modules:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            importlib.import_module(name)
        title = f"``{name}``" + (" (deprecated)" if name in DEPRECATED else "")
        body = [title, "=" * len(title), "", f".. automodule:: {name}"]
        (out / f"{name}.rst").write_text("\n".join(body) + "\n", encoding="utf-8")
    toc = [
        "API reference",
        "=============",
        "",
        "Generated from the docstrings of every public module.",
        "",
        ".. toctree::",
        "   :maxdepth: 1",
        "",
    ]
    toc += [f"   {name}" for name in modules]
    (out / "index.rst").write_text("\n".join(toc) + "\n", encoding="utf-8")


write_api_pages()
