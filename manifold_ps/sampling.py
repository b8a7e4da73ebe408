"""The posterior-sampler protocol shared by the amortized flow and every baseline.

Every sampler is called the same way, so the benchmarks can loop over them::

    samples = sampler.sample(y, operator, n, generator=generator)   # (B, n, C, V)
    sampler.nfe                                                     # network evaluations per sample
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["PosteriorSampler"]


@runtime_checkable
class PosteriorSampler(Protocol):
    """Draws posterior samples ``x ~ p(x | y)`` for a batch of measurements.

    Attributes:
        nfe: Number of network (denoiser / flow) evaluations per posterior sample made by the
            last call to :meth:`sample` (0 for non-learned methods).
    """

    nfe: int

    def sample(
        self,
        y: Tensor,
        operator: torch.nn.Module,
        n: int = 1,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw ``n`` posterior samples for each measurement.

        Args:
            y: Measurements ``(B, ...)`` produced by ``operator``.
            operator: The forward model (an :class:`~manifold_ps.operators.Operator`) whose
                per-sample parameters match ``y``'s batch.
            n: Samples per measurement.
            generator: Source of randomness.

        Returns:
            ``(B, n, C, V)`` samples in natural vertex order.
        """
        ...
