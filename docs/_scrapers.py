"""A sphinx-gallery image scraper for the figures :mod:`manifold_ps.viz` returns.

The viz functions build :class:`matplotlib.figure.Figure` objects without pyplot (safe in
scripts, servers and tests), and sphinx-gallery's matplotlib scraper only sees pyplot figures.
This scraper looks, after every code block of a tutorial, at the tutorial's global variables for
figures not managed by pyplot -- directly or inside a list, tuple or dict -- and saves each one
the first time it is seen, in the order the variables were first assigned.
"""

from __future__ import annotations

import weakref
from typing import Any

from matplotlib.figure import Figure
from sphinx_gallery.scrapers import figure_rst

__all__ = ["viz_figures"]

_SEEN: "weakref.WeakSet[Figure]" = weakref.WeakSet()


def _collect(value: Any, found: list[Figure], depth: int = 0) -> None:
    if isinstance(value, Figure):
        if value.canvas.manager is None and value not in _SEEN and all(value is not f for f in found):
            found.append(value)
    elif depth < 2 and isinstance(value, (list, tuple)):
        for item in value:
            _collect(item, found, depth + 1)
    elif depth < 2 and isinstance(value, dict):
        for item in value.values():
            _collect(item, found, depth + 1)


def viz_figures(block: Any, block_vars: dict[str, Any], gallery_conf: dict[str, Any], **kwargs: Any) -> str:
    """Save the new pyplot-less figures of a code block; return their reStructuredText."""
    found: list[Figure] = []
    for name, value in list(block_vars["example_globals"].items()):
        if not name.startswith("__"):
            _collect(value, found)
    paths = []
    for fig, path in zip(found, block_vars["image_path_iterator"]):
        fig.savefig(path, dpi=100, facecolor=fig.get_facecolor(), bbox_inches="tight")
        _SEEN.add(fig)
        paths.append(path)
    return figure_rst(paths, gallery_conf["src_dir"])
