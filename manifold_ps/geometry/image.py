"""Regular pixel grids as geometries: images are signals on an ``H x W`` grid graph."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from .._checks import check_signal
from .base import Geometry

__all__ = ["ImageGrid"]


class ImageGrid(Geometry):
    """``H x W`` pixel grid; vertices are pixels in row-major order.

    Positions are ``(x, y, 0)`` with unit pixel spacing, ``x`` = column and ``y = H - 1 - row``
    (so "up" in the image is +y). The Laplacian is the 5-point stencil with Neumann boundary
    (the graph Laplacian of the 4-neighbour grid: symmetric, ``L @ 1 = 0``); the mass is one
    per pixel.

    Args:
        height: Number of rows ``H``.
        width: Number of columns ``W``.

    Shapes:
        positions ``(H * W, 3)``; ``as_image``: ``(B, C, V) -> (B, C, H, W)``.

    Example:
        >>> grid = ImageGrid(32, 32)
        >>> x = torch.rand(2, 3, 32, 32)
        >>> torch.equal(grid.as_image(grid.from_image(x)), x)
        True
        >>> float(abs(grid.laplacian().sum(axis=1)).max())
        0.0
    """

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        valid = isinstance(height, int) and isinstance(width, int) and height >= 1 and width >= 1
        if not valid or height * width < 2:
            raise ValueError(f"height and width must be positive integers (>= 2 pixels), got {height}, {width}")
        self.shape = (height, width)
        rows, cols = torch.meshgrid(
            torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
        )
        self._positions = torch.stack([cols, (height - 1) - rows, torch.zeros_like(rows)], dim=-1).reshape(-1, 3)

    def as_image(self, x: Tensor) -> Tensor:
        """``(B, C, V) -> (B, C, H, W)``."""
        check_signal(x, self.num_vertices, "x")
        return x.reshape(*x.shape[:-1], *self.shape)

    def from_image(self, img: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, V)``."""
        if img.ndim != 4 or tuple(img.shape[-2:]) != self.shape:
            raise ValueError(f"img must have shape (B, C, {self.shape[0]}, {self.shape[1]}), got {tuple(img.shape)}")
        return img.reshape(*img.shape[:-2], self.num_vertices)

    def _build_operators(self) -> tuple[sp.spmatrix, np.ndarray]:
        H, W = self.shape
        idx = np.arange(H * W).reshape(H, W)
        a = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
        b = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
        w = -np.ones(a.size)
        ij = (np.concatenate([a, b]), np.concatenate([b, a]))
        off = sp.coo_matrix((np.concatenate([w, w]), ij), shape=(H * W,) * 2)
        return off.tocsr(), np.ones(H * W)

    def _fingerprint_data(self) -> list[bytes]:
        return [np.asarray(self.shape, dtype=np.int64).tobytes()]

    _default_ordering = "serpentine"

    def _serpentine_ordering(self) -> Tensor:
        idx = torch.arange(self.num_vertices).reshape(self.shape)
        idx[1::2] = idx[1::2].flip(-1)
        return idx.reshape(-1)
