"""A mixture of Gaussians with one shared covariance, fitted to clean signals by k-means.

``p(x) = sum_k w_k N(x; mu_k, S)``. Under ``x_t = alpha x + sigma eps`` every component stays
Gaussian, ``N(alpha mu_k, alpha^2 S + sigma^2 I)``, so the marginal density, the responsibilities
``P(k | x_t)`` and the posterior mean (Tweedie's denoiser) are closed-form::

    D(x_t) = mbar + K (x_t - alpha mbar),   mbar = sum_k P(k | x_t) mu_k,
    K = alpha S (alpha^2 S + sigma^2 I)^{-1}

(the shared covariance makes the Wiener gain ``K`` the same for every component). With ``K = 1``
it is :class:`~manifold_ps.priors.GaussianPrior`. It measures how much of a data set a Gaussian
misses that a denoiser could learn: structure between clusters (seasons of a climate field, digit
classes) that one mean and covariance average away.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .._checks import check_finite, check_signal
from .base import ScorePrior
from .gaussian import GaussianPrior
from .sde import VPSDE

__all__ = ["GaussianMixture", "kmeans"]


def kmeans(x: Tensor, k: int, *, generator: torch.Generator | None = None, iters: int = 50,
           batch_size: int = 4096) -> Tensor:
    """Lloyd's k-means with k-means++ seeding: the cluster of every row.

    Args:
        x: Points ``(N, d)``.
        k: Clusters, ``1 <= k <= N``.
        generator: Source of the seeding draws.
        iters: Most Lloyd iterations (stops earlier when no label changes).
        batch_size: Points per distance computation.

    Returns:
        Labels ``(N,)`` int64 in ``[0, k)``; every cluster is non-empty (an emptied cluster is
        re-seeded at the point farthest from its centre).
    """
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, d), got {tuple(x.shape)}")
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must lie in [1, {n}] (the number of points), got {k}")
    check_finite(x, "x")

    def nearest(centres: Tensor) -> tuple[Tensor, Tensor]:
        dist, lab = [], []
        for start in range(0, n, batch_size):
            d2 = torch.cdist(x[start:start + batch_size], centres).square()
            m = d2.min(1)
            dist.append(m.values)
            lab.append(m.indices)
        return torch.cat(dist), torch.cat(lab)

    first = torch.randint(n, (1,), generator=generator, device=x.device)
    centres = x[first]
    d2, _ = nearest(centres)
    for _ in range(1, k):
        weights = d2.clamp_min(0.0)
        pick = (torch.multinomial(weights / weights.sum(), 1, generator=generator) if float(weights.sum()) > 0
                else torch.randint(n, (1,), generator=generator, device=x.device))
        centres = torch.cat([centres, x[pick]])
        d2 = torch.minimum(d2, torch.cdist(x, x[pick]).square()[:, 0])
    labels = None
    for _ in range(iters):
        d2, new = nearest(centres)
        counts = torch.bincount(new, minlength=k)
        for j in torch.nonzero(counts == 0).flatten().tolist():  # re-seed an emptied cluster
            far = int(d2.argmax())
            new[far], d2[far] = j, 0.0
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x)
        centres = sums / torch.bincount(labels, minlength=k).to(x.dtype)[:, None]
    assert labels is not None
    return labels


class GaussianMixture(ScorePrior):
    """``sum_k w_k N(mu_k, S)`` with one covariance ``S`` (a zero-mean :class:`GaussianPrior`).

    Args:
        means: Component means ``(K, C, V)``.
        weights: Component weights ``(K,)``, positive (normalised here).
        within: The shared covariance, as a :class:`GaussianPrior` whose mean is ignored; its SDE
            is the mixture's.
    """

    means: Tensor
    log_weights: Tensor

    def __init__(self, means: Tensor, weights: Tensor, within: GaussianPrior) -> None:
        if means.ndim != 3 or means.shape[1:] != (within.channels, within.num_vertices):
            raise ValueError(f"means must have shape (K, {within.channels}, {within.num_vertices}), "
                             f"got {tuple(means.shape)}")
        if weights.shape != (means.shape[0],) or not bool((weights > 0).all()):
            raise ValueError(f"weights must be {means.shape[0]} positive numbers, got shape {tuple(weights.shape)}")
        check_finite(means, "means")
        super().__init__(within.sde, within.channels, within.num_vertices)
        zero = torch.zeros_like(within.mean)
        self.within = GaussianPrior.from_factors(zero, within.eigvecs, within.eigvals, within.floor, within.sde,
                                                 fit_info=within.fit_info)
        self.register_buffer("means", means.to(within.mean.dtype).clone())
        self.register_buffer("log_weights", torch.log(weights.to(within.mean.dtype) / weights.sum()))
        self.fit_info: dict[str, Any] = {}

    @property
    def components(self) -> int:
        """Number ``K`` of components."""
        return int(self.means.shape[0])

    @classmethod
    def fit(
        cls,
        signals: Tensor,
        components: int,
        *,
        generator: torch.Generator | None = None,
        rank: int | None = None,
        ridge: float | Sequence[float] = 0.0,
        validation: Tensor | None = None,
        sde: VPSDE | None = None,
        dtype: torch.dtype = torch.float64,
        iters: int = 50,
    ) -> GaussianMixture:
        """Cluster ``signals`` by k-means and fit the shared covariance to the residuals.

        The weights are the clusters' fractions, the means their averages, and ``S`` the pooled
        within-cluster covariance (residuals to their cluster's mean, scaled by
        ``(N - 1) / (N - K)`` for the ``K`` estimated means), fitted by :meth:`GaussianPrior.fit`
        with ``rank`` and ``ridge`` (several ridges are chosen on the ``validation`` signals'
        residuals to their nearest mean).

        Args:
            signals: Clean signals ``(N, C, V)``, ``N > components``.
            components: ``K >= 1``.
            generator: Source of the k-means seeding.
            rank, ridge, validation, sde, dtype: As :meth:`GaussianPrior.fit`.
            iters: Most k-means iterations.
        """
        if signals.ndim != 3:
            raise ValueError(f"signals must have shape (N, C, V), got {tuple(signals.shape)}")
        n = signals.shape[0]
        if not 1 <= components < n:
            raise ValueError(f"components must lie in [1, {n - 1}] for {n} signals, got {components}")
        check_finite(signals, "signals")
        x = signals.to(dtype)
        flat = x.flatten(1)
        labels = (torch.zeros(n, dtype=torch.long, device=x.device) if components == 1
                  else kmeans(flat, components, generator=generator, iters=iters))
        counts = torch.bincount(labels, minlength=components).to(dtype)
        means = torch.zeros(components, flat.shape[1], dtype=dtype, device=x.device).index_add_(0, labels, flat)
        means = means / counts[:, None]
        scale = math.sqrt((n - 1) / (n - components))
        resid = (flat - means[labels]) * scale
        held = None
        if validation is not None:
            check_signal(validation, signals.shape[-1], "validation", channels=signals.shape[1])
            v = validation.to(dtype).flatten(1)
            near = torch.cdist(v, means).argmin(1)
            held = ((v - means[near]) * scale).reshape(validation.shape)
        within = GaussianPrior.fit(resid.reshape(signals.shape), rank=rank, ridge=ridge, validation=held, sde=sde,
                                   dtype=dtype)
        mixture = cls(means.reshape(components, *signals.shape[1:]), counts, within)
        mixture.fit_info = {"components": components, "signals": n, "cluster_sizes": counts.long().tolist(),
                            "within": dict(within.fit_info)}
        return mixture

    # -- diffusion --------------------------------------------------------------------------------------
    def _component_log_probs(self, x: Tensor, t: Tensor) -> Tensor:
        """``log w_k + log N(x; alpha mu_k, alpha^2 S + sigma^2 I)``: ``(B, K)``."""
        alpha = self.sde.alpha(t)
        out = []
        for k in range(self.components):
            shifted = x - alpha[:, None, None] * self.means[k]
            out.append(self.within.marginal_log_prob(shifted, t))
        return torch.stack(out, 1) + self.log_weights

    def responsibilities(self, x: Tensor, t: Tensor) -> Tensor:
        """``P(k | x_t = x)``: ``(B, C, V), (B,) -> (B, K)``."""
        check_signal(x, self.num_vertices, "x", channels=self.channels)
        t = self._check_t(x, t)
        return torch.softmax(self._component_log_probs(x, t), dim=1)

    def marginal_log_prob(self, x: Tensor, t: Tensor) -> Tensor:
        """Exact ``log p_t(x)``: ``(B, C, V), (B,) -> (B,)``."""
        check_signal(x, self.num_vertices, "x", channels=self.channels)
        t = self._check_t(x, t)
        return torch.logsumexp(self._component_log_probs(x, t), dim=1)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact data log-density: ``(B, C, V) -> (B,)``."""
        return self.marginal_log_prob(x, x.new_zeros(x.shape[0]))

    def denoise(self, x: Tensor, t: Tensor) -> Tensor:
        """The posterior mean ``E[x_0 | x_t = x]``: ``(B, C, V), (B,) -> (B, C, V)``."""
        check_signal(x, self.num_vertices, "x", channels=self.channels)
        t = self._check_t(x, t)
        resp = torch.softmax(self._component_log_probs(x, t), dim=1)
        mbar = torch.einsum("bk,kcv->bcv", resp, self.means)
        alpha = self.sde.alpha(t)[:, None, None]
        return mbar + self.within.denoise(x - alpha * mbar, t)

    def sample_data(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples of the data distribution: ``(n, C, V)``."""
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        return self.means[k] + self.within.sample_data(n, generator=generator)

    def extra_repr(self) -> str:
        return f"components={self.components}, channels={self.channels}, num_vertices={self.num_vertices}"
