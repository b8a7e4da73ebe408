"""A residual MLP denoiser over whole vertex sequences: the fast network of the CPU profiles.

A U-Net's convolutions are local and cheap in parameters but slow on a CPU (many small kernels);
a wide MLP over the flattened sequence is a few large matrix products. Such an MLP trains well
*if* it is at least as wide as the signal or uses a preconditioned (EDM / x0 / Wiener)
parameterisation, which :class:`DiffusionPrior` provides.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .unet import timestep_embedding

__all__ = ["MLPDenoiser"]


class _Block(nn.Module):
    def __init__(self, width: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.emb = nn.Linear(emb_dim, 2 * width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.emb(emb).chunk(2, dim=-1)
        z = self.norm(h) * (1 + scale) + shift
        return h + self.fc2(self.dropout(F.silu(self.fc1(F.silu(z)))))


class MLPDenoiser(nn.Module):
    """Residual MLP ``F(seq, t) -> seq`` over ``(B, C, L)`` sequences of a fixed length.

    Args:
        in_channels: Input channels ``C_in`` (signal plus geometry features).
        out_channels: Output channels ``C_out``.
        length: Sequence length ``L`` (the layout's padded length).
        hidden: Width of the hidden layers (keep it >= ``C_out * L``: narrower MLPs cannot pass
            the identity through and stall).
        depth: Number of residual blocks.
        time_embedding_dim: Width of the time embedding.
        dropout: Dropout inside the blocks.

    Shapes:
        x: ``(B, C_in, L)``; t: ``(B,)``; returns ``(B, C_out, L)``.

    Example:
        >>> net = MLPDenoiser(1, 1, 16, hidden=32, depth=2)
        >>> net(torch.randn(3, 1, 16), torch.rand(3)).shape
        torch.Size([3, 1, 16])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        length: int,
        *,
        hidden: int = 2048,
        depth: int = 3,
        time_embedding_dim: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if min(in_channels, out_channels, length, hidden, depth, time_embedding_dim) < 1:
            raise ValueError("in_channels, out_channels, length, hidden, depth and time_embedding_dim must be positive")
        self._config: dict[str, Any] = dict(
            in_channels=int(in_channels), out_channels=int(out_channels), length=int(length), hidden=int(hidden),
            depth=int(depth), time_embedding_dim=int(time_embedding_dim), dropout=float(dropout),
        )
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.cond_channels = 0
        self.length = int(length)
        self.multiple = 1
        self._sin_dim = int(time_embedding_dim)
        self.time_mlp = nn.Sequential(
            nn.Linear(self._sin_dim, time_embedding_dim), nn.SiLU(), nn.Linear(time_embedding_dim, time_embedding_dim)
        )
        self.inp = nn.Linear(in_channels * length, hidden)
        self.blocks = nn.ModuleList(_Block(hidden, time_embedding_dim, dropout) for _ in range(depth))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, out_channels * length)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments (``MLPDenoiser(**net.config())`` rebuilds it)."""
        return dict(self._config)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is not None:
            raise ValueError("MLPDenoiser takes no cond")
        if x.ndim != 3 or x.shape[1] != self.in_channels or x.shape[2] != self.length:
            raise ValueError(f"x must have shape (B, {self.in_channels}, {self.length}), got {tuple(x.shape)}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        emb = self.time_mlp(timestep_embedding(t.to(x.dtype), self._sin_dim))
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.out_norm(h))).reshape(x.shape[0], self.out_channels, self.length)
