"""Networks inside the flow: the coupling networks and the shared condition encoder.

Both are 1-D convolutional residual networks over the padded sequence; the vertex ordering of
:class:`~manifold_ps.geometry.VertexLayout` is locality preserving, so a 1-D convolution is a
local operation on the surface.

The condition (measurement features, a cheap reconstruction, optional geometry features such
as Laplacian eigenvectors) is encoded *once per measurement* by :class:`ConditionEncoder` into a
context ``h``. Each :class:`CouplingNet` projects ``h`` with its own first-layer weights, again
once per measurement, and broadcasts the projection over the ``n`` samples of that measurement;
only the part that reads the flowing signal runs per sample. This is exactly a convolution of
the concatenation ``[x_a, mask, h]`` (the first layer is linear), at a fraction of the cost.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["ResidualBlock", "ConditionEncoder", "CouplingNet"]


class ResidualBlock(nn.Module):
    """``x + conv(act(conv(act(x))))`` with ``'same'`` padding and an optional dilation.

    Example:
        >>> ResidualBlock(8, kernel_size=3, dilation=2)(torch.zeros(2, 8, 10)).shape
        torch.Size([2, 8, 10])
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        pad = dilation * (kernel_size // 2)
        self.conv1 = nn.Conv1d(channels, channels, kernel_size, padding=pad, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size, padding=pad, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class ConditionEncoder(nn.Module):
    """Encode the condition once per measurement: ``(B, Cc, L) -> (B, H, L)``.

    Args:
        in_channels: Channels of the condition (measurement features plus geometry features).
        out_channels: Channels ``H`` of the context.
        hidden: Width of the residual blocks.
        blocks: Number of residual blocks (dilations 1, 2, 4, ...).
        kernel_size: Odd kernel size.

    Example:
        >>> ConditionEncoder(3, 8, hidden=16)(torch.zeros(2, 3, 12)).shape
        torch.Size([2, 8, 12])
    """

    def __init__(self, in_channels: int, out_channels: int, *, hidden: int = 32, blocks: int = 2, kernel_size: int = 3) -> None:
        super().__init__()
        self.inp = nn.Conv1d(in_channels, hidden, kernel_size, padding=kernel_size // 2)
        self.blocks = nn.Sequential(*[ResidualBlock(hidden, kernel_size, 2**i) for i in range(blocks)])
        self.out = nn.Conv1d(hidden, out_channels, 1)

    def forward(self, cond: Tensor) -> Tensor:
        return self.out(F.silu(self.blocks(self.inp(cond))))


class CouplingNet(nn.Module):
    """Scale/shift network of one affine coupling.

    ``net(inputs, context)`` with ``inputs = [x_a, mask]`` of shape ``(N, 2C, L)`` and the context
    ``(B, H, L)`` (``N = B * n``, measurement-major) returns ``(N, 2C, L)`` (raw log-scales and
    shifts). The output layer is zero-initialised, so a fresh coupling is the identity.

    Args:
        channels: Signal channels ``C``.
        context_channels: Context channels ``H`` (0 for an unconditional flow).
        hidden: Width.
        blocks: Residual blocks.
        kernel_size: Odd kernel size.
        dilation: Dilation of the residual blocks (the flow cycles it across steps to grow the
            receptive field cheaply).
        patch: Fold this many consecutive positions into channels before the convolutions (and
            back after): the hidden tensors are ``patch`` times shorter, which is what makes the
            flow fast on a CPU, where these small convolutions are memory-bound.

    Example:
        >>> net = CouplingNet(1, 4, hidden=8)
        >>> net(torch.zeros(6, 2, 10), torch.zeros(3, 4, 10)).abs().max().item()
        0.0
    """

    def __init__(
        self,
        channels: int,
        context_channels: int,
        *,
        hidden: int = 32,
        blocks: int = 1,
        kernel_size: int = 3,
        dilation: int = 1,
        patch: int = 1,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if patch < 1:
            raise ValueError(f"patch must be >= 1, got {patch}")
        self.patch = int(patch)
        p = self.patch
        self.inp = nn.Conv1d(2 * channels * p, hidden, kernel_size, padding=kernel_size // 2)
        self.ctx = nn.Conv1d(context_channels * p, hidden, 1, bias=False) if context_channels > 0 else None
        self.blocks = nn.Sequential(*[ResidualBlock(hidden, kernel_size, dilation) for _ in range(blocks)])
        self.out = nn.Conv1d(hidden, 2 * channels * p, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _fold(self, t: Tensor) -> Tensor:
        """``(N, c, L) -> (N, c * p, ceil(L / p))``, zero-padding the end."""
        p = self.patch
        if p == 1:
            return t
        n, c, length = t.shape
        pad = -length % p
        if pad:
            t = F.pad(t, (0, pad))
        m = (length + pad) // p
        return t.reshape(n, c, m, p).transpose(2, 3).reshape(n, c * p, m)

    def _unfold(self, t: Tensor, length: int) -> Tensor:
        """Inverse of :meth:`_fold`: ``(N, c * p, M) -> (N, c, L)``."""
        p = self.patch
        if p == 1:
            return t
        n, cp, m = t.shape
        return t.reshape(n, cp // p, p, m).transpose(2, 3).reshape(n, cp // p, m * p)[..., :length]

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        length = inputs.shape[-1]
        h = self.inp(self._fold(inputs))
        if self.ctx is not None:
            if context is None:
                raise ValueError("this coupling network is conditional: context is required")
            batch = context.shape[0]
            if h.shape[0] % batch:
                raise ValueError(f"{h.shape[0]} rows cannot be grouped over {batch} measurements")
            n = h.shape[0] // batch
            h = (h.view(batch, n, *h.shape[1:]) + self.ctx(self._fold(context))[:, None]).view_as(h)
        return self._unfold(self.out(F.silu(self.blocks(F.silu(h)))), length)
