"""Geometry from a user's files: a mesh file, the lat/lon axes of an xarray dataset or NetCDF
file, an icosphere level or an image size; and the geometry saved beside a trained model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..geometry import Geometry, Icosphere, ImageGrid, Mesh, SphereGrid

__all__ = ["GEOMETRY_KINDS", "load_geometry", "parse_image_size", "grid_from_dataset", "save_geometry", "read_geometry",
           "geometry_kind"]

GEOMETRY_KINDS = ("mesh", "grid", "icosphere", "image")
"""The ways :func:`load_geometry` can be given a geometry."""

_LAT_NAMES = ("lat", "latitude", "lats", "nav_lat", "y")
_LON_NAMES = ("lon", "longitude", "lons", "nav_lon", "x")
_GEOMETRY_FORMAT = "manifold_ps.geometry/1"


def geometry_kind(geometry: Geometry) -> Literal["mesh", "sphere", "image"]:
    """``"mesh"`` (meshes and icospheres), ``"sphere"`` (lat/lon grids) or ``"image"`` (pixel grids)."""
    if isinstance(geometry, SphereGrid):
        return "sphere"
    if isinstance(geometry, ImageGrid):
        return "image"
    return "mesh"


def _find_name(names: Any, candidates: tuple[str, ...], given: str | None, what: str, source: str) -> str:
    names = list(names)
    if given is not None:
        if given not in names:
            raise ValueError(f"{source}: no {what} coordinate {given!r}; it has {names}")
        return given
    for cand in candidates:
        for name in names:
            if str(name).lower() == cand:
                return str(name)
    raise ValueError(f"{source}: found no {what} coordinate (looked for {list(candidates)} among {names}); "
                     f"name it with lat=/lon= (--lat/--lon on the command line)")


def grid_from_dataset(source: Any, *, lat: str | None = None, lon: str | None = None) -> SphereGrid:
    """A :class:`~manifold_ps.geometry.SphereGrid` on the latitude/longitude axes of a dataset.

    Args:
        source: An ``xarray.Dataset`` / ``DataArray``, or the path of a NetCDF (or zarr) file.
        lat: Name of the latitude coordinate (default: the first of ``lat``, ``latitude``, ...).
        lon: Name of the longitude coordinate (default: ``lon``, ``longitude``, ...).

    Returns:
        The grid; its vertices are row-major ``(lat, lon)`` in the file's order.

    Raises:
        ValueError: naming the file when a coordinate is missing or the axes are not a regular
            global grid (monotone latitudes in degrees, uniform longitudes covering 360 degrees).

    Example:
        >>> import numpy as np, xarray as xr
        >>> ds = xr.Dataset(coords={"lat": np.linspace(-80, 80, 5), "lon": np.arange(0, 360, 45.0)})
        >>> grid_from_dataset(ds).shape
        (5, 8)
    """
    name = "dataset"
    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        with _open_dataset(source) as ds:
            return _grid(ds, lat, lon, name)
    return _grid(source, lat, lon, name)


def _grid(ds: Any, lat: str | None, lon: str | None, source: str) -> SphereGrid:
    lat_name = _find_name(ds.coords, _LAT_NAMES, lat, "latitude", source)
    lon_name = _find_name(ds.coords, _LON_NAMES, lon, "longitude", source)
    lats, lons = np.asarray(ds[lat_name].values, np.float64), np.asarray(ds[lon_name].values, np.float64)
    if lats.ndim != 1 or lons.ndim != 1:
        raise ValueError(f"{source}: latitude and longitude must be 1-D axes of a regular grid, got shapes "
                         f"{lats.shape} and {lons.shape}")
    try:
        grid = SphereGrid(lats, lons)
    except ValueError as err:
        raise ValueError(f"{source}: the axes {lat_name!r} / {lon_name!r} are not a regular global grid: {err}") from None
    grid.source = source
    grid.axis_names = (lat_name, lon_name)
    return grid


def _open_dataset(path: str | os.PathLike[str]) -> Any:
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"grid file not found: {path}")
    if path.suffix == ".zarr" or path.is_dir():
        try:
            import zarr  # noqa: F401
        except ModuleNotFoundError:
            raise ModuleNotFoundError(f"reading {path} needs the optional zarr extra: pip install 'manifold_ps[zarr]'") from None
        # read consolidated metadata only where the store has it (zarr v2 ``.zmetadata``): asking for
        # it elsewhere warns on every open
        return xr.open_zarr(path, consolidated=(path / ".zmetadata").is_file())
    try:
        return xr.open_dataset(path)
    except Exception as err:
        raise ValueError(f"{path} could not be read as NetCDF ({type(err).__name__}: {err})") from None


def load_geometry(*, mesh: str | os.PathLike[str] | None = None, grid: Any = None, icosphere: int | None = None,
                  image: str | tuple[int, int] | None = None, lat: str | None = None, lon: str | None = None) -> Geometry:
    """The geometry of exactly one description.

    Args:
        mesh: A mesh file that trimesh reads (PLY, OBJ, OFF, STL, ...); vertex order is the file's.
        grid: A NetCDF / zarr file or xarray dataset with latitude and longitude coordinates.
        icosphere: An icosphere subdivision level (``10 * 4**level + 2`` vertices).
        image: An image size ``(H, W)`` or ``"HxW"``.
        lat: Latitude coordinate name of ``grid`` (default: found by name).
        lon: Longitude coordinate name of ``grid``.

    Returns:
        The :class:`~manifold_ps.geometry.Geometry`.

    Raises:
        ValueError: none or several descriptions, or one that is malformed (naming it).

    Example:
        >>> load_geometry(image="4x6").num_vertices, load_geometry(icosphere=1).num_vertices
        (24, 42)
    """
    given = {k: v for k, v in (("mesh", mesh), ("grid", grid), ("icosphere", icosphere), ("image", image))
             if v is not None}
    if len(given) != 1:
        raise ValueError(f"give exactly one geometry (one of {list(GEOMETRY_KINDS)}), got {sorted(given) or 'none'}")
    if mesh is not None:
        return Mesh.from_file(mesh)
    if grid is not None:
        return grid_from_dataset(grid, lat=lat, lon=lon)
    if icosphere is not None:
        return Icosphere(int(icosphere))
    return ImageGrid(*parse_image_size(image))


def parse_image_size(size: str | tuple[int, int] | Any) -> tuple[int, int]:
    """``"32x32"`` or ``(32, 32)`` -> ``(32, 32)``; raises ``ValueError`` naming the value."""
    try:
        h, w = (int(v) for v in (size.lower().split("x") if isinstance(size, str) else size))
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"image size must be HxW (e.g. 32x32), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got {size!r}")
    return h, w


def save_geometry(geometry: Geometry, path: str | os.PathLike[str]) -> Path:
    """Write ``geometry`` to ``path`` (``.npz``) so that :func:`read_geometry` rebuilds it with
    the same fingerprint (a trained model's folder keeps its geometry beside it)."""
    from .._files import atomic_open

    data: dict[str, Any] = {"format": np.array(_GEOMETRY_FORMAT), "fingerprint": np.array(geometry.fingerprint())}
    if isinstance(geometry, Icosphere):
        data.update(kind=np.array("icosphere"), level=np.array(geometry.level))
    elif isinstance(geometry, Mesh):
        data.update(kind=np.array("mesh"), vertices=geometry.positions.numpy(), faces=geometry.faces.numpy(),
                    laplacian_method=np.array(geometry.laplacian_method))
    elif isinstance(geometry, SphereGrid):
        data.update(kind=np.array("grid"), latitudes=geometry.latitudes, longitudes=geometry.longitudes)
    elif isinstance(geometry, ImageGrid):
        data.update(kind=np.array("image"), shape=np.array(geometry.shape))
    else:
        raise TypeError(f"cannot save a {type(geometry).__name__}")
    with atomic_open(path) as fh:
        np.savez(fh, **data)
    return Path(path)


def read_geometry(path: str | os.PathLike[str]) -> Geometry:
    """The geometry written by :func:`save_geometry`, checked against its stored fingerprint.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "geometry.npz"
        >>> _ = save_geometry(ImageGrid(3, 4), path)
        >>> read_geometry(path).shape
        (3, 4)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"geometry file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as err:
        raise ValueError(f"{path} is not a geometry file ({type(err).__name__}: {err}); write it with "
                         "manifold_ps.io.save_geometry or give the geometry again") from None
    if str(data.get("format", "")) != _GEOMETRY_FORMAT:
        raise ValueError(f"{path} is not a {_GEOMETRY_FORMAT} file; give the geometry again (--mesh/--grid/...)")
    kind = str(data["kind"])
    geometry: Geometry
    if kind == "icosphere":
        geometry = Icosphere(int(data["level"]))
    elif kind == "mesh":
        geometry = Mesh(data["vertices"], data["faces"], laplacian_method=str(data["laplacian_method"]))  # type: ignore[arg-type]
    elif kind == "grid":
        geometry = SphereGrid(data["latitudes"], data["longitudes"])
    else:
        geometry = ImageGrid(*(int(v) for v in data["shape"]))
    if geometry.fingerprint() != str(data["fingerprint"]):
        raise ValueError(f"{path}: the rebuilt geometry has fingerprint {geometry.fingerprint()!r}, the file says "
                         f"{str(data['fingerprint'])!r}; give the geometry again")
    return geometry
