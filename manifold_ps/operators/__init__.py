"""Forward models on vertex signals (masking, denoising, blur, downsampling) with Gaussian noise."""

from .base import LinearOperator as LinearOperator
from .base import Operator as Operator
from .base import operator_from_config as operator_from_config
from .base import register_operator as register_operator
from .blur import HeatBlur as HeatBlur
from .blur import ImageBlur as ImageBlur
from .denoising import Denoising as Denoising
from .downsampling import Downsample2x as Downsample2x
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
    "Denoising",
    "HeatBlur",
    "ImageBlur",
    "Downsample2x",
]
