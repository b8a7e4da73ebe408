"""Diffusion priors over vertex signals: SDEs, score networks, training, sampling and the ELBO."""

from .base import ScorePrior as ScorePrior
from .base import bits_per_dim as bits_per_dim
from .gaussian import GaussianPrior as GaussianPrior
from .gaussian import linear_gaussian_posterior as linear_gaussian_posterior
from .gaussian import operator_matrix as operator_matrix
from .sde import SDE as SDE
from .sde import VPSDE as VPSDE
from .sde import append_dims as append_dims

__all__ = [
    "SDE",
    "VPSDE",
    "append_dims",
    "ScorePrior",
    "bits_per_dim",
    "GaussianPrior",
    "linear_gaussian_posterior",
    "operator_matrix",
]
