"""Sphinx configuration of the manifold_ps documentation.

Build with ``docs/build.sh`` (warnings are errors). The tutorials in ``docs/tutorials`` are
sphinx-gallery scripts executed at build time; the API pages are generated from the docstrings;
the results page is generated from the Markdown tables the benchmarks write.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS))  # for the local _results helper only; the package is pip-installed

import _results  # noqa: E402

os.environ.setdefault("MPLBACKEND", "Agg")

import manifold_ps  # noqa: E402

# -- project ----------------------------------------------------------------------------------
project = "manifold_ps"
author = "the manifold_ps authors"
copyright = "2025, the manifold_ps authors"
release = manifold_ps.__version__
version = ".".join(release.split(".")[:2])

# -- general ----------------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
]
templates_path = ["_templates"]
exclude_patterns = ["_build", "_generated", "design.md", "**.ipynb_checkpoints"]
root_doc = "index"
nitpicky = False
default_role = "code"  # `x` in a docstring renders as code, never as a broken reference

# -- autodoc / autosummary / napoleon -----------------------------------------------------------
autosummary_generate = True
autosummary_ignore_module_all = False  # a module's __all__ is its public surface
autosummary_imported_members = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = True
autoclass_content = "class"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields, so dataclass fields are not documented twice
napoleon_use_rtype = False
napoleon_custom_sections = ["Shapes", "Shape"]

# -- sphinx-gallery -----------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": ["tutorials"],
    "gallery_dirs": ["auto_tutorials"],
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"/_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    # pyplot figures, then the Figure objects manifold_ps.viz returns (docs/_scrapers.py)
    "image_scrapers": ("matplotlib", "_scrapers.viz_figures"),
    "reset_modules": ("matplotlib",),
    "only_warn_on_example_error": False,
    "abort_on_example_error": False,
    "show_memory": False,
    "capture_repr": ("_repr_html_",),
    "plot_gallery": os.environ.get("MANIFOLD_PS_DOCS_PLOT", "True"),
}

# -- HTML -------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"manifold_ps {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_theme_options = {"navigation_with_keys": True}

# -- generated pages --------------------------------------------------------------------------


def _attribute_doc(app, what, name, obj, options, lines) -> None:  # noqa: ANN001
    """Document a constant by the doc-comment written where it is defined, never by its type.

    ``from .temperature import T_MIN`` does not carry the string that follows ``T_MIN = 202.66``
    in ``temperature.py``, so autodoc would fall back to the docstring of ``float`` (or ``dict``,
    ``ndarray``); look the comment up in the package's submodules instead.
    """
    if what != "data":
        return
    import importlib
    import pkgutil

    from sphinx.pycode import ModuleAnalyzer

    module_name, _, attr = name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return
    candidates = [module_name]
    if hasattr(module, "__path__"):
        candidates += [f"{module_name}.{m.name}" for m in pkgutil.iter_modules(module.__path__)]
    for candidate in candidates:
        try:
            sub = importlib.import_module(candidate)
            docs = ModuleAnalyzer.for_module(candidate).find_attr_docs()
        except Exception:  # noqa: BLE001 - a module that cannot be analysed has nothing to give
            continue
        if ("", attr) in docs and getattr(sub, attr, None) is getattr(module, attr, object()):
            lines[:] = [line for line in docs[("", attr)]]
            return
    lines[:] = []  # whatever autodoc found is the docstring of the constant's type


def _generate(app) -> None:  # noqa: ANN001 - sphinx application
    _results.write_results_page(ROOT, DOCS / "_generated")


def setup(app) -> None:  # noqa: ANN001
    app.connect("builder-inited", _generate, priority=100)
    app.connect("autodoc-process-docstring", _attribute_doc)
