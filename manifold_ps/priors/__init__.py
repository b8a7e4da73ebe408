"""Diffusion priors over vertex signals: SDEs, score networks, training, sampling and the ELBO."""

from .base import ScorePrior as ScorePrior
from .base import bits_per_dim as bits_per_dim
from .gaussian import GaussianPrior as GaussianPrior
from .gaussian import linear_gaussian_posterior as linear_gaussian_posterior
from .gaussian import operator_matrix as operator_matrix
from .gaussian import GAUSSIAN_FORMAT as GAUSSIAN_FORMAT
from .gaussian_posterior import LinearGaussianPosterior as LinearGaussianPosterior
from .gaussian_mixture import GaussianMixture as GaussianMixture
from .gaussian_mixture import kmeans as kmeans
from .mixture_posterior import LinearMixturePosterior as LinearMixturePosterior
from .sde import SDE as SDE
from .sde import VPSDE as VPSDE
from .sde import append_dims as append_dims
from .mlp import MLPDenoiser as MLPDenoiser
from .graph import ChebConv as ChebConv
from .graph import GraphDenoiser as GraphDenoiser
from .graph import chebyshev_operator as chebyshev_operator
from .graph import sparse_operator as sparse_operator
from .unet import UNet1d as UNet1d
from .unet import timestep_embedding as timestep_embedding
from .sampling import ddpm_sample as ddpm_sample
from .sampling import dopri5 as dopri5
from .sampling import fixed_step_solve as fixed_step_solve
from .sampling import karras_times as karras_times
from .sampling import ode_sample as ode_sample
from .sampling import ode_sample_adaptive as ode_sample_adaptive
from .likelihood import ode_log_likelihood as ode_log_likelihood
from .diffusion import MLP_PRESETS as MLP_PRESETS
from .diffusion import GRAPH_PRESETS as GRAPH_PRESETS
from .diffusion import PRESETS as PRESETS
from .diffusion import DiffusionPrior as DiffusionPrior
from .diffusion import build_prior as build_prior
from .train import DSMObjective as DSMObjective
from .train import train_prior as train_prior

__all__ = [
    "SDE",
    "VPSDE",
    "append_dims",
    "ScorePrior",
    "bits_per_dim",
    "GaussianPrior",
    "GaussianMixture",
    "kmeans",
    "linear_gaussian_posterior",
    "operator_matrix",
    "GAUSSIAN_FORMAT",
    "LinearGaussianPosterior",
    "LinearMixturePosterior",
    "UNet1d",
    "MLPDenoiser",
    "GraphDenoiser",
    "ChebConv",
    "chebyshev_operator",
    "sparse_operator",
    "timestep_embedding",
    "DiffusionPrior",
    "build_prior",
    "PRESETS",
    "MLP_PRESETS",
    "GRAPH_PRESETS",
    "DSMObjective",
    "train_prior",
    "ddpm_sample",
    "ode_sample",
    "ode_sample_adaptive",
    "karras_times",
    "dopri5",
    "fixed_step_solve",
    "ode_log_likelihood",
]
