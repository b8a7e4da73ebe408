"""Gaussian priors over vertex signals: fitted to clean data, exact under diffusion.

A :class:`GaussianPrior` holds ``N(mean, S)`` in spectral form, low rank plus a scaled identity:

    S = floor I + Q diag(eigvals - floor) Q^T,     Q: (d, r) orthonormal, eigvals >= floor >= 0,

so ``r = d`` is a full covariance and ``r < d`` keeps the top ``r`` directions with the rest
modelled as isotropic variance ``floor`` (probabilistic PCA). Everything about it is exact and
costs ``O(d r)`` per signal:

- the VP marginal ``x_t ~ N(alpha mean, alpha^2 S + sigma^2 I)`` and its log-density;
- the Tweedie (Wiener) denoiser ``E[x_0 | x_t] = mean + alpha S (alpha^2 S + sigma^2 I)^{-1} (x_t - alpha mean)``,
  hence the score and the ELBO of :class:`~manifold_ps.priors.ScorePrior`;
- exact samples, and (:meth:`GaussianPrior.posterior`) the posterior under any linear operator
  with Gaussian noise (:class:`~manifold_ps.priors.LinearGaussianPosterior`).

:meth:`GaussianPrior.fit` estimates it from clean training signals (mean and covariance, with an
optional rank, a ridge chosen on validation signals, or Ledoit--Wolf shrinkage);
:meth:`~GaussianPrior.save` / :meth:`~GaussianPrior.load` keep it in one file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from .._checks import check_finite, check_signal
from .base import ScorePrior
from .sde import VPSDE

if TYPE_CHECKING:
    from .gaussian_posterior import LinearGaussianPosterior

__all__ = ["GaussianPrior", "GAUSSIAN_FORMAT", "linear_gaussian_posterior", "operator_matrix"]

GAUSSIAN_FORMAT = "manifold_ps.GaussianPrior/1"
"""Value of the ``"format"`` key of a saved :class:`GaussianPrior`."""

_DENSE_LIMIT = 8192
"""Largest ``d`` for which :meth:`GaussianPrior.fit` forms the ``d x d`` covariance."""


class GaussianPrior(ScorePrior):
    """Diffusion prior of Gaussian data ``N(mean, S)`` with the exact denoiser, score and samples.

    Built from a dense covariance (``GaussianPrior(mean, cov)``), from its spectral factors
    (:meth:`from_factors`) or from data (:meth:`fit`).

    Args:
        mean: ``(C, V)`` mean signal.
        cov: ``(C*V, C*V)`` symmetric positive semi-definite covariance of the flattened signal
            (positive definite unless ``allow_singular``).
        sde: The forward SDE; a default :class:`VPSDE` if omitted.
        allow_singular: Accept a singular covariance (the density :meth:`log_prob` is then
            infinite off the support; denoiser, samples and posteriors stay exact).

    Attributes:
        mean: ``(C, V)``.
        eigvecs: ``(d, r)`` orthonormal directions ``Q``.
        eigvals: ``(r,)`` variances along them (descending when fitted, in ``eigh`` order when
            built from a dense covariance).
        floor: ``()`` isotropic variance of the other ``d - r`` directions.
        fit_info: How the prior was fitted (sizes, rank, shrinkage, validation scores).

    Example:
        >>> prior = GaussianPrior(torch.zeros(1, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
        >>> x = torch.ones(2, 1, 3, dtype=torch.float64)
        >>> prior.denoise(x, torch.full((2,), 0.5, dtype=torch.float64)).shape
        torch.Size([2, 1, 3])
    """

    mean: Tensor
    eigvals: Tensor
    eigvecs: Tensor
    floor: Tensor

    def __init__(self, mean: Tensor, cov: Tensor, sde: VPSDE | None = None, *, allow_singular: bool = False) -> None:
        if mean.ndim != 2:
            raise ValueError(f"mean must have shape (C, V), got {tuple(mean.shape)}")
        d = mean.numel()
        if cov.shape != (d, d):
            raise ValueError(f"cov must have shape ({d}, {d}), got {tuple(cov.shape)}")
        check_finite(cov, "cov")
        if not torch.allclose(cov, cov.T, atol=1e-10 * float(cov.abs().max())):
            raise ValueError("cov must be symmetric")
        evals, evecs = torch.linalg.eigh(cov)
        tol = -1e-10 * float(evals.abs().max()) if allow_singular else 0.0
        if float(evals.min()) <= tol:
            raise ValueError(f"cov must be positive {'semi-' if allow_singular else ''}definite "
                             f"(smallest eigenvalue {float(evals.min()):.3g})")
        self._init(mean, evecs, evals.clamp_min(0.0), evals.new_zeros(()), sde)

    def _init(self, mean: Tensor, eigvecs: Tensor, eigvals: Tensor, floor: Tensor, sde: VPSDE | None,
              fit_info: dict[str, Any] | None = None) -> None:
        ScorePrior.__init__(self, sde or VPSDE(), mean.shape[0], mean.shape[1])
        self.register_buffer("mean", mean.clone())
        self.register_buffer("eigvecs", eigvecs.clone())
        self.register_buffer("eigvals", eigvals.clone())
        self.register_buffer("floor", torch.as_tensor(floor, dtype=mean.dtype, device=mean.device).clone())
        self.fit_info: dict[str, Any] = dict(fit_info or {})

    @classmethod
    def from_factors(cls, mean: Tensor, eigvecs: Tensor, eigvals: Tensor, floor: float | Tensor = 0.0,
                     sde: VPSDE | None = None, *, fit_info: dict[str, Any] | None = None) -> GaussianPrior:
        """The prior with covariance ``floor I + Q diag(eigvals - floor) Q^T``.

        Args:
            mean: ``(C, V)``.
            eigvecs: ``(d, r)`` with orthonormal columns ``Q``.
            eigvals: ``(r,)``, each ``>= floor``.
            floor: Variance of the directions orthogonal to ``Q`` (``>= 0``; unused when ``r = d``).
            sde: The forward SDE.
            fit_info: Provenance to keep with the prior.

        Example:
            >>> q = torch.eye(4, dtype=torch.float64)[:, :1]
            >>> p = GaussianPrior.from_factors(torch.zeros(1, 4, dtype=torch.float64), q, q.new_tensor([4.0]), 1.0)
            >>> torch.diagonal(p.covariance()).tolist()
            [4.0, 1.0, 1.0, 1.0]
        """
        if mean.ndim != 2:
            raise ValueError(f"mean must have shape (C, V), got {tuple(mean.shape)}")
        d = mean.numel()
        if eigvecs.ndim != 2 or eigvecs.shape[0] != d or eigvals.shape != (eigvecs.shape[1],):
            raise ValueError(f"need eigvecs ({d}, r) and eigvals (r,), got {tuple(eigvecs.shape)} and {tuple(eigvals.shape)}")
        for name, t in (("mean", mean), ("eigvecs", eigvecs), ("eigvals", eigvals)):
            check_finite(t, name)
        floor_t = torch.as_tensor(floor, dtype=mean.dtype, device=mean.device)
        if not float(floor_t) >= 0.0:
            raise ValueError(f"floor must be non-negative, got {float(floor_t)}")
        if eigvals.numel() and float((eigvals - floor_t).min()) < -1e-12 * max(1.0, float(eigvals.max())):
            raise ValueError("every eigenvalue must be >= floor")
        gram = eigvecs.T @ eigvecs
        if not torch.allclose(gram, torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device), atol=1e-5):
            raise ValueError("eigvecs must have orthonormal columns")
        prior = cls.__new__(cls)
        prior._init(mean, eigvecs, torch.maximum(eigvals, floor_t), floor_t, sde, fit_info)
        return prior

    # -- the covariance -----------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        """Number ``r`` of explicit directions."""
        return int(self.eigvals.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the density is stored and evaluated in (that of its mean)."""
        return self.mean.dtype

    @property
    def factor(self) -> Tensor:
        """``U = Q diag(sqrt(eigvals - floor))``, so that ``S = floor I + U U^T``: ``(d, r)``."""
        return self.eigvecs * (self.eigvals - self.floor).clamp_min(0.0).sqrt()

    def covariance(self) -> Tensor:
        """The dense covariance ``(d, d)`` (for small ``d``: tests and figures)."""
        u = self.factor
        return self.floor * torch.eye(self.num_dims, dtype=u.dtype, device=u.device) + u @ u.T

    @property
    def cov(self) -> Tensor:
        """Alias of :meth:`covariance`."""
        return self.covariance()

    def cov_matvec(self, v: Tensor) -> Tensor:
        """``S v`` for flattened signals: ``(..., d) -> (..., d)``."""
        return self.floor * v + ((v @ self.eigvecs) * (self.eigvals - self.floor)) @ self.eigvecs.T

    def logdet(self) -> Tensor:
        """``log det S`` (``-inf`` for a singular covariance): ``()``."""
        out = torch.log(self.eigvals).sum()
        if self.rank < self.num_dims:
            out = out + (self.num_dims - self.rank) * torch.log(self.floor)
        return out

    def _spectral(self, f: Any, x: Tensor, proj: Tensor | None = None) -> Tensor:
        """Apply ``g(S)`` to rows ``x (B, d)``, with ``f(lam)`` giving ``g`` per batch row ``(B, k)``
        (``proj``: ``x Q`` when the caller has it already)."""
        proj = x @ self.eigvecs if proj is None else proj
        on = f(self.eigvals[None])  # (B or 1, r)
        if self.rank == self.num_dims:
            return (proj * on) @ self.eigvecs.T
        off = f(self.floor.reshape(1, 1))  # (B or 1, 1)
        return off * x + (proj * (on - off)) @ self.eigvecs.T

    # -- diffusion --------------------------------------------------------------------------------------
    def denoise(self, x: Tensor, t: Tensor) -> Tensor:
        check_signal(x, self.num_vertices, "x", channels=self.channels)
        t = self._check_t(x, t)
        alpha = self.sde.alpha(t)[:, None]
        centered = x.flatten(1) - alpha * self.mean.flatten()
        return (self.mean.flatten() + self._spectral(self._wiener_gain(t), centered)).reshape(x.shape)

    def _wiener_gain(self, t: Tensor) -> Any:
        """``lam -> alpha lam / (alpha^2 lam + sigma^2)`` at times ``t (B,)``, for :meth:`_spectral`."""
        alpha = self.sde.alpha(t)[:, None]
        var = self.sde.std(t)[:, None] ** 2

        def wiener(lam: Tensor) -> Tensor:
            den = alpha**2 * lam + var
            return torch.where(den > 0, alpha * lam / den.clamp_min(torch.finfo(den.dtype).tiny), 0.0)

        return wiener

    def denoising_variance(self, t: Tensor) -> Tensor:
        """Mean posterior variance per channel, the expected squared error of :meth:`denoise`.

        ``mean_i [S (I + alpha^2 / sigma^2 S)^{-1}]_ii`` over each channel's vertices: the error per
        coordinate of the Wiener denoiser on any data with this mean and covariance.

        Shapes:
            t: ``(B,)``; returns ``(B, C)`` in the prior's dtype.

        Example:
            >>> p = GaussianPrior(torch.zeros(1, 3, dtype=torch.float64), 4 * torch.eye(3, dtype=torch.float64))
            >>> t = torch.tensor([0.0, 1.0], dtype=torch.float64)
            >>> v = p.denoising_variance(t)  # 0 without noise; about 4 (the prior's) at t = 1
            >>> round(float(v[0, 0]), 6), round(float(v[1, 0]), 2)
            (0.0, 4.0)
        """
        dtype = self.eigvals.dtype
        t = t.to(dtype)
        alpha = self.sde.alpha(t)[:, None]
        var = self.sde.std(t)[:, None] ** 2

        def post_var(lam: Tensor) -> Tensor:  # variance left along a direction of variance lam
            den = alpha**2 * lam + var
            return torch.where(den > 0, lam * var / den.clamp_min(torch.finfo(dtype).tiny), lam)

        # diag(g(S))_i = g(floor) + sum_k Q_ik^2 (g(lam_k) - g(floor)), averaged over each channel
        weights = self.eigvecs.square().reshape(self.channels, self.num_vertices, -1).mean(1)  # (C, r)
        off = post_var(self.floor.reshape(1, 1))  # (B, 1)
        return (off + (post_var(self.eigvals[None]) - off) @ weights.T).clamp_min(0.0)

    def marginal_log_prob(self, x: Tensor, t: Tensor) -> Tensor:
        """Exact ``log p_t(x)``: ``(B, C, V), (B,) -> (B,)``; ``t = 0`` gives the data density."""
        check_signal(x, self.num_vertices, "x", channels=self.channels)
        t = self._check_t(x, t)
        c = x.flatten(1) - self.sde.alpha(t)[:, None] * self.mean.flatten()
        return self._log_density(c, c @ self.eigvecs, t)

    def _log_density(self, c: Tensor, proj: Tensor, t: Tensor) -> Tensor:
        """``log p_t`` from ``c = x_t - alpha mean`` ``(B, d)`` and its projection ``c Q`` ``(B, r)``: ``(B,)``."""
        alpha = self.sde.alpha(t)[:, None]
        var = self.sde.std(t)[:, None] ** 2
        lam = alpha**2 * self.eigvals + var  # (B, r)
        quad = (proj**2 / lam).sum(-1)
        logdet = torch.log(lam).sum(-1)
        rest = self.num_dims - self.rank
        if rest:
            lam_off = (alpha[:, 0] ** 2 * self.floor + var[:, 0])
            if bool((lam_off <= 0).any()):
                raise ValueError("the covariance is singular: its density at t = 0 does not exist (fit with a ridge)")
            perp = (c.square().sum(-1) - proj.square().sum(-1)).clamp_min(0.0)
            quad = quad + perp / lam_off
            logdet = logdet + rest * torch.log(lam_off)
        return -0.5 * (quad + logdet + self.num_dims * math.log(2 * math.pi))

    def _log_prob_and_denoise(self, centered: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``log p_t`` and ``E[x_0 | x_t] - mean`` from ``c = x_t - alpha mean`` ``(B, d)``, sharing ``c Q``.

        The same numbers as :meth:`marginal_log_prob` and :meth:`denoise` (minus the mean), with
        one projection onto the eigenvectors instead of two: ``(B,)`` and ``(B, d)``.
        """
        proj = centered @ self.eigvecs
        return self._log_density(centered, proj, t), self._spectral(self._wiener_gain(t), centered, proj)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact data log-density ``log N(x; mean, S)``: ``(B, C, V) -> (B,)``."""
        return self.marginal_log_prob(x, x.new_zeros(x.shape[0]))

    def sample_data(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples of the data distribution: ``(n, C, V)``."""
        kw: dict[str, Any] = dict(generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        z = torch.randn(n, self.rank, **kw)
        x = self.mean.flatten() + (z * (self.eigvals - self.floor).clamp_min(0.0).sqrt()) @ self.eigvecs.T
        if float(self.floor) > 0 and self.rank < self.num_dims:
            x = x + self.floor.sqrt() * torch.randn(n, self.num_dims, **kw)
        return x.reshape(n, self.channels, self.num_vertices)

    def posterior(self, operator: torch.nn.Module) -> LinearGaussianPosterior:
        """The exact posterior ``p(x | y)`` under a linear operator with Gaussian noise.

        See :class:`~manifold_ps.priors.LinearGaussianPosterior`.
        """
        from .gaussian_posterior import LinearGaussianPosterior

        return LinearGaussianPosterior(self, operator)

    # -- estimation ---------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        signals: Tensor,
        *,
        rank: int | None = None,
        ridge: float | Sequence[float] = 0.0,
        shrinkage: Literal["none", "ledoit-wolf"] = "none",
        validation: Tensor | None = None,
        sde: VPSDE | None = None,
        dtype: torch.dtype = torch.float64,
        batch_size: int = 4096,
    ) -> GaussianPrior:
        """Fit mean and covariance of clean signals.

        The empirical covariance (divided by ``N - 1``) is decomposed; ``rank=r`` keeps its top
        ``r`` eigenpairs and models the remaining variance as isotropic (the mean of the dropped
        eigenvalues, as in probabilistic PCA); ``rank=None`` keeps every numerically non-zero
        direction. ``shrinkage="ledoit-wolf"`` shrinks toward ``tr(S)/d I`` with the
        Ledoit--Wolf (2004) weight; ``ridge`` adds ``ridge * I``. A sequence of ridges is
        scored by the exact log-likelihood of the ``validation`` signals and the best is kept.

        Above ``d = 8192`` the covariance is never formed: a randomized SVD of the centred data
        (``torch.svd_lowrank``) gives the top ``rank`` directions (``rank`` is then required and
        Ledoit--Wolf is not available).

        Args:
            signals: Clean signals ``(N, C, V)``, ``N >= 2``; any floating dtype.
            rank: Directions to keep (``None``: all with non-zero variance).
            ridge: Added variance, or candidates to choose from on ``validation``.
            shrinkage: ``"none"`` or ``"ledoit-wolf"`` (applied before the ridge).
            validation: Held-out clean signals ``(M, C, V)`` that choose among several ridges.
            sde: The forward SDE of the returned prior.
            dtype: Precision of the estimate and of the returned prior.
            batch_size: Signals per accumulation step.

        Returns:
            The fitted prior; ``fit_info`` records the sizes, the rank, the shrinkage weight, the
            chosen ridge and every candidate's validation log-likelihood (nats per signal).

        Example:
            >>> x = torch.randn(500, 1, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            >>> prior = GaussianPrior.fit(2.0 * x + 1.0)
            >>> prior.mean.round(decimals=0).tolist(), prior.covariance().diagonal().round(decimals=0).tolist()
            ([[1.0, 1.0, 1.0]], [4.0, 4.0, 4.0])
        """
        check_signal(signals, signals.shape[-1] if signals.ndim == 3 else -1, "signals")
        n, channels, num_vertices = signals.shape
        d = channels * num_vertices
        if n < 2:
            raise ValueError(f"fit needs at least 2 signals, got {n}")
        if shrinkage not in ("none", "ledoit-wolf"):
            raise ValueError(f"shrinkage must be 'none' or 'ledoit-wolf', got {shrinkage!r}")
        if rank is not None and not 1 <= rank <= d:
            raise ValueError(f"rank must be in [1, {d}], got {rank}")
        ridges = [float(ridge)] if isinstance(ridge, (int, float)) else [float(r) for r in ridge]
        if not ridges or any(not (math.isfinite(r) and r >= 0) for r in ridges):
            raise ValueError(f"ridge must be a non-negative number or a non-empty sequence of them, got {ridge!r}")
        if len(ridges) > 1 and validation is None:
            raise ValueError("choosing among several ridges needs validation signals")
        if validation is not None:
            check_signal(validation, num_vertices, "validation", channels=channels)
        dev = signals.device
        mean = torch.zeros(d, dtype=dtype, device=dev)
        for start in range(0, n, batch_size):
            mean += signals[start:start + batch_size].flatten(1).to(dtype).sum(0)
        mean /= n
        info: dict[str, Any] = {"signals": n, "dims": d, "shrinkage": shrinkage}

        if d <= _DENSE_LIMIT:
            cov = torch.zeros(d, d, dtype=dtype, device=dev)
            for start in range(0, n, batch_size):
                xc = signals[start:start + batch_size].flatten(1).to(dtype) - mean
                cov += xc.T @ xc
            cov /= n - 1
            cov = 0.5 * (cov + cov.T)
            total = float(cov.diagonal().sum())
            if shrinkage == "ledoit-wolf":
                rho = _ledoit_wolf_weight(signals, mean, cov * ((n - 1) / n), batch_size)
                target = total / d
                cov = (1 - rho) * cov
                cov.diagonal().add_(rho * target)
                info["ledoit_wolf_weight"] = rho
            evals, evecs = torch.linalg.eigh(cov)
            evals, evecs = evals.flip(0).clamp_min(0.0), evecs.flip(1)
            keep = rank if rank is not None else int((evals > evals[0] * d * torch.finfo(dtype).eps).sum())
            keep = max(keep, 1)
            dropped = evals[keep:]
            floor = float(dropped.mean()) if dropped.numel() and rank is not None else 0.0  # else: numerically zero
            evals, evecs = evals[:keep], evecs[:, :keep]
        else:
            if rank is None:
                raise ValueError(f"signals of {d} dimensions need an explicit rank (the covariance is not formed)")
            if shrinkage != "none":
                raise ValueError(f"Ledoit-Wolf shrinkage needs the dense covariance (d <= {_DENSE_LIMIT}), got d = {d}")
            xc = signals.flatten(1).to(dtype) - mean
            _, s, v = torch.svd_lowrank(xc, q=min(rank + 10, n, d), niter=4)
            evals, evecs = s[:rank].square() / (n - 1), v[:, :rank]
            total = float(xc.square().sum()) / (n - 1)
            floor = max(total - float(evals.sum()), 0.0) / (d - rank) if rank < d else 0.0
        info["rank"] = int(evals.shape[0])
        info["floor_before_ridge"] = floor
        info["total_variance"] = total
        mean_cv = mean.reshape(channels, num_vertices)

        def build(r: float) -> GaussianPrior:
            return cls.from_factors(mean_cv, evecs, evals + r, floor + r, sde, fit_info={**info, "ridge": r})

        best = build(ridges[0])
        if validation is not None:
            scores = []
            for r in ridges:
                candidate = build(r)
                try:
                    ll = float(_mean_log_prob(candidate, validation.to(device=dev, dtype=dtype), batch_size))
                except ValueError:  # singular: no density off the support
                    ll = -math.inf
                scores.append(ll)
            best = build(ridges[max(range(len(ridges)), key=lambda i: scores[i])])
            best.fit_info.update(validation_signals=int(validation.shape[0]), ridge_candidates=ridges,
                                 validation_log_likelihood=scores)
        return best

    # -- one file -------------------------------------------------------------------------------------------
    def saved_state(self) -> dict[str, Any]:
        """What :meth:`save` writes (tensors on the CPU); :meth:`from_saved` rebuilds the prior."""
        return {
            "format": GAUSSIAN_FORMAT, "sde": self.sde.config(), "channels": self.channels,
            "num_vertices": self.num_vertices, "mean": self.mean.cpu(), "eigvecs": self.eigvecs.cpu(),
            "eigvals": self.eigvals.cpu(), "floor": self.floor.cpu(), "fit_info": self.fit_info,
        }

    def save(self, path: str | Path) -> Path:
        """Write the prior (mean, spectral factors, SDE, provenance) atomically to one file."""
        from ..training import save_checkpoint

        return save_checkpoint(self.saved_state(), path)

    @classmethod
    def from_saved(cls, state: dict[str, Any], *, source: str = "the saved Gaussian prior",
                   num_vertices: int | None = None) -> GaussianPrior:
        """Rebuild a prior from :meth:`saved_state` (what :meth:`load` reads from a file).

        Raises:
            ValueError: another kind of state, or another vertex count than ``num_vertices``.
        """
        if state.get("format") != GAUSSIAN_FORMAT:
            raise ValueError(f"{source} is a {state.get('format')!r} file, not a saved Gaussian prior "
                             f"({GAUSSIAN_FORMAT!r})")
        if num_vertices is not None and int(state["num_vertices"]) != num_vertices:
            raise ValueError(f"Gaussian prior {source} has {state['num_vertices']} vertices, expected {num_vertices}")
        sde_cfg = {k: v for k, v in state["sde"].items() if k != "type"}
        return cls.from_factors(state["mean"], state["eigvecs"], state["eigvals"], state["floor"], VPSDE(**sde_cfg),
                                fit_info=state.get("fit_info"))

    @classmethod
    def load(cls, path: str | Path, *, num_vertices: int | None = None,
             map_location: str | torch.device | None = "cpu") -> GaussianPrior:
        """Load a prior written by :meth:`save`.

        Raises:
            ValueError: a missing or corrupt file, another kind of file, or a prior with another
                vertex count than ``num_vertices``.
        """
        from ..training import load_checkpoint

        state = load_checkpoint(path, map_location=map_location,
                                required_keys=("format", "mean", "eigvecs", "eigvals", "floor", "sde"))
        return cls.from_saved(state, source=str(path), num_vertices=num_vertices)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_vertices={self.num_vertices}, rank={self.rank}, floor={float(self.floor):.3g}"


def _mean_log_prob(prior: GaussianPrior, x: Tensor, batch_size: int) -> Tensor:
    return torch.cat([prior.log_prob(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]).mean()


def _ledoit_wolf_weight(signals: Tensor, mean: Tensor, cov_mle: Tensor, batch_size: int) -> float:
    """Ledoit--Wolf (2004) shrinkage weight toward ``tr(S)/d I`` for the MLE covariance ``S``."""
    n, d = signals.shape[0], cov_mle.shape[0]
    mu = float(cov_mle.diagonal().sum()) / d
    d2 = float((cov_mle - mu * torch.eye(d, dtype=cov_mle.dtype, device=cov_mle.device)).square().sum())
    fro2 = float(cov_mle.square().sum())
    b2 = 0.0
    for start in range(0, n, batch_size):
        xc = signals[start:start + batch_size].flatten(1).to(cov_mle.dtype) - mean
        sq = xc.square().sum(-1)
        quad = ((xc @ cov_mle) * xc).sum(-1)
        b2 += float((sq.square() - 2 * quad + fro2).sum())
    b2 = min(b2 / n**2, d2)
    return b2 / d2 if d2 > 0 else 1.0


def operator_matrix(operator: torch.nn.Module, channels: int, num_vertices: int, *, like: Tensor) -> Tensor:
    """Dense matrix of a linear operator acting on one signal (single-mask operators only).

    Returns:
        ``(M, C*V)`` with ``A(x).flatten() = matrix @ x.flatten()``.
    """
    d = channels * num_vertices
    basis = torch.eye(d, dtype=like.dtype, device=like.device).reshape(d, channels, num_vertices)
    return operator.A(basis).reshape(d, -1).T


def linear_gaussian_posterior(prior: GaussianPrior, operator: torch.nn.Module, y: Tensor) -> tuple[Tensor, Tensor]:
    """Exact posterior ``p(x | y)`` by dense linear algebra (a reference for small problems).

    Entries of ``y`` that the operator does not measure (``operator.measured``) are ignored.
    :meth:`GaussianPrior.posterior` computes the same in ``O(d r)`` form, with draws and evidence.

    Args:
        prior: The Gaussian prior.
        operator: A linear operator with ``sigma > 0`` whose parameters are shared by the batch
            (or one operator per ``y`` row when it was built with a batch of one).
        y: Measurements ``(B, ...)``.

    Returns:
        ``(mean (B, C, V), cov (C*V, C*V))`` -- the covariance does not depend on ``y``.
    """
    if operator.sigma <= 0:
        raise ValueError("linear_gaussian_posterior needs sigma > 0")
    like = prior.mean
    a = operator_matrix(operator, prior.channels, prior.num_vertices, like=like)
    meas = operator.measured(operator.A(prior.mean[None])).expand(1, *y.shape[1:]).reshape(-1).to(like.dtype)
    a = a * meas[:, None]
    s = prior.covariance()
    gain = s @ a.T @ torch.linalg.inv(a @ s @ a.T + operator.sigma**2 * torch.eye(a.shape[0], dtype=like.dtype,
                                                                                   device=like.device))
    cov = s - gain @ a @ s
    cov = 0.5 * (cov + cov.T)
    mean = prior.mean.flatten() + ((y.flatten(1) - prior.mean.flatten() @ a.T) * meas) @ gain.T
    return mean.reshape(y.shape[0], prior.channels, prior.num_vertices), cov
