"""The unit sphere: a latitude/longitude grid (ERA5 / GASP) and quasi-uniform icospheres.

:class:`SphereGrid` discretises the Laplace-Beltrami operator by finite volumes on the lat/lon
cells, with periodic longitude. A pole row (latitude +-90) is one point stored ``n_lon`` times;
its polar cap (up to the first cell edge) is shared equally by the copies, each copy couples to the
vertex on its own meridian in the next row (the flux through its ``1/n_lon`` share of the cap
edge), and the copies are tied to each other by a complete graph of strong springs so they act as
one node. The result is symmetric PSD with ``L @ 1 = 0``. A generic point-cloud Laplacian would
see 90 coincident points at each pole and is not used.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from .._checks import check_signal
from .base import Geometry
from .mesh import Mesh

__all__ = ["SphereGrid", "Icosphere", "MESH_DIR", "GASP_LATITUDES", "GASP_LONGITUDES"]

MESH_DIR = Path(__file__).resolve().parents[2] / "meshes"
"""Folder of the meshes the project ships (icosphere levels, manifest); absent in a wheel."""
GASP_LATITUDES = np.linspace(90.0, -90.0, 46)
"""Latitudes of the GASP/ERA5 4-degree grid, 90 to -90 (46 rows)."""
GASP_LONGITUDES = np.linspace(0.0, 356.0, 90)
"""Longitudes of the GASP/ERA5 4-degree grid, 0 to 356 (90 columns)."""
_POLE_TIE = 1.0  # spring weight between two copies of a pole (cap-to-row couplings are ~0.03)


def _lat_lon_to_xyz(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    lat, lon = np.deg2rad(lat_deg), np.deg2rad(lon_deg)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


class SphereGrid(Geometry):
    """Regular latitude/longitude grid on the unit sphere, vertices row-major ``(lat, lon)``.

    Args:
        latitudes: Strictly monotone latitudes in degrees within ``[-90, 90]``; rows at exactly
            +-90 are pole rows.
        longitudes: Uniformly spaced longitudes in degrees covering the full circle
            (``lon[-1] + step == lon[0] + 360``).

    Shapes:
        positions ``(n_lat * n_lon, 3)``; ``as_image``: ``(B, C, V) -> (B, C, n_lat, n_lon)``.

    Example:
        >>> grid = SphereGrid.gasp()
        >>> grid.num_vertices, grid.shape
        (4140, (46, 90))
        >>> bool(abs(grid.mass().sum() - 4 * 3.141592653589793) < 1e-9)
        True
    """

    def __init__(self, latitudes: np.ndarray | list[float], longitudes: np.ndarray | list[float]) -> None:
        super().__init__()
        lat = np.asarray(latitudes, dtype=np.float64).ravel()
        lon = np.asarray(longitudes, dtype=np.float64).ravel()
        if lat.size < 2 or lon.size < 3:
            raise ValueError(f"need at least 2 latitudes and 3 longitudes, got {lat.size} and {lon.size}")
        if not (np.isfinite(lat).all() and np.isfinite(lon).all()):
            raise ValueError("latitudes and longitudes must be finite")
        if np.any(np.abs(lat) > 90):
            raise ValueError("latitudes must lie in [-90, 90]")
        d = np.diff(lat)
        if not (np.all(d > 0) or np.all(d < 0)):
            raise ValueError("latitudes must be strictly monotone")
        step = 360.0 / lon.size
        if not np.allclose(np.diff(lon), step, atol=1e-6):
            raise ValueError(f"longitudes must be uniformly spaced by 360/{lon.size} = {step} degrees")
        self.latitudes, self.longitudes = lat, lon
        self.shape = (int(lat.size), int(lon.size))
        LAT, LON = np.meshgrid(lat, lon, indexing="ij")
        self._positions = torch.from_numpy(_lat_lon_to_xyz(LAT, LON).reshape(-1, 3))

    @classmethod
    def gasp(cls) -> SphereGrid:
        """The paper's ERA5 grid: 46 latitudes 90..-90 by 90 longitudes 0..356 (4140 vertices)."""
        return cls(GASP_LATITUDES, GASP_LONGITUDES)

    # ------------------------------------------------------------------ image views
    def as_image(self, x: Tensor) -> Tensor:
        """``(B, C, V) -> (B, C, n_lat, n_lon)``."""
        check_signal(x, self.num_vertices, "x")
        return x.reshape(*x.shape[:-1], *self.shape)

    def from_image(self, img: Tensor) -> Tensor:
        """``(B, C, n_lat, n_lon) -> (B, C, V)``."""
        if img.ndim != 4 or tuple(img.shape[-2:]) != self.shape:
            raise ValueError(f"img must have shape (B, C, {self.shape[0]}, {self.shape[1]}), got {tuple(img.shape)}")
        return img.reshape(*img.shape[:-2], self.num_vertices)

    # ------------------------------------------------------------------ Geometry hooks
    def _build_operators(self) -> tuple[sp.spmatrix, np.ndarray]:
        nlat, nlon = self.shape
        colat = np.deg2rad(90.0 - self.latitudes)
        flip = colat[0] > colat[-1]
        if flip:  # work north -> south internally
            colat = colat[::-1]
        pole = np.isclose(colat, 0.0) | np.isclose(colat, np.pi)
        dphi = 2 * np.pi / nlon
        edges = np.concatenate([[0.0], 0.5 * (colat[1:] + colat[:-1]), [np.pi]])  # cell boundaries
        ring_area = dphi * (np.cos(edges[:-1]) - np.cos(edges[1:]))  # area of one cell / pole copy
        idx = np.arange(nlat * nlon).reshape(nlat, nlon)
        rows, cols, vals = [], [], []

        def couple(a: np.ndarray, b: np.ndarray, w: np.ndarray | float) -> None:
            w = np.broadcast_to(np.asarray(w, dtype=np.float64), a.shape)
            rows.extend([a, b])
            cols.extend([b, a])
            vals.extend([-w, -w])

        for i in range(nlat):
            if not pole[i]:  # east-west flux: edge length dtheta_cell, centre distance sin(theta) dphi
                w = (edges[i + 1] - edges[i]) / (np.sin(colat[i]) * dphi)
                couple(idx[i], np.roll(idx[i], -1), w)
            else:  # tie the copies of the pole together (complete graph)
                a, b = np.triu_indices(nlon, k=1)
                couple(idx[i][a], idx[i][b], _POLE_TIE)
            if i + 1 < nlat:  # north-south flux across the edge at colatitude edges[i+1]
                w = np.sin(edges[i + 1]) * dphi / (colat[i + 1] - colat[i])
                couple(idx[i], idx[i + 1], w)
        L = sp.coo_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(nlat * nlon,) * 2
        ).tocsr()
        mass = np.repeat(ring_area, nlon)
        if flip:  # map internal (north->south) rows back to the caller's row order
            perm = idx[::-1].ravel()
            L = L[perm][:, perm]
            mass = mass[perm]
        return L, mass

    def _fingerprint_data(self) -> list[bytes]:
        return [np.round(self.latitudes, 8).tobytes(), np.round(self.longitudes, 8).tobytes()]

    _default_ordering = "serpentine"

    def _serpentine_ordering(self) -> Tensor:
        idx = torch.arange(self.num_vertices).reshape(self.shape)
        idx[1::2] = idx[1::2].flip(-1)
        return idx.reshape(-1)


class Icosphere(Mesh):
    """Subdivided icosahedron projected to the unit sphere (quasi-uniform), robust Laplacian.

    Loads ``meshes/icosphere_<level>.npz`` when it is shipped, otherwise builds it with
    ``trimesh.creation.icosphere``. ``V = 10 * 4**level + 2``.

    Args:
        level: Number of subdivisions, ``>= 0``.

    Example:
        >>> Icosphere(2).num_vertices
        162
    """

    def __init__(self, level: int) -> None:
        if not isinstance(level, int) or level < 0 or level > 8:
            raise ValueError(f"level must be an integer in [0, 8], got {level!r}")
        vertices, faces = self.load_or_build(level)
        super().__init__(vertices, faces)
        self.level = level

    @staticmethod
    def build(level: int) -> tuple[np.ndarray, np.ndarray]:
        """Vertices ``(V, 3)`` and faces ``(F, 3)`` built with trimesh."""
        import trimesh

        m = trimesh.creation.icosphere(subdivisions=level, radius=1.0)
        v = np.asarray(m.vertices, dtype=np.float64)
        return v / np.linalg.norm(v, axis=1, keepdims=True), np.asarray(m.faces, dtype=np.int64)

    @classmethod
    def load_or_build(cls, level: int) -> tuple[np.ndarray, np.ndarray]:
        """Vertices and faces from ``meshes/icosphere_<level>.npz`` if present, else :meth:`build`."""
        path = MESH_DIR / f"icosphere_{level}.npz"
        if path.is_file():
            with np.load(path) as data:
                return np.asarray(data["vertices"], dtype=np.float64), np.asarray(data["faces"], dtype=np.int64)
        return cls.build(level)


def _write_icosphere_files(levels: range = range(5), folder: Path = MESH_DIR) -> None:
    """Regenerate the shipped icosphere files and their manifest entries (maintenance helper)."""
    import hashlib

    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest.setdefault("meshes", [])
    manifest["meshes"] = [m for m in manifest["meshes"] if not m["name"].startswith("icosphere_")]
    for level in levels:
        v, f = Icosphere.build(level)
        path = folder / f"icosphere_{level}.npz"
        np.savez(path, vertices=v, faces=f)
        manifest["meshes"].append(
            {
                "name": f"icosphere_{level}",
                "file": path.name,
                "source": f"generated: trimesh.creation.icosphere(subdivisions={level}, radius=1.0), renormalised",
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "vertices": int(v.shape[0]),
                "faces": int(f.shape[0]),
            }
        )
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
