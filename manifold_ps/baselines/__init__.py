"""Baseline posterior samplers, all with the :class:`~manifold_ps.sampling.PosteriorSampler`
signature ``sample(y, operator, n, generator=...) -> (B, n, C, V)``, an ``nfe`` count (network
evaluations per sample, counted by :class:`NFECounter`) and ``last_seconds`` /
``seconds_per_sample`` of the last call.

- :class:`DPS` -- diffusion posterior sampling (Chung et al. 2023), any operator.
- :class:`MCG` -- manifold-constrained gradients (Chung et al. 2022), masking only.
- :class:`REDDiff` -- variational RED-diff (Mardani et al. 2023), linear operators.
- :class:`TweedieDenoiser` -- one-step Tweedie / Noise2Score posterior mean, denoising only.
- :class:`HarmonicInterpolation` -- Laplacian interpolation, the non-learned floor, masking.
- :class:`GaussianPosterior` -- the exact posterior of a Gaussian fitted to the clean training
  signals, any linear operator: the floor every learned prior must beat.
- :class:`MixturePosterior` -- the exact posterior of a Gaussian mixture (a ``"mixture"`` prior's
  step 0), any linear operator.
"""

from ._common import NFECounter as NFECounter
from ._common import SamplerStats as SamplerStats
from ._common import Stopwatch as Stopwatch
from ._common import TimeGrid as TimeGrid
from ._common import reverse_grid as reverse_grid
from ._common import timed as timed
from .dps import DPS as DPS
from .dps import MCG as MCG
from .dps import StepConvention as StepConvention
from .gaussian import GaussianPosterior as GaussianPosterior
from .gaussian import MixturePosterior as MixturePosterior
from .reddiff import REDDiff as REDDiff
from .reddiff import REDDiffInit as REDDiffInit
from .simple import HarmonicInterpolation as HarmonicInterpolation
from .simple import TweedieDenoiser as TweedieDenoiser

__all__ = [
    "DPS",
    "MCG",
    "REDDiff",
    "HarmonicInterpolation",
    "TweedieDenoiser",
    "GaussianPosterior",
    "MixturePosterior",
    "NFECounter",
    "SamplerStats",
    "Stopwatch",
    "timed",
    "reverse_grid",
    "TimeGrid",
    "StepConvention",
    "REDDiffInit",
]
