"""Invertible layers over padded sequences ``(N, C, L)``, following zuko's transform contract.

Every layer maps ``x -> y`` and reports the log-absolute-determinant of its Jacobian
(``call_and_ladj``), and can be inverted (``inverse``, ``inverse_and_ladj``). The sequences are
vertex signals put through a :class:`~manifold_ps.geometry.VertexLayout`: positions where
``valid`` is ``False`` are padding. Every layer keeps them exactly zero and leaves them out of the
log-determinant, so the flow is a bijection of the ``C * V`` valid coordinates only.

Conditional layers read a *context* ``h`` of shape ``(B, H, L)`` computed once per measurement;
the flowing tensor holds ``n`` samples per measurement, grouped measurement-major
(``N = B * n``, rows ``b * n .. b * n + n - 1`` belong to measurement ``b``).

zuko (``zuko.transforms``) has the same contract for flat features; its couplings are MLPs over
a flat vector without padding or sequence structure, so the layers here are our own: ActNorm
with data-dependent initialisation, mask-based affine couplings with bounded log-scales and a
zero-initialised last layer, and locality-preserving fixed permutations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "Bijection",
    "Composite",
    "ActNorm",
    "AffineCoupling",
    "FixedPermutation",
    "ElementwiseScale",
    "ConditionalAffine",
    "coupling_mask",
    "windowed_permutation",
]



class Bijection(nn.Module):
    """Base class: an invertible map of ``(N, C, L)`` sequences, optionally conditioned.

    Subclasses implement :meth:`call_and_ladj` and :meth:`inverse_and_ladj`. ``context`` is the
    per-measurement context ``(B, H, L)`` (``None`` for unconditional layers and flows).
    """

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Apply the map and return ``(y, log|det dy/dx|)``.

        Shapes:
            x: ``(N, C, L)``; returns ``(N, C, L)`` and ``(N,)``.
        """
        raise NotImplementedError  # abstract

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Apply the inverse map and return ``(x, log|det dx/dy|)`` (minus the forward ladj)."""
        raise NotImplementedError  # abstract

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``y = f(x)``."""
        return self.call_and_ladj(x, context)[0]

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        """``x = f^{-1}(y)``."""
        return self.inverse_and_ladj(y, context)[0]

    def log_abs_det_jacobian(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``log|det df/dx|`` at ``x``: ``(N,)``."""
        return self.call_and_ladj(x, context)[1]


class Composite(Bijection):
    """Chain of bijections applied in order (zuko's ``ComposedTransform``).

    Example:
        >>> valid = torch.tensor([True, True, True, False])
        >>> f = Composite([ElementwiseScale(1, valid, init_scale=2.0), FixedPermutation(valid, seed=0)])
        >>> x = torch.tensor([[[1.0, 2.0, 3.0, 0.0]]])
        >>> y, ladj = f.call_and_ladj(x)
        >>> torch.allclose(f.inverse(y), x), round(float(ladj.detach()), 4)
        (True, 2.0794)
    """

    def __init__(self, layers: Sequence[Bijection]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ladj = layer.call_and_ladj(x, context)
            total = total + ladj
        return x, total

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = y.new_zeros(y.shape[0])
        for layer in reversed(self.layers):
            y, ladj = layer.inverse_and_ladj(y, context)
            total = total + ladj
        return y, total


class ActNorm(Bijection):
    """Per-channel affine map ``y = x * exp(log_scale) + loc`` with data-dependent initialisation.

    The first call in training mode (either direction) sets the parameters so that the output of
    that batch has zero mean and unit variance per channel over the valid positions (Glow). The
    ``initialized`` flag is a buffer, so it travels with the state dict; eval mode never
    initialises.

    Args:
        channels: Number of channels ``C``.
        valid: Bool ``(L,)``, ``False`` at padded positions.

    Example:
        >>> layer = ActNorm(1, torch.ones(5, dtype=torch.bool))
        >>> y, _ = layer.call_and_ladj(3.0 + 2.0 * torch.randn(64, 1, 5))
        >>> abs(float(y.detach().mean())) < 1e-5, bool(layer.initialized)
        (True, True)
    """

    valid: Tensor
    initialized: Tensor

    def __init__(self, channels: int, valid: Tensor) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(channels, 1))
        self.log_scale = nn.Parameter(torch.zeros(channels, 1))
        self.register_buffer("valid", valid.clone().bool())
        self.register_buffer("initialized", torch.tensor(False))

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w = self.valid.to(x.dtype)
        count = x.shape[0] * w.sum()
        mean = (x * w).sum(dim=(0, 2)) / count
        var = ((x - mean[:, None]) ** 2 * w).sum(dim=(0, 2)) / count
        return mean.detach(), var.detach().clamp_min(1e-12).sqrt()

    @torch.no_grad()
    def _initialize(self, x: Tensor, *, forward: bool) -> None:
        mean, std = self._stats(x)
        if forward:  # y = (x - mean) / std
            self.log_scale.copy_(-std.log()[:, None])
            self.loc.copy_((-mean / std)[:, None])
        else:  # x = (y - loc) exp(-log_scale) normalised: loc = mean(y), log_scale = log std(y)
            self.log_scale.copy_(std.log()[:, None])
            self.loc.copy_(mean[:, None])
        self.initialized.fill_(True)

    def _ladj(self, x: Tensor) -> Tensor:
        num_valid = self.valid.sum().to(x.dtype)
        return (self.log_scale.sum() * num_valid).expand(x.shape[0])

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            self._initialize(x, forward=True)
        y = (x * self.log_scale.exp() + self.loc) * self.valid.to(x.dtype)
        return y, self._ladj(x)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            self._initialize(y, forward=False)
        x = (y - self.loc) * (-self.log_scale).exp() * self.valid.to(y.dtype)
        return x, -self._ladj(y)


class ElementwiseScale(Bijection):
    """Learned per-channel scale ``y = x * exp(log_scale)``, initialised to ``init_scale``.

    Used as the last layer of a flow so that it starts with small noise around its location
    (a small initial noise scale around a cheap reconstruction trains much faster than noise).

    Args:
        channels: Number of channels ``C``.
        valid: Bool ``(L,)``.
        init_scale: Initial scale (``> 0``).
    """

    valid: Tensor

    def __init__(self, channels: int, valid: Tensor, init_scale: float = 1.0) -> None:
        super().__init__()
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        self.log_scale = nn.Parameter(torch.full((channels, 1), float(torch.log(torch.tensor(init_scale)))))
        self.register_buffer("valid", valid.clone().bool())

    def _ladj(self, x: Tensor) -> Tensor:
        return (self.log_scale.sum() * self.valid.sum().to(x.dtype)).expand(x.shape[0])

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x * self.log_scale.exp() * self.valid.to(x.dtype), self._ladj(x)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y * (-self.log_scale).exp() * self.valid.to(y.dtype), -self._ladj(y)


def _expand_over_samples(p: Tensor, rows: int) -> Tensor:
    """Repeat per-measurement parameters ``(B, C, L)`` over the samples: ``(B * n, C, L)``."""
    batch = p.shape[0]
    if rows % batch:
        raise ValueError(f"{rows} rows cannot be grouped over {batch} measurements")
    n = rows // batch
    return p[:, None].expand(batch, n, *p.shape[1:]).reshape(rows, *p.shape[1:])


class ConditionalAffine(Bijection):
    """Per-measurement, per-vertex affine map ``y = x * exp(s(h)) + t(h)`` read from the context.

    Computed once per measurement and shared by its samples; this gives every vertex its own
    condition-dependent location and scale in one cheap layer (for masking, observed and missing
    vertices need very different posterior spreads). The head is zero-initialised (identity)
    and the log-scale bounded like a coupling's.

    Args:
        channels: Signal channels ``C``.
        valid: Bool ``(L,)``.
        context_channels: Context channels ``H``.
        scale_bound: Bound of ``|s|``.
        kernel_size: Odd kernel size of the head.
    """

    valid: Tensor

    def __init__(self, channels: int, valid: Tensor, context_channels: int, scale_bound: float = 2.0,
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.register_buffer("valid", valid.clone().bool())
        self.head = nn.Conv1d(context_channels, 2 * channels, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.scale_bound = float(scale_bound)

    def _params(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if context is None:
            raise ValueError("ConditionalAffine needs a context")
        raw_s, t = self.head(context).chunk(2, dim=1)
        w = self.valid.to(x.dtype)
        s = self.scale_bound * torch.tanh(raw_s / self.scale_bound) * w
        return s, t * w

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s, t = self._params(x, context)
        ladj = _expand_over_samples(s.flatten(1).sum(-1)[:, None, None], x.shape[0])[:, 0, 0]
        s, t = _expand_over_samples(s, x.shape[0]), _expand_over_samples(t, x.shape[0])
        return x * s.exp() + t, ladj

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s, t = self._params(y, context)
        ladj = _expand_over_samples(s.flatten(1).sum(-1)[:, None, None], y.shape[0])[:, 0, 0]
        s, t = _expand_over_samples(s, y.shape[0]), _expand_over_samples(t, y.shape[0])
        return (y - t) * (-s).exp(), -ladj


def coupling_mask(
    channels: int, length: int, parity: int, pattern: Literal["checkerboard", "channels"] = "checkerboard"
) -> Tensor:
    """Binary mask ``(C, L)`` of the *untouched* half of an affine coupling.

    ``"checkerboard"`` alternates positions (and, with several channels, channels as well), so it
    works for ``C = 1``; ``"channels"`` splits the channels (needs ``C >= 2``).

    Example:
        >>> coupling_mask(1, 6, 0)
        tensor([[1., 0., 1., 0., 1., 0.]])
    """
    if pattern == "channels":
        if channels < 2:
            raise ValueError("a 'channels' coupling split needs at least 2 channels; use 'checkerboard'")
        mask = (torch.arange(channels) % 2 == parity % 2)[:, None].expand(channels, length)
    elif pattern == "checkerboard":
        mask = (torch.arange(channels)[:, None] + torch.arange(length)[None, :] + parity) % 2 == 0
    else:
        raise ValueError(f"pattern must be 'checkerboard' or 'channels', got {pattern!r}")
    return mask.float()


class AffineCoupling(Bijection):
    """Affine coupling ``y_b = x_b * exp(s) + t`` with ``(s, t) = net(x_a, context)``.

    ``x_a`` (where ``mask == 1``) passes unchanged; the network sees it, the mask itself and the
    context. The log-scale is bounded, ``s = bound * tanh(raw / bound)``, so one step can never
    blow up; the network's last layer is zero-initialised, so a fresh coupling is the identity.

    Args:
        mask: ``(C, L)`` binary mask of the untouched half (see :func:`coupling_mask`).
        valid: Bool ``(L,)``.
        net: Module ``net(inputs (N, 2C, L), context (B, H, L) | None) -> (N, 2C, L)``
            (e.g. :class:`~manifold_ps.flows.conditioner.CouplingNet`), where the inputs are the
            masked signal and the mask.
        scale_bound: Bound of ``|s|``.
    """

    mask: Tensor
    valid: Tensor

    def __init__(self, mask: Tensor, valid: Tensor, net: nn.Module, scale_bound: float = 2.0) -> None:
        super().__init__()
        if mask.ndim != 2 or mask.shape[-1] != valid.shape[-1]:
            raise ValueError(f"mask must have shape (C, L={valid.shape[-1]}), got {tuple(mask.shape)}")
        if not scale_bound > 0:
            raise ValueError(f"scale_bound must be positive, got {scale_bound}")
        self.register_buffer("mask", mask.clone().float())
        self.register_buffer("valid", valid.clone().bool())
        self.net = net
        self.scale_bound = float(scale_bound)

    def _params(self, x_a: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        mask = self.mask.to(x_a.dtype)
        inputs = torch.cat([x_a, mask.expand_as(x_a)], dim=1)
        raw_s, t = self.net(inputs, context).chunk(2, dim=1)
        free = (1.0 - mask) * self.valid.to(x_a.dtype)  # transformed, valid entries
        s = self.scale_bound * torch.tanh(raw_s / self.scale_bound) * free
        return s, t * free, free

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x_a = x * self.mask.to(x.dtype)
        s, t, free = self._params(x_a, context)
        y = x_a + free * (x * s.exp() + t)
        return y, s.flatten(1).sum(-1)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y_a = y * self.mask.to(y.dtype)
        s, t, free = self._params(y_a, context)
        x = y_a + free * (y - t) * (-s).exp()
        return x, -s.flatten(1).sum(-1)


def windowed_permutation(valid: Tensor, window: int, generator: torch.Generator) -> Tensor:
    """Random permutation of the valid positions within consecutive windows; padding fixed.

    Positions move by less than ``window``, so the locality of the vertex ordering (which makes
    1-D convolutions local on the surface) survives, while the coupling halves change.

    Example:
        >>> p = windowed_permutation(torch.tensor([True] * 6 + [False] * 2), 3, torch.Generator().manual_seed(0))
        >>> sorted(p[:3].tolist()), sorted(p[3:6].tolist()), p[6:].tolist()
        ([0, 1, 2], [3, 4, 5], [6, 7])
    """
    if window < 1:
        raise ValueError(f"window must be positive, got {window}")
    length = valid.shape[-1]
    num_valid = int(valid.sum())
    if not bool(valid[:num_valid].all()):
        raise ValueError("valid must be True on a prefix of the sequence (padding at the end)")
    perm = torch.arange(length)
    keys = torch.arange(num_valid) // window + torch.rand(num_valid, generator=generator)
    perm[:num_valid] = torch.argsort(keys.double())
    return perm


class FixedPermutation(Bijection):
    """Fixed, seeded permutation of sequence positions (saved as a buffer); ``ladj = 0``.

    Args:
        valid: Bool ``(L,)``; padded positions are never moved.
        window: Positions are shuffled within windows of this size (see
            :func:`windowed_permutation`); ``window >= L`` gives a full random shuffle.
        seed: Seed of the permutation.
        reverse_channels: Also reverse the channel order (Glow/RealNVP-style) when ``C > 1``.
    """

    perm: Tensor
    inverse_perm: Tensor

    def __init__(self, valid: Tensor, window: int = 4, seed: int = 0, reverse_channels: bool = True) -> None:
        super().__init__()
        perm = windowed_permutation(valid.bool(), window, torch.Generator().manual_seed(int(seed)))
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))
        self.reverse_channels = bool(reverse_channels)

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y = x.index_select(-1, self.perm)
        if self.reverse_channels:
            y = y.flip(1)
        return y, x.new_zeros(x.shape[0])

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.reverse_channels:
            y = y.flip(1)
        return y.index_select(-1, self.inverse_perm), y.new_zeros(y.shape[0])
