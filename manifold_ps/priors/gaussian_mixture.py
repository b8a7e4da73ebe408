"""A mixture of Gaussians, fitted to clean signals by k-means, with closed-form diffusion.

``p(x) = sum_k w_k N(x; mu_k, S_k)``, with one covariance shared by every component or one per
component. Under ``x_t = alpha x + sigma eps`` every component stays Gaussian,
``N(alpha mu_k, alpha^2 S_k + sigma^2 I)``, so the marginal density, the responsibilities
``P(k | x_t)`` and the posterior mean (Tweedie's denoiser) are closed-form::

    D(x_t) = sum_k P(k | x_t) (mu_k + K_k (x_t - alpha mu_k)),   K_k = alpha S_k (alpha^2 S_k + sigma^2 I)^{-1}

(with a shared covariance the Wiener gain is the same for every component, and ``D`` is one gain
applied around the responsibility-weighted mean). With ``K = 1`` it is
:class:`~manifold_ps.priors.GaussianPrior`. It measures how much of a data set a Gaussian misses
that a denoiser could learn -- structure between clusters (seasons of a climate field, digit
classes) that one mean and covariance average away -- and it is the skip of a ``"mixture"``
:class:`~manifold_ps.priors.DiffusionPrior`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from .._checks import check_finite, check_signal
from .base import ScorePrior
from .gaussian import GaussianPrior
from .sde import VPSDE

if TYPE_CHECKING:
    from .mixture_posterior import LinearMixturePosterior

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
    """``sum_k w_k N(mu_k, S_k)``: one shared covariance ``S`` or one per component.

    Args:
        means: Component means ``(K, C, V)``.
        weights: Component weights ``(K,)``, positive (normalised here).
        covariances: The covariance, as a :class:`GaussianPrior` whose mean is ignored (shared by
            every component), or a sequence of ``K`` of them (one per component). Their SDEs must
            be equal; it is the mixture's.

    Example:
        >>> s = GaussianPrior(torch.zeros(1, 2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
        >>> mix = GaussianMixture(torch.tensor([[[-3.0, 0.0]], [[3.0, 0.0]]], dtype=torch.float64),
        ...                       torch.ones(2, dtype=torch.float64), s)
        >>> mix.denoise(torch.tensor([[[2.9, 0.0]]], dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
        tensor([[[2.9000, 0.0000]]], dtype=torch.float64)
    """

    means: Tensor
    log_weights: Tensor

    def __init__(self, means: Tensor, weights: Tensor, covariances: GaussianPrior | Sequence[GaussianPrior]) -> None:
        covs = [covariances] if isinstance(covariances, GaussianPrior) else list(covariances)
        if not covs:
            raise ValueError("covariances must be a GaussianPrior or a non-empty sequence of them")
        first = covs[0]
        if means.ndim != 3 or means.shape[1:] != (first.channels, first.num_vertices):
            raise ValueError(f"means must have shape (K, {first.channels}, {first.num_vertices}), "
                             f"got {tuple(means.shape)}")
        if len(covs) not in (1, means.shape[0]):
            raise ValueError(f"need one shared covariance or one per component ({means.shape[0]}), got {len(covs)}")
        for c in covs:
            if (c.channels, c.num_vertices) != (first.channels, first.num_vertices) or c.sde.config() != first.sde.config():
                raise ValueError("every covariance must be over the same channels and vertices, with the same SDE")
        if weights.shape != (means.shape[0],) or not bool((weights > 0).all()):
            raise ValueError(f"weights must be {means.shape[0]} positive numbers, got shape {tuple(weights.shape)}")
        check_finite(means, "means")
        super().__init__(first.sde, first.channels, first.num_vertices)
        self.covariances = nn.ModuleList(
            GaussianPrior.from_factors(torch.zeros_like(c.mean), c.eigvecs, c.eigvals, c.floor, c.sde,
                                       fit_info=c.fit_info) for c in covs)
        self.register_buffer("means", means.to(first.mean.dtype).clone())
        self.register_buffer("log_weights", torch.log(weights.to(first.mean.dtype) / weights.sum()))
        self.fit_info: dict[str, Any] = {}

    @property
    def components(self) -> int:
        """Number ``K`` of components."""
        return int(self.means.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the density is stored and evaluated in (that of its weights)."""
        return self.log_weights.dtype

    @property
    def shared(self) -> bool:
        """Whether the components share one covariance."""
        return len(self.covariances) == 1

    @property
    def within(self) -> GaussianPrior:
        """The shared covariance (a zero-mean :class:`GaussianPrior`); only for a shared mixture."""
        if not self.shared:
            raise ValueError("this mixture has one covariance per component: use covariances[k]")
        return self.covariances[0]

    def _covariance(self, k: int) -> GaussianPrior:
        return self.covariances[0 if self.shared else k]

    @classmethod
    def from_state(cls, state: dict[str, Tensor], sde: VPSDE, *, prefix: str = "",
                   fit_info: dict[str, Any] | None = None) -> GaussianMixture:
        """Rebuild a mixture from its ``state_dict`` (keys under ``prefix``), e.g. inside a saved prior.

        Raises:
            ValueError: when a buffer is missing.
        """
        need = [f"{prefix}means", f"{prefix}log_weights", f"{prefix}covariances.0.eigvecs"]
        missing = [k for k in need if k not in state]
        if missing:
            raise ValueError(f"the saved mixture lacks {missing}")
        covs, i = [], 0
        while f"{prefix}covariances.{i}.eigvecs" in state:
            p = f"{prefix}covariances.{i}."
            covs.append(GaussianPrior.from_factors(state[p + "mean"], state[p + "eigvecs"], state[p + "eigvals"],
                                                   state[p + "floor"], sde))
            i += 1
        mixture = cls(state[f"{prefix}means"], state[f"{prefix}log_weights"].exp(), covs)
        mixture.fit_info = dict(fit_info or {})
        return mixture

    @classmethod
    def fit(
        cls,
        signals: Tensor,
        components: int,
        *,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        covariance: Literal["shared", "per-component"] = "shared",
        shrinkage: float | Sequence[float] = 0.5,
        rank: int | None = None,
        ridge: float | Sequence[float] = 0.0,
        validation: Tensor | None = None,
        sde: VPSDE | None = None,
        dtype: torch.dtype = torch.float64,
        iters: int = 50,
    ) -> GaussianMixture:
        """Cluster ``signals`` (k-means, or the given ``labels``) and fit the covariance(s) to the residuals.

        The weights are the clusters' fractions and the means their averages. The shared
        covariance ``S`` is the pooled within-cluster covariance (residuals to their cluster's
        mean, scaled by ``(N - 1) / (N - K)`` for the ``K`` estimated means), fitted by
        :meth:`GaussianPrior.fit` with ``rank`` and ``ridge`` (several ridges are chosen on the
        ``validation`` signals' residuals to their nearest mean).

        ``covariance="per-component"`` gives component ``k`` its cluster's covariance shrunk
        toward the pooled one, ``S_k = (1 - s) C_k + s S + ridge I`` (``C_k`` the cluster's
        empirical covariance, ``S`` the pooled one before its ridge; ``s = 1`` is the shared
        mixture). Several ``shrinkage`` weights ``s`` are chosen by the exact log-likelihood of
        the ``validation`` signals. Each ``S_k`` is exact in the span of the pooled directions and
        the cluster's residuals (the floor ``s`` times the pooled one outside it), truncated to its
        top ``rank`` directions like :meth:`GaussianPrior.fit` (the dropped variance becomes
        the floor).

        Args:
            signals: Clean signals ``(N, C, V)``, ``N > components``.
            components: ``K >= 1``.
            generator: Source of the k-means seeding.
            labels: Cluster of every signal ``(N,)`` in ``[0, K)``, none empty (default: k-means).
                A cluster of one signal gets ``s`` times the pooled covariance.
            covariance: ``"shared"`` or ``"per-component"`` (above).
            shrinkage: Weight(s) ``s`` in ``(0, 1]`` of the pooled covariance, per component.
            rank, ridge, validation, sde, dtype: As :meth:`GaussianPrior.fit`.
            iters: Most k-means iterations.
        """
        if signals.ndim != 3:
            raise ValueError(f"signals must have shape (N, C, V), got {tuple(signals.shape)}")
        n = signals.shape[0]
        if not 1 <= components < n:
            raise ValueError(f"components must lie in [1, {n - 1}] for {n} signals, got {components}")
        if covariance not in ("shared", "per-component"):
            raise ValueError(f"covariance must be 'shared' or 'per-component', got {covariance!r}")
        weights_s = [float(shrinkage)] if isinstance(shrinkage, (int, float)) else [float(s) for s in shrinkage]
        if not weights_s or any(not 0.0 < s <= 1.0 for s in weights_s):
            raise ValueError(f"shrinkage must be a weight in (0, 1] or a non-empty sequence of them, got {shrinkage!r}")
        if covariance == "per-component" and len(weights_s) > 1 and validation is None:
            raise ValueError("choosing among several shrinkage weights needs validation signals")
        check_finite(signals, "signals")
        x = signals.to(dtype)
        flat = x.flatten(1)
        if labels is not None:
            labels = torch.as_tensor(labels, device=x.device).long()
            if labels.shape != (n,) or int(labels.min()) < 0 or int(labels.max()) >= components:
                raise ValueError(f"labels must be {n} cluster indices in [0, {components}), got shape "
                                 f"{tuple(labels.shape)}")
        elif components == 1:
            labels = torch.zeros(n, dtype=torch.long, device=x.device)
        else:
            labels = kmeans(flat, components, generator=generator, iters=iters)
        counts = torch.bincount(labels, minlength=components).to(dtype)
        if bool((counts < 1).any()):
            raise ValueError(f"every cluster needs a signal, got sizes {counts.long().tolist()}")
        means = torch.zeros(components, flat.shape[1], dtype=dtype, device=x.device).index_add_(0, labels, flat)
        means = means / counts[:, None]
        scale = math.sqrt((n - 1) / (n - components))
        resid = flat - means[labels]
        held = None
        if validation is not None:
            check_signal(validation, signals.shape[-1], "validation", channels=signals.shape[1])
            v = validation.to(dtype).flatten(1)
            near = torch.cdist(v, means).argmin(1)
            held = ((v - means[near]) * scale).reshape(validation.shape)
        pooled = GaussianPrior.fit((resid * scale).reshape(signals.shape), rank=rank, ridge=ridge, validation=held,
                                   sde=sde, dtype=dtype)
        info: dict[str, Any] = {"components": components, "signals": n, "cluster_sizes": counts.long().tolist(),
                                "covariance": covariance, "within": dict(pooled.fit_info),
                                "ridge": float(pooled.fit_info["ridge"])}
        shape = (components, *signals.shape[1:])
        if covariance == "shared":
            mixture = cls(means.reshape(shape), counts, pooled)
            mixture.fit_info = info
            return mixture

        def build(s: float) -> GaussianMixture:
            covs = [_shrunk_covariance(resid[labels == k], pooled, s, rank) for k in range(components)]
            return cls(means.reshape(shape), counts, covs)

        best, scores = build(weights_s[0]), []
        if len(weights_s) > 1:
            assert validation is not None
            v = validation.to(dtype)
            for s in weights_s:
                candidate = build(s)
                scores.append(float(candidate.log_prob(v).mean()))
            best = build(weights_s[max(range(len(weights_s)), key=lambda i: scores[i])])
        best.fit_info = {**info, "shrinkage": weights_s[0] if not scores else
                         weights_s[max(range(len(weights_s)), key=lambda i: scores[i])],
                         "shrinkage_candidates": weights_s, "validation_log_likelihood": scores}
        return best

    # -- diffusion --------------------------------------------------------------------------------------
    def _component_log_probs(self, x: Tensor, t: Tensor) -> Tensor:
        """``log w_k + log N(x; alpha mu_k, alpha^2 S_k + sigma^2 I)``: ``(B, K)``."""
        alpha = self.sde.alpha(t)
        out = []
        for k in range(self.components):
            shifted = x - alpha[:, None, None] * self.means[k]
            out.append(self._covariance(k).marginal_log_prob(shifted, t))
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
        alpha = self.sde.alpha(t)[:, None, None]
        if self.shared:
            resp = torch.softmax(self._component_log_probs(x, t), dim=1)
            mbar = torch.einsum("bk,kcv->bcv", resp, self.means)
            return mbar + self.within.denoise(x - alpha * mbar, t)
        logs, outs = [], []
        for k in range(self.components):  # one projection per component serves its density and its filter
            log_p, out = self._covariance(k)._log_prob_and_denoise((x - alpha * self.means[k]).flatten(1), t)
            logs.append(log_p)
            outs.append(self.means[k].flatten() + out)
        resp = torch.softmax(torch.stack(logs, 1) + self.log_weights, dim=1)
        return torch.einsum("bk,kbd->bd", resp, torch.stack(outs)).reshape(x.shape)

    def denoising_variance(self, t: Tensor) -> Tensor:
        """A scale of :meth:`denoise`'s squared error per coordinate, per channel: the output scale of a ``"mixture"`` prior.

        ``sum_k w_k (v_k(t) + mean_i [sigma^2 (alpha^2 S_k + sigma^2 I)^{-1} (mu_k - mbar)]_i^2)``
        with ``v_k`` component ``k``'s posterior variance (:meth:`GaussianPrior.denoising_variance`)
        and ``mbar = sum_k w_k mu_k``: each component's error when the component is known, plus
        what not knowing it costs when the responsibilities stay at the weights. The mixture's
        error meets the first term at small noise (the component is plain) and the sum at full
        noise (nothing tells the components apart). With a shared covariance the sum is the error
        of one estimator, the shared Wiener filter around ``mbar``, so the posterior mean (the
        least-squares optimum) never exceeds it. With one component it is the Gaussian's
        posterior variance.

        Shapes:
            t: ``(B,)``; returns ``(B, C)``.
        """
        alpha = self.sde.alpha(t)[:, None]
        var = self.sde.std(t)[:, None] ** 2
        w = self.log_weights.exp()
        mbar = torch.einsum("k,kcv->cv", w, self.means)
        out = torch.zeros(t.shape[0], self.channels, dtype=self.means.dtype, device=self.means.device)

        def resolvent(lam: Tensor) -> Tensor:  # sigma^2 / (alpha^2 lam + sigma^2)
            den = alpha**2 * lam + var
            return torch.where(den > 0, var / den.clamp_min(torch.finfo(den.dtype).tiny), 1.0)

        for k in range(self.components):
            cov = self._covariance(k)
            v = (self.means[k] - mbar).flatten()
            if self.channels == 1:  # |P v|^2 = r_f^2 |v|^2 + sum_j (r_j^2 - r_f^2) (q_j . v)^2, P = r(S)
                proj = v @ cov.eigvecs
                on, off = resolvent(cov.eigvals[None]), resolvent(cov.floor.reshape(1, 1))
                if cov.rank == cov.num_dims:
                    off = torch.zeros_like(off)
                between = off.square() * v.square().sum() + ((on.square() - off.square()) @ proj.square())[:, None]
                between = (between / self.num_vertices).clamp_min(0.0)
            else:
                p_v = cov._spectral(resolvent, v[None].expand(t.shape[0], -1))
                between = p_v.reshape(t.shape[0], self.channels, self.num_vertices).square().mean(-1)
            out = out + w[k] * (cov.denoising_variance(t) + between)
        return out

    def posterior(self, operator: torch.nn.Module) -> LinearMixturePosterior:
        """The exact posterior ``p(x | y)`` under a linear operator with Gaussian noise (a mixture again).

        See :class:`~manifold_ps.priors.LinearMixturePosterior`.
        """
        from .mixture_posterior import LinearMixturePosterior

        return LinearMixturePosterior(self, operator)

    def sample_data(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples of the data distribution: ``(n, C, V)``."""
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        if self.shared:
            return self.means[k] + self.within.sample_data(n, generator=generator)
        out = self.means[k].clone()
        for j in range(self.components):
            rows = torch.nonzero(k == j).flatten()
            if rows.numel():
                out[rows] += self._covariance(j).sample_data(rows.numel(), generator=generator)
        return out

    def extra_repr(self) -> str:
        return (f"components={self.components}, covariance={'shared' if self.shared else 'per-component'}, "
                f"channels={self.channels}, num_vertices={self.num_vertices}")


def _shrunk_covariance(resid: Tensor, pooled: GaussianPrior, s: float, rank: int | None) -> GaussianPrior:
    """``(1 - s) R^T R / (n - 1) + s S_0 + ridge I`` as a zero-mean :class:`GaussianPrior`.

    ``S_0`` is ``pooled``'s covariance less its ridge. Exact in the span of ``pooled``'s directions
    and the rows of ``resid`` ``(n, d)`` (outside it: ``s`` times ``pooled``'s floor); then truncated
    to the top ``rank`` directions, the dropped variance averaged into the floor.
    """
    ridge = float(pooled.fit_info.get("ridge", 0.0))
    d = resid.shape[1]
    lam0 = (pooled.eigvals - ridge).clamp_min(0.0)
    f0 = max(float(pooled.floor) - ridge, 0.0)
    basis, _ = torch.linalg.qr(torch.cat([pooled.eigvecs, resid.T], dim=1))  # (d, m), m <= d
    proj_r = resid @ basis  # (n, m)
    proj_q = pooled.eigvecs.T @ basis  # (r, m)
    inner = (1 - s) * proj_r.T @ proj_r / max(resid.shape[0] - 1, 1)
    inner = inner + s * (proj_q.T * (lam0 - f0)) @ proj_q
    inner.diagonal().add_(s * f0)
    evals, evecs = torch.linalg.eigh(0.5 * (inner + inner.T))
    evals, evecs = evals.flip(0).clamp_min(s * f0), basis @ evecs.flip(1)
    m = evals.shape[0]
    floor = s * f0
    keep = m if rank is None else min(rank, m)
    if keep < m:
        floor = (float(evals[keep:].sum()) + (d - m) * s * f0) / (d - keep)
        evals, evecs = evals[:keep].clamp_min(floor), evecs[:, :keep]
    zero = torch.zeros(pooled.mean.shape, dtype=pooled.mean.dtype, device=pooled.mean.device)
    return GaussianPrior.from_factors(zero, evecs, evals + ridge, floor + ridge, pooled.sde,
                                      fit_info={"signals": int(resid.shape[0]), "shrinkage": s, "rank": keep,
                                                "ridge": ridge})
