"""A 1-D U-Net over vertex sequences, in the spirit of the "1D DDPM" of the paper.

Vertex signals are put in a locality-preserving order and zero-padded (see
:class:`~manifold_ps.geometry.VertexLayout`), so a 1-D convolution is (mostly) local on the
surface. The network is the usual DDPM U-Net with 1-D convolutions: residual blocks with
GroupNorm, SiLU and a FiLM time conditioning, strided-convolution down-sampling,
nearest-neighbour + convolution up-sampling, skip connections, and optional self-attention at
the coarsest level. The last convolution of every residual branch and of the output is
zero-initialised, so a freshly built network outputs exactly zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UNet1d", "timestep_embedding"]


def timestep_embedding(t: Tensor, dim: int, *, scale: float = 1000.0, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of continuous times (DDPM convention: ``scale * t`` as a "timestep").

    Args:
        t: Times, any real values (the priors pass ``t in [0, 1]``).
        dim: Embedding size (even).
        scale: Multiplier applied to ``t`` before the embedding.
        max_period: Longest period of the sinusoids.

    Returns:
        ``(B, dim)`` embedding in the dtype of ``t``.

    Example:
        >>> timestep_embedding(torch.tensor([0.0, 0.5]), 8).shape
        torch.Size([2, 8])
    """
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    args = (scale * t)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def _zero(module: nn.Conv1d) -> nn.Conv1d:
    nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float, kernel: int) -> None:
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv1d(cin, cout, kernel, padding=kernel // 2)
        self.film = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = _norm(cout, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv1d(cout, cout, kernel, padding=kernel // 2))
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[..., None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class _Attention(nn.Module):
    def __init__(self, channels: int, groups: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention channels {channels} not divisible by heads {heads}")
        self.heads = heads
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.out = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, length = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, length).transpose(-1, -2).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)  # (b, heads, L, c/heads)
        return x + self.out(h.transpose(-1, -2).reshape(b, c, length))


class UNet1d(nn.Module):
    """1-D U-Net ``F(x, t)`` over sequences ``(B, C, L)``.

    Args:
        in_channels: Channels of the signal input.
        out_channels: Channels of the output.
        base_channels: Width of the first level.
        channel_mults: Width multiplier per level; ``len(channel_mults) - 1`` halvings of ``L``.
        num_res_blocks: Residual blocks per level (the decoder has one more, as in DDPM).
        attention: Multi-head self-attention in the middle (coarsest) block.
        attention_heads: Number of attention heads.
        time_embedding_dim: Width of the time embedding MLP (default ``4 * base_channels``).
        cond_channels: Extra input channels (e.g. geometry features) passed as ``cond``.
        dropout: Dropout inside the residual blocks.
        groups: GroupNorm groups (reduced to a divisor of each width).
        kernel_size: Odd convolution kernel size.
        patch_size: Fold this many consecutive positions into channels before the first
            convolution (and unfold after the last): ``patch_size`` times less compute at full
            resolution, at the price of a coarser first level.

    Shapes:
        x: ``(B, in_channels, L)``, ``L`` divisible by ``patch_size * 2 ** (len(channel_mults) - 1)``;
        t: ``(B,)``; cond: ``(B, cond_channels, L)`` or ``(cond_channels, L)``;
        returns ``(B, out_channels, L)``.

    Example:
        >>> net = UNet1d(1, 1, base_channels=8, channel_mults=(1, 2))
        >>> net(torch.randn(2, 1, 16), torch.rand(2)).shape
        torch.Size([2, 1, 16])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 1,
        attention: bool = False,
        attention_heads: int = 4,
        time_embedding_dim: int | None = None,
        cond_channels: int = 0,
        dropout: float = 0.0,
        groups: int = 8,
        kernel_size: int = 3,
        patch_size: int = 1,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1 or base_channels < 1 or cond_channels < 0:
            raise ValueError("in_channels, out_channels and base_channels must be positive, cond_channels >= 0")
        if not channel_mults or any(int(m) < 1 for m in channel_mults):
            raise ValueError(f"channel_mults must be a non-empty sequence of positive ints, got {channel_mults}")
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        emb_dim = int(time_embedding_dim or 4 * base_channels)
        self._config: dict[str, Any] = dict(
            in_channels=int(in_channels), out_channels=int(out_channels), base_channels=int(base_channels),
            channel_mults=tuple(int(m) for m in channel_mults), num_res_blocks=int(num_res_blocks),
            attention=bool(attention), attention_heads=int(attention_heads), time_embedding_dim=emb_dim,
            cond_channels=int(cond_channels), dropout=float(dropout), groups=int(groups),
            kernel_size=int(kernel_size), patch_size=int(patch_size),
        )
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.cond_channels = int(cond_channels)
        self.emb_dim = emb_dim
        self.patch_size = int(patch_size)
        self.multiple = self.patch_size * 2 ** (len(channel_mults) - 1)

        self._sin_dim = 2 * max(8, (base_channels + 1) // 2)
        self.time_mlp = nn.Sequential(nn.Linear(self._sin_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.in_conv = nn.Conv1d((in_channels + cond_channels) * patch_size, base_channels, kernel_size,
                                 padding=kernel_size // 2)
        widths = [base_channels * int(m) for m in channel_mults]
        self.down = nn.ModuleList()
        skips = [base_channels]
        ch = base_channels
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                self.down.append(_ResBlock(ch, width, emb_dim, groups, dropout, kernel_size))
                ch = width
                skips.append(ch)
            if level < len(widths) - 1:
                self.down.append(nn.Conv1d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid1 = _ResBlock(ch, ch, emb_dim, groups, dropout, kernel_size)
        self.mid_attn = _Attention(ch, groups, attention_heads) if attention else nn.Identity()
        self.mid2 = _ResBlock(ch, ch, emb_dim, groups, dropout, kernel_size)
        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            for _ in range(num_res_blocks + 1):
                self.up.append(_ResBlock(ch + skips.pop(), widths[level], emb_dim, groups, dropout, kernel_size))
                ch = widths[level]
            if level > 0:
                self.up.append(_Upsample(ch))
        self.out_norm = _norm(ch, groups)
        self.out_conv = _zero(nn.Conv1d(ch, out_channels * patch_size, kernel_size, padding=kernel_size // 2))

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments (``UNet1d(**net.config())`` rebuilds the architecture)."""
        return dict(self._config)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (B, {self.in_channels}, L), got {tuple(x.shape)}")
        if x.shape[-1] % self.multiple:
            raise ValueError(f"sequence length {x.shape[-1]} is not divisible by {self.multiple} "
                             f"(patch_size * 2 ** (len(channel_mults) - 1)); pad the layout to a multiple of {self.multiple}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        if self.cond_channels:
            if cond is None:
                raise ValueError(f"this network needs cond with {self.cond_channels} channels")
            if cond.ndim == 2:
                cond = cond.expand(x.shape[0], *cond.shape)
            if cond.shape != (x.shape[0], self.cond_channels, x.shape[-1]):
                raise ValueError(f"cond must have shape ({x.shape[0]}, {self.cond_channels}, {x.shape[-1]}), "
                                 f"got {tuple(cond.shape)}")
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        elif cond is not None:
            raise ValueError("cond given to a network built with cond_channels=0")
        emb = self.time_mlp(timestep_embedding(t.to(x.dtype), self._sin_dim))
        b, _, length = x.shape
        p = self.patch_size
        if p > 1:  # 1-D "pixel unshuffle": p consecutive positions become channels
            x = x.reshape(b, -1, length // p, p).transpose(2, 3).reshape(b, -1, length // p)
        h = self.in_conv(x)
        hs = [h]
        for block in self.down:
            h = block(h, emb) if isinstance(block, _ResBlock) else block(h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for block in self.up:
            if isinstance(block, _ResBlock):
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = block(h)
        out = self.out_conv(F.silu(self.out_norm(h)))
        if p > 1:  # "pixel shuffle" back to full length
            out = out.reshape(b, self.out_channels, p, length // p).transpose(2, 3).reshape(b, self.out_channels, length)
        return out


class _Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
