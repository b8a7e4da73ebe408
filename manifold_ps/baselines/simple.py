"""Non-iterative baselines: harmonic (Laplacian) interpolation and the Tweedie one-step denoiser."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..geometry import Geometry
from ..operators import Inpainting, Operator
from ..priors import ScorePrior
from ._common import SamplerStats

__all__ = ["HarmonicInterpolation", "TweedieDenoiser"]


class HarmonicInterpolation(SamplerStats):
    """Classical Laplacian interpolation of masked vertex signals (no learning, NFE 0).

    ``smoothing = 0`` keeps the observed (noisy) values and solves ``L_uu x_u = -L_uo x_o`` for
    the rest; ``smoothing > 0`` re-estimates every vertex by Tikhonov regularisation
    ``argmin sum_obs M_i (x_i - y_i)^2 + smoothing x^T L x`` (denoises the observed values too).
    Deterministic: the ``n`` samples are copies.

    Args:
        geometry: The geometry whose Laplacian is used.
        smoothing: Tikhonov weight.

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
        if smoothing < 0:
            raise ValueError(f"smoothing must be non-negative, got {smoothing}")
        self.geometry = geometry
        self.smoothing = float(smoothing)

    def sample(self, y: Tensor, operator: Operator, n: int = 1, *, generator: torch.Generator | None = None
               ) -> Tensor:
        """The interpolant, repeated ``n`` times: ``(B, n, C, V)``."""
        if not isinstance(operator, Inpainting):
            raise ValueError(f"HarmonicInterpolation needs a masking (Inpainting) operator, got {type(operator).__name__}")
        with self._timed(y, generator):
            mask = operator.mask if operator.batched else operator.mask.expand(y.shape[0], -1)
            if mask.shape[0] != y.shape[0]:
                mask = mask.expand(y.shape[0], -1)
            out = self.geometry.harmonic_interpolation(y, mask, self.smoothing)
        self.nfe = 0
        return out[:, None].expand(-1, n, -1, -1).clone()


class TweedieDenoiser(SamplerStats):
    """One-step Tweedie / Noise2Score denoiser for ``y = x + sigma_y n`` (identity operator).

    For the VP-SDE, ``y`` is ``x_t / alpha(t)`` at the time where ``sigma(t)^2 / alpha(t)^2 =
    sigma_y^2``, so ``E[x | y] = denoise(alpha(t) y, t)`` with ``t = u^{-1}(log sigma_y^2)``
    (:meth:`~manifold_ps.priors.VPSDE.t_from_log_snr_inverse`); equivalently
    ``y + sigma_y^2 * score_y(y)``. Deterministic, NFE 1.

    Args:
        prior: The diffusion prior.
    """

    def __init__(self, prior: ScorePrior) -> None:
        self.prior = prior

    def time_of(self, sigma: float, like: Tensor) -> Tensor:
        """The diffusion time whose noise-to-signal ratio is ``sigma``."""
        return self.prior.sde.t_from_log_snr_inverse(like.new_tensor(2 * math.log(sigma)))

    def sample(self, y: Tensor, operator: Operator, n: int = 1, *, generator: torch.Generator | None = None
               ) -> Tensor:
        """The Tweedie estimate, repeated ``n`` times: ``(B, n, C, V)``."""
        if type(operator).__name__ != "Denoising":
            raise ValueError(f"TweedieDenoiser needs the Denoising (identity) operator, got {type(operator).__name__}")
        if operator.sigma <= 0:
            raise ValueError("TweedieDenoiser needs sigma_y > 0")
        with self._timed(y, generator), torch.no_grad():
            t = self.time_of(operator.sigma, y)
            alpha = self.prior.sde.alpha(t)
            out = self.prior.denoise(alpha * y, t.expand(y.shape[0]))
        self.nfe = 1
        return out[:, None].expand(-1, n, -1, -1).clone()
