"""Masking (inpainting / imputation) operators, with one mask per measurement."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._checks import check_generator_device, check_signal
from .base import LinearOperator, Operator, register_operator

__all__ = ["Inpainting", "RandomInpainting", "random_mask"]


def random_mask(
    num_vertices: int,
    missing_fraction: float,
    batch: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Masks with exactly ``round(missing_fraction * V)`` missing vertices per row.

    Returns:
        Boolean tensor ``(batch, V)``, ``True`` = observed.

    Example:
        >>> m = random_mask(10, 0.3, 2, generator=torch.Generator().manual_seed(0))
        >>> m.shape, (~m).sum(-1).tolist()
        (torch.Size([2, 10]), [3, 3])
    """
    if not 0.0 <= missing_fraction <= 1.0:
        raise ValueError(f"missing_fraction must be in [0, 1], got {missing_fraction}")
    n_missing = int(round(missing_fraction * num_vertices))
    scores = torch.rand(batch, num_vertices, generator=generator, device=device)
    order = scores.argsort(dim=-1)
    mask = torch.ones(batch, num_vertices, dtype=torch.bool, device=scores.device)
    mask.scatter_(-1, order[:, :n_missing], False)
    return mask


@register_operator
class Inpainting(LinearOperator):
    """Keep the observed vertices: ``A(x) = mask * x``, measurements zero-filled elsewhere.

    Args:
        mask: Boolean ``(V,)`` (shared) or ``(B, V)`` (one per measurement), ``True`` = observed.
        sigma: Noise standard deviation.

    Shapes:
        ``x``, ``y``: ``(B, C, V)``; :meth:`condition` returns ``(B, C + 1, V)`` (``y`` and the mask),
        since an observed zero and a missing vertex look the same in ``y``.

    Example:
        >>> op = Inpainting(torch.tensor([True, False, True]), sigma=0.0)
        >>> op.A(torch.ones(1, 1, 3))
        tensor([[[1., 0., 1.]]])
    """

    mask: Tensor

    def __init__(self, mask: Tensor, sigma: float) -> None:
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a boolean tensor (True = observed), got {mask.dtype}")
        if mask.ndim not in (1, 2):
            raise ValueError(f"mask must have shape (V,) or (B, V), got {tuple(mask.shape)}")
        super().__init__(mask.shape[-1], sigma)
        self.register_buffer("mask", mask)

    @property
    def batched(self) -> bool:
        """Whether the operator holds one mask per measurement."""
        return self.mask.ndim == 2

    def _mask_for(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.num_vertices:
            raise ValueError(f"signal has {x.shape[-1]} vertices, the mask has {self.num_vertices}")
        if self.batched:
            if self.mask.shape[0] not in (1, x.shape[0]):
                raise ValueError(
                    f"mask batch {self.mask.shape[0]} does not match signal batch {x.shape[0]}"
                )
            return self.mask[:, None, :]
        return self.mask[None, None, :]

    def measured(self, y: Tensor) -> Tensor:
        return self._mask_for(y)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return x * self._mask_for(x).to(x.dtype)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return y * self._mask_for(y).to(y.dtype)

    def condition(self, y: Tensor) -> Tensor:
        m = self._mask_for(y).to(y.dtype).expand(y.shape[0], 1, y.shape[-1])
        return torch.cat([y, m], dim=1)

    def condition_channels(self, channels: int) -> int:
        return channels + 1

    def select(self, index: Tensor) -> "Inpainting":
        if not self.batched or self.mask.shape[0] == 1:
            return self
        return Inpainting(self.mask[index], self.sigma)

    def config(self) -> dict[str, Any]:
        return {"type": "Inpainting", "mask": self.mask.cpu(), "sigma": self.sigma}

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> "Inpainting":
        return cls(torch.as_tensor(config["mask"]), config["sigma"])

    def extra_repr(self) -> str:
        frac = 1.0 - self.mask.float().mean().item()
        return f"num_vertices={self.num_vertices}, missing={frac:.3f}, batched={self.batched}, sigma={self.sigma}"


@register_operator
class RandomInpainting(Operator):
    """Blind masking: each measurement gets its own mask with a missing fraction drawn from a range.

    The flow never sees the operator, only ``y``; :meth:`draw` returns the concrete
    :class:`Inpainting` of a batch, which is what produced the measurements.

    Args:
        num_vertices: Number of vertices ``V``.
        missing_range: ``(low, high)`` range of the missing fraction, drawn uniformly per sample.
        sigma: Noise standard deviation.
    """

    def __init__(self, num_vertices: int, missing_range: tuple[float, float], sigma: float) -> None:
        super().__init__(num_vertices, sigma)
        low, high = (float(v) for v in missing_range)
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"missing_range must satisfy 0 <= low <= high <= 1, got {missing_range}")
        self.missing_range = (low, high)

    def draw(
        self, batch: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Inpainting:
        """Draw ``batch`` masks, each with its own missing fraction."""
        low, high = self.missing_range
        frac = low + (high - low) * torch.rand(batch, generator=generator, device=device)
        n_missing = (frac * self.num_vertices).round().long()
        scores = torch.rand(batch, self.num_vertices, generator=generator, device=device)
        ranks = scores.argsort(-1).argsort(-1)
        mask = ranks >= n_missing[:, None]
        return Inpainting(mask, self.sigma)

    def forward(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw masks and measure; use :meth:`draw` directly to also keep the operator."""
        check_signal(x, self.num_vertices, "x")
        check_generator_device(generator, x.device)
        return self.draw(x.shape[0], generator=generator, device=x.device)(x, generator=generator)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        raise ValueError("RandomInpainting has no fixed A: call draw(batch) to get the batch's operator")

    def config(self) -> dict[str, Any]:
        return {**super().config(), "missing_range": list(self.missing_range)}
