"""Geodesic distances on every geometry kind (private)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from .base import Geometry

__all__ = ["geodesic_distance_function"]


def geodesic_distance_function(geometry: Geometry) -> tuple[Callable[[int], np.ndarray], str] | None:
    """Return ``(f, kind)`` with ``f(source) -> distances (V,)``, or ``None`` if unsupported.

    Meshes use potpourri3d's heat method on the referenced sub-mesh; an unreferenced vertex gets
    the distance of its nearest referenced vertex plus the Euclidean offset to it. Sphere grids
    use exact great-circle distances, image grids the (exact, flat) Euclidean distance.
    """
    from .image import ImageGrid
    from .mesh import Mesh
    from .sphere import SphereGrid

    pos = geometry.positions.numpy()
    if isinstance(geometry, SphereGrid):
        unit = pos / np.linalg.norm(pos, axis=1, keepdims=True)
        return (lambda s: np.arccos(np.clip(unit @ unit[s], -1.0, 1.0))), "great-circle"
    if isinstance(geometry, ImageGrid):
        return (lambda s: np.linalg.norm(pos - pos[s], axis=1)), "euclidean (flat grid)"
    if isinstance(geometry, Mesh):
        import potpourri3d as pp3d

        used = geometry.referenced()
        ref = np.flatnonzero(used)
        remap = np.full(geometry.num_vertices, -1, dtype=np.int64)
        remap[ref] = np.arange(ref.size)
        try:
            solver = pp3d.MeshHeatMethodDistanceSolver(pos[ref], remap[geometry.faces.numpy()])
        except (ValueError, RuntimeError):
            return None
        nearest = geometry.nearest_referenced()
        offset = np.linalg.norm(pos - pos[nearest], axis=1)

        def f(s: int) -> np.ndarray:
            d_ref = solver.compute_distance(int(remap[nearest[s]]))
            return d_ref[remap[nearest]] + offset + offset[s]

        return f, "heat method"
    return None
