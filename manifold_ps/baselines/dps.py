"""Diffusion posterior sampling (DPS, Chung et al. 2023) and manifold-constrained gradients
(MCG, Chung et al. 2022): ancestral DDPM sampling guided by the gradient of the measurement
residual ``r = y - A(x0_hat(x_t))`` through the Tweedie estimate ``x0_hat``.

Step-size conventions (``step_convention``), each applied after the ancestral step
``x_t -> x_s`` as ``x_s <- x_s - step * grad_{x_t} R`` per sample:

- ``"norm"`` (Chung et al.'s released code, the default): ``R = ||r||``, ``step = zeta``.
- ``"squared_normalized"`` (the DPS paper, Algorithm 1 with ``zeta_i = zeta' / ||r||``,
  appendix C): ``R = ||r||^2``, ``step = zeta / ||r||``. The same direction as ``"norm"`` and
  twice its length: ``zeta_squared_normalized = zeta_norm / 2`` gives the same samples.
- ``"likelihood"``: ``R = ||r||^2 / (2 sigma_y^2)`` (minus the Gaussian log-likelihood of the
  Tweedie estimate), ``step = zeta * beta_i`` with ``beta_i = 1 - abar_t / abar_s``: the
  approximate likelihood score enters the ancestral step as the prior score does, so
  ``zeta = 1`` is the "theoretical" DPS.

The two normalised conventions make the step length independent of the noise level and the
signal size, but not of the step count: the gradient of ``||r||`` has about unit length, so each
step moves ``x`` by about ``zeta`` and what matters is the budget ``zeta * steps``. The default
``zeta = 250 / steps`` for ``"norm"`` (half that for ``"squared_normalized"``, 1 for
``"likelihood"``) is the budget that worked best on ``[0, 1]`` signals (the sweeps are in
``benchmarks/results/dps_sweep-*``; the benchmarks choose it on validation measurements). A
step size quoted for a norm taken over a whole batch of residuals is about ``sqrt(batch)`` times
larger than this per-sample one; this
implementation takes the norm per sample, so a sample does not depend on its batch.

The ``"likelihood"`` form is the most accurate on the small linear-Gaussian test problem (exact
prior), but with ``sigma_y = 0.1`` and 200 steps it diverged on bunny-MNIST (the Gaussian-fit
prior): its step is an explicit Euler step of a stiff term, unstable where
``beta_i ||d x0_hat / d x_t||^2 / sigma_y^2 > 2``. It needs ``sigma_y > 0`` and many steps.

``clip_denoised`` follows the DPS reference code (its ``process_xstart`` clamps ``pred_xstart``
in ``p_mean_variance``, and the conditioning step receives that clamped ``pred_xstart`` as
``x_0_hat``): the Tweedie estimate is clamped to ``data_range`` once per step, and the clamped
estimate is used everywhere in that step -- in the ancestral mean, in the residual
``y - A(x0_hat)`` whose gradient guides (so the gradient is taken through the clamp and vanishes
on clamped entries), and as the returned last estimate. The network output itself is never
clamped.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .._checks import check_finite, clip_bounds
from ..operators import Inpainting, Operator
from ..priors import ScorePrior
from ._common import NFECounter, SamplerStats, TimeGrid, eval_mode, posterior_step, repeat_batch, reverse_grid

__all__ = ["DPS", "MCG", "StepConvention", "ZETA_BUDGET"]

StepConvention = Literal["norm", "squared_normalized", "likelihood"]
"""Step-size convention of the DPS / MCG guidance (see the module docstring)."""
"""Guidance step-size convention of :class:`DPS` and :class:`MCG` (see the module docstring)."""
_CONVENTIONS = ("norm", "squared_normalized", "likelihood")

ZETA_BUDGET = 250.0
"""Default ``zeta * steps`` of the ``"norm"`` convention (see the module docstring)."""


class DPS(SamplerStats):
    """Diffusion posterior sampling.

    Starts from ``x_T ~ N(0, I)``; at each of ``steps`` reverse steps it evaluates the denoiser
    once (with a backward pass through it), takes the ancestral DDPM step ``x_t -> x_s`` with the
    Tweedie estimate and then the guidance step of :data:`step_convention` (see the module
    docstring). The last state's Tweedie estimate is returned. With ``clip_denoised`` the
    Tweedie estimate of every step is clamped to ``data_range``, and the ancestral step, the
    guidance residual and the returned estimate all use the clamped one (see the module
    docstring). Batched over measurements and samples; memory stays constant in ``steps`` (the
    graph is freed after every step).

    Args:
        prior: The diffusion prior (its denoiser is the Tweedie estimate). It is run in eval mode.
        steps: Number of reverse steps (= NFE; 1000 with ``time_grid="ddpm"`` is the paper's DPS).
        zeta: Step size of the guidance; ``None``: ``ZETA_BUDGET / steps`` (= 250 / steps) for
            ``"norm"``, half that for ``"squared_normalized"``, 1 for ``"likelihood"``.
        step_convention: ``"norm"``, ``"squared_normalized"`` or ``"likelihood"``.
        time_grid: ``"ddpm"`` (the 1000-step DDPM schedule, respaced to ``steps``) or
            ``"uniform"`` (``t = i / steps`` of the continuous SDE).
        clip_denoised: Clamp the Tweedie estimate of every step to ``data_range``.
        data_range: ``(low, high)`` of the data; required when ``clip_denoised`` is set.

    Raises:
        ValueError: For an unknown ``step_convention`` or ``time_grid``, ``steps < 2``, a
            negative ``zeta``, or ``clip_denoised`` without a valid ``data_range``.

    Shapes:
        ``sample(y (B, ...), operator, n)`` -> ``(B, n, C, V)``.

    Example:
        >>> from manifold_ps.priors import GaussianPrior
        >>> from manifold_ps.operators import Inpainting
        >>> prior = GaussianPrior(torch.zeros(1, 4, dtype=torch.float64), torch.eye(4, dtype=torch.float64))
        >>> op = Inpainting(torch.tensor([True, True, False, True]), sigma=0.1)
        >>> y = torch.ones(2, 1, 4, dtype=torch.float64)
        >>> dps = DPS(prior, steps=20)
        >>> dps.sample(y, op, 3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3, 1, 4])
        >>> dps.nfe, dps.zeta
        (20, 12.5)
        >>> clipped = DPS(prior, steps=20, clip_denoised=True, data_range=(0.0, 1.0)).sample(y, op)
        >>> bool(((clipped >= 0) & (clipped <= 1)).all())
        True
    """

    def __init__(
        self,
        prior: ScorePrior,
        *,
        steps: int = 1000,
        zeta: float | None = None,
        step_convention: StepConvention = "norm",
        time_grid: TimeGrid = "ddpm",
        clip_denoised: bool = False,
        data_range: tuple[float, float] | None = None,
    ) -> None:
        self._clip = clip_bounds(clip_denoised, data_range)
        if step_convention not in _CONVENTIONS:
            raise ValueError(f"step_convention must be one of {_CONVENTIONS}, got {step_convention!r}")
        reverse_grid(prior.sde, steps, time_grid)  # validates steps and time_grid
        if zeta is None:
            zeta = {"norm": ZETA_BUDGET / steps, "squared_normalized": ZETA_BUDGET / (2 * steps),
                    "likelihood": 1.0}[step_convention]
        if not zeta >= 0:
            raise ValueError(f"zeta must be non-negative, got {zeta}")
        self.prior = prior
        self.steps = int(steps)
        self.zeta = float(zeta)
        self.step_convention: StepConvention = step_convention
        self.time_grid: TimeGrid = time_grid
        self.clip_denoised = bool(clip_denoised)
        self.data_range = None if data_range is None else (float(data_range[0]), float(data_range[1]))

    def __repr__(self) -> str:
        clip = f", clip_denoised=True, data_range={self.data_range}" if self.clip_denoised else ""
        return (f"{type(self).__name__}(steps={self.steps}, zeta={self.zeta}, "
                f"step_convention={self.step_convention!r}, time_grid={self.time_grid!r}{clip})")

    # -- hooks of MCG ---------------------------------------------------------------------------
    def _check_operator(self, operator: Operator) -> None:
        if not isinstance(operator, Operator):
            raise ValueError(f"operator must be a manifold_ps Operator, got {type(operator).__name__}")
        if self.step_convention == "likelihood" and operator.sigma <= 0:
            raise ValueError("step_convention='likelihood' needs an operator with sigma > 0")

    def _restrict(self, grad: Tensor, op: Operator) -> Tensor:
        """Restrict the guidance gradient (MCG: to the unobserved vertices)."""
        return grad

    def _project(self, x: Tensor, y: Tensor, op: Operator, abar_s: float,
                 generator: torch.Generator | None) -> Tensor:
        """Applied after each guided step (MCG's data consistency)."""
        return x

    # -- the sampler ----------------------------------------------------------------------------
    def _objective(self, residual: Tensor, sigma: float) -> Tensor:
        """Sum over the batch of the per-sample objective ``R`` whose gradient guides."""
        r2 = residual.flatten(1).square().sum(-1)
        if self.step_convention == "norm":
            # clamp_min: zero gradient at a zero residual (reachable once x0_hat is clipped) instead of NaN
            return r2.clamp_min(torch.finfo(r2.dtype).tiny).sqrt().sum()
        if self.step_convention == "squared_normalized":
            return (r2 / r2.detach().sqrt().clamp_min(torch.finfo(r2.dtype).tiny)).sum()
        return r2.sum() / (2.0 * sigma**2)

    def sample(
        self,
        y: Tensor,
        operator: Operator,
        n: int = 1,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw ``n`` posterior samples per measurement.

        Args:
            y: Measurements ``(B, ...)``.
            operator: Their forward model (per-sample parameters match ``y``'s batch).
            n: Samples per measurement.
            generator: Source of randomness (on ``y``'s device).

        Returns:
            ``(B, n, C, V)`` samples, on ``y``'s device and dtype.
        """
        self._check_operator(operator)
        counter = NFECounter(self.prior)
        with self._timed(y, n, generator), eval_mode(self.prior):
            yb, op = repeat_batch(y, operator, n)
            shape = (yb.shape[0], self.prior.channels, self.prior.num_vertices)
            times, abar_t = reverse_grid(self.prior.sde, self.steps, self.time_grid)
            abar = abar_t.tolist()
            t_dev = times.to(device=y.device, dtype=y.dtype)
            x = torch.randn(shape, generator=generator, device=y.device, dtype=y.dtype)
            for i in reversed(range(self.steps)):
                with torch.enable_grad():
                    xg = x.detach().requires_grad_(True)
                    x0 = counter.denoise(xg, t_dev[i].expand(shape[0]))
                    if self._clip is not None:
                        x0 = x0.clamp(*self._clip)
                    objective = self._objective(op.residual(yb, x0), op.sigma)
                    (grad,) = torch.autograd.grad(objective, xg)
                x0 = x0.detach()
                if i == 0:
                    x = x0
                    break
                noise = torch.randn(shape, generator=generator, device=y.device, dtype=y.dtype)
                step = self.zeta * (1.0 - abar[i] / abar[i - 1]) if self.step_convention == "likelihood" else self.zeta
                x = posterior_step(x.detach(), x0, abar[i], abar[i - 1], noise) - step * self._restrict(grad, op)
                x = self._project(x, yb, op, abar[i - 1], generator)
            check_finite(x, f"{type(self).__name__} samples (try a smaller zeta)")
        self.nfe = counter.per_sample(shape[0])
        return x.reshape(y.shape[0], n, *shape[1:])


class MCG(DPS):
    """Manifold-constrained gradients (Chung et al. 2022) for masking operators.

    Each reverse step is DPS's, with the guidance gradient restricted to the *unobserved*
    vertices, followed by data consistency: the observed vertices of ``x_s`` are replaced by the
    forward-noised measurement ``sqrt(abar_s) y + sqrt(1 - abar_s) n``. The measurement noise
    is not removed from the observed vertices (a known weakness of MCG with noisy data); the
    returned last Tweedie estimate does smooth it a little.

    Args:
        prior: The diffusion prior.
        steps: Number of reverse steps (= NFE).
        zeta: Guidance step size (default as for :class:`DPS`).
        step_convention: As for :class:`DPS`.
        time_grid: As for :class:`DPS`.
        clip_denoised: As for :class:`DPS`.
        data_range: As for :class:`DPS`.

    Raises:
        ValueError: from :meth:`sample` if the operator is not an
            :class:`~manifold_ps.operators.Inpainting` (masking) operator.

    Example:
        >>> from manifold_ps.priors import GaussianPrior
        >>> from manifold_ps.operators import Inpainting
        >>> prior = GaussianPrior(torch.zeros(1, 4, dtype=torch.float64), torch.eye(4, dtype=torch.float64))
        >>> op = Inpainting(torch.tensor([True, True, False, True]), sigma=0.1)
        >>> MCG(prior, steps=20).sample(torch.ones(1, 1, 4, dtype=torch.float64), op, 2).shape
        torch.Size([1, 2, 1, 4])
    """

    def _check_operator(self, operator: Operator) -> None:
        if not isinstance(operator, Inpainting):
            raise ValueError(
                f"MCG needs a masking (Inpainting) operator, got {type(operator).__name__}; "
                "use DPS for other operators")
        super()._check_operator(operator)

    def _restrict(self, grad: Tensor, op: Operator) -> Tensor:
        return grad * (~op.measured(grad)).to(grad.dtype)

    def _project(self, x: Tensor, y: Tensor, op: Operator, abar_s: float,
                 generator: torch.Generator | None) -> Tensor:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        target = abar_s**0.5 * y + (1.0 - abar_s) ** 0.5 * noise
        return torch.where(op.measured(x), target, x)
