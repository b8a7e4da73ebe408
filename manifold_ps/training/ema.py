"""Exponential moving average of model weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ema_copy", "ema_update"]


def ema_copy(model: nn.Module) -> nn.Module:
    """A frozen deep copy of ``model`` to hold the averaged weights.

    Example:
        >>> ema = ema_copy(nn.Linear(2, 2))
        >>> any(p.requires_grad for p in ema.parameters())
        False
    """
    ema = copy.deepcopy(model)
    ema.requires_grad_(False)
    ema.eval()
    return ema


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for parameters; buffers are copied.

    Args:
        ema: The averaged copy (same architecture as ``model``).
        model: The trained model.
        decay: Weight of the old average, in ``[0, 1]``.

    Example:
        >>> a, b = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
        >>> _ = a.requires_grad_(False).weight.fill_(0.0); _ = b.requires_grad_(False).weight.fill_(1.0)
        >>> ema_update(a, b, 0.9); round(a.weight.item(), 6)
        0.1
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must lie in [0, 1], got {decay}")
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p.detach().to(p_ema.dtype), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)
