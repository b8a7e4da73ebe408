"""The exact posterior of a Gaussian prior under a linear operator with Gaussian noise.

For ``x ~ N(mu, S)`` with ``S = f I + U U^T`` (:class:`~manifold_ps.priors.GaussianPrior`) and
``y = A x + sigma n`` the posterior is ``N(m(y), C)`` with

    m(y) = mu + S A^T G^{-1} (y - A mu),   G = A S A^T + sigma^2 I,   C = S - S A^T G^{-1} A S,

and the evidence is ``log p(y) = log N(y; A mu, G)``. Two exact ways to compute it:

- **Masking and denoising** (``A`` selects entries, one mask per measurement allowed): batched
  Woodbury solves with the ``r x r`` capacitance ``K = I + U^T W U`` (``W`` = observed /
  ``(sigma^2 + f)``). The covariance is low rank plus diagonal,
  ``C = diag(s^2) + (b U) K^{-1} (b U)^T`` with ``b = sigma^2 / (sigma^2 + f)`` and
  ``s^2 = f sigma^2 / (sigma^2 + f)`` on observed entries, ``b = 1`` and ``s^2 = f`` elsewhere, so
  a draw costs ``O(d r)``.
- **Any other linear operator** whose parameters are shared by the batch (blur, downsampling):
  the dense ``M x M`` matrix ``G`` is factorised once; draws use Matheron's rule
  ``x = x_0 + S A^T G^{-1} (y - A x_0 - sigma n)`` with ``x_0`` a prior draw.

Only unmeasured entries of ``y`` (``operator.measured``) are ignored; ``sigma`` must be positive.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_finite, check_generator_device
from ..operators import Denoising, Inpainting, LinearOperator
from .gaussian import GaussianPrior, operator_matrix

__all__ = ["LinearGaussianPosterior"]

_CHUNK = 8
"""Masks per batched ``(d, r)`` product (bounds the memory of the structured path)."""


class LinearGaussianPosterior:
    """Closed-form posterior of a :class:`GaussianPrior` for one linear operator.

    Everything that does not depend on ``y`` (the factorisations) is computed once, here.

    Args:
        prior: The Gaussian prior.
        operator: A linear operator with ``sigma > 0``: :class:`~manifold_ps.operators.Inpainting`
            (one mask, or one per measurement) and :class:`~manifold_ps.operators.Denoising` take
            the low-rank path; any other :class:`~manifold_ps.operators.LinearOperator` the dense
            one (its parameters must be shared by the batch).

    Attributes:
        batch: Number of distinct operators (masks) held; ``y`` must have this batch or the
            operator is shared (``batch == 1``).
        structured: Whether the low-rank-plus-diagonal path is used.

    Shapes:
        ``y``: ``(B, C, V)`` (or ``(B, C, M)`` for non-vertex measurements); means ``(B, C, V)``;
        draws ``(B, n, C, V)``; evidence and log-determinants ``(B,)``.

    Example:
        >>> from manifold_ps.operators import Inpainting
        >>> prior = GaussianPrior(torch.zeros(1, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
        >>> post = prior.posterior(Inpainting(torch.tensor([True, False, True]), sigma=1.0))
        >>> post.mean(torch.ones(1, 1, 3, dtype=torch.float64))  # observed: y / (1 + sigma^2); missing: prior mean
        tensor([[[0.5000, 0.0000, 0.5000]]], dtype=torch.float64)
    """

    def __init__(self, prior: GaussianPrior, operator: torch.nn.Module) -> None:
        if not isinstance(operator, LinearOperator):
            raise ValueError(f"the Gaussian posterior needs a linear operator, got {type(operator).__name__}")
        if not operator.sigma > 0:
            raise ValueError("the Gaussian posterior needs measurement noise sigma > 0")
        if operator.num_vertices != prior.num_vertices:
            raise ValueError(f"the operator acts on {operator.num_vertices} vertices, the prior has {prior.num_vertices}")
        self.prior = prior
        self.operator = operator
        self.sigma2 = float(operator.sigma) ** 2
        self.structured = isinstance(operator, (Inpainting, Denoising))
        mu = prior.mean.flatten()
        self._mu = mu
        u = prior.factor  # (d, r)
        f = prior.floor
        if self.structured:
            if isinstance(operator, Inpainting):
                mask = operator.mask.to(mu.device).reshape(-1, 1, prior.num_vertices)
            else:
                mask = torch.ones(1, 1, prior.num_vertices, dtype=torch.bool, device=mu.device)
            self.observed = mask.expand(-1, prior.channels, -1).flatten(1)  # (b, d)
            m = self.observed.to(mu.dtype)
            c = self.sigma2 + f
            self._w = m / c  # (b, d)
            eye = torch.eye(u.shape[1], dtype=mu.dtype, device=mu.device)
            cap = torch.cat([eye + (u.T[None] * w[:, None, :]) @ u for w in self._w.split(_CHUNK)])
            self._chol = torch.linalg.cholesky(cap)  # (b, r, r)
            self._beta = torch.where(self.observed, self.sigma2 / c, torch.ones_like(m))
            self._s2 = torch.where(self.observed, f * self.sigma2 / c, f.expand_as(m))
            self._count = m.sum(-1)
            self._logdet_g = self._count * torch.log(c) + 2 * torch.log(torch.diagonal(self._chol, dim1=-2, dim2=-1)).sum(-1)
        else:
            a = operator_matrix(operator, prior.channels, prior.num_vertices, like=mu)  # (M, d)
            ay = operator.A(prior.mean[None])
            self._rows = operator.measured(ay).expand_as(ay).reshape(-1).to(mu.device)
            a = a[self._rows]
            self._a = a
            au = a @ u
            g = au @ au.T + f * (a @ a.T)
            g.diagonal().add_(self.sigma2)
            self._chol = torch.linalg.cholesky(g)[None]  # (1, M, M)
            self._sat = prior.cov_matvec(a).T  # S A^T: (d, M)
            self._count = mu.new_tensor([float(a.shape[0])])
            self._logdet_g = 2 * torch.log(torch.diagonal(self._chol, dim1=-2, dim2=-1)).sum(-1)
        self.batch = int(self._chol.shape[0])

    # -- helpers -------------------------------------------------------------------------------------------
    def _check_y(self, y: Tensor) -> Tensor:
        check_finite(y, "y")
        if y.ndim != 3 or y.shape[1] != self.prior.channels:
            raise ValueError(f"y must have shape (batch, {self.prior.channels}, ...), got {tuple(y.shape)}")
        if self.batch not in (1, y.shape[0]):
            raise ValueError(f"y has batch {y.shape[0]} but the operator holds {self.batch} masks")
        return y.to(self._mu.dtype)

    def _residual(self, y: Tensor) -> Tensor:
        """Measured part of ``y - A mu``, flattened: ``(B, d)`` (structured) or ``(B, M)``."""
        if self.structured:
            if y.shape[-1] != self.prior.num_vertices:
                raise ValueError(f"y has {y.shape[-1]} entries per channel, expected {self.prior.num_vertices}")
            return (y.flatten(1) - self._mu) * self.observed
        flat = y.flatten(1)
        if flat.shape[1] != self._rows.shape[0]:
            raise ValueError(f"y has {flat.shape[1]} entries, the operator measures {self._rows.shape[0]}")
        return flat[:, self._rows] - self._a @ self._mu

    def _cho_solve(self, rhs: Tensor) -> Tensor:
        """``K^{-1} rhs`` (structured) or ``G^{-1} rhs`` (dense) for rows ``rhs (B, k)``.

        One shared factor solves all rows as columns of one right-hand side: broadcasting it over
        the rows instead would copy it once per row.
        """
        if self._chol.shape[0] == 1:
            return torch.cholesky_solve(rhs.T, self._chol[0]).T
        return torch.cholesky_solve(rhs[..., None], self._chol)[..., 0]

    def _solve_g(self, r: Tensor) -> Tensor:
        """``G^{-1} r`` for residuals ``r`` of shape ``(B, d)`` or ``(B, M)``."""
        if self.structured:
            u = self.prior.factor
            wr = self._w * r
            return wr - self._w * (self._cho_solve(wr @ u) @ u.T)
        return self._cho_solve(r)

    def _gain(self, g: Tensor) -> Tensor:
        """``S A^T g``: ``(B, d)``."""
        if self.structured:
            return self.prior.cov_matvec(g)
        return g @ self._sat.T

    # -- the posterior ---------------------------------------------------------------------------------------
    def mean(self, y: Tensor) -> Tensor:
        """Posterior mean ``(B, C, V)``."""
        y = self._check_y(y)
        out = self._mu + self._gain(self._solve_g(self._residual(y)))
        return out.reshape(y.shape[0], self.prior.channels, self.prior.num_vertices)

    def sample(self, y: Tensor, n: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
        """Exact posterior draws ``(B, n, C, V)``."""
        y = self._check_y(y)
        check_generator_device(generator, self._mu.device)
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        b, d = y.shape[0], self.prior.num_dims
        kw = dict(generator=generator, device=self._mu.device, dtype=self._mu.dtype)
        mean = self.mean(y).flatten(1)[:, None]  # (B, 1, d)
        if self.structured:
            # x = mean + s * e + b U L^{-T} z: covariance diag(s^2) + (b U) K^{-1} (b U)^T
            u = self.prior.factor
            z = torch.randn(b, n, u.shape[1], **kw)
            if self.batch == 1:  # one factor for every row: solve them as columns, without copies of it
                w = torch.linalg.solve_triangular(self._chol[0].mT, z.reshape(-1, u.shape[1]).T, upper=True)
                w = w.T.reshape(b, n, -1)
            else:
                w = torch.linalg.solve_triangular(self._chol.mT, z.mT, upper=True).mT  # (B, n, r)
            e = torch.randn(b, n, d, **kw)
            out = mean + self._s2.sqrt()[:, None] * e + self._beta[:, None] * (w @ u.T)
        else:
            x0 = self.prior.sample_data(b * n, generator=generator).flatten(1)
            noise = self.sigma2**0.5 * torch.randn(b * n, self._a.shape[0], **kw)
            r = -(x0 - self._mu) @ self._a.T - noise  # y - A x0 - noise, relative to y - A mu
            out = mean + (x0 - self._mu + self._gain(self._solve_g(r))).reshape(b, n, d)
        return out.reshape(b, n, self.prior.channels, self.prior.num_vertices)

    def factor(self) -> tuple[Tensor, Tensor]:
        """A factor of the posterior covariance: ``C = diag(std^2) + L L^T``.

        Returns:
            ``(std (b, d), L (b, d, k))``: on the structured path ``k = r`` (low rank plus
            diagonal); on the dense path ``std = 0`` and ``L`` is a square root of ``C`` (``k = d``).
        """
        if self.structured:
            u = self.prior.factor
            bu = self._beta[:, :, None] * u  # (b, d, r)
            # (b U) K^{-1} (b U)^T = (b U L^{-T})(b U L^{-T})^T with K = L L^T
            low = torch.linalg.solve_triangular(self._chol, bu.transpose(-1, -2), upper=False).transpose(-1, -2)
            return self._s2.sqrt(), low
        cov = self.covariance()
        w, v = torch.linalg.eigh(cov)
        return cov.new_zeros(1, cov.shape[-1]), v * w.clamp_min(0.0).sqrt()[:, None, :]

    def covariance(self) -> Tensor:
        """The dense posterior covariance ``(b, d, d)`` (for small ``d``)."""
        if self.structured:
            std, low = self.factor()
            return torch.diag_embed(std.square()) + low @ low.transpose(-1, -2)
        s = self.prior.covariance()
        h = torch.cholesky_solve(self._sat.T, self._chol[0])  # G^{-1} A S: (M, d)
        c = s - self._sat @ h
        return (0.5 * (c + c.T))[None]

    def std(self) -> Tensor:
        """Posterior standard deviation per entry ``(b, C, V)``."""
        if self.structured:
            u = self.prior.factor
            var = torch.cat([
                s2 + beta.square() * torch.linalg.solve_triangular(chol, u.T[None], upper=False).square().sum(-2)
                for s2, beta, chol in zip(self._s2.split(_CHUNK), self._beta.split(_CHUNK), self._chol.split(_CHUNK))])
        else:
            var = torch.diagonal(self.covariance(), dim1=-2, dim2=-1)
        return var.clamp_min(0.0).sqrt().reshape(-1, self.prior.channels, self.prior.num_vertices)

    def logdet(self) -> Tensor:
        """``log det C`` per operator ``(b,)`` (``-inf`` when the prior is singular)."""
        return self.prior.logdet() - self._logdet_g + self._count * math.log(self.sigma2)

    def mahalanobis(self, y: Tensor) -> Tensor:
        """``(y - A mu)^T G^{-1} (y - A mu)`` over the measured entries: ``(B,)`` (differentiable in ``y``)."""
        y = self._check_y(y)
        r = self._residual(y)
        return (r * self._solve_g(r)).sum(-1)

    def log_evidence(self, y: Tensor) -> Tensor:
        """Exact ``log p(y)`` of the measured entries, in nats: ``(B,)``."""
        return -0.5 * (self.mahalanobis(y) + self._logdet_g + self._count * math.log(2 * math.pi))
