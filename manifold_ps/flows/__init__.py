"""Conditional normalizing flows distilled from diffusion priors (amortized posterior sampling)."""

from .bijections import ActNorm as ActNorm
from .bijections import AffineCoupling as AffineCoupling
from .bijections import Bijection as Bijection
from .bijections import Composite as Composite
from .bijections import ConditionalAffine as ConditionalAffine
from .bijections import ElementwiseScale as ElementwiseScale
from .bijections import FixedPermutation as FixedPermutation
from .bijections import coupling_mask as coupling_mask
from .bijections import windowed_permutation as windowed_permutation
from .reconstruct import AdjointFill as AdjointFill
from .reconstruct import HarmonicFill as HarmonicFill
from .reconstruct import Reconstruction as Reconstruction
from .reconstruct import reconstruction_from_config as reconstruction_from_config
from .gaussian_base import BaseState as BaseState
from .gaussian_base import DENSE_LIMIT as DENSE_LIMIT
from .gaussian_base import GaussianBase as GaussianBase
from .gaussian_base import truncate_gaussian as truncate_gaussian
from .mixture_base import MixtureBase as MixtureBase
from .mixture_base import MixtureState as MixtureState
from .conditioner import ConditionEncoder as ConditionEncoder
from .conditioner import CouplingNet as CouplingNet
from .conditioner import ResidualBlock as ResidualBlock
from .distill import fit_single as fit_single
from .distill import path_log_prob as path_log_prob
from .distill import prepare_data as prepare_data
from .distill import reverse_kl_loss as reverse_kl_loss
from .distill import train_amortized as train_amortized
from .posterior import POSTERIOR_FORMAT as POSTERIOR_FORMAT
from .posterior import AmortizedPosterior as AmortizedPosterior
from .posterior import condition_channels as condition_channels
from .realnvp import ConditionalFlow as ConditionalFlow
from .realnvp import ConditionalRealNVP as ConditionalRealNVP

__all__ = [
    "Bijection",
    "Composite",
    "ActNorm",
    "AffineCoupling",
    "FixedPermutation",
    "ElementwiseScale",
    "ConditionalAffine",
    "coupling_mask",
    "windowed_permutation",
    "ResidualBlock",
    "ConditionEncoder",
    "CouplingNet",
    "ConditionalRealNVP",
    "ConditionalFlow",
    "Reconstruction",
    "AdjointFill",
    "HarmonicFill",
    "reconstruction_from_config",
    "DENSE_LIMIT",
    "GaussianBase",
    "BaseState",
    "truncate_gaussian",
    "MixtureBase",
    "MixtureState",
    "AmortizedPosterior",
    "POSTERIOR_FORMAT",
    "condition_channels",
    "reverse_kl_loss",
    "path_log_prob",
    "prepare_data",
    "train_amortized",
    "fit_single",
]
