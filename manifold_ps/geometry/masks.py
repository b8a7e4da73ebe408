"""Vertex masks for inpainting operators (``True`` = observed)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .._checks import check_generator_device
from ._distance import geodesic_distance_function
from .base import Geometry

__all__ = ["random_vertex_mask", "geodesic_patch_mask"]


def random_vertex_mask(
    num_vertices: int,
    missing_fraction: float,
    batch: int | None = None,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniformly random mask with exactly ``round(missing_fraction * V)`` missing vertices per row.

    Args:
        num_vertices: ``V``.
        missing_fraction: Fraction of missing vertices, in ``[0, 1]`` (round half up).
        batch: Number of independent rows ``B``; ``None`` returns a single ``(V,)`` mask.
        generator: Random generator (on ``device``).
        device: Device of the mask.

    Returns:
        Bool tensor ``(B, V)`` or ``(V,)``, ``True`` = observed.

    Example:
        >>> m = random_vertex_mask(10, 0.3, 2, generator=torch.Generator().manual_seed(0))
        >>> m.shape, (~m).sum(dim=1).tolist()
        (torch.Size([2, 10]), [3, 3])
    """
    if not isinstance(num_vertices, int) or num_vertices < 1:
        raise ValueError(f"num_vertices must be a positive integer, got {num_vertices!r}")
    if not (isinstance(missing_fraction, (int, float)) and 0.0 <= missing_fraction <= 1.0):
        raise ValueError(f"missing_fraction must be in [0, 1], got {missing_fraction!r}")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ValueError(f"batch must be a positive integer or None, got {batch!r}")
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    device = torch.device(device)
    check_generator_device(generator, device)
    rows = 1 if batch is None else batch
    n_missing = int(math.floor(missing_fraction * num_vertices + 0.5))
    scores = torch.rand(rows, num_vertices, generator=generator, device=device)
    missing = scores.argsort(dim=-1)[:, :n_missing]
    mask = torch.ones(rows, num_vertices, dtype=torch.bool, device=device)
    mask.scatter_(1, missing, False)
    return mask[0] if batch is None else mask


def geodesic_patch_mask(
    geometry: Geometry,
    center: int,
    radius: float | None = None,
    *,
    fraction: float | None = None,
) -> Tensor:
    """Contiguous hole: vertices within a geodesic ball around ``center`` are missing.

    Give exactly one of ``radius`` (geodesic distance, geometry units) or ``fraction`` (that
    fraction of the vertices, the nearest ones by geodesic distance, is missing).
    Distances: heat method (potpourri3d) on meshes, great circles on sphere grids, Euclidean on
    image grids.

    Args:
        geometry: Any :class:`Geometry`.
        center: Vertex index of the hole's centre.
        radius: Geodesic radius.
        fraction: Missing fraction in ``[0, 1]``.

    Returns:
        Bool ``(V,)``, ``True`` = observed.
    """
    V = geometry.num_vertices
    if not isinstance(center, (int, np.integer)) or not 0 <= int(center) < V:
        raise ValueError(f"center must be a vertex index in [0, {V}), got {center!r}")
    if (radius is None) == (fraction is None):
        raise ValueError("give exactly one of radius or fraction")
    found = geodesic_distance_function(geometry)
    if found is None:
        dist = np.linalg.norm(geometry.positions.numpy() - geometry.positions.numpy()[int(center)], axis=1)
    else:
        dist = found[0](int(center))
    if radius is not None:
        if not radius >= 0:
            raise ValueError(f"radius must be non-negative, got {radius!r}")
        return torch.from_numpy(dist > radius)
    assert fraction is not None
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    n_missing = int(math.floor(fraction * V + 0.5))
    mask = np.ones(V, dtype=bool)
    mask[np.argsort(dist, kind="stable")[:n_missing]] = False
    return torch.from_numpy(mask)
