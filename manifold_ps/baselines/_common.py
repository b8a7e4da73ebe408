"""Pieces shared by the baseline samplers: batching over samples, NFE counting, timing."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from .._checks import check_finite, check_generator_device
from ..operators import Operator

__all__ = ["repeat_batch", "ancestral_grid", "posterior_step", "SamplerStats"]


def repeat_batch(y: Tensor, operator: Operator, n: int) -> tuple[Tensor, Operator]:
    """Flatten ``n`` samples per measurement into one batch (measurement-major).

    Shapes:
        ``y``: ``(B, ...)`` -> ``(B * n, ...)``; the operator's per-sample parameters follow.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    check_finite(y, "y")
    index = torch.arange(y.shape[0], device=y.device).repeat_interleave(n)
    return y.repeat_interleave(n, dim=0), operator.select(index.cpu())


def ancestral_grid(steps: int, T: float = 1.0) -> Tensor:
    """Times ``i / steps`` (``i = 1..steps``) of the ancestral DDPM chain, float64.

    With ``steps = 1000`` this is the paper's DDPM schedule; fewer steps respace it.

    Shapes:
        Returns ``(steps,)``.
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    return torch.arange(1, steps + 1, dtype=torch.float64) / steps * T


def posterior_step(x: Tensor, x0: Tensor, abar_t: float, abar_s: float, noise: Tensor) -> Tensor:
    """One ancestral step ``x_s ~ q(x_s | x_t, x0_hat)`` of the DDPM chain (``s < t``).

    Shapes:
        ``x``, ``x0``, ``noise``: ``(N, C, V)`` -> ``(N, C, V)``.
    """
    beta = 1.0 - abar_t / abar_s
    mean = (math.sqrt(abar_s) * beta / (1.0 - abar_t)) * x0 + (math.sqrt(1.0 - beta) * (1.0 - abar_s) / (1.0 - abar_t)) * x
    var = beta * (1.0 - abar_s) / (1.0 - abar_t)
    return mean + math.sqrt(var) * noise


class SamplerStats:
    """Mixin: ``nfe`` (network evaluations per sample) and ``last_seconds`` of the last call."""

    nfe: int = 0
    last_seconds: float = 0.0

    @contextmanager
    def _timed(self, y: Tensor, generator: torch.Generator | None) -> Iterator[None]:
        check_generator_device(generator, y.device)
        tic = time.perf_counter()
        try:
            yield
        finally:
            if y.device.type == "cuda":
                torch.cuda.synchronize(y.device)
            self.last_seconds = time.perf_counter() - tic
