"""Score-based priors over vertex signals: the shared interface and the evidence lower bound.

A :class:`ScorePrior` only has to provide the Tweedie denoiser ``denoise(x_t, t) = E[x_0 | x_t]``;
the noise prediction, the score and the ELBO follow from it:

    eps(x_t, t)   = (x_t - alpha(t) denoise(x_t, t)) / sigma(t)
    score(x_t, t) = -eps(x_t, t) / sigma(t)

ELBO (Song, Durkan, Murray & Ermon 2021, Theorem 1) for the VP-SDE, with ``d = C V`` and
``s_theta - grad log p(x_t | x_0) = alpha (denoise - x_0) / sigma^2``:

    b(x_0) = E[log pi(x_T)] - 1/2 int_{t_min}^T [ beta/sigma^2 (||eps_hat - eps||^2 - ||eps||^2) + beta d ] dt

``E[log pi(x_T)]`` and ``int beta d dt`` are computed in closed form; the rest is a Monte-Carlo
estimate over ``t`` and the forward noise. With ``importance=True`` the times are drawn with
density proportional to ``beta / sigma^2`` (uniform in ``u = log(sigma^2 / alpha^2)``), which
removes the ``1 / sigma^2`` blow-up at small ``t`` from the weights.

:meth:`ScorePrior.marginal_elbo` bounds the density ``log p_s(u)`` of the *noised* marginal at a
time ``s > 0`` instead: ``u`` is diffused forward from ``s`` (``x_t | u ~ N(abar u, sbar^2 I)``
with ``abar = alpha(t) / alpha(s)``, ``sbar^2 = 1 - abar^2``), and with ``c = B(t) - B(s)``

    b_s(u) = E[log pi(x_T)] - 1/2 int_s^T beta [ ||score||^2 + 2 score . eps / sbar ] dt - d c(T) / 2,

the times drawn uniformly in ``w = 2 artanh(sbar)`` (``dw = beta / sbar dt``), which keeps the
variance of the ``score . eps / sbar`` term finite as ``t -> s``.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .._checks import check_generator_device, check_signal
from .sde import VPSDE, append_dims

__all__ = ["ScorePrior", "bits_per_dim"]


def bits_per_dim(log_likelihood: Tensor, num_dims: int) -> Tensor:
    """Convert a log-density in nats to bits per dimension: ``-log p / (d ln 2)``.

    Shapes:
        ``log_likelihood``: ``(B,)`` -> ``(B,)``.

    Example:
        >>> bits_per_dim(torch.tensor([-2 * math.log(2.0)]), 2)
        tensor([1.])
    """
    return -log_likelihood / (num_dims * math.log(2.0))


class ScorePrior(nn.Module):
    """Abstract diffusion prior over natural vertex signals ``(B, C, V)``.

    Subclasses implement :meth:`denoise`. ``t`` is always a tensor of shape ``(B,)``.

    Args:
        sde: The forward SDE (a :class:`VPSDE`).
        channels: Number of channels ``C``.
        num_vertices: Number of vertices ``V``.
    """

    def __init__(self, sde: VPSDE, channels: int, num_vertices: int) -> None:
        super().__init__()
        if not isinstance(sde, VPSDE):
            raise ValueError(f"ScorePrior needs a VPSDE, got {type(sde).__name__}")
        self.sde = sde
        self.channels = int(channels)
        self.num_vertices = int(num_vertices)

    @property
    def num_dims(self) -> int:
        """Dimension ``d = C * V`` of a signal (valid vertices only)."""
        return self.channels * self.num_vertices

    # -- the denoiser and what follows from it ------------------------------------------------
    @abstractmethod
    def denoise(self, x: Tensor, t: Tensor) -> Tensor:
        """Tweedie denoiser ``E[x_0 | x_t = x]``.

        Shapes:
            x: ``(B, C, V)``; t: ``(B,)``; returns ``(B, C, V)``.
        """

    def eps(self, x: Tensor, t: Tensor) -> Tensor:
        """Predicted forward noise ``(x - alpha x0_hat) / sigma``: ``(B, C, V)``."""
        alpha = append_dims(self.sde.alpha(t), x.ndim)
        sigma = append_dims(self.sde.std(t), x.ndim)
        return (x - alpha * self.denoise(x, t)) / sigma

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """Score ``grad_x log p_t(x)``: ``(B, C, V)``."""
        alpha = append_dims(self.sde.alpha(t), x.ndim)
        var = append_dims(self.sde.std(t) ** 2, x.ndim)
        return (alpha * self.denoise(x, t) - x) / var

    def reference_device_dtype(self) -> tuple[torch.device, torch.dtype]:
        """Device and floating dtype of the prior's parameters or buffers (CPU / default dtype if none)."""
        for tensor in [*self.parameters(), *self.buffers()]:
            if tensor.is_floating_point():
                return tensor.device, tensor.dtype
        return torch.device("cpu"), torch.get_default_dtype()

    # -- sampling and exact likelihood ----------------------------------------------------------
    def sample(
        self,
        n: int,
        *,
        steps: int | None = None,
        method: Literal["ddpm", "ode", "ode_adaptive"] = "ddpm",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """Draw ``n`` samples of the prior.

        Args:
            n: Number of samples.
            steps: DDPM steps (default 1000) or fixed ODE solver steps (default 18); ignored by
                ``"ode_adaptive"``.
            method: ``"ddpm"`` (ancestral), ``"ode"`` (probability flow, fixed-step Heun unless
                ``solver=`` says otherwise) or ``"ode_adaptive"`` (RK45, ``rtol``/``atol``).
            generator: Source of randomness.
            device: Device of the samples (default: the prior's).
            dtype: Dtype of the samples (default: the prior's).
            **kwargs: Passed to :func:`~manifold_ps.priors.sampling.ddpm_sample`,
                :func:`~manifold_ps.priors.sampling.ode_sample` or
                :func:`~manifold_ps.priors.sampling.ode_sample_adaptive`.

        Returns:
            ``(n, C, V)`` samples.
        """
        from . import sampling

        common: dict[str, Any] = dict(generator=generator, device=device, dtype=dtype, **kwargs)
        if method == "ddpm":
            return sampling.ddpm_sample(self, n, steps=steps or 1000, **common)
        if method == "ode":
            return sampling.ode_sample(self, n, steps=steps or 18, **common)
        if method == "ode_adaptive":
            return sampling.ode_sample_adaptive(self, n, **common)
        raise ValueError(f"method must be 'ddpm', 'ode' or 'ode_adaptive', got {method!r}")

    def ode_log_likelihood(self, x0: Tensor, **kwargs: Any) -> Tensor:
        """Log-likelihood in nats by the probability-flow ODE; see
        :func:`~manifold_ps.priors.likelihood.ode_log_likelihood` for the options.

        Shapes:
            x0: ``(B, C, V)``; returns ``(B,)``.
        """
        from .likelihood import ode_log_likelihood

        return ode_log_likelihood(self, x0, **kwargs)

    def _check_t(self, x: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape (batch,) = ({x.shape[0]},), got {tuple(t.shape)}")
        return t

    # -- evidence lower bound ---------------------------------------------------------------------
    def elbo(
        self,
        x0: Tensor,
        *,
        n_time: int = 1,
        n_noise: int = 1,
        t_min: float = 1e-3,
        importance: bool = True,
        include_constants: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Monte-Carlo evidence lower bound ``b(x0) <= log p(x0)`` per sample, in nats.

        Differentiable with respect to ``x0`` and to the parameters of the denoiser; nothing is
        detached, so a flow that produces ``x0`` can be trained through it.

        Args:
            x0: Clean signals.
            n_time: Number of time draws per sample.
            n_noise: Number of forward-noise draws per time.
            t_min: Lower limit of the time integral. With ``t_min > 0`` the bound is that of the
                slightly noised signal; larger values tame the heavy small-time tail of a learned
                denoiser (the flow training uses about 0.03), smaller values approach ``log p(x0)``.
            importance: Draw ``t`` with density proportional to ``beta / sigma^2`` (recommended);
                otherwise uniformly on ``[t_min, 1]``.
            include_constants: Keep the terms that do not depend on ``x0`` (``-||eps||^2`` and
                ``beta d``). Without them this is the paper's training objective ``b'``.
            generator: Source of the times and noises.

        Returns:
            ``(B,)`` lower bound per sample.

        Shapes:
            x0: ``(B, C, V)``.
        """
        check_signal(x0, self.num_vertices, "x0", channels=self.channels)
        check_generator_device(generator, x0.device)
        if n_time < 1 or n_noise < 1:
            raise ValueError(f"n_time and n_noise must be >= 1, got {n_time}, {n_noise}")
        if not 0.0 < t_min < self.sde.T:
            raise ValueError(f"t_min must lie in (0, {self.sde.T}), got {t_min}")
        batch, d = x0.shape[0], self.num_dims
        k = n_time * n_noise
        t_lo = x0.new_tensor(t_min)
        t_hi = x0.new_tensor(self.sde.T)

        # Times: n_time per sample (stratified over [0, 1) to cut variance), each with n_noise noises.
        strata = (torch.arange(n_time, device=x0.device, dtype=x0.dtype)[None, :]
                  + torch.rand(batch, n_time, generator=generator, device=x0.device, dtype=x0.dtype)) / n_time
        if importance:
            u_lo, u_hi = self.sde.log_snr_inverse(t_lo), self.sde.log_snr_inverse(t_hi)
            u = u_lo + (u_hi - u_lo) * strata
            t = self.sde.t_from_log_snr_inverse(u).clamp(t_lo, t_hi)
            # weight of beta/sigma^2 * f(t) under density (beta/sigma^2)/(u_hi - u_lo)
            weight = (u_hi - u_lo).expand_as(t)
        else:
            t = t_lo + (t_hi - t_lo) * strata
            weight = (t_hi - t_lo) * self.sde.beta(t) / self.sde.std(t) ** 2
        t = t.repeat_interleave(n_noise, dim=1).reshape(batch * k)
        weight = weight.repeat_interleave(n_noise, dim=1).reshape(batch, k)

        x0_rep = x0.repeat_interleave(k, dim=0)
        noise = torch.randn(x0_rep.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        alpha = append_dims(self.sde.alpha(t), x0.ndim)
        sigma = append_dims(self.sde.std(t), x0.ndim)
        xt = alpha * x0_rep + sigma * noise
        x0_hat = self.denoise(xt, t)
        # eps_hat - eps = alpha (x0 - x0_hat) / sigma, computed without cancellation
        err = (alpha * (x0_rep - x0_hat) / sigma).flatten(1).square().sum(-1).reshape(batch, k)
        if include_constants:
            err = err - noise.flatten(1).square().sum(-1).reshape(batch, k)
        integral = (weight * err).mean(-1)

        # E[log pi(x_T)] in closed form for x_T ~ N(alpha_T x0, sigma_T^2 I)
        a_T, s_T = self.sde.alpha(t_hi), self.sde.std(t_hi)
        prior_term = -0.5 * a_T**2 * x0.flatten(1).square().sum(-1)
        if include_constants:
            prior_term = prior_term - 0.5 * d * (math.log(2 * math.pi) + s_T**2)
            integral = integral + d * (self.sde.integrated_beta(t_hi) - self.sde.integrated_beta(t_lo))
        return prior_term - 0.5 * integral

    def marginal_elbo(
        self,
        u: Tensor,
        t: float,
        *,
        n_time: int = 1,
        n_noise: int = 1,
        include_constants: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Monte-Carlo lower bound of ``log p_t(u)``, the log-density of the noised marginal at ``t``.

        Unlike :meth:`elbo`, which treats its input as a clean ``x0``, ``u`` here plays the role of
        ``x_t``: it is diffused forward from ``t`` (mean ``alpha(t') / alpha(t) u``, variance
        ``sigma(t')^2 - (alpha(t') / alpha(t))^2 sigma(t)^2``) and the bound of Song et al. (2021)
        is taken over ``[t, T]``. With the model's true marginal scores the bound is tight in
        expectation (for a :class:`~manifold_ps.priors.GaussianPrior`, it equals
        ``marginal_log_prob(u, t)`` on average). Differentiable with respect to ``u`` and to the
        denoiser's parameters.

        Args:
            u: Signals at noise level ``t``.
            t: The time of ``u`` (``0 < t < T``).
            n_time: Time draws per sample (stratified).
            n_noise: Forward-noise draws per time.
            include_constants: Keep the terms that do not depend on ``u`` (the value is then a
                bound of the log-density; the gradients do not change).
            generator: Source of the times and noises.

        Returns:
            ``(B,)`` lower bound per sample, in nats.

        Shapes:
            u: ``(B, C, V)``.

        Example:
            >>> from manifold_ps.priors import GaussianPrior
            >>> prior = GaussianPrior(torch.zeros(1, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
            >>> u = torch.zeros(20000, 1, 3, dtype=torch.float64)
            >>> b = prior.marginal_elbo(u, 0.1, generator=torch.Generator().manual_seed(0))
            >>> exact = prior.marginal_log_prob(u[:1], torch.tensor([0.1], dtype=torch.float64))
            >>> bool((b.mean() - exact).abs() < 4 * b.std() / 20000**0.5)  # tight within Monte-Carlo error
            True
        """
        check_signal(u, self.num_vertices, "u", channels=self.channels)
        check_generator_device(generator, u.device)
        if n_time < 1 or n_noise < 1:
            raise ValueError(f"n_time and n_noise must be >= 1, got {n_time}, {n_noise}")
        t = float(t)
        if not 0.0 < t < self.sde.T:
            raise ValueError(f"t must lie in (0, {self.sde.T}), got {t}")
        batch, d = u.shape[0], self.num_dims
        k = n_time * n_noise
        b_lo = self.sde.integrated_beta(u.new_tensor(t))
        c_hi = self.sde.integrated_beta(u.new_tensor(self.sde.T)) - b_lo  # B(T) - B(t)
        w_hi = 2.0 * torch.atanh(torch.sqrt(-torch.expm1(-c_hi)))

        strata = (torch.arange(n_time, device=u.device, dtype=u.dtype)[None, :]
                  + torch.rand(batch, n_time, generator=generator, device=u.device, dtype=u.dtype)) / n_time
        w = (w_hi * strata).repeat_interleave(n_noise, dim=1).reshape(batch * k)
        # c = B(t') - B(t) = 2 log cosh(w / 2), sbar = tanh(w / 2), abar = exp(-c / 2)
        half = 0.5 * w
        c = 2.0 * (half + torch.nn.functional.softplus(-2.0 * half) - math.log(2.0))
        sbar = torch.tanh(half)
        abar = torch.exp(-0.5 * c)
        tt = self.sde.t_from_integrated_beta(b_lo + c).clamp(t, self.sde.T)

        u_rep = u.repeat_interleave(k, dim=0)
        noise = torch.randn(u_rep.shape, generator=generator, device=u.device, dtype=u.dtype)
        xt = append_dims(abar, u.ndim) * u_rep + append_dims(sbar, u.ndim) * noise
        alpha = append_dims(self.sde.alpha(tt), u.ndim)
        var = append_dims(self.sde.std(tt) ** 2, u.ndim)
        score = (alpha * self.denoise(xt, tt) - xt) / var
        # int_t^T beta f dt = int_0^{w_hi} sbar f dw with f = ||score||^2 + 2 score . eps / sbar
        f = sbar * score.flatten(1).square().sum(-1) + 2.0 * (score * noise).flatten(1).sum(-1)
        integral = w_hi * f.reshape(batch, k).mean(-1)

        a_T = torch.exp(-0.5 * c_hi)
        prior_term = -0.5 * a_T**2 * u.flatten(1).square().sum(-1)
        if include_constants:
            prior_term = prior_term - 0.5 * d * (math.log(2 * math.pi) - torch.expm1(-c_hi)) - 0.5 * d * c_hi
        return prior_term - 0.5 * integral
