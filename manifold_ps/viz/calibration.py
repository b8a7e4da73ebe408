"""Calibration plots: the empirical coverage of posterior intervals against their nominal level.

A calibrated sampler lies on the diagonal; a curve below it means intervals that are too narrow
(over-confident), above it too wide. The curves come from
:func:`manifold_ps.metrics.calibration_curve` or, for recorded benchmark results, from
:func:`manifold_ps.benchmarking.calibration_curves`.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

__all__ = ["calibration_figure"]

_Curves = Mapping[str, tuple[Sequence[float], Sequence[float]]]


def calibration_figure(panels: Mapping[str, _Curves], *, ncols: int | None = None, title: str | None = None,
                       panel_size: float = 3.0) -> Figure:
    """One panel per entry of ``panels``: nominal vs empirical coverage, one line per method, and
    the diagonal.

    A method keeps its colour across panels. A method whose name ends in ``"(exact normal)"``
    (the exact intervals of a Gaussian posterior) is drawn dashed in the colour of the method it
    belongs to.

    Args:
        panels: Panel title -> ``{method: (nominal levels, empirical coverages)}``, levels and
            coverages in ``[0, 1]``; a panel without curves is left empty, titled.
        ncols: Panels per row (all in one row by default).
        title: Figure title.
        panel_size: Side of one square panel in inches.

    Returns:
        The figure.

    Example:
        >>> fig = calibration_figure({"all vertices": {"ours": ([0.5, 0.9], [0.42, 0.85])}})
        >>> len(fig.axes)
        1
    """
    if not panels:
        raise ValueError("calibration_figure needs at least one panel")
    ncols = len(panels) if ncols is None else ncols
    if ncols < 1:
        raise ValueError(f"ncols must be at least 1, got {ncols}")
    nrows = math.ceil(len(panels) / ncols)
    legend_rows = 1 + len({name for curves in panels.values() for name in curves}) // 3  # the diagonal too
    width = max(panel_size * ncols + 0.6, 5.0)
    if title:  # wrapped to the figure's width (about 12 characters of 10-point text per inch)
        title = textwrap.fill(title, width=int(width * 12))
    top = 0.4 + 0.2 * (title.count("\n") + 1) if title else 0.15  # inches above the panels
    bottom = 0.55 + 0.2 * legend_rows  # ... and below them
    height = round(panel_size * nrows + top + bottom, 1)  # whole pixels at the usual dpi
    fig = Figure(figsize=(width, height))
    colours: dict[str, str] = {}
    palette = [f"C{i}" for i in range(10)]
    for i, (panel, curves) in enumerate(panels.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.plot([0, 1], [0, 1], color="0.6", linewidth=1.0, linestyle=":", label="calibrated")
        for name, (levels, coverage) in curves.items():
            if len(levels) != len(coverage):
                raise ValueError(f"panel {panel!r}, method {name!r}: {len(levels)} levels but "
                                 f"{len(coverage)} coverages")
            base = name.removesuffix("(exact normal)").rstrip()
            colour = colours.setdefault(base, palette[len(colours) % len(palette)])
            ax.plot(levels, coverage, marker="o", markersize=3.5, color=colour,
                    linestyle="--" if base != name else "-", label=name)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("nominal level", fontsize=8)
        if i % ncols == 0:
            ax.set_ylabel("empirical coverage", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, linewidth=0.3)
    handles: dict[str, Any] = {}
    labels: list[str] = []
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = h
                labels.append(label)
    fig.legend([handles[k] for k in labels], labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(top=1 - top / height, bottom=bottom / height, left=0.12, right=0.97, wspace=0.3,
                        hspace=0.45)
    return fig
