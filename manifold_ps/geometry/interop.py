"""Conversion to and from torch_geometric ``Data`` (torch_geometric is imported lazily)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from .base import Geometry
from .mesh import Mesh

__all__ = ["to_pyg", "from_pyg"]


def _import_data() -> Any:
    # torch_geometric (2.x) calls torch.jit.script at import time, which torch >= 2.9 flags as
    # deprecated; that third-party warning is silenced here and nowhere else.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning)
        from torch_geometric.data import Data
    return Data


def to_pyg(geometry: Geometry) -> Any:
    """A ``torch_geometric.data.Data`` with ``pos``, ``edge_index``, ``edge_weight`` (and ``face``).

    ``edge_index`` is the off-diagonal sparsity of the Laplacian (both directions), ``edge_weight``
    the matching ``-L_ij``; meshes also get ``face`` of shape ``(3, F)``.

    Example:
        >>> from manifold_ps.geometry import Icosphere
        >>> data = to_pyg(Icosphere(1))
        >>> data.num_nodes, tuple(data.face.shape)
        (42, (3, 80))
    """
    Data = _import_data()
    L = geometry.laplacian().tocoo()
    off = L.row != L.col
    edge_index = torch.from_numpy(np.stack([L.row[off], L.col[off]]).astype(np.int64))
    kwargs: dict[str, Any] = {
        "pos": geometry.positions.clone(),
        "edge_index": edge_index,
        "edge_weight": torch.from_numpy(-L.data[off].copy()),
    }
    if isinstance(geometry, Mesh):
        kwargs["face"] = geometry.faces.T.contiguous()
    return Data(**kwargs)


def from_pyg(data: Any) -> Mesh:
    """A :class:`Mesh` from a ``Data`` object that has ``pos`` ``(V, 3)`` and ``face`` ``(3, F)``."""
    pos = getattr(data, "pos", None)
    face = getattr(data, "face", None)
    if pos is None or face is None:
        raise ValueError("from_pyg needs data.pos (V, 3) and data.face (3, F)")
    if face.ndim != 2 or face.shape[0] != 3:
        raise ValueError(f"data.face must have shape (3, F), got {tuple(face.shape)}")
    return Mesh(pos.to(torch.float64), face.T)
