"""The posterior of a set of measurements as an xarray dataset (written to NetCDF by the CLI)."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from ..geometry import Geometry, ImageGrid, SphereGrid

__all__ = ["posterior_dataset"]


def _spatial(geometry: Geometry) -> tuple[tuple[str, ...], tuple[int, ...], dict[str, Any]]:
    """Dimension names, shape and coordinates of one signal's vertices."""
    if isinstance(geometry, SphereGrid):
        return ("lat", "lon"), geometry.shape, {"lat": ("lat", geometry.latitudes, {"units": "degrees_north"}),
                                                "lon": ("lon", geometry.longitudes, {"units": "degrees_east"})}
    if isinstance(geometry, ImageGrid):
        h, w = geometry.shape
        return ("row", "col"), geometry.shape, {"row": np.arange(h), "col": np.arange(w)}
    pos = geometry.positions.numpy()
    return ("vertex",), (geometry.num_vertices,), {
        "vertex": np.arange(geometry.num_vertices),
        "vertex_x": ("vertex", pos[:, 0]), "vertex_y": ("vertex", pos[:, 1]),
        "vertex_z": ("vertex", pos[:, 2])}


def posterior_dataset(geometry: Geometry, mean: Tensor, std: Tensor, draws: Tensor, *, y: Tensor | None = None,
                      mask: Tensor | None = None, attrs: dict[str, Any] | None = None) -> Any:
    """An ``xarray.Dataset`` of posterior statistics with the geometry's coordinates.

    Variables ``mean`` and ``std`` ``(measurement, channel, *space)``, ``draws``
    ``(measurement, draw, channel, *space)`` and, when given, ``y`` and ``observed``. ``space`` is
    ``(lat, lon)`` with degree coordinates on a lat/lon grid, ``(row, col)`` on an image, and
    ``vertex`` (with its position ``vertex_x``, ``vertex_y``, ``vertex_z``) on a mesh.

    Args:
        geometry: The geometry of the signals.
        mean: Posterior means ``(B, C, V)``.
        std: Posterior standard deviations ``(B, C, V)``.
        draws: A few posterior draws ``(B, K, C, V)``.
        y: The measurements ``(B, C, V)``.
        mask: Observed vertices ``(B, V)``.
        attrs: Global attributes (plain strings and numbers).

    Returns:
        The dataset.

    Shapes:
        mean, std, y ``(B, C, V)``; draws ``(B, K, C, V)``; mask ``(B, V)``.

    Example:
        >>> import torch
        >>> from manifold_ps.geometry import SphereGrid
        >>> grid = SphereGrid(np.linspace(-60, 60, 3), np.arange(0, 360, 90.0))
        >>> ds = posterior_dataset(grid, torch.zeros(2, 1, 12), torch.ones(2, 1, 12), torch.zeros(2, 3, 1, 12))
        >>> dict(ds["mean"].sizes), ds["lat"].values.tolist()
        ({'measurement': 2, 'channel': 1, 'lat': 3, 'lon': 4}, [-60.0, 0.0, 60.0])
    """
    import xarray as xr

    dims, shape, coords = _spatial(geometry)
    B, C = mean.shape[:2]

    def field(t: Tensor, lead: tuple[str, ...]) -> tuple[tuple[str, ...], np.ndarray]:
        arr = t.detach().cpu().float().numpy()
        return (*lead, *dims), arr.reshape(*arr.shape[:-1], *shape)

    data = {"mean": field(mean, ("measurement", "channel")), "std": field(std, ("measurement", "channel")),
            "draws": field(draws, ("measurement", "draw", "channel"))}
    if y is not None and y.shape[-1] == geometry.num_vertices:
        data["y"] = field(y, ("measurement", "channel"))
    if mask is not None:
        m = mask.detach().cpu().numpy().astype(np.int8)
        data["observed"] = (("measurement", *dims), m.reshape(m.shape[0], *shape))
    coords = {**coords, "measurement": np.arange(B), "channel": np.arange(C), "draw": np.arange(draws.shape[1])}
    ds = xr.Dataset(data, coords=coords, attrs=dict(attrs or {}))
    ds["mean"].attrs["long_name"] = "posterior mean"
    ds["std"].attrs["long_name"] = "posterior standard deviation"
    ds["draws"].attrs["long_name"] = "posterior draws"
    return ds
