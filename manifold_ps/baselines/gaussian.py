"""The Gaussian and Gaussian-mixture posteriors: exact answers under closed-form priors fitted to the clean training signals.

The strongest classical baseline of a learned prior: a :class:`~manifold_ps.priors.GaussianPrior`
fitted to the same signals the diffusion prior learns from has a closed-form posterior under
every linear operator (:class:`~manifold_ps.priors.LinearGaussianPosterior`). Its draws are exact,
its mean is the minimum-MSE estimate under that prior, and it needs no network (NFE 0). A
:class:`~manifold_ps.priors.GaussianMixture` (the step 0 of a ``"mixture"`` diffusion prior) has
one too, a mixture of its components' Gaussian posteriors weighted by their evidence
(:class:`~manifold_ps.priors.LinearMixturePosterior`): :class:`MixturePosterior`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..operators import Operator
from ..priors import GaussianMixture, GaussianPrior
from ._common import SamplerStats, check_request

__all__ = ["GaussianPosterior", "MixturePosterior"]


class GaussianPosterior(SamplerStats):
    """Exact posterior draws and mean of a Gaussian prior (the shared sampler protocol, NFE 0).

    Computation happens in the prior's dtype (fit it in float64) and on its device; outputs come
    back in ``y``'s dtype and device.

    Args:
        prior: The Gaussian prior (e.g. :meth:`~manifold_ps.priors.GaussianPrior.fit` on the
            clean training signals).

    Shapes:
        ``sample(y (B, C, V), operator, n)`` -> ``(B, n, C, V)``;
        ``posterior_mean_std(y, operator)`` -> ``((B, C, V), (B, C, V))``.

    Example:
        >>> from manifold_ps.operators import Denoising
        >>> prior = GaussianPrior(torch.zeros(1, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
        >>> y = torch.ones(2, 1, 3, dtype=torch.float64)
        >>> GaussianPosterior(prior).sample(y, Denoising(3, sigma=1.0), 4).shape
        torch.Size([2, 4, 1, 3])
    """

    def __init__(self, prior: GaussianPrior) -> None:
        if not isinstance(prior, GaussianPrior):
            raise ValueError(f"GaussianPosterior needs a GaussianPrior, got {type(prior).__name__}")
        self.prior = prior

    def __repr__(self) -> str:
        return f"GaussianPosterior(rank={self.prior.rank})"

    def _device(self) -> torch.device:
        return self.prior.mean.device

    def _inputs(self, y: Tensor, operator: Operator) -> tuple[Tensor, Operator]:
        dev = self._device()
        return y.to(device=dev, dtype=self.prior.dtype), operator.to(dev)

    def sample(
        self,
        y: Tensor,
        operator: Operator,
        n: int = 1,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Exact posterior draws.

        Args:
            y: Measurements ``(B, ...)``.
            operator: Their linear operator (one mask per measurement allowed for masking).
            n: Draws per measurement.
            generator: Source of randomness (on the prior's device).

        Returns:
            ``(B, n, C, V)`` in ``y``'s dtype and device.
        """
        check_request(y, n)
        with self._timed(y, n, None):
            yy, op = self._inputs(y, operator)
            out = self.prior.posterior(op).sample(yy, n, generator=generator)
        self.nfe = 0
        return out.to(device=y.device, dtype=y.dtype)

    def posterior_mean_std(self, y: Tensor, operator: Operator) -> tuple[Tensor, Tensor]:
        """The closed-form posterior mean and per-entry standard deviation.

        Returns:
            ``(mean (B, C, V), std (B, C, V))`` in ``y``'s dtype and device.
        """
        check_request(y, 1)
        with self._timed(y, 1, None):
            yy, op = self._inputs(y, operator)
            post = self.prior.posterior(op)
            mean, std = post.mean(yy), post.std().expand(y.shape[0], -1, -1)
        self.nfe = 0
        return mean.to(device=y.device, dtype=y.dtype), std.to(device=y.device, dtype=y.dtype)


class MixturePosterior(GaussianPosterior):
    """Exact posterior draws, mean and std of a Gaussian mixture prior (the shared sampler protocol, NFE 0).

    Computation happens in the mixture's dtype (float64 when fitted) and on its device; outputs
    come back in ``y``'s dtype and device. Draws are :class:`GaussianPosterior`'s, from the
    mixture's posterior; the std depends on ``y`` here.

    Args:
        mixture: The mixture (e.g. a ``"mixture"`` diffusion prior's ``prior.mixture``).

    Shapes:
        ``sample(y (B, C, V), operator, n)`` -> ``(B, n, C, V)``;
        ``posterior_mean_std(y, operator)`` -> ``((B, C, V), (B, C, V))``.

    Example:
        >>> from manifold_ps.operators import Denoising
        >>> s = GaussianPrior(torch.zeros(1, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
        >>> mix = GaussianMixture(torch.zeros(2, 1, 3, dtype=torch.float64), torch.ones(2, dtype=torch.float64), s)
        >>> y = torch.ones(2, 1, 3, dtype=torch.float64)
        >>> MixturePosterior(mix).sample(y, Denoising(3, sigma=1.0), 4).shape
        torch.Size([2, 4, 1, 3])
    """

    def __init__(self, mixture: GaussianMixture) -> None:
        if not isinstance(mixture, GaussianMixture):
            raise ValueError(f"MixturePosterior needs a GaussianMixture, got {type(mixture).__name__}")
        self.prior = mixture  # type: ignore[assignment]

    @property
    def mixture(self) -> GaussianMixture:
        """The mixture (also ``prior``)."""
        return self.prior  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"MixturePosterior(components={self.mixture.components})"

    def _device(self) -> torch.device:
        return self.mixture.means.device

    def posterior_mean_std(self, y: Tensor, operator: Operator) -> tuple[Tensor, Tensor]:
        """The closed-form posterior mean and per-entry standard deviation (which depends on ``y``).

        Returns:
            ``(mean (B, C, V), std (B, C, V))`` in ``y``'s dtype and device.
        """
        check_request(y, 1)
        with self._timed(y, 1, None):
            yy, op = self._inputs(y, operator)
            mean, std = self.mixture.posterior(op).mean_std(yy)
        self.nfe = 0
        return mean.to(device=y.device, dtype=y.dtype), std.to(device=y.device, dtype=y.dtype)
