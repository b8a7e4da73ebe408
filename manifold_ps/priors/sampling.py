"""Sampling from a score prior: ancestral DDPM and the probability-flow ODE.

Three samplers share one signature ``sampler(prior, n, *, ..., generator, device, dtype)`` and
return ``(n, C, V)`` natural signals:

* :func:`ddpm_sample` -- ancestral sampling of the DDPM chain on the uniform time grid
  ``t_i = i / N`` of the VP-SDE (``alpha_bar_i = alpha(t_i)^2``, well defined for any ``N``;
  for ``N = 1000`` it is the classic DDPM schedule up to ``O(1/N)``), drawing from the DDPM
  posterior ``q(x_{i-1} | x_i, x0_hat)`` at every step and returning ``x0_hat`` at ``t = 1/N``;
* :func:`ode_sample` -- the probability-flow ODE with a fixed-step Euler, Heun or RK4 solver;
* :func:`ode_sample_adaptive` -- the same ODE with an adaptive Dormand--Prince RK45 solver.

The ODE is integrated in the scaled variables of Karras et al. (2022): ``x~ = x / alpha`` and the
noise-to-signal ratio ``s = sigma / alpha``, where it reads ``dx~/ds = (x~ - D(x~, s)) / s``
(``D`` is the Tweedie denoiser), whose trajectories are nearly straight. The fixed-step grid is
their ``rho = 7`` spacing in ``s``; the last step goes to ``s = 0``, i.e. returns the denoised
estimate at ``t_min``. The generic solvers :func:`dopri5` and :func:`fixed_step_solve` are also
used by :mod:`~manifold_ps.priors.likelihood`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from .._checks import check_generator_device, clip_bounds
from .sde import VPSDE, append_dims

if TYPE_CHECKING:
    from .base import ScorePrior

__all__ = [
    "ddpm_sample",
    "ode_sample",
    "ode_sample_adaptive",
    "karras_times",
    "dopri5",
    "fixed_step_solve",
]

Solver = Literal["euler", "heun", "rk4"]


def karras_times(sde: VPSDE, steps: int, *, t_min: float = 1e-3, t_max: float = 1.0, rho: float = 7.0) -> Tensor:
    """Decreasing times whose noise-to-signal ratios ``s = sigma / alpha`` follow the ``rho`` grid.

    Args:
        sde: The VP-SDE.
        steps: Number of grid points (``>= 2``).
        t_min: Last (smallest) time.
        t_max: First time.
        rho: Grid exponent (7 in Karras et al.); ``1`` is uniform in ``s``.

    Returns:
        float64 ``(steps,)`` from ``t_max`` down to ``t_min``.

    Example:
        >>> ts = karras_times(VPSDE(), 5)
        >>> [round(v, 4) for v in (ts[0].item(), ts[-1].item())]
        [1.0, 0.001]
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    if not 0.0 < t_min < t_max <= sde.T:
        raise ValueError(f"need 0 < t_min < t_max <= {sde.T}, got t_min={t_min}, t_max={t_max}")
    bounds = torch.tensor([t_max, t_min], dtype=torch.float64)
    s_max, s_min = (0.5 * sde.log_snr_inverse(bounds)).exp().tolist()
    ramp = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    s = (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    t = sde.t_from_log_snr_inverse(2.0 * s.log())
    t[0], t[-1] = t_max, t_min
    return t


def _setup(prior: ScorePrior, n: int, generator: torch.Generator | None, device: torch.device | str | None,
           dtype: torch.dtype | None, x_T: Tensor | None) -> Tensor:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ref_device, ref_dtype = prior.reference_device_dtype()
    device = torch.device(device) if device is not None else ref_device
    dtype = dtype or ref_dtype
    if x_T is not None:
        expected = (n, prior.channels, prior.num_vertices)
        if tuple(x_T.shape) != expected:
            raise ValueError(f"x_T must have shape {expected}, got {tuple(x_T.shape)}")
        return x_T.to(device=device, dtype=dtype)
    check_generator_device(generator, device)
    return prior.sde.prior_sampling((n, prior.channels, prior.num_vertices), generator=generator,
                                    device=device, dtype=dtype)


@torch.no_grad()
def ddpm_sample(
    prior: ScorePrior,
    n: int,
    *,
    steps: int = 1000,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    x_T: Tensor | None = None,
    clip_denoised: bool = False,
    data_range: tuple[float, float] | None = None,
) -> Tensor:
    """Ancestral sampling of the ``steps``-step DDPM chain of the prior's VP-SDE (times ``i / steps``).

    With ``clip_denoised``, the Tweedie estimate ``x0_hat`` of every step is clamped to
    ``data_range`` before it enters the mean of ``q(x_{i-1} | x_i, x0_hat)`` (as the
    ``clip_denoised`` option of the DDPM / DPS reference code does), and the returned final
    estimate is clamped too. Without it the chain is unchanged.

    Args:
        prior: The score prior.
        n: Number of samples.
        steps: Number of DDPM steps (network evaluations).
        generator: Source of the initial and per-step noise.
        device: Device of the samples (default: the prior's).
        dtype: Dtype of the samples (default: the prior's).
        x_T: Optional starting noise ``(n, C, V)`` instead of a fresh draw.
        clip_denoised: Clamp every Tweedie estimate to ``data_range`` before it is used.
        data_range: ``(low, high)`` of the data; required when ``clip_denoised`` is set.

    Returns:
        ``(n, C, V)`` samples.

    Raises:
        ValueError: If ``clip_denoised`` is set without a ``data_range``, or the range is not
            two numbers with ``low < high``.

    Example:
        >>> from manifold_ps.priors import GaussianPrior
        >>> prior = GaussianPrior(torch.zeros(1, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
        >>> ddpm_sample(prior, 4, steps=20, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 1, 3])
        >>> x = ddpm_sample(prior, 4, steps=20, clip_denoised=True, data_range=(0.0, 0.5))
        >>> bool(((x >= 0.0) & (x <= 0.5)).all())
        True
    """
    bounds = clip_bounds(clip_denoised, data_range)
    x = _setup(prior, n, generator, device, dtype, x_T)
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    times = torch.arange(1, steps + 1, dtype=torch.float64) / steps * prior.sde.T
    abar = prior.sde.alpha(times) ** 2
    times = times.to(device=x.device, dtype=x.dtype)
    for i in reversed(range(steps)):
        x0 = prior.denoise(x, times[i].expand(n))
        if bounds is not None:
            x0 = x0.clamp(*bounds)
        if i == 0:
            return x0
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = _ancestral_step(x, x0, float(abar[i]), float(abar[i - 1]), noise)
    return x  # pragma: no cover - the loop always returns


def _ancestral_step(x: Tensor, x0: Tensor, abar_t: float, abar_s: float, noise: Tensor) -> Tensor:
    """One draw ``x_s ~ q(x_s | x_t, x_0 = x0)`` of the DDPM chain (``s < t``, Ho et al. 2020, eq. 7)."""
    beta = 1.0 - abar_t / abar_s
    mean = (math.sqrt(abar_s) * beta / (1.0 - abar_t)) * x0 \
        + (math.sqrt(1.0 - beta) * (1.0 - abar_s) / (1.0 - abar_t)) * x
    var = beta * (1.0 - abar_s) / (1.0 - abar_t)
    return mean + math.sqrt(var) * noise


def _scaled_denoiser(prior: ScorePrior) -> Callable[[Tensor, Tensor], Tensor]:
    """``D(x~, s)``: the denoiser in the scaled variables ``x~ = x / alpha``, ``s = sigma / alpha``."""

    def denoise(xs: Tensor, s: Tensor) -> Tensor:
        t = prior.sde.t_from_log_snr_inverse(2.0 * torch.log(s))
        alpha = append_dims(prior.sde.alpha(t), xs.ndim)
        return prior.denoise(alpha * xs, t.expand(xs.shape[0]))

    return denoise


def fixed_step_solve(f: Callable[[Tensor, Tensor], Tensor], y: Tensor, grid: Tensor, solver: Solver = "heun") -> Tensor:
    """Integrate ``dy/dtau = f(tau, y)`` over a fixed grid with Euler, Heun or classical RK4.

    Args:
        f: Right-hand side; ``tau`` is passed as a 0-d tensor of ``y``'s dtype.
        y: Initial state.
        grid: ``(K,)`` increasing or decreasing values of ``tau``.
        solver: ``"euler"`` (1 evaluation per step), ``"heun"`` (2) or ``"rk4"`` (4).

    Returns:
        The state at ``grid[-1]``.

    Example:
        >>> y = fixed_step_solve(lambda t, y: y, torch.ones(1), torch.linspace(0, 1, 11), "rk4")
        >>> round(y.item(), 5)
        2.71828
    """
    if solver not in ("euler", "heun", "rk4"):
        raise ValueError(f"solver must be 'euler', 'heun' or 'rk4', got {solver!r}")
    grid = grid.to(device=y.device, dtype=y.dtype)
    for a, b in zip(grid[:-1], grid[1:], strict=True):
        h = b - a
        k1 = f(a, y)
        if solver == "euler":
            y = y + h * k1
        elif solver == "heun":
            k2 = f(b, y + h * k1)
            y = y + 0.5 * h * (k1 + k2)
        else:
            k2 = f(a + 0.5 * h, y + 0.5 * h * k1)
            k3 = f(a + 0.5 * h, y + 0.5 * h * k2)
            k4 = f(b, y + h * k3)
            y = y + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


# Dormand--Prince 5(4) tableau
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)  # b - b_hat


def dopri5(
    f: Callable[[Tensor, Tensor], Tensor],
    y: Tensor,
    t0: float,
    t1: float,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    first_step: float | None = None,
    max_steps: int = 10_000,
) -> tuple[Tensor, int]:
    """Adaptive Dormand--Prince RK5(4) integration of ``dy/dt = f(t, y)`` from ``t0`` to ``t1``.

    The step is shared by the batch: the error norm is the RMS of ``err / (atol + rtol |y|)``
    over each sample's entries, maximised over the batch (first dimension).

    Args:
        f: Right-hand side; ``t`` is passed as a 0-d tensor of ``y``'s dtype.
        y: Initial state ``(B, ...)``.
        t0: Start time.
        t1: End time (may be smaller than ``t0``).
        rtol: Relative tolerance.
        atol: Absolute tolerance.
        first_step: Initial step size (default ``|t1 - t0| / 100``).
        max_steps: Give up (``RuntimeError``) after this many attempted steps.

    Returns:
        ``(y(t1), number of evaluations of f)``.

    Example:
        >>> y, nfe = dopri5(lambda t, y: -y, torch.ones(1, 1, dtype=torch.float64), 0.0, 1.0, rtol=1e-8, atol=1e-8)
        >>> abs(y.item() - math.exp(-1.0)) < 1e-7
        True
    """
    if rtol <= 0 or atol <= 0:
        raise ValueError(f"rtol and atol must be positive, got {rtol}, {atol}")
    direction = 1.0 if t1 >= t0 else -1.0
    span = abs(t1 - t0)
    h = abs(first_step) if first_step is not None else span / 100.0
    t = float(t0)
    as_t = lambda v: torch.tensor(v, dtype=y.dtype, device=y.device)  # noqa: E731
    k = [f(as_t(t), y)] + [y] * 6
    nfe = 1
    for _ in range(max_steps):
        remaining = direction * (t1 - t)
        if remaining <= 1e-12 * max(1.0, span):
            return y, nfe
        h = min(h, remaining)
        hs = direction * h
        for i in range(1, 7):
            incr = sum(a * k[j] for j, a in enumerate(_DP_A[i]) if a != 0.0)
            k[i] = f(as_t(t + _DP_C[i] * hs), y + hs * incr)
        nfe += 6
        y_new = y + hs * sum(b * k[j] for j, b in enumerate(_DP_B) if b != 0.0)
        err = hs * sum(e * k[j] for j, e in enumerate(_DP_E) if e != 0.0)
        scale = atol + rtol * torch.maximum(y.abs(), y_new.abs())
        norm = float((err / scale).flatten(1).square().mean(-1).sqrt().max())
        if not math.isfinite(norm):
            h *= 0.2
            continue
        if norm <= 1.0:
            t += hs
            y = y_new
            k[0] = k[6]  # first same as last
        h *= min(10.0, max(0.2, 0.9 * (norm + 1e-16) ** -0.2))
    raise RuntimeError(f"dopri5 did not reach t1={t1} within {max_steps} steps (stopped at t={t})")


@torch.no_grad()
def ode_sample(
    prior: ScorePrior,
    n: int,
    *,
    steps: int = 18,
    solver: Solver = "heun",
    t_min: float = 1e-3,
    rho: float = 7.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    x_T: Tensor | None = None,
) -> Tensor:
    """Probability-flow ODE sampling with a fixed-step solver.

    Args:
        prior: The score prior.
        n: Number of samples.
        steps: Number of solver steps from ``t = 1`` to ``t_min`` (Heun: ``2 steps`` network
            evaluations, RK4: ``4 steps``), plus one final denoising evaluation.
        solver: ``"euler"`` (DDIM), ``"heun"`` (Karras et al.) or ``"rk4"``.
        t_min: Smallest time of the ODE; the result is the denoised estimate there.
        rho: Spacing exponent of the grid in ``s = sigma / alpha``.
        generator: Source of the initial noise (the ODE is deterministic).
        device: Device of the samples (default: the prior's).
        dtype: Dtype of the samples (default: the prior's).
        x_T: Optional starting noise ``(n, C, V)``.

    Returns:
        ``(n, C, V)`` samples.

    Example:
        >>> from manifold_ps.priors import GaussianPrior
        >>> prior = GaussianPrior(torch.zeros(1, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
        >>> ode_sample(prior, 4, steps=5, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 1, 3])
    """
    x = _setup(prior, n, generator, device, dtype, x_T)
    times = karras_times(prior.sde, steps + 1, t_min=t_min, rho=rho).to(device=x.device, dtype=x.dtype)
    s_grid = (0.5 * prior.sde.log_snr_inverse(times)).exp()
    denoise = _scaled_denoiser(prior)
    xs = x / prior.sde.alpha(times[0])

    def velocity(s: Tensor, y: Tensor) -> Tensor:
        return (y - denoise(y, s)) / s

    xs = fixed_step_solve(velocity, xs, s_grid, solver)
    return denoise(xs, s_grid[-1])


@torch.no_grad()
def ode_sample_adaptive(
    prior: ScorePrior,
    n: int,
    *,
    rtol: float = 1e-3,
    atol: float = 1e-3,
    t_min: float = 1e-3,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    x_T: Tensor | None = None,
) -> Tensor:
    """Probability-flow ODE sampling with the adaptive RK45 solver :func:`dopri5`.

    The ODE ``dx~/dlog s = x~ - D(x~, s)`` is integrated in ``log s`` from ``t = 1`` to ``t_min``,
    then the denoised estimate at ``t_min`` is returned.

    Args:
        prior: The score prior.
        n: Number of samples.
        rtol: Relative tolerance.
        atol: Absolute tolerance (in units of the scaled state ``x / alpha``).
        t_min: Smallest time of the ODE.
        generator: Source of the initial noise.
        device: Device of the samples (default: the prior's).
        dtype: Dtype of the samples (default: the prior's).
        x_T: Optional starting noise ``(n, C, V)``.

    Returns:
        ``(n, C, V)`` samples.

    Example:
        >>> from manifold_ps.priors import GaussianPrior
        >>> prior = GaussianPrior(torch.zeros(1, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
        >>> ode_sample_adaptive(prior, 2, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([2, 1, 3])
    """
    x = _setup(prior, n, generator, device, dtype, x_T)
    bounds = torch.tensor([1.0, t_min], dtype=torch.float64)
    lam_max, lam_min = (0.5 * prior.sde.log_snr_inverse(bounds)).tolist()
    denoise = _scaled_denoiser(prior)
    xs = x / prior.sde.alpha(x.new_tensor(1.0))

    def velocity(lam: Tensor, y: Tensor) -> Tensor:
        return y - denoise(y, lam.exp())

    xs, _ = dopri5(velocity, xs, lam_max, lam_min, rtol=rtol, atol=atol)
    return denoise(xs, x.new_tensor(lam_min).exp())
