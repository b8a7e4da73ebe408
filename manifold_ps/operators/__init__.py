"""Forward models on vertex signals (masking, denoising, blur, downsampling) with Gaussian noise."""

from .base import LinearOperator as LinearOperator
from .base import Operator as Operator
from .base import operator_from_config as operator_from_config
from .base import register_operator as register_operator
from .inpainting import Inpainting as Inpainting
from .inpainting import RandomInpainting as RandomInpainting
from .inpainting import random_mask as random_mask

__all__ = [
    "Operator",
    "LinearOperator",
    "operator_from_config",
    "register_operator",
    "Inpainting",
    "RandomInpainting",
    "random_mask",
]
