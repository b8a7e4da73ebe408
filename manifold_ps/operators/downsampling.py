"""2x super-resolution: 2 x 2 average pooling of image-grid signals."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.nn import functional as F

from .base import LinearOperator, register_operator

__all__ = ["Downsample2x"]


@register_operator
class Downsample2x(LinearOperator):
    """Average 2 x 2 blocks of row-major ``H x W`` images: ``(B, C, H*W) -> (B, C, H*W/4)``.

    The measurement is not vertex-shaped, so :meth:`condition` upsamples it back (nearest) for
    conditional networks. ``A_adjoint`` is exact: a quarter of the nearest upsampling.

    Args:
        height: Image height ``H`` (even).
        width: Image width ``W`` (even).
        sigma: Noise standard deviation.

    Example:
        >>> import torch
        >>> op = Downsample2x(2, 2, sigma=0.0)
        >>> op.A(torch.tensor([[[1.0, 2.0, 3.0, 4.0]]]))
        tensor([[[2.5000]]])
    """

    def __init__(self, height: int, width: int, sigma: float = 0.0) -> None:
        if height % 2 or width % 2:
            raise ValueError(f"Downsample2x needs even image sizes, got {height} x {width}")
        super().__init__(height * width, sigma)
        self.height, self.width = int(height), int(width)

    @property
    def num_measurements(self) -> int:
        """Entries per channel of a measurement, ``H * W / 4``."""
        return self.num_vertices // 4

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        b, c, v = x.shape
        if v != self.num_vertices:
            raise ValueError(f"signal has {v} vertices, the {self.height}x{self.width} image has {self.num_vertices}")
        out = F.avg_pool2d(x.reshape(b * c, 1, self.height, self.width), 2)
        return out.reshape(b, c, self.num_measurements)

    def _upsample(self, y: Tensor) -> Tensor:
        b, c, m = y.shape
        if m != self.num_measurements:
            raise ValueError(f"measurement has {m} entries per channel, expected {self.num_measurements}")
        up = F.interpolate(y.reshape(b * c, 1, self.height // 2, self.width // 2), scale_factor=2, mode="nearest")
        return up.reshape(b, c, self.num_vertices)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return 0.25 * self._upsample(y)

    def pseudo_inverse(self, y: Tensor) -> Tensor:
        """``A^+ y = A^T (A A^T)^{-1} y``: nearest upsampling (``A A^T = I / 4``)."""
        return self._upsample(y)

    def condition(self, y: Tensor) -> Tensor:
        return self._upsample(y)

    def config(self) -> dict[str, Any]:
        return {"type": "Downsample2x", "height": self.height, "width": self.width, "sigma": self.sigma}


