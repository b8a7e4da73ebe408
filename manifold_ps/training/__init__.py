"""Generic training machinery shared by the diffusion priors and the flows.

Imports only torch, tqdm and the standard library (TensorBoard lazily, when asked for).
"""

from .checkpoint import CHECKPOINT_FORMAT as CHECKPOINT_FORMAT
from .checkpoint import load_checkpoint as load_checkpoint
from .checkpoint import save_checkpoint as save_checkpoint
from .checkpoint import state_digest as state_digest
from .distributed import DistInfo as DistInfo
from .distributed import init_distributed as init_distributed
from .distributed import world_info as world_info
from .ema import ema_copy as ema_copy
from .ema import ema_update as ema_update
from .trainer import Batch as Batch
from .trainer import LossFn as LossFn
from .trainer import Trainer as Trainer

__all__ = [
    "Trainer",
    "Batch",
    "LossFn",
    "load_checkpoint",
    "save_checkpoint",
    "state_digest",
    "CHECKPOINT_FORMAT",
    "ema_copy",
    "ema_update",
    "DistInfo",
    "init_distributed",
    "world_info",
]
