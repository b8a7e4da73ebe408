"""Gaussian data, whose diffusion is known in closed form: the analytic truth for tests.

For ``x_0 ~ N(mu, Sigma)`` the VP marginal is ``x_t ~ N(alpha mu, alpha^2 Sigma + sigma^2 I)`` and
the Tweedie denoiser is linear:

    E[x_0 | x_t] = mu + alpha Sigma (alpha^2 Sigma + sigma^2 I)^{-1} (x_t - alpha mu).

With a linear operator and Gaussian noise the posterior is Gaussian too
(:func:`linear_gaussian_posterior`), so every sampler can be checked against exact numbers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_signal
from .base import ScorePrior
from .sde import VPSDE, append_dims

__all__ = ["GaussianPrior", "linear_gaussian_posterior", "operator_matrix"]


class GaussianPrior(ScorePrior):
    """Diffusion prior of Gaussian data ``N(mean, cov)`` with the exact denoiser and score.

    Args:
        mean: ``(C, V)`` mean signal.
        cov: ``(C*V, C*V)`` symmetric positive definite covariance (of the flattened signal).
        sde: The forward SDE; a default :class:`VPSDE` if omitted.

    Example:
        >>> prior = GaussianPrior(torch.zeros(1, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
        >>> x = torch.ones(2, 1, 3, dtype=torch.float64)
        >>> prior.denoise(x, torch.full((2,), 0.5, dtype=torch.float64)).shape
        torch.Size([2, 1, 3])
    """

    mean: Tensor
    cov: Tensor
    eigvals: Tensor
    eigvecs: Tensor

    def __init__(self, mean: Tensor, cov: Tensor, sde: VPSDE | None = None) -> None:
        if mean.ndim != 2:
            raise ValueError(f"mean must have shape (C, V), got {tuple(mean.shape)}")
        d = mean.numel()
        if cov.shape != (d, d):
            raise ValueError(f"cov must have shape ({d}, {d}), got {tuple(cov.shape)}")
        if not torch.allclose(cov, cov.T, atol=1e-10 * float(cov.abs().max())):
            raise ValueError("cov must be symmetric")
        super().__init__(sde or VPSDE(), mean.shape[0], mean.shape[1])
        evals, evecs = torch.linalg.eigh(cov)
        if float(evals.min()) <= 0:
            raise ValueError(f"cov must be positive definite (smallest eigenvalue {float(evals.min()):.3g})")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("cov", cov.clone())
        self.register_buffer("eigvals", evals)
        self.register_buffer("eigvecs", evecs)

    def denoise(self, x: Tensor, t: Tensor) -> Tensor:
        check_signal(x, self.num_vertices, "x", channels=self.channels)
        t = self._check_t(x, t)
        alpha = self.sde.alpha(t)[:, None]
        var = self.sde.std(t)[:, None] ** 2
        centered = x.flatten(1) - alpha * self.mean.flatten()
        coef = alpha * self.eigvals / (alpha**2 * self.eigvals + var)  # (B, d)
        out = self.mean.flatten() + ((centered @ self.eigvecs) * coef) @ self.eigvecs.T
        return out.reshape(x.shape)

    def marginal_log_prob(self, x: Tensor, t: Tensor) -> Tensor:
        """Exact ``log p_t(x)``: ``(B, C, V), (B,) -> (B,)``; ``t = 0`` gives the data density."""
        t = self._check_t(x, t)
        alpha = self.sde.alpha(t)[:, None]
        var = self.sde.std(t)[:, None] ** 2
        lam = alpha**2 * self.eigvals + var  # (B, d)
        proj = (x.flatten(1) - alpha * self.mean.flatten()) @ self.eigvecs
        return -0.5 * ((proj**2 / lam).sum(-1) + torch.log(lam).sum(-1) + self.num_dims * math.log(2 * math.pi))

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact data log-density ``log N(x; mean, cov)``: ``(B, C, V) -> (B,)``."""
        return self.marginal_log_prob(x, x.new_zeros(x.shape[0]))

    def sample_data(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples of the data distribution: ``(n, C, V)``."""
        z = torch.randn(n, self.num_dims, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        x = self.mean.flatten() + (z * self.eigvals.sqrt()) @ self.eigvecs.T
        return x.reshape(n, self.channels, self.num_vertices)


def operator_matrix(operator: torch.nn.Module, channels: int, num_vertices: int, *, like: Tensor) -> Tensor:
    """Dense matrix of a linear operator acting on one signal (single-mask operators only).

    Returns:
        ``(M, C*V)`` with ``A(x).flatten() = matrix @ x.flatten()``.
    """
    d = channels * num_vertices
    basis = torch.eye(d, dtype=like.dtype, device=like.device).reshape(d, channels, num_vertices)
    return operator.A(basis).reshape(d, -1).T


def linear_gaussian_posterior(prior: GaussianPrior, operator: torch.nn.Module, y: Tensor) -> tuple[Tensor, Tensor]:
    """Exact posterior ``p(x | y)`` for a Gaussian prior, linear operator and Gaussian noise.

    Entries of ``y`` that the operator does not measure (``operator.measured``) are ignored.

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
    prec = torch.linalg.inv(prior.cov) + a.T @ a / operator.sigma**2
    cov = torch.linalg.inv(prec)
    cov = 0.5 * (cov + cov.T)
    rhs = torch.linalg.solve(prior.cov, prior.mean.flatten())[None] + (y.flatten(1) * meas) @ a / operator.sigma**2
    mean = rhs @ cov
    return mean.reshape(y.shape[0], prior.channels, prior.num_vertices), cov
