"""Triangle meshes (the Stanford bunny, icospheres) with a robust cotangent Laplacian.

The paper's bunny, Stanford's ``bun_zipper_res3.ply``, has 1889 vertices of which two (557, 902)
appear in no face, and 83 surplus duplicated triangles. :meth:`Mesh.from_file` keeps all 1889
vertices by default (so signals line up with the paper) and drops the duplicated faces. The
Laplacian is ``robust_laplacian.mesh_laplacian`` (intrinsic Delaunay cotangent Laplacian, which
copes with non-manifold input). An unreferenced vertex has no neighbour in that Laplacian; we
*tether* it to its nearest referenced vertex (Euclidean) by an edge of unit weight, so that
``L @ 1 = 0`` holds exactly, the graph stays connected, and both the low eigenvectors and harmonic
interpolation give the unreferenced vertex (to ~1e-8) the value of that nearest vertex. Its mass
stays robust_laplacian's tiny regulariser, so it carries no area.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from .._checks import check_signal
from .base import Geometry, _as_float_array

__all__ = ["Mesh"]

LaplacianMethod = Literal["mesh", "point_cloud"]


def _as_faces(faces: Tensor | np.ndarray) -> np.ndarray:
    arr = faces.detach().cpu().numpy() if isinstance(faces, Tensor) else np.asarray(faces)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3) (triangles), got {tuple(arr.shape)}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.mod(arr, 1) == 0):
            raise ValueError(f"faces must hold integer vertex indices, got dtype {arr.dtype}")
    return arr.astype(np.int64)


class Mesh(Geometry):
    """A triangle mesh as a :class:`Geometry`.

    Args:
        vertices: Vertex coordinates ``(V, 3)``, finite.
        faces: Triangle vertex indices ``(F, 3)``, each in ``[0, V)``.
        remove_unreferenced: Drop vertices that appear in no face (``original_ids`` keeps track).
        remove_duplicate_faces: Keep one triangle of every group with the same three vertices.
        laplacian_method: ``"mesh"`` (``robust_laplacian.mesh_laplacian``) or ``"point_cloud"``
            (``robust_laplacian.point_cloud_laplacian``, ignores faces).
        mollify_factor: Intrinsic mollification passed to robust_laplacian.

    Shapes:
        positions ``(V, 3)``, faces ``(F, 3)``, original_ids ``(V,)``.

    Example:
        >>> import trimesh
        >>> ico = trimesh.creation.icosahedron()
        >>> mesh = Mesh(ico.vertices, ico.faces)
        >>> mesh.num_vertices, tuple(mesh.faces.shape)
        (12, (20, 3))
        >>> evals, evecs = mesh.eigenbasis(4)
        >>> round(float(evals[0]), 6)
        0.0
    """

    def __init__(
        self,
        vertices: Tensor | np.ndarray,
        faces: Tensor | np.ndarray,
        *,
        remove_unreferenced: bool = False,
        remove_duplicate_faces: bool = False,
        laplacian_method: LaplacianMethod = "mesh",
        mollify_factor: float = 1e-5,
    ) -> None:
        super().__init__()
        V = _as_float_array(vertices, "vertices", "(V, 3)", 3)
        F = _as_faces(faces)
        if V.shape[0] < 3:
            raise ValueError(f"a mesh needs at least 3 vertices, got {V.shape[0]}")
        if F.shape[0] == 0:
            raise ValueError("faces is empty: a mesh needs at least one triangle")
        if F.min() < 0:
            raise ValueError(f"faces contains negative vertex indices (min {int(F.min())})")
        if F.max() >= V.shape[0]:
            raise ValueError(f"faces index vertex {int(F.max())} but there are only {V.shape[0]} vertices")
        if laplacian_method not in ("mesh", "point_cloud"):
            raise ValueError(f"laplacian_method must be 'mesh' or 'point_cloud', got {laplacian_method!r}")
        self.num_original_vertices = int(V.shape[0])
        self.num_removed_duplicate_faces = 0
        self.num_duplicate_face_groups = 0
        if remove_duplicate_faces:
            key = np.sort(F, axis=1)
            _, first, counts = np.unique(key, axis=0, return_index=True, return_counts=True)
            self.num_duplicate_face_groups = int((counts > 1).sum())
            self.num_removed_duplicate_faces = int(F.shape[0] - first.size)
            F = F[np.sort(first)]
        original_ids = np.arange(V.shape[0])
        if remove_unreferenced:
            used = np.unique(F)
            remap = np.full(V.shape[0], -1, dtype=np.int64)
            remap[used] = np.arange(used.size)
            V, F, original_ids = V[used], remap[F], used
        area = 0.5 * np.linalg.norm(np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]]), axis=1)
        if not area.sum() > 0:
            raise ValueError("mesh is degenerate: every triangle has zero area")
        self._positions = torch.from_numpy(np.ascontiguousarray(V))
        self.faces = torch.from_numpy(np.ascontiguousarray(F))
        self.original_ids = torch.from_numpy(original_ids.astype(np.int64))
        self.laplacian_method: LaplacianMethod = laplacian_method
        self.mollify_factor = float(mollify_factor)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        clean: bool = True,
        *,
        remove_unreferenced: bool = False,
        laplacian_method: LaplacianMethod = "mesh",
    ) -> Mesh:
        """Load a PLY/OBJ/OFF/STL mesh with trimesh (``process=False``, so vertex order is the file's).

        Args:
            path: File to read.
            clean: Drop duplicated triangles (keeps every vertex, so ``bun_zipper_res3.ply`` keeps
                its 1889 vertices).
            remove_unreferenced: Also drop vertices that appear in no face.
            laplacian_method: See :class:`Mesh`.

        Returns:
            The mesh.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: naming the file when it is empty, not a mesh, or has a face that indexes a
                missing vertex.
        """
        import trimesh

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"mesh file not found: {path}")
        try:
            loaded = trimesh.load(str(path), process=False, force="mesh")
        except IndexError as err:  # an OBJ/OFF face naming a vertex the file does not have
            raise ValueError(f"mesh file {path}: a face indexes a vertex that does not exist ({err}); "
                             "the file is truncated or its faces are numbered wrongly") from None
        except Exception as err:  # empty, text, or a format trimesh does not know
            raise ValueError(f"mesh file {path} could not be read as a {path.suffix.lstrip('.').upper() or 'mesh'} "
                             f"file ({type(err).__name__}: {err}); give a PLY, OBJ, OFF or STL triangle mesh") from None
        if path.suffix.lower() == ".stl" and len(getattr(loaded, "faces", ())):
            # STL stores three corners per triangle and no shared vertices: merge coincident
            # corners (there is no file vertex order to keep)
            loaded.merge_vertices()
        vertices = np.asarray(getattr(loaded, "vertices", np.zeros((0, 3))), dtype=np.float64)
        faces = np.asarray(getattr(loaded, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
        if vertices.shape[0] == 0 or faces.shape[0] == 0:
            raise ValueError(f"mesh file {path} holds {vertices.shape[0]} vertices and {faces.shape[0]} triangles: "
                             "a triangle mesh (PLY, OBJ, OFF or STL) is needed")
        try:
            mesh = cls(
                vertices,
                faces,
                remove_unreferenced=remove_unreferenced,
                remove_duplicate_faces=clean,
                laplacian_method=laplacian_method,
            )
        except ValueError as err:
            raise ValueError(f"mesh file {path}: {err}") from None
        mesh.source = str(path)
        return mesh

    # ------------------------------------------------------------------ topology helpers
    @property
    def num_faces(self) -> int:
        """Number of triangles ``F``."""
        return int(self.faces.shape[0])

    def referenced(self) -> np.ndarray:
        """Bool numpy ``(V,)``: vertices that appear in at least one face."""
        used = np.zeros(self.num_vertices, dtype=bool)
        used[self.faces.numpy().ravel()] = True
        return used

    def nearest_referenced(self) -> np.ndarray:
        """Index ``(V,)`` of the nearest referenced vertex (itself when referenced)."""
        used = self.referenced()
        out = np.arange(self.num_vertices)
        if not used.all():
            from scipy.spatial import cKDTree

            ref = np.flatnonzero(used)
            pos = self._positions.numpy()
            _, j = cKDTree(pos[ref]).query(pos[~used])
            out[~used] = ref[j]
        return out

    def scatter_to_original(self, x: Tensor, fill: float = 0.0) -> Tensor:
        """Put a signal back on the original (pre clean-up) vertex ids.

        Args:
            x: Signal ``(B, C, V)`` on this mesh.
            fill: Value for original vertices that were removed.

        Returns:
            ``(B, C, V_original)`` on the device/dtype of ``x``.
        """
        check_signal(x, self.num_vertices, "x")
        out = x.new_full((*x.shape[:-1], self.num_original_vertices), fill)
        out[..., self.original_ids.to(x.device)] = x
        return out

    # ------------------------------------------------------------------ Geometry hooks
    def _build_operators(self) -> tuple[sp.spmatrix, np.ndarray]:
        import robust_laplacian

        V = self._positions.numpy()
        if self.laplacian_method == "mesh":
            L, M = robust_laplacian.mesh_laplacian(V, self.faces.numpy(), mollify_factor=self.mollify_factor)
        else:
            L, M = robust_laplacian.point_cloud_laplacian(V, mollify_factor=self.mollify_factor)
        L = sp.csr_matrix(L)
        mass = np.asarray(M.diagonal(), dtype=np.float64)
        off = L - sp.diags(L.diagonal())
        isolated = np.flatnonzero(np.asarray(abs(off).sum(axis=1)).ravel() == 0)
        if isolated.size:
            if self.laplacian_method == "point_cloud":
                raise ValueError(f"point-cloud Laplacian left {isolated.size} vertices without neighbours")
            nearest = self.nearest_referenced()[isolated]
            tether = sp.coo_matrix(
                (-np.ones(isolated.size), (isolated, nearest)), shape=L.shape
            )
            off = off + tether + tether.T
        return off, mass  # diagonal is rebuilt from the off-diagonals by the base class

    def _fingerprint_data(self) -> list[bytes]:
        return [self.faces.numpy().astype(np.int64).tobytes(), self.laplacian_method.encode()]
