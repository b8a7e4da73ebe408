"""Clean signals from a user's files, shape-checked against the geometry.

Arrays are read from ``.npy``, ``.npz``, ``.pt`` (a tensor or a dict of them), NetCDF (``.nc``)
and zarr (through xarray; the optional ``zarr`` extra). A signal is ``(N, C, V)``; ``(N, V)`` is
one channel, and on a grid geometry ``(N, H, W)`` / ``(N, C, H, W)`` are flattened row-major.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..geometry import Geometry

__all__ = ["Signals", "read_array", "as_signals", "load_signals"]

_KEYS = ("signals", "x", "data", "y")


@dataclass
class Signals:
    """Signals on a geometry, as a float32 tensor, with where they came from.

    Attributes:
        x: The signals ``(N, C, V)``, float32.
        source: File (or description) they were read from.
        data_range: ``(min, max)`` over all values (recorded for normalisation).
        original_dtype: The dtype found in the file (e.g. ``"float64"``, converted to float32).
        sha256: Hash of the float32 values (a rerun with other data is detected by it).
    """

    x: Tensor
    source: str
    data_range: tuple[float, float]
    original_dtype: str
    sha256: str = field(default="")

    def describe(self) -> dict[str, Any]:
        """Plain data for ``config.json`` / ``data.json``."""
        return {"source": self.source, "shape": list(self.x.shape), "dtype": self.original_dtype,
                "data_range": list(self.data_range), "sha256": self.sha256}


def _pick(mapping: dict[str, Any], variable: str | None, path: Path) -> tuple[str, Any]:
    if variable is not None:
        if variable not in mapping:
            raise ValueError(f"{path} has no array {variable!r}; it has {sorted(mapping)}")
        return variable, mapping[variable]
    if len(mapping) == 1:
        return next(iter(mapping.items()))
    for key in _KEYS:
        if key in mapping:
            return key, mapping[key]
    raise ValueError(f"{path} holds several arrays {sorted(mapping)}; name the one to use "
                     f"(variable=..., --variable on the command line) or call it one of {list(_KEYS)}")


def read_array(path: str | os.PathLike[str], variable: str | None = None) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """One array of a ``.npy`` / ``.npz`` / ``.pt`` / NetCDF / zarr file.

    Args:
        path: The file (a zarr store may be a folder).
        variable: Key or variable name when the file holds several.

    Returns:
        ``(array, dims)``: ``dims`` are the xarray dimension names (``None`` for the other formats).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: naming the file when it cannot be read or the array is ambiguous.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                _, arr = _pick({k: z[k] for k in z.files}, variable, path)
            return np.asarray(arr), None
        if suffix in (".pt", ".pth"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                _, obj = _pick({k: v for k, v in obj.items() if isinstance(v, (Tensor, np.ndarray))}, variable, path)
            if not isinstance(obj, (Tensor, np.ndarray)):
                raise ValueError(f"holds a {type(obj).__name__}, not a tensor")
            return (obj.detach().cpu().numpy() if isinstance(obj, Tensor) else obj), None
    except ValueError as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"{path} could not be read ({err})") from None
    except Exception as err:
        raise ValueError(f"{path} could not be read ({type(err).__name__}: {err})") from None
    if suffix in (".nc", ".nc4", ".netcdf", ".zarr", ".h5") or path.is_dir():
        from ._geometry import _open_dataset

        with _open_dataset(path) as ds:
            names = {str(k): ds[k] for k in ds.data_vars}
            _, da = _pick(names, variable, path)
            return np.asarray(da.values), tuple(str(d) for d in da.dims)
    raise ValueError(f"{path}: unknown file type {suffix!r}; use .npy, .npz, .pt, .nc or .zarr")


def _grid_dims(dims: tuple[str, ...]) -> tuple[str, str] | None:
    """The latitude and longitude dimensions among ``dims`` (by their usual names), if both are there."""
    from ._geometry import _LAT_NAMES, _LON_NAMES

    lat = next((d for d in dims if d.lower() in _LAT_NAMES), None)
    lon = next((d for d in dims if d.lower() in _LON_NAMES), None)
    return (lat, lon) if lat is not None and lon is not None else None


def _to_nchw(arr: np.ndarray, dims: tuple[str, ...] | None, geometry: Geometry, source: str) -> np.ndarray:
    V = geometry.num_vertices
    grid_shape = getattr(geometry, "shape", None)
    if dims is not None and grid_shape is not None:  # put the grid's lat/lon (or row/col) axes last
        names = getattr(geometry, "axis_names", None) or _grid_dims(dims)
        if names is not None and all(n in dims for n in names):
            order = [i for i, d in enumerate(dims) if d not in names] + [dims.index(n) for n in names]
            arr = np.transpose(arr, order)
    expected = f"(N, {V}) or (N, C, {V})" + (
        f", or (N, {grid_shape[0]}, {grid_shape[1]}) / (N, C, {grid_shape[0]}, {grid_shape[1]})" if grid_shape else "")
    if grid_shape is not None and arr.ndim in (3, 4) and tuple(arr.shape[-2:]) == tuple(grid_shape):
        arr = arr.reshape(*arr.shape[:-2], V)
    if arr.ndim == 1 and arr.shape[0] == V:
        arr = arr[None]
    if arr.ndim == 2 and arr.shape[1] == V:
        arr = arr[:, None]
    if arr.ndim != 3 or arr.shape[-1] != V:
        raise ValueError(f"{source}: found an array of shape {tuple(arr.shape)}, expected {expected} "
                         f"for the geometry's {V} vertices")
    return arr


def as_signals(data: Any, geometry: Geometry, *, source: str = "signals", dims: tuple[str, ...] | None = None,
               allow_nan: bool = False) -> Signals:
    """Check and convert an array to :class:`Signals` on ``geometry``.

    Args:
        data: An array or tensor (any float or integer dtype; float64 is converted to float32).
        geometry: The geometry it lives on.
        source: Name used in error messages (the file).
        dims: xarray dimension names of ``data`` (to find grid axes), if any.
        allow_nan: Keep NaN (measurements mark missing entries with it); clean signals refuse it.

    Returns:
        The signals ``(N, C, V)``.

    Raises:
        ValueError: naming ``source``, the shape found and the one expected, or the NaN count.

    Example:
        >>> from manifold_ps.geometry import ImageGrid
        >>> s = as_signals(np.zeros((5, 2, 3), dtype=np.float64), ImageGrid(2, 3))
        >>> tuple(s.x.shape), s.x.dtype, s.original_dtype
        ((5, 1, 6), torch.float32, 'float64')
    """
    arr = data.detach().cpu().numpy() if isinstance(data, Tensor) else np.asarray(data)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise ValueError(f"{source}: values of dtype {arr.dtype} are not numbers")
    original = str(arr.dtype)
    arr = _to_nchw(arr, dims, geometry, source)
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    bad = ~torch.isfinite(x)
    if bool(torch.isinf(x).any()) or (bool(bad.any()) and not allow_nan):
        raise ValueError(f"{source} contains {int(bad.sum())} NaN or infinite value(s) "
                         f"(first at index {tuple(int(i) for i in bad.nonzero()[0])}); clean signals must be finite")
    finite = x[torch.isfinite(x)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.numel() else (float("nan"), float("nan"))
    import hashlib

    digest = hashlib.sha256(x.numpy().tobytes()).hexdigest()[:16]
    return Signals(x, source, (lo, hi), original, digest)


def load_signals(path: str | os.PathLike[str], geometry: Geometry, *, variable: str | None = None) -> Signals:
    """Clean signals from a file, shape-checked against ``geometry``.

    Args:
        path: ``.npy``, ``.npz``, ``.pt``, ``.nc`` or ``.zarr`` file.
        geometry: The geometry they live on.
        variable: Key or variable name when the file holds several arrays.

    Returns:
        The signals (float32, ``(N, C, V)``) with their source and data range.

    Raises:
        ValueError: naming the file: unreadable, wrong shape (found and expected), NaN values.

    Shapes:
        ``(N, V)``, ``(N, C, V)``; on grids also ``(N, H, W)``, ``(N, C, H, W)``.

    Example:
        >>> import pathlib, tempfile
        >>> from manifold_ps.geometry import ImageGrid
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.npy"
        >>> np.save(path, np.random.rand(3, 4, 5))
        >>> load_signals(path, ImageGrid(4, 5)).x.shape
        torch.Size([3, 1, 20])
    """
    arr, dims = read_array(path, variable)
    return as_signals(arr, geometry, source=str(path), dims=dims)
