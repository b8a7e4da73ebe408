"""The identity forward model: denoising."""

from __future__ import annotations

from torch import Tensor

from .base import LinearOperator, register_operator

__all__ = ["Denoising"]


@register_operator
class Denoising(LinearOperator):
    """``A = I``: measurements are the signal plus white Gaussian noise.

    Args:
        num_vertices: Number of vertices ``V``.
        sigma: Noise standard deviation.

    Shapes:
        ``x``, ``y``: ``(B, C, V)``.

    Example:
        >>> import torch
        >>> Denoising(3, sigma=0.0)(torch.ones(1, 1, 3))
        tensor([[[1., 1., 1.]]])
    """

    def _check(self, x: Tensor, name: str) -> Tensor:
        if x.shape[-1] != self.num_vertices:
            raise ValueError(f"{name} has {x.shape[-1]} vertices, the operator has {self.num_vertices}")
        return x

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return self._check(x, "x")

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return self._check(y, "y")
