"""Baseline posterior samplers, all with the :class:`~manifold_ps.sampling.PosteriorSampler`
signature ``sample(y, operator, n, generator=...) -> (B, n, C, V)`` and an ``nfe`` count."""

from .dps import DPS as DPS
from .dps import MCG as MCG
from .reddiff import REDDiff as REDDiff
from .simple import HarmonicInterpolation as HarmonicInterpolation
from .simple import TweedieDenoiser as TweedieDenoiser

__all__ = ["DPS", "MCG", "REDDiff", "HarmonicInterpolation", "TweedieDenoiser"]
