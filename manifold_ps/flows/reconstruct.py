"""Cheap, operator-aware reconstructions that the flow starts from (its location ``loc``).

A flow that models the residual around a cheap reconstruction (for
masking, the observed values kept and the holes filled harmonically) learns much faster than one
that starts from noise. A reconstruction here is a module ``rec(y, operator) -> (B, C, V)``
that can be saved inside a trained sampler (:meth:`config` / :func:`reconstruction_from_config`),
so a loaded sampler needs neither the geometry object nor any training code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph
import scipy.sparse.linalg
import torch
from torch import Tensor, nn

__all__ = ["Reconstruction", "AdjointFill", "HarmonicFill", "reconstruction_from_config"]


def _observed_mask(operator: nn.Module, y: Tensor) -> Tensor:
    """Bool ``(B, V)`` of observed vertices of a masking operator."""
    if not hasattr(operator, "measured"):
        raise ValueError(f"{type(operator).__name__} is not an operator with a measured() mask")
    m = torch.as_tensor(operator.measured(y)).to(torch.bool)
    m = m.expand(y.shape[0], *m.shape[1:]) if m.ndim == 3 else m
    if m.ndim != 3 or m.shape[-1] != y.shape[-1]:
        raise ValueError("the harmonic fill needs a vertex mask (masking operator); use AdjointFill otherwise")
    return m.any(dim=1)


class Reconstruction(nn.Module):
    """Base class: ``forward(y, operator) -> (B, C, V)`` plus a serialisable :meth:`config`."""

    def forward(self, y: Tensor, operator: nn.Module) -> Tensor:  # pragma: no cover
        raise NotImplementedError  # abstract: subclasses implement the reconstruction

    def config(self) -> dict[str, Any]:
        """Plain data (tensors allowed) that :func:`reconstruction_from_config` inverts."""
        return {"type": type(self).__name__}


class AdjointFill(Reconstruction):
    """``A^T y`` for linear operators (for masking: the observed values, zeros elsewhere), or the
    operator's ``pseudo_inverse(y)`` when it has one (2x downsampling: nearest upsampling).

    Shapes:
        ``y``: ``(B, C, M)`` -> ``(B, C, V)``.

    Example:
        >>> from manifold_ps.operators import Inpainting
        >>> op = Inpainting(torch.tensor([True, False, True]), sigma=0.1)
        >>> AdjointFill()(torch.tensor([[[1.0, 0.0, 3.0]]]), op)
        tensor([[[1., 0., 3.]]])
    """

    def forward(self, y: Tensor, operator: nn.Module) -> Tensor:
        if hasattr(operator, "pseudo_inverse"):  # e.g. downsampling: A^T rescaled to keep values
            return operator.pseudo_inverse(y)
        if not hasattr(operator, "A_adjoint"):
            raise ValueError(f"AdjointFill needs a linear operator, got {type(operator).__name__}")
        return operator.A_adjoint(y)


class HarmonicFill(Reconstruction):
    """Observed values kept, missing vertices filled by discrete harmonic extension.

    Solves ``L_uu x_u = -L_uo y_o`` per distinct mask (as
    :meth:`manifold_ps.geometry.Geometry.harmonic_interpolation` with ``smoothing=0``); a graph
    component without observed vertex gets the sample's observed mean. The stiffness matrix is
    stored (as buffers), so the fill is saved with a trained sampler.

    Args:
        laplacian: ``(V, V)`` sparse stiffness matrix (scipy or a torch sparse tensor).

    Example:
        >>> import scipy.sparse as sp
        >>> from manifold_ps.operators import Inpainting
        >>> path = sp.diags([[-1.0] * 3, [1.0, 2.0, 2.0, 1.0], [-1.0] * 3], [-1, 0, 1])  # 4-vertex path
        >>> op = Inpainting(torch.tensor([True, False, False, True]), sigma=0.1)
        >>> HarmonicFill(path)(torch.tensor([[[0.0, 0.0, 0.0, 3.0]]]), op)
        tensor([[[0., 1., 2., 3.]]])
    """

    indices: Tensor
    values: Tensor

    def __init__(self, laplacian: Any) -> None:
        super().__init__()
        if isinstance(laplacian, Tensor):
            laplacian = laplacian.coalesce() if laplacian.is_sparse else laplacian.to_sparse().coalesce()
            idx, val, n = laplacian.indices(), laplacian.values(), laplacian.shape[0]
        else:
            coo = sp.coo_matrix(laplacian)
            idx = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))
            val = torch.from_numpy(coo.data.astype(np.float64))
            n = coo.shape[0]
        if laplacian.shape[0] != laplacian.shape[1]:
            raise ValueError(f"laplacian must be square, got {tuple(laplacian.shape)}")
        self.num_vertices = int(n)
        self.register_buffer("indices", idx)
        self.register_buffer("values", val.double())
        self._cache: tuple[sp.csr_matrix, int, np.ndarray] | None = None

    @classmethod
    def from_geometry(cls, geometry: Any) -> "HarmonicFill":
        """Build from a :class:`~manifold_ps.geometry.Geometry` (its ``laplacian()``)."""
        return cls(geometry.laplacian())

    def _matrix(self) -> tuple[sp.csr_matrix, int, np.ndarray]:
        if self._cache is None:
            idx = self.indices.cpu().numpy()
            L = sp.csr_matrix((self.values.cpu().numpy(), (idx[0], idx[1])), shape=(self.num_vertices,) * 2)
            n_comp, labels = scipy.sparse.csgraph.connected_components(L, directed=False)
            self._cache = (L, int(n_comp), labels)
        return self._cache

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._cache = None
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def forward(self, y: Tensor, operator: nn.Module) -> Tensor:
        if y.ndim != 3 or y.shape[-1] != self.num_vertices:
            raise ValueError(f"y must have shape (B, C, {self.num_vertices}), got {tuple(y.shape)}")
        mask = _observed_mask(operator, y).cpu().numpy()
        if not mask.any(axis=1).all():
            raise ValueError("a measurement has no observed vertex; nothing to fill from")
        L, n_comp, labels = self._matrix()
        values = (y.detach().cpu().double() * torch.from_numpy(mask)[:, None]).numpy()
        out = values.copy()
        unique, inverse = np.unique(mask, axis=0, return_inverse=True)
        for u, m in enumerate(unique):
            rows = np.flatnonzero(inverse.ravel() == u)
            yo = values[rows]
            has_obs = np.bincount(labels[m], minlength=n_comp) > 0
            unk = has_obs[labels] & ~m
            block = np.broadcast_to(yo[..., m].mean(-1, keepdims=True), yo.shape).copy()
            block[..., m] = yo[..., m]
            if unk.any():
                rhs = -(L[unk][:, m] @ yo[..., m].reshape(-1, int(m.sum())).T)
                sol = scipy.sparse.linalg.splu(L[unk][:, unk].tocsc()).solve(np.asarray(rhs))
                block[..., unk] = sol.T.reshape(len(rows), yo.shape[1], -1)
            out[rows] = block
        return torch.from_numpy(out).to(device=y.device, dtype=y.dtype)

    def config(self) -> dict[str, Any]:
        return {"type": "HarmonicFill", "num_vertices": self.num_vertices,
                "indices": self.indices.cpu(), "values": self.values.cpu()}


def reconstruction_from_config(config: dict[str, Any] | None) -> Reconstruction | None:
    """Rebuild a reconstruction saved by :meth:`Reconstruction.config` (``None`` -> ``None``)."""
    if config is None:
        return None
    kind = config.get("type")
    if kind == "AdjointFill":
        return AdjointFill()
    if kind == "HarmonicFill":
        n = int(config["num_vertices"])
        idx = torch.as_tensor(config["indices"]).numpy()
        return HarmonicFill(sp.coo_matrix((torch.as_tensor(config["values"]).numpy(), (idx[0], idx[1])), shape=(n, n)))
    raise ValueError(f"unknown reconstruction type {kind!r}; known: AdjointFill, HarmonicFill")
