"""Blur operators: a heat kernel on any geometry, and a Gaussian blur on image grids."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from .base import LinearOperator, register_operator

__all__ = ["HeatBlur", "ImageBlur"]


@register_operator
class HeatBlur(LinearOperator):
    """Heat diffusion for time ``time`` through a truncated Laplacian eigenbasis.

    ``A x = Phi diag(exp(-lambda time)) Phi^T M x`` with ``L Phi = M Phi Lambda`` and
    ``Phi^T M Phi = I``: the part of ``x`` outside the first ``k`` modes is removed. ``A`` is
    self-adjoint for the mass inner product; :meth:`A_adjoint` is the adjoint for the Euclidean
    one, ``A^T y = M Phi diag(...) Phi^T y``. The eigenbasis is stored, so a saved operator needs
    no geometry.

    Args:
        evals: Eigenvalues ``(k,)``.
        evecs: M-orthonormal eigenvectors ``(V, k)``.
        mass: Lumped mass ``(V,)``.
        time: Diffusion time.
        sigma: Noise standard deviation.

    Shapes:
        ``x``, ``y``: ``(B, C, V)``.

    Example:
        >>> from manifold_ps.geometry import ImageGrid
        >>> op = HeatBlur.from_geometry(ImageGrid(4, 4), time=0.1, k=8)
        >>> ones = torch.ones(1, 1, 16, dtype=torch.float64)
        >>> torch.allclose(op.A(ones), ones)  # constants do not diffuse
        True
    """

    evals: Tensor
    evecs: Tensor
    mass: Tensor

    def __init__(self, evals: Tensor, evecs: Tensor, mass: Tensor, time: float, sigma: float) -> None:
        evals, evecs, mass = (torch.as_tensor(t) for t in (evals, evecs, mass))
        if evecs.ndim != 2 or evals.shape != (evecs.shape[1],) or mass.shape != (evecs.shape[0],):
            raise ValueError(f"need evals (k,), evecs (V, k), mass (V,); got {tuple(evals.shape)}, "
                             f"{tuple(evecs.shape)}, {tuple(mass.shape)}")
        if time < 0:
            raise ValueError(f"time must be non-negative, got {time}")
        super().__init__(evecs.shape[0], sigma)
        self.time = float(time)
        self.register_buffer("evals", evals.clone())
        self.register_buffer("evecs", evecs.clone())
        self.register_buffer("mass", mass.clone())

    @classmethod
    def from_geometry(cls, geometry: Any, time: float, *, k: int = 64, sigma: float = 0.0) -> "HeatBlur":
        """Build from a :class:`~manifold_ps.geometry.Geometry`'s first ``k`` eigenpairs."""
        evals, evecs = geometry.eigenbasis(k)
        return cls(evals, evecs, torch.as_tensor(geometry.mass()), time, sigma)

    def _filter(self, like: Tensor) -> Tensor:
        return torch.exp(-self.evals.to(like.dtype) * self.time)

    def _check(self, x: Tensor, name: str) -> None:
        if x.shape[-1] != self.num_vertices:
            raise ValueError(f"{name} has {x.shape[-1]} vertices, the eigenbasis has {self.num_vertices}")

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        self._check(x, "x")
        phi, m = self.evecs.to(x.dtype), self.mass.to(x.dtype)
        return ((x * m) @ phi * self._filter(x)) @ phi.T

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        self._check(y, "y")
        phi, m = self.evecs.to(y.dtype), self.mass.to(y.dtype)
        return ((y @ phi) * self._filter(y)) @ phi.T * m

    def config(self) -> dict[str, Any]:
        return {"type": "HeatBlur", "evals": self.evals.cpu(), "evecs": self.evecs.cpu(), "mass": self.mass.cpu(),
                "time": self.time, "sigma": self.sigma}

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> "HeatBlur":
        return cls(config["evals"], config["evecs"], config["mass"], config["time"], config["sigma"])


def _gaussian_kernel(size: int, sigma: float) -> Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    k = torch.outer(g, g)
    return k / k.sum()


@register_operator
class ImageBlur(LinearOperator):
    """Gaussian blur of row-major ``H x W`` images stored as vertex signals ``(B, C, H*W)``.

    Zero padding at the border, so the adjoint is exactly the transposed convolution (the kernel
    is symmetric, so it is the same correlation).

    Args:
        height: Image height ``H``.
        width: Image width ``W``.
        kernel_sigma: Standard deviation of the Gaussian kernel in pixels.
        kernel_size: Odd side of the kernel.
        sigma: Noise standard deviation.

    Example:
        >>> op = ImageBlur(4, 4, kernel_sigma=1.0, kernel_size=3, sigma=0.0)
        >>> op.A(torch.ones(1, 1, 16)).shape
        torch.Size([1, 1, 16])
    """

    kernel: Tensor

    def __init__(self, height: int, width: int, kernel_sigma: float = 1.0, kernel_size: int = 5,
                 sigma: float = 0.0) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        if kernel_sigma <= 0:
            raise ValueError(f"kernel_sigma must be positive, got {kernel_sigma}")
        super().__init__(height * width, sigma)
        self.height, self.width = int(height), int(width)
        self.kernel_sigma, self.kernel_size = float(kernel_sigma), int(kernel_size)
        self.register_buffer("kernel", _gaussian_kernel(kernel_size, kernel_sigma).float())

    def _conv(self, x: Tensor) -> Tensor:
        b, c, v = x.shape
        if v != self.num_vertices:
            raise ValueError(f"signal has {v} vertices, the {self.height}x{self.width} image has {self.num_vertices}")
        k = self.kernel.to(x.dtype)[None, None]
        out = F.conv2d(x.reshape(b * c, 1, self.height, self.width), k, padding=self.kernel_size // 2)
        return out.reshape(b, c, v)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return self._conv(x)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return self._conv(y)  # symmetric kernel, zero padding: the correlation is self-adjoint

    def config(self) -> dict[str, Any]:
        return {"type": "ImageBlur", "height": self.height, "width": self.width, "kernel_sigma": self.kernel_sigma,
                "kernel_size": self.kernel_size, "sigma": self.sigma}

    def extra_repr(self) -> str:
        return f"{self.height}x{self.width}, kernel_sigma={self.kernel_sigma}, size={self.kernel_size}, sigma={self.sigma}"


