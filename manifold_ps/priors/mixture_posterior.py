"""The exact posterior of a Gaussian mixture under a linear operator with Gaussian noise.

For ``x ~ sum_k w_k N(mu_k, S_k)`` (:class:`~manifold_ps.priors.GaussianMixture`) and
``y = A x + sigma n`` the posterior is again a mixture,

    p(x | y) = sum_k r_k(y) N(x; m_k(y), C_k),   r_k(y) ∝ w_k N(y; A mu_k, A S_k A^T + sigma^2 I),

whose components are the Gaussian posteriors of the components
(:class:`~manifold_ps.priors.LinearGaussianPosterior`) and whose weights are the components'
evidences. Each component's posterior is that of the zero-mean Gaussian ``N(0, S_k)`` applied to
``y - A mu_k`` and shifted by ``mu_k``, so a shared covariance is factorised once for every
component. The mean is ``sum_k r_k m_k``; the per-entry variance is
``sum_k r_k (diag C_k + m_k^2) - mean^2``; a draw picks its component with probability ``r_k`` and
is then an exact draw of that component's posterior.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_generator_device
from .gaussian_mixture import GaussianMixture
from .gaussian_posterior import LinearGaussianPosterior

__all__ = ["LinearMixturePosterior"]


class LinearMixturePosterior:
    """Closed-form posterior of a :class:`GaussianMixture` for one linear operator.

    The factorisations (one per distinct covariance) are computed once, here.

    Args:
        mixture: The Gaussian mixture.
        operator: A linear operator with ``sigma > 0``, as for
            :class:`~manifold_ps.priors.LinearGaussianPosterior`.

    Shapes:
        ``y``: ``(B, C, V)`` (or ``(B, C, M)`` for non-vertex measurements); means and stds
        ``(B, C, V)``; draws ``(B, n, C, V)``; evidence ``(B,)``; responsibilities ``(B, K)``.

    Example:
        >>> from manifold_ps.operators import Inpainting
        >>> from manifold_ps.priors import GaussianPrior
        >>> s = GaussianPrior(torch.zeros(1, 2, dtype=torch.float64), 0.01 * torch.eye(2, dtype=torch.float64))
        >>> mix = GaussianMixture(torch.tensor([[[-1.0, -1.0]], [[1.0, 1.0]]], dtype=torch.float64),
        ...                       torch.ones(2, dtype=torch.float64), s)
        >>> post = mix.posterior(Inpainting(torch.tensor([True, False]), sigma=0.1))
        >>> post.mean(torch.tensor([[[0.9, 0.0]]], dtype=torch.float64)).round(decimals=2)  # the observed side picks +1
        tensor([[[0.9500, 1.0000]]], dtype=torch.float64)
    """

    def __init__(self, mixture: GaussianMixture, operator: torch.nn.Module) -> None:
        if not isinstance(mixture, GaussianMixture):
            raise ValueError(f"LinearMixturePosterior needs a GaussianMixture, got {type(mixture).__name__}")
        self.mixture = mixture
        self.operator = operator
        self.parts = [LinearGaussianPosterior(cov, operator) for cov in mixture.covariances]
        self.batch = self.parts[0].batch
        # A mu_k for every component, (K, 1, C, M); masking and denoising measure the entries
        # themselves, whose unmeasured ones the components' posteriors ignore
        means = mixture.means[:, None]
        self._a_means = means if self.parts[0].structured else torch.stack([operator.A(m) for m in means])

    def _part(self, k: int) -> LinearGaussianPosterior:
        return self.parts[0 if len(self.parts) == 1 else k]

    def _check_y(self, y: Tensor) -> Tensor:
        return self.parts[0]._check_y(y)

    def _shifted(self, y: Tensor, k: int) -> Tensor:
        """``y - A mu_k``: the measurement as the zero-mean component ``k`` sees it."""
        return y - self._a_means[k].to(y.dtype)

    def component_log_evidence(self, y: Tensor) -> Tensor:
        """``log w_k + log N(y; A mu_k, A S_k A^T + sigma^2 I)`` per component: ``(B, K)``."""
        y = self._check_y(y)
        ev = [self._part(k).log_evidence(self._shifted(y, k)) for k in range(self.mixture.components)]
        return torch.stack(ev, dim=-1) + self.mixture.log_weights.to(y.dtype)

    def responsibilities(self, y: Tensor) -> Tensor:
        """Posterior component probabilities ``r_k(y)``: ``(B, K)``."""
        return torch.softmax(self.component_log_evidence(y), dim=-1)

    def log_evidence(self, y: Tensor) -> Tensor:
        """Exact ``log p(y)`` of the measured entries, in nats: ``(B,)``."""
        return torch.logsumexp(self.component_log_evidence(y), dim=-1)

    def component_means(self, y: Tensor) -> Tensor:
        """Each component's posterior mean ``m_k(y)``: ``(B, K, C, V)``."""
        y = self._check_y(y)
        return torch.stack([self.mixture.means[k].to(y.dtype) + self._part(k).mean(self._shifted(y, k))
                            for k in range(self.mixture.components)], dim=1)

    def mean(self, y: Tensor) -> Tensor:
        """Posterior mean ``sum_k r_k(y) m_k(y)``: ``(B, C, V)``."""
        return self.mean_std(y)[0]

    def mean_std(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and per-entry standard deviation (law of total variance): ``(B, C, V)`` each."""
        y = self._check_y(y)
        resp = self.responsibilities(y)[..., None, None]  # (B, K, 1, 1)
        means = self.component_means(y)  # (B, K, C, V)
        var_k = torch.stack([self._part(k).std().square().expand(y.shape[0], -1, -1)
                             for k in range(self.mixture.components)], dim=1)
        mean = (resp * means).sum(1)
        second = (resp * (var_k + means.square())).sum(1)
        return mean, (second - mean.square()).clamp_min(0.0).sqrt()

    def sample(self, y: Tensor, n: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
        """Exact posterior draws ``(B, n, C, V)``.

        Each draw's component is drawn from ``r_k(y)``; every component then draws ``n`` exact
        draws of its own posterior per measurement, of which the draws assigned to it are kept.
        """
        y = self._check_y(y)
        check_generator_device(generator, self.mixture.means.device)
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        choice = torch.multinomial(self.responsibilities(y), n, replacement=True, generator=generator)  # (B, n)
        out: Tensor | None = None
        for k in range(self.mixture.components):
            keep = choice == k
            if not bool(keep.any()):
                continue
            draws = self.mixture.means[k].to(y.dtype) + self._part(k).sample(self._shifted(y, k), n, generator=generator)
            out = draws if out is None else torch.where(keep[..., None, None], draws, out)
        assert out is not None
        return out
