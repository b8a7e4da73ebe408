"""Non-iterative baselines: harmonic (Laplacian) interpolation, the honest non-learned floor, and
the one-step Tweedie / Noise2Score denoiser."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..geometry import Geometry
from ..operators import Denoising, Inpainting, Operator
from ..priors import ScorePrior
from ._common import NFECounter, SamplerStats, check_request, eval_mode

__all__ = ["HarmonicInterpolation", "TweedieDenoiser"]


class HarmonicInterpolation(SamplerStats):
    """Classical Laplacian interpolation of masked vertex signals (no learning, NFE 0).

    ``smoothing = 0`` keeps the observed (noisy) values and solves ``L_uu x_u = -L_uo x_o`` with
    the geometry's Laplacian for the rest (the discrete harmonic extension, the smoothest
    completion); ``smoothing > 0`` re-estimates every vertex by Tikhonov regularisation
    ``argmin_x sum_obs M_i (x_i - y_i)^2 + smoothing x^T L x`` (``M`` the lumped mass), which
    denoises the observed values too. The solve is
    :meth:`~manifold_ps.geometry.Geometry.harmonic_interpolation` (sparse LU in float64 on the
    CPU, one factorisation per distinct mask). Deterministic: the ``n`` samples are copies.
    :class:`~manifold_ps.operators.Denoising` is accepted as the all-observed mask (only
    useful with ``smoothing > 0``).

    Args:
        geometry: The geometry whose Laplacian is used.
        smoothing: Tikhonov weight (non-negative).

    Shapes:
        ``sample(y (B, C, V), operator, n)`` -> ``(B, n, C, V)``.

    Example:
        >>> from manifold_ps.geometry import ImageGrid
        >>> from manifold_ps.operators import Inpainting
        >>> grid = ImageGrid(3, 3)
        >>> mask = torch.ones(9, dtype=torch.bool); mask[4] = False
        >>> y = torch.ones(1, 1, 9, dtype=torch.float64); y[0, 0, 4] = 0.0
        >>> HarmonicInterpolation(grid).sample(y, Inpainting(mask, 0.1))[0, 0, 0, 4].item()
        1.0
    """

    def __init__(self, geometry: Geometry, *, smoothing: float = 0.0) -> None:
        if not (isinstance(smoothing, (int, float)) and math.isfinite(smoothing) and smoothing >= 0):
            raise ValueError(f"smoothing must be a finite non-negative number, got {smoothing!r}")
        self.geometry = geometry
        self.smoothing = float(smoothing)

    def __repr__(self) -> str:
        return f"HarmonicInterpolation(smoothing={self.smoothing})"

    def sample(
        self,
        y: Tensor,
        operator: Operator,
        n: int = 1,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The interpolant of each measurement, repeated ``n`` times.

        Args:
            y: Measurements ``(B, C, V)`` (values at unobserved vertices are ignored).
            operator: An :class:`~manifold_ps.operators.Inpainting` (or
                :class:`~manifold_ps.operators.Denoising`) operator.
            n: Copies per measurement.
            generator: Unused (deterministic); accepted for the shared protocol.

        Returns:
            ``(B, n, C, V)`` on ``y``'s device and dtype.
        """
        if isinstance(operator, Inpainting):
            mask = operator.mask
        elif isinstance(operator, Denoising):
            mask = torch.ones(operator.num_vertices, dtype=torch.bool)
        else:
            raise ValueError("HarmonicInterpolation needs a masking (Inpainting) or Denoising operator, "
                             f"got {type(operator).__name__}")
        check_request(y, n)
        with self._timed(y, n, generator):
            out = self.geometry.harmonic_interpolation(y, mask, self.smoothing)
        self.nfe = 0
        return out[:, None].expand(-1, n, -1, -1).clone()


class TweedieDenoiser(SamplerStats):
    """One-step Tweedie / Noise2Score denoiser for ``y = x + sigma_y n`` (identity operator).

    Tweedie's formula gives the posterior mean ``E[x | y] = y + sigma_y^2 grad log p_{sigma_y}(y)``
    of a Gaussian-noised measurement. The VP-SDE's ``x_t = alpha(t) x_0 + sigma(t) eps`` divided
    by ``alpha(t)`` is ``x_0 + (sigma / alpha) eps``, so ``y`` is distributed as ``x_t / alpha(t)`` at
    the time where ``sigma(t)^2 / alpha(t)^2 = sigma_y^2``, i.e. ``t_y = u^{-1}(log sigma_y^2)``
    with ``u(t) = log(sigma^2 / alpha^2)``
    (:meth:`~manifold_ps.priors.VPSDE.t_from_log_snr_inverse`), and

        ``E[x | y] = denoise(alpha(t_y) y, t_y)``,

    one evaluation of the prior's Tweedie denoiser (exact for an exact prior). Deterministic: the
    ``n`` samples are copies of the posterior mean. NFE 1.

    Args:
        prior: The diffusion prior. It is run in eval mode.

    Shapes:
        ``sample(y (B, C, V), operator, n)`` -> ``(B, n, C, V)``.

    Example:
        >>> from manifold_ps.priors import GaussianPrior
        >>> from manifold_ps.operators import Denoising
        >>> prior = GaussianPrior(torch.zeros(1, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
        >>> y = torch.ones(1, 1, 3, dtype=torch.float64)
        >>> TweedieDenoiser(prior).sample(y, Denoising(3, sigma=1.0))  # E[x|y] = y / (1 + sigma^2)
        tensor([[[[0.5000, 0.5000, 0.5000]]]], dtype=torch.float64)
    """

    def __init__(self, prior: ScorePrior) -> None:
        self.prior = prior

    def __repr__(self) -> str:
        return "TweedieDenoiser()"

    def time_of(self, sigma: float, like: Tensor) -> Tensor:
        """The diffusion time ``t_y`` with ``sigma(t_y) / alpha(t_y) = sigma`` (a 0-d tensor like ``like``)."""
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        return self.prior.sde.t_from_log_snr_inverse(like.new_tensor(2.0 * math.log(sigma)))

    def sample(
        self,
        y: Tensor,
        operator: Operator,
        n: int = 1,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The Tweedie estimate of each measurement, repeated ``n`` times.

        Args:
            y: Noisy signals ``(B, C, V)``.
            operator: A :class:`~manifold_ps.operators.Denoising` operator with ``sigma > 0``.
            n: Copies per measurement.
            generator: Unused (deterministic); accepted for the shared protocol.

        Returns:
            ``(B, n, C, V)`` on ``y``'s device and dtype.
        """
        if not isinstance(operator, Denoising):
            raise ValueError(f"TweedieDenoiser needs the Denoising (identity) operator, got {type(operator).__name__}")
        if operator.sigma <= 0:
            raise ValueError("TweedieDenoiser needs a Denoising operator with sigma > 0")
        check_request(y, n)
        counter = NFECounter(self.prior)
        with self._timed(y, n, generator), eval_mode(self.prior), torch.no_grad():
            t = self.time_of(operator.sigma, y)
            out = counter.denoise(self.prior.sde.alpha(t) * y, t.expand(y.shape[0]))
        self.nfe = counter.per_sample(y.shape[0])
        return out[:, None].expand(-1, n, -1, -1).clone()
