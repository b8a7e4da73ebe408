"""Figures of vertex signals: on a mesh (3-D, fixed camera), on the globe, and as images.

Only :class:`matplotlib.figure.Figure` objects are made (no pyplot state, no window), so the
functions are safe in scripts, tests and documentation builds. Maps use cartopy when it is
installed; coastlines are drawn only from data already on disk (``CARTOPY_DATA_DIR``, Debian's
``python-cartopy-data`` in ``/usr/share/cartopy/data``, or cartopy's own data folder) -- the
functions never download anything.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["plot_mesh_signal", "plot_sphere_map", "plot_image", "posterior_row_figure", "offline_coastlines"]


def _np(v: Any) -> np.ndarray:
    if isinstance(v, Tensor):
        v = v.detach().cpu().double().numpy()
    return np.asarray(v, dtype=np.float64)


def _new_axes(ax: Axes | None, projection: Any = None, figsize: tuple[float, float] = (4.0, 4.0)) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig = Figure(figsize=figsize)
    return fig, fig.add_subplot(1, 1, 1, projection=projection)


def plot_mesh_signal(
    vertices: Any,
    faces: Any,
    values: Any,
    *,
    ax: Axes | None = None,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    view: tuple[float, float] = (10.0, -90.0),
    up: Literal["x", "y", "z"] = "y",
    missing_color: str = "0.75",
) -> Figure:
    """A vertex signal on a triangle mesh, faces coloured by the mean of their vertex values.

    Args:
        vertices: ``(V, 3)`` positions.
        faces: ``(F, 3)`` vertex indices.
        values: ``(V,)`` values; NaN marks missing vertices (drawn in ``missing_color``).
        ax: A 3-D axes to draw into (a new figure otherwise).
        cmap: Colour map.
        vmin: Lower end of the colour scale (default: the minimum).
        vmax: Upper end of the colour scale (default: the maximum).
        view: ``(elevation, azimuth)`` of the camera in degrees, in mplot3d's frame after the
            ``up`` rotation; the default ``(10, -90)`` looks, for ``up="y"``, from the data's
            ``+z`` towards ``-z`` with ``x`` to the right: the Stanford bunny upright, seen from
            the front (``(10, -120)`` turns its face further towards the camera).
        up: Which coordinate of the data points up (the Stanford bunny's is ``y``). The mesh is
            rotated, never mirrored.
        missing_color: Colour of faces touching a missing vertex.

    Returns:
        The figure.
    """
    from matplotlib import colormaps
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    v, f, val = _np(vertices), np.asarray(_np(faces), dtype=np.int64), _np(values)
    if v.ndim != 2 or v.shape[1] != 3 or val.shape != (v.shape[0],):
        raise ValueError(f"need vertices (V, 3) and values (V,), got {v.shape} and {val.shape}")
    p = _up_rotation(v, up)
    fig, ax = _new_axes(ax, "3d")
    face_val = val[f].mean(axis=1)
    lo = np.nanmin(val) if vmin is None else vmin
    hi = np.nanmax(val) if vmax is None else vmax
    norm = (face_val - lo) / max(hi - lo, 1e-12)
    colors = colormaps[cmap](np.clip(np.nan_to_num(norm), 0, 1))
    colors[np.isnan(face_val)] = np.array(_rgba(missing_color))
    # Poly3DCollection sorts the faces by depth when drawing; edges in the face colour hide the
    # anti-aliasing seams between neighbouring triangles
    coll = Poly3DCollection(p[f], facecolors=colors, edgecolors=colors, linewidths=0.3)
    ax.add_collection3d(coll)
    center, span = (p.max(0) + p.min(0)) / 2, (p.max(0) - p.min(0)).max() / 2
    for setter, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), center):
        setter(c - span, c + span)
    ax.set_box_aspect((1, 1, 1), zoom=1.35)
    ax.view_init(elev=view[0], azim=view[1])
    ax.set_axis_off()
    return fig


def _up_rotation(v: np.ndarray, up: Literal["x", "y", "z"]) -> np.ndarray:
    """Rotate (never mirror) positions so that the data's ``up`` axis becomes mplot3d's ``z``.

    For ``up="y"`` the plot coordinates are ``(x, -z, y)``: the camera azimuth ``-90`` then looks
    from the data's ``+z`` towards ``-z`` with ``x`` to the right, the usual front view.
    """
    if up == "x":
        return v[:, [1, 2, 0]]  # cyclic permutation: a rotation
    if up == "y":
        return np.stack([v[:, 0], -v[:, 2], v[:, 1]], axis=1)
    if up == "z":
        return v
    raise ValueError(f"up must be 'x', 'y' or 'z', got {up!r}")


def _rgba(color: str) -> tuple[float, float, float, float]:
    from matplotlib.colors import to_rgba

    return to_rgba(color)


_COASTLINE_FILES = (
    "shapefiles/natural_earth/physical/ne_110m_coastline.shp",  # cartopy's own layout
    "shapefiles/gshhs/c/GSHHS_c_L1.shp",  # what Debian's python-cartopy-data ships
)


def offline_coastlines() -> Path | None:
    """A coastline shapefile already on disk, or ``None``; nothing is ever downloaded.

    Looks in ``$CARTOPY_DATA_DIR``, in ``/usr/share/cartopy/data`` (Debian's
    ``python-cartopy-data``) and in cartopy's configured data folders, for Natural Earth's 110 m
    coastlines or the coarse GSHHS level-1 shorelines.

    Returns:
        Path of the ``.shp`` file, or ``None`` when cartopy or the data is missing.
    """
    try:
        import cartopy
    except ImportError:
        return None
    candidates = [os.environ.get("CARTOPY_DATA_DIR"), "/usr/share/cartopy/data",
                  cartopy.config.get("pre_existing_data_dir"), cartopy.config.get("data_dir")]
    for c in candidates:
        if not c or str(c) in ("", "."):
            continue
        for rel in _COASTLINE_FILES:
            if (Path(c) / rel).is_file():
                return Path(c) / rel
    return None


@functools.lru_cache(maxsize=4)
def _read_geometries(path: Path) -> tuple[Any, ...]:
    """Shapes of a shapefile, read once (the same objects let cartopy reuse its projected paths).

    pyshp's log notes about GSHHS's hole-only rings are silenced.
    """
    from cartopy.io.shapereader import Reader

    log = logging.getLogger("shapefile")
    quiet = logging.Filter("no record passes")  # rejects every record of other loggers' names
    log.addFilter(quiet)
    try:
        return tuple(Reader(str(path)).geometries())
    finally:
        log.removeFilter(quiet)


def plot_sphere_map(
    values: Any,
    latitudes: Any,
    longitudes: Any,
    *,
    ax: Axes | None = None,
    cmap: str = "coolwarm",
    vmin: float | None = None,
    vmax: float | None = None,
    coastlines: bool = True,
    projection: Literal["platecarree", "robinson"] = "platecarree",
    title: str | None = None,
) -> Figure:
    """A field on the lat/lon grid as a global map (with cartopy when installed).

    Without cartopy (the optional ``maps`` extra) the map is a plain longitude/latitude plot.

    Args:
        values: ``(H * W,)`` row-major values or an ``(H, W)`` array; NaN marks missing cells.
        latitudes: ``(H,)`` latitudes in degrees.
        longitudes: ``(W,)`` longitudes in degrees.
        ax: Axes to draw into (with cartopy: a GeoAxes).
        cmap: Colour map.
        vmin: Lower end of the colour scale.
        vmax: Upper end of the colour scale.
        coastlines: Draw coastlines when their data is on disk (never downloaded, see
            :func:`offline_coastlines`).
        projection: Map projection of a new axes (cartopy only); equirectangular ``"platecarree"``
            draws about 15 times faster than ``"robinson"``.
        title: Optional title.

    Returns:
        The figure.

    Example:
        >>> lat, lon = np.linspace(-90, 90, 46), np.arange(90) * 4.0
        >>> fig = plot_sphere_map(np.cos(np.deg2rad(lat))[:, None] * np.ones(90), lat, lon)
        >>> type(fig).__name__
        'Figure'
    """
    lat, lon = _np(latitudes), _np(longitudes)
    field = _np(values)
    if field.size != lat.size * lon.size:
        raise ValueError(f"values hold {field.size} numbers, the {lat.size} x {lon.size} grid needs {lat.size * lon.size}")
    field = field.reshape(lat.size, lon.size)
    # close the longitude circle for a seamless map
    lon_c = np.append(lon, lon[0] + 360.0)
    field_c = np.concatenate([field, field[:, :1]], axis=1)
    try:
        import cartopy.crs as ccrs
    except ImportError:
        fig, ax = _new_axes(ax, None, (6.0, 3.2))
        ax.pcolormesh(lon_c, lat, np.ma.masked_invalid(field_c), cmap=cmap, vmin=vmin, vmax=vmax, shading="nearest")
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
    else:
        if projection not in ("platecarree", "robinson"):
            raise ValueError(f"projection must be 'platecarree' or 'robinson', got {projection!r}")
        proj = (ccrs.PlateCarree if projection == "platecarree" else ccrs.Robinson)(central_longitude=180.0)
        fig, ax = _new_axes(ax, proj, (6.0, 3.2))
        ax.set_global()
        ax.pcolormesh(lon_c, lat, np.ma.masked_invalid(field_c), cmap=cmap, vmin=vmin, vmax=vmax, shading="nearest",
                      transform=ccrs.PlateCarree())
        shapefile = offline_coastlines() if coastlines else None
        if shapefile is not None:
            # read the file directly: cartopy's features would download what is missing
            ax.add_geometries(_read_geometries(shapefile), ccrs.PlateCarree(), facecolor="none",
                              edgecolor="k", linewidth=0.4)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def plot_image(values: Any, *, shape: tuple[int, int] | None = None, ax: Axes | None = None, cmap: str = "gray",
               vmin: float | None = 0.0, vmax: float | None = 1.0, title: str | None = None) -> Figure:
    """An image stored as ``(H * W,)`` row-major values (give ``shape``) or as ``(H, W)``.

    Returns:
        The figure.
    """
    arr = _np(values)
    if arr.ndim == 1:
        if shape is None:
            side = int(round(arr.size**0.5))
            if side * side != arr.size:
                raise ValueError(f"cannot infer the image shape of {arr.size} values: pass shape=(H, W)")
            shape = (side, side)
        arr = arr.reshape(shape)
    fig, ax = _new_axes(ax, None, (3.0, 3.0))
    ax.imshow(np.ma.masked_invalid(arr), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return fig


_SPREAD_PANELS = ("|mean - truth|", "std")
"""Panels of :func:`posterior_row_figure` drawn on one colour scale from 0."""


def posterior_row_figure(
    truth: Any,
    measurement: Any,
    samples: Any,
    mean: Any,
    std: Any,
    *,
    kind: Literal["mesh", "sphere", "image"],
    vertices: Any = None,
    faces: Any = None,
    latitudes: Any = None,
    longitudes: Any = None,
    image_shape: tuple[int, int] | None = None,
    observed: Any = None,
    title: str | None = None,
    max_samples: int = 2,
) -> Figure:
    """One row: truth (when known) | measurement | samples | posterior mean | error | posterior std.

    The error map ``|mean - truth|`` (only when the truth is known) and the std map share one
    colour scale starting at 0, so that where the sampler is right to be uncertain shows as the
    same colour in both.

    Args:
        truth: ``(V,)`` ground truth, or ``None`` when it is unknown (real measurements): no truth
            panel, and the colour scale is the mean's.
        measurement: ``(V,)`` measurement (vertex-shaped; missing vertices drawn grey).
        samples: ``(N, V)`` posterior samples (the first ``max_samples`` are shown).
        mean: ``(V,)`` posterior mean.
        std: ``(V,)`` posterior standard deviation (colour scale shared with the error map).
        kind: ``"mesh"``, ``"sphere"`` or ``"image"``.
        vertices: Mesh positions (``kind="mesh"``).
        faces: Mesh faces (``kind="mesh"``).
        latitudes: Grid latitudes (``kind="sphere"``).
        longitudes: Grid longitudes (``kind="sphere"``).
        image_shape: ``(H, W)`` (``kind="image"``).
        observed: ``(V,)`` booleans, ``True`` = observed (to grey out missing vertices).
        title: Row title (e.g. the method).
        max_samples: Number of sample panels.

    Returns:
        The figure.
    """
    truth_np, meas = (None if truth is None else _np(truth)), _np(measurement).copy()
    scale = _np(mean) if truth_np is None else truth_np  # the colour scale of every value panel
    samp = _np(samples).reshape(-1, scale.size)[:max_samples]
    if observed is not None:
        meas[~np.asarray(_np(observed), dtype=bool)] = np.nan
    panels = ([] if truth_np is None else [("truth", truth_np)]) + [("measurement", meas)]
    panels += [(f"sample {i + 1}", s) for i, s in enumerate(samp)]
    panels += [("mean", _np(mean))]
    if truth_np is not None:
        panels += [("|mean - truth|", np.abs(_np(mean) - truth_np))]
    panels += [("std", _np(std))]
    lo = float(np.nanmin(scale))
    hi = float(np.nanmax(scale))
    if hi - lo < 1e-9:
        hi = lo + 1.0
    spread_max = max(max(float(np.nanmax(v)) for name, v in panels if name in _SPREAD_PANELS), 1e-9)
    ncol = len(panels)
    width = {"mesh": 2.2, "sphere": 3.0, "image": 1.8}[kind]
    fig = Figure(figsize=(width * ncol, width * (0.62 if kind == "sphere" else 1.0) + 0.4))
    projection: Any = None
    if kind == "mesh":
        projection = "3d"
    elif kind == "sphere":
        try:
            import cartopy.crs as ccrs

            projection = ccrs.PlateCarree(central_longitude=180.0)  # ~15x faster to draw than Robinson
        except ImportError:
            projection = None
    for i, (name, vals) in enumerate(panels):
        ax = fig.add_subplot(1, ncol, i + 1, projection=projection)
        is_std = name in _SPREAD_PANELS
        vmin, vmax = (0.0, spread_max) if is_std else (lo, hi)
        cmap = "magma" if is_std else ("coolwarm" if kind == "sphere" else ("viridis" if kind == "mesh" else "gray"))
        if kind == "mesh":
            if vertices is None or faces is None:
                raise ValueError("kind='mesh' needs vertices and faces")
            plot_mesh_signal(vertices, faces, vals, ax=ax, cmap=cmap, vmin=vmin, vmax=vmax)
        elif kind == "sphere":
            if latitudes is None or longitudes is None:
                raise ValueError("kind='sphere' needs latitudes and longitudes")
            plot_sphere_map(vals, latitudes, longitudes, ax=ax, cmap=cmap, vmin=vmin, vmax=vmax)
        else:
            plot_image(vals, shape=image_shape, ax=ax, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
