"""Locality-preserving vertex orderings and a measure of their locality.

Networks treat a vertex signal as a 1-D sequence, so vertices that are close in the sequence
should be close on the surface. :func:`spectral_ordering` sorts by the Fiedler vector;
:func:`hilbert_ordering` sorts by the index on a 3-D Hilbert curve through the bounding box.
:func:`ordering_locality` measures the mean distance between consecutive vertices.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor

from ._distance import geodesic_distance_function

if TYPE_CHECKING:
    from .base import Geometry

__all__ = [
    "spectral_ordering",
    "hilbert_ordering",
    "hilbert_index",
    "identity_ordering",
    "invert_permutation",
    "check_permutation",
    "ordering_locality",
    "locality_report",
]


def check_permutation(perm: Tensor, num_vertices: int, name: str = "perm") -> Tensor:
    """Raise ``ValueError`` unless ``perm`` is a permutation of ``range(num_vertices)``."""
    perm = torch.as_tensor(perm)
    if perm.ndim != 1 or perm.numel() != num_vertices or perm.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"{name} must be an integer tensor of shape ({num_vertices},), got {tuple(perm.shape)} {perm.dtype}"
        )
    if not torch.equal(perm.sort().values.cpu(), torch.arange(num_vertices)):
        raise ValueError(f"{name} is not a permutation of range({num_vertices})")
    return perm.long()


def invert_permutation(perm: Tensor) -> Tensor:
    """Inverse permutation: ``inv[perm[i]] = i``.

    Shapes:
        ``perm``: ``(V,)`` -> ``(V,)``.

    Example:
        >>> invert_permutation(torch.tensor([2, 0, 1]))
        tensor([1, 2, 0])
    """
    perm = check_permutation(perm, torch.as_tensor(perm).numel())
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    return inv


def identity_ordering(num_vertices: int) -> Tensor:
    """The natural order ``0..V-1``.

    Shapes:
        Returns ``(V,)``.
    """
    return torch.arange(num_vertices)


def spectral_ordering(geometry: Geometry) -> Tensor:
    """Sort vertices by the Fiedler vector (second generalized eigenvector of ``L, M``).

    Ties are broken by vertex index (stable sort), and the eigenvector's sign is fixed by
    :meth:`Geometry.eigenbasis`, so the result is deterministic.

    Shapes:
        Returns ``(V,)``: entry ``i`` is the vertex at position ``i``.
    """
    _, evecs = geometry.eigenbasis(2)
    return torch.from_numpy(np.argsort(evecs[:, 1].numpy(), kind="stable"))


def hilbert_index(points: np.ndarray, bits: int = 10) -> np.ndarray:
    """Hilbert-curve index of integer points (Skilling's transpose algorithm).

    Args:
        points: Non-negative integers ``(N, D)`` below ``2**bits``.
        bits: Bits per axis (``bits * D <= 62``).

    Returns:
        int64 ``(N,)``; consecutive indices are neighbouring cells.
    """
    X = np.array(points, dtype=np.int64)
    n_pts, dims = X.shape
    if bits * dims > 62:
        raise ValueError(f"bits * dims must be <= 62, got {bits} * {dims}")
    M = 1 << (bits - 1)
    Q = M
    while Q > 1:  # inverse undo excess work
        P = Q - 1
        for i in range(dims):
            hit = (X[:, i] & Q) != 0
            X[hit, 0] ^= P
            t = (X[~hit, 0] ^ X[~hit, i]) & P
            X[~hit, 0] ^= t
            X[~hit, i] ^= t
        Q >>= 1
    for i in range(1, dims):  # Gray encode
        X[:, i] ^= X[:, i - 1]
    t = np.zeros(n_pts, dtype=np.int64)
    Q = M
    while Q > 1:
        hit = (X[:, dims - 1] & Q) != 0
        t[hit] ^= Q - 1
        Q >>= 1
    X ^= t[:, None]
    h = np.zeros(n_pts, dtype=np.int64)
    for b in range(bits - 1, -1, -1):
        for i in range(dims):
            h = (h << 1) | ((X[:, i] >> b) & 1)
    return h


def hilbert_ordering(positions: Tensor, bits: int = 10) -> Tensor:
    """Order points along a 3-D Hilbert curve through their (cubical) bounding box.

    Args:
        positions: ``(V, 3)`` coordinates.
        bits: Resolution per axis (``2**bits`` cells).

    Returns:
        LongTensor permutation ``(V,)``.

    Example:
        >>> hilbert_ordering(torch.tensor([[0., 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0]])).tolist()
        [0, 3, 1, 2]
    """
    pos = torch.as_tensor(positions).detach().cpu().to(torch.float64).numpy()
    if pos.ndim != 2 or pos.shape[1] != 3 or not np.isfinite(pos).all():
        raise ValueError(f"positions must be finite with shape (V, 3), got {pos.shape}")
    lo = pos.min(axis=0)
    extent = max(float((pos.max(axis=0) - lo).max()), 1e-300)
    cells = np.minimum(((pos - lo) / extent * (1 << bits)).astype(np.int64), (1 << bits) - 1)
    return torch.from_numpy(np.lexsort((np.arange(len(pos)), hilbert_index(cells, bits))))


def ordering_locality(
    geometry: Geometry, perm: Tensor, metric: Literal["euclidean", "geodesic"] = "euclidean"
) -> float:
    """Mean distance between consecutive vertices of an ordering.

    Args:
        geometry: The geometry.
        perm: Permutation ``(V,)`` (vertex at each sequence position).
        metric: ``"euclidean"`` or ``"geodesic"`` (heat method on meshes, great circles on sphere
            grids, exact on image grids; falls back to Euclidean with a ``UserWarning`` elsewhere).

    Returns:
        The mean distance (in the geometry's length units).
    """
    perm = check_permutation(perm, geometry.num_vertices).cpu().numpy()
    pos = geometry.positions.numpy()
    a, b = perm[:-1], perm[1:]
    if metric == "euclidean":
        return float(np.linalg.norm(pos[a] - pos[b], axis=1).mean())
    if metric != "geodesic":
        raise ValueError(f"metric must be 'euclidean' or 'geodesic', got {metric!r}")
    found = geodesic_distance_function(geometry)
    if found is None:
        warnings.warn(
            f"no geodesic solver for {type(geometry).__name__}; ordering_locality uses Euclidean distance",
            UserWarning,
            stacklevel=2,
        )
        return float(np.linalg.norm(pos[a] - pos[b], axis=1).mean())
    dist, _ = found
    return float(np.mean([dist(int(s))[t] for s, t in zip(a, b)]))


def locality_report(geometry: Geometry, methods: tuple[str, ...] = ("identity", "spectral", "hilbert")) -> dict:
    """Euclidean/geodesic locality of several orderings plus Laplacian and eigenbasis timings.

    Reproduces the numbers quoted in the docs: e.g.
    ``locality_report(Mesh.from_file("bun_zipper_res3.ply"))``.

    Returns:
        ``{"laplacian_s", "eigenbasis64_s", method: {"euclidean", "geodesic"}}``.
    """
    geometry._laplacian = None
    geometry._mass = None
    geometry._eigen_cache = {}
    t0 = time.perf_counter()
    geometry.laplacian()
    t1 = time.perf_counter()
    geometry.eigenbasis(min(64, geometry.num_vertices - 1))
    t2 = time.perf_counter()
    report: dict = {"laplacian_s": t1 - t0, "eigenbasis64_s": t2 - t1}
    for m in methods:
        perm = geometry.ordering(m)  # type: ignore[arg-type]
        report[m] = {
            "euclidean": ordering_locality(geometry, perm, "euclidean"),
            "geodesic": ordering_locality(geometry, perm, "geodesic"),
        }
    return report
