"""Stochastic differential equations of score-based diffusion, rank-agnostic over ``(B, C, V)``.

The abstract :class:`SDE` follows the interface of score_sde's ``sde_lib.SDE`` without its image
rank; :class:`VPSDE` is the variance-preserving SDE (DDPM in continuous time) with a linear
``beta(t)`` schedule:

    dx = -1/2 beta(t) x dt + sqrt(beta(t)) dW,    x_t | x_0 ~ N(alpha(t) x_0, sigma(t)^2 I),
    alpha(t) = exp(-1/2 B(t)),  sigma(t)^2 = 1 - exp(-B(t)),  B(t) = int_0^t beta.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = ["SDE", "VPSDE", "append_dims"]


def append_dims(t: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dimensions so that ``t`` broadcasts against a rank-``ndim`` tensor.

    Example:
        >>> append_dims(torch.ones(4), 3).shape
        torch.Size([4, 1, 1])
    """
    if t.ndim > ndim:
        raise ValueError(f"cannot append dims: t has {t.ndim} dims, target has {ndim}")
    return t.reshape(*t.shape, *([1] * (ndim - t.ndim)))


class SDE(ABC):
    """Abstract forward SDE ``dx = f(x, t) dt + g(t) dW`` on ``t in [0, T]``."""

    T: float = 1.0

    @abstractmethod
    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Drift ``f(x, t)`` (shape of ``x``) and diffusion ``g(t)`` (shape of ``t``)."""

    @abstractmethod
    def marginal_prob(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (shape of ``x0``) and standard deviation (shape of ``t``) of ``x_t | x_0``."""

    @abstractmethod
    def prior_sampling(
        self,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draw from the terminal distribution ``pi``."""

    @abstractmethod
    def prior_logp(self, z: Tensor) -> Tensor:
        """Log-density of ``pi`` per sample: ``(B, ...) -> (B,)``."""


class VPSDE(SDE):
    """Variance-preserving SDE with ``beta(t) = beta_min + t (beta_max - beta_min)`` on ``[0, 1]``.

    Args:
        beta_min: ``beta(0)``.
        beta_max: ``beta(1)``.

    Example:
        >>> sde = VPSDE()
        >>> t = torch.tensor([0.0, 0.5, 1.0])
        >>> (sde.alpha(t) ** 2 + sde.std(t) ** 2).tolist()
        [1.0, 1.0, 1.0]
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not 0.0 < beta_min < beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)
        self.T = 1.0

    def beta(self, t: Tensor) -> Tensor:
        """``beta(t)``, elementwise."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: Tensor) -> Tensor:
        """``B(t) = int_0^t beta(s) ds``, elementwise."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def alpha(self, t: Tensor) -> Tensor:
        """Mean coefficient ``alpha(t) = exp(-B(t) / 2)``."""
        return torch.exp(-0.5 * self.integrated_beta(t))

    def std(self, t: Tensor) -> Tensor:
        """Standard deviation ``sigma(t) = sqrt(1 - exp(-B(t)))`` (accurate for small ``t``)."""
        return torch.sqrt(-torch.expm1(-self.integrated_beta(t)))

    def log_snr_inverse(self, t: Tensor) -> Tensor:
        """``u(t) = log(sigma^2 / alpha^2) = log(exp(B(t)) - 1)``, increasing in ``t``.

        ``du/dt = beta / sigma^2``: drawing ``u`` uniformly is importance sampling of ``t`` with
        density proportional to the likelihood weighting ``g^2 / sigma^2``.
        """
        b = self.integrated_beta(t)
        return b + torch.log(-torch.expm1(-b))

    def t_from_log_snr_inverse(self, u: Tensor) -> Tensor:
        """Inverse of :meth:`log_snr_inverse`."""
        b = torch.nn.functional.softplus(u)
        db = self.beta_max - self.beta_min
        return 2.0 * b / (self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * db * b))

    def t_from_integrated_beta(self, b: Tensor) -> Tensor:
        """Inverse of :meth:`integrated_beta` (``b >= 0``), elementwise.

        Example:
            >>> sde = VPSDE()
            >>> t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
            >>> torch.allclose(sde.t_from_integrated_beta(sde.integrated_beta(t)), t)
            True
        """
        db = self.beta_max - self.beta_min
        return 2.0 * b / (self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * db * b))

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        beta = self.beta(t)
        return -0.5 * append_dims(beta, x.ndim) * x, torch.sqrt(beta)

    def marginal_prob(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return append_dims(self.alpha(t), x0.ndim) * x0, self.std(t)

    def prior_sampling(
        self,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_logp(self, z: Tensor) -> Tensor:
        d = z[0].numel()
        return -0.5 * d * math.log(2 * math.pi) - 0.5 * z.flatten(1).square().sum(-1)

    def discrete_betas(self, num_steps: int) -> Tensor:
        """DDPM betas of ``num_steps`` discrete steps matching this SDE (float64, ``(N,)``)."""
        if num_steps < 2:
            raise ValueError(f"num_steps must be >= 2, got {num_steps}")
        i = torch.arange(num_steps, dtype=torch.float64)
        return (self.beta_min + i / (num_steps - 1) * (self.beta_max - self.beta_min)) / num_steps

    def discrete_alphas_cumprod(self, num_steps: int) -> Tensor:
        """``prod_{j <= i} (1 - beta_j)`` of the DDPM discretisation (float64, ``(N,)``)."""
        return torch.cumprod(1.0 - self.discrete_betas(num_steps), dim=0)

    def discrete_times(self, num_steps: int) -> Tensor:
        """Continuous times whose ``alpha(t)^2`` equals :meth:`discrete_alphas_cumprod` (float64)."""
        b = -torch.log(self.discrete_alphas_cumprod(num_steps))
        db = self.beta_max - self.beta_min
        return 2.0 * b / (self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * db * b))

    def config(self) -> dict[str, float | str]:
        """Serialisable description."""
        return {"type": "VPSDE", "beta_min": self.beta_min, "beta_max": self.beta_max}

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max})"
